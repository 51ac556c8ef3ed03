"""Make the golden file the chroma plugin's conditioner tests compare against: the reference's conditioners.

The reference is generate-chroma 1.0.0 (generatebio/chroma 929407c), importable without its dependencies as for
scripts/make_chroma_structure_golden.py (whose stand-in modules, and the graph script's structures and batches,
this script reuses):

    .venv/bin/pip install --no-deps --target /tmp/chroma_ref generate-chroma==1.0.0
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python scripts/make_chroma_conditioners_golden.py

It installs and downloads nothing, and writes ``chroma_conditioners.safetensors``:

* ``group.{name}``: the rotation matrices of C_2, C_3, C_5, D_2, D_3 (``symmetry.get_point_group``);
* ``sym.{case}.*``: a ``SymmetryConditioner`` (settings in the metadata ``sym_cases``) on an asymmetric unit
  ``X`` / ``C`` (1ahsA, one chain, off-centre; or two 4E43 chains with a gap): ``expand_au`` with and without
  scaling, ``translational_scaling`` of the AU and the tiled map, ``forward`` with a fixed ``seed_idx`` (X, C, O)
  and the gradient of ``(X_out * W).sum()`` with respect to X (its grad surgery), and ``symmetrize_output`` of the
  forward output with a random sequence;
* ``flat.*``: ``flat_bottom_potential`` on a grid;
* ``sub.*``: in float64 (see ``float64_reference``), a ``SubstructureConditioner`` on two 4E43 chains with motif
  residues in both (the backbone model a reference ``GraphBackbone``, init_kwargs in the metadata; only its prior
  and schedule are used), without and with ``gamma``: the conditional mean and R, ``forward`` on a noised X,
  ``_rg_loss`` on a random X0 and ``_transform_gradient`` of a random gradient at three times;
  ``sub.fp32.*``: the float32 conditional mean and R;
* ``comp.*``: in float64, a ``ComposedConditioner`` of that substructure conditioner then C_3 symmetry,
  ``forward`` and the gradient of a weighted sum of its output.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "plugins/chroma/tests/golden"
sys.path.insert(0, str(ROOT / "scripts"))
from make_chroma_graph_golden import batch, patch_centering, structures  # noqa: E402
from make_chroma_structure_golden import stub_modules  # noqa: E402

SEED = 20260213
GROUPS = ("C_2", "C_3", "C_5", "D_2", "D_3")
SYM_CASES = {  # name -> (AU, SymmetryConditioner kwargs)
    "c3": ("one", {"G": "C_3", "num_chain_neighbors": 2, "seed_idx": 1}),
    "c5_k2": ("one", {"G": "C_5", "num_chain_neighbors": 2, "seed_idx": 3}),
    "d2_two": ("two", {"G": "D_2", "num_chain_neighbors": 3, "seed_idx": 2}),
    "d3_surgery": ("two", {"G": "D_3", "num_chain_neighbors": 3, "seed_idx": 0, "grad_com_surgery": True}),
    "c3_freeze": ("one", {"G": "C_3", "num_chain_neighbors": 2, "seed_idx": 2, "freeze_com": True}),
    "c3_raw": ("two", {"G": "C_3", "num_chain_neighbors": 1, "seed_idx": 1, "canonicalize": False,
                       "enable_rigid_drift": False}),
}  # fmt: skip
BACKBONE_KWARGS = {
    "dim_nodes": 16, "dim_edges": 16, "num_neighbors": 8, "num_layers": 1,
    "edge_features": ["orientations_2mer", "distances_chain"], "noise_covariance_model": "globular",
    "noise_complex_scaling": True,
}  # fmt: skip
MOTIF_LAYOUT = [(1, 14), (2, 10)]
MOTIF = [(2, 8), (17, 21)]  # residue index ranges (end exclusive) of the motif
GAMMA = 0.3
TIMES = (0.05, 0.5, 0.95)
SUB_KW = {"rg": True, "weight": 1.0, "tspan": (0.1, 1.0), "weight_max": 3.0}


class MotifProtein:
    """The two calls the reference's SubstructureConditioner makes of a Protein."""

    def __init__(self, X: torch.Tensor, C: torch.Tensor, D: torch.Tensor) -> None:
        self.X, self.C, self.D = X, C, D

    def to_XCS(self):
        return self.X, self.C, torch.zeros_like(self.C)

    def get_mask(self, selection: str) -> torch.Tensor:
        return self.D.float()


def units(s) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    one = s["1ahsA.bb.X"][:, :16] + torch.tensor([6.0, -4.0, 9.0])
    two = batch([[(1, 9), (-1, 2), (1, 3), (2, 10)]], 24, s)
    return {"one": (one.contiguous(), torch.ones(1, 16, dtype=torch.long)), "two": two}


def symmetry_case(name: str, au: tuple, kwargs: dict, gen: torch.Generator) -> dict[str, torch.Tensor]:
    from chroma.layers.structure.conditioners import SymmetryConditioner

    X, C = au
    cond = SymmetryConditioner(**kwargs)
    out = {f"sym.{name}.X": X, f"sym.{name}.C": C}
    tess, C_tess = cond.expand_au(X, C, cond.G, scale=True)
    plain, _ = cond.expand_au(X, C, cond.G, scale=False)
    out |= {f"sym.{name}.tess": tess, f"sym.{name}.C_tess": C_tess, f"sym.{name}.tess_plain": plain}
    out[f"sym.{name}.spread_au"] = cond.translational_scaling(C)
    out[f"sym.{name}.spread_tess"] = cond.translational_scaling(C_tess)
    onehot = torch.nn.functional.one_hot(torch.randint(0, 20, C.shape, generator=gen), 20).float()
    X_in = X.clone().requires_grad_(True)
    X_out, C_out, O_out, _, _ = cond(X_in, C, onehot, torch.zeros(1), torch.tensor([0.5]))
    W = torch.randn(X_out.shape, generator=gen)
    (X_out * W).sum().backward()
    S = torch.randint(0, 20, C_out.shape, generator=gen)
    X_sym, C_sym, S_sym = cond.symmetrize_output(X_out.detach(), C_out, S)
    out |= {
        f"sym.{name}.O": onehot, f"sym.{name}.X_out": X_out.detach(), f"sym.{name}.C_out": C_out,
        f"sym.{name}.O_out": O_out, f"sym.{name}.W": W, f"sym.{name}.grad": X_in.grad,
        f"sym.{name}.S": S, f"sym.{name}.X_sym": X_sym, f"sym.{name}.C_sym": C_sym, f"sym.{name}.S_sym": S_sym,
    }  # fmt: skip
    return out


def motif_inputs(s) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    X, C = batch([MOTIF_LAYOUT], sum(n for _, n in MOTIF_LAYOUT), s)
    D = torch.zeros_like(C, dtype=torch.bool)
    for a, b in MOTIF:
        D[:, a:b] = True
    return X, C, D


def fp32_conditional(s) -> dict[str, torch.Tensor]:
    """The reference's own float32 conditional mean and R (for the docs' note on its precision)."""
    from chroma.layers.structure import backbone, mvn

    X, C, D = motif_inputs(s)
    dist = mvn.ConditionalBackboneMVNGlobular(
        covariance_model="globular", complex_scaling=True, X=backbone.center_X(X, C), C=C, D=D
    )
    return {"sub.fp32.mu": dist.mu_sample, "sub.fp32.R_clamp": dist.R_clamp}


def substructure(model, s, gen: torch.Generator) -> dict[str, torch.Tensor]:
    from chroma.layers.structure.conditioners import ComposedConditioner, SubstructureConditioner, SymmetryConditioner

    X, C, D = motif_inputs(s)
    X = X.double()
    protein = MotifProtein(X, C, D)
    out = {"sub.X": X, "sub.C": C, "sub.D": D}
    X_noisy = X + 4.0 * torch.randn(X.shape, generator=gen).double()
    out["sub.X_noisy"] = X_noisy
    for tag, gamma in (("", None), ("gamma.", GAMMA)):
        cond = SubstructureConditioner(protein, model, "motif", gamma=gamma, **SUB_KW)
        dist = cond.conditional_distribution
        out[f"sub.{tag}mu"] = dist.mu_sample
        out[f"sub.{tag}R_clamp"] = dist.R_clamp
        cond.rg = False
        out[f"sub.{tag}X_out"] = cond(X_noisy, C, torch.zeros(1, C.shape[1], 20), torch.zeros(1), 0.5)[0]
    cond = SubstructureConditioner(protein, model, "motif", **SUB_KW)
    X0 = X + torch.randn(X.shape, generator=gen).double()
    out["sub.X0"], out["sub.rg_loss"] = X0, cond._rg_loss(X0, C).reshape(1)
    grad = torch.randn(X.shape, generator=gen).double()
    out["sub.grad_in"] = grad
    for t in TIMES:
        out[f"sub.grad_out.{t}"] = cond._transform_gradient(grad, C, torch.tensor([t]))
    cond.rg = False
    composed = ComposedConditioner([cond, SymmetryConditioner("C_3", 2, seed_idx=1)])
    X_in = X_noisy.clone().requires_grad_(True)
    X_out, C_out, _, _, _ = composed(X_in, C, torch.zeros(1, C.shape[1], 20), torch.zeros(1), torch.tensor([0.5]))
    W = torch.randn(X_out.shape, generator=gen).double()
    (X_out * W).sum().backward()
    out |= {"comp.X_out": X_out.detach(), "comp.C_out": C_out, "comp.W": W, "comp.grad": X_in.grad}
    return out


@contextlib.contextmanager
def float64_reference():
    """The reference's maths in float64: default dtype float64, and its chain masks (hard-coded float32) cast.

    Its float32 build of the conditional Gaussian (Schur complement, pinv, Cholesky of a 4L x 4L matrix) is off
    by ~3e-5 from its own float64 result, which is what the plugin (built in float64) is compared against.
    """
    from chroma.layers.structure import mvn

    expand = mvn.backbone.expand_chain_map
    mvn.backbone.expand_chain_map = lambda C: expand(C).double()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(torch.float32)
        mvn.backbone.expand_chain_map = expand


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=GOLDEN)
    args = parser.parse_args()
    stub_modules()
    from chroma.layers.structure import symmetry
    from chroma.layers.structure.conditioners import SymmetryConditioner
    from chroma.models.graph_backbone import GraphBackbone

    s = structures()
    patch_centering(s)  # the backbone model is built offline (its features are not used)
    gen = torch.Generator().manual_seed(SEED)
    out: dict[str, torch.Tensor] = {f"group.{g}": symmetry.get_point_group(g) for g in GROUPS}
    au = units(s)
    for name, (unit, kwargs) in SYM_CASES.items():
        out |= symmetry_case(name, au[unit], kwargs, gen)
    r = torch.linspace(0.0, 20.0, 41)
    out["flat.r"] = r
    out["flat.U"] = SymmetryConditioner("C_2", 1).flat_bottom_potential(r, 8.0, 2.5, 3.0)
    torch.manual_seed(SEED)
    model = GraphBackbone(**BACKBONE_KWARGS).eval()
    with float64_reference():
        out |= substructure(model, s, gen)
    out |= fp32_conditional(s)
    meta = {
        "reference": "generate-chroma 1.0.0", "torch": torch.__version__, "seed": str(SEED),
        "sym_cases": json.dumps(SYM_CASES), "init_kwargs": json.dumps(BACKBONE_KWARGS), "gamma": str(GAMMA),
        "times": json.dumps(TIMES), "sub_kw": json.dumps(SUB_KW), "flat": json.dumps([8.0, 2.5, 3.0]),
    }  # fmt: skip
    tensors = {k: v.detach().clone().contiguous() for k, v in out.items()}
    path = args.out / "chroma_conditioners.safetensors"
    save_file(tensors, str(path), metadata=meta)
    print("wrote", path, f"{path.stat().st_size / 1e6:.2f} MB", len(tensors), "tensors")


if __name__ == "__main__":
    main()
