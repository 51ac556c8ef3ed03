"""Make the golden files the chroma plugin's backbone tests compare against: the reference's GraphBackbone.

The reference is generate-chroma 1.0.0 (generatebio/chroma 929407c), importable without its dependencies as for
scripts/make_chroma_structure_golden.py (whose stand-in modules, and the graph script's offline centering patch,
this script reuses):

    .venv/bin/pip install --no-deps --target /tmp/chroma_ref generate-chroma==1.0.0
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python scripts/make_chroma_backbone_golden.py

It installs and downloads nothing. For each case it builds a reference ``GraphBackbone`` with random weights and
public-like init_kwargs (metadata ``init_kwargs``), and writes ``chroma_backbone_{case}.safetensors`` with its
state dict (``ref.``), a two-layout batch with gaps and padding (``X``, ``C``), noised inputs ``X_t.{t}`` drawn by
the reference's own forward process, and ``denoise`` outputs:

* ``X0.{t}``: both dithers off (the frame-averaging dither patched to 0, as chroma.md 6.3 says), t in 0.1, 0.5,
  0.9, and ``X0.batch_t`` for one time per batch member; random graphs are drawn after ``torch.manual_seed``
  of the seed in the metadata (the tests seed theirs the same way);
* ``X0.dither_on``: the dither left on, after ``torch.manual_seed(seed)`` (to check the draws come in the same
  order);
* case ``knn`` only, rung 5: a 4-step ``sample_sde`` from the reference's initial helices (``X_init``) with the
  Chroma defaults (reverse_sde, euler_maruyama, langevin_factor 2, inverse_temperature 10, not isothermal), its
  initial and per-step noise injected (``Z_init``, ``Z_steps``), both dithers off: every state, the sample and the
  last prediction.
"""

from __future__ import annotations

import argparse
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

EDGES_A = ["distances_2mer", "orientations_2mer", "orientations_chain", "distances_chain"]  # chroma.md 2.4, entry A
EDGES_SMALL = ["orientations_2mer", "orientations_chain", "distances_chain"]
NODES = [["internal_coords", {"log_lengths": True}]]
CASES = {
    "knn": {
        "dim_nodes": 32, "dim_edges": 32, "num_neighbors": 16, "node_features": NODES, "edge_features": EDGES_A,
        "num_layers": 2, "dropout": 0.1, "graph_criterion": "knn",
    },
    "random_log": {
        "dim_nodes": 32, "dim_edges": 48, "num_neighbors": 16, "node_features": NODES, "edge_features": EDGES_SMALL,
        "num_layers": 2, "graph_criterion": "random_log", "graph_random_min_local": 8, "num_graph_cycles": 2,
        "backbone_update_num_weights": 3, "backbone_update_iterations": 2, "time_feature_type": "log_snr",
    },
    "global": {
        "dim_nodes": 16, "dim_edges": 16, "num_neighbors": 12, "node_features": NODES, "edge_features": EDGES_SMALL,
        "num_layers": 1, "backbone_update_method": "neighbor_global", "backbone_update_num_weights": 2,
        "prediction_type": "scale",
    },
    "global_affine": {
        "dim_nodes": 16, "dim_edges": 16, "num_neighbors": 12, "node_features": NODES, "edge_features": EDGES_SMALL,
        "num_layers": 1, "backbone_update_method": "neighbor_global_affine", "prediction_type": "scale_cutoff",
        "noise_covariance_model": "globular",
    },
    "local": {
        "dim_nodes": 16, "dim_edges": 16, "num_neighbors": 12, "node_features": NODES, "edge_features": EDGES_SMALL,
        "num_layers": 1, "backbone_update_method": "local", "use_time_features": False,
    },
}  # fmt: skip
TIMES = (0.1, 0.5, 0.9)
BATCH_T = (0.3, 0.8)
LAYOUTS = [[(1, 12), (-1, 3), (1, 5), (2, 12)], [(-1, 2), (1, 20), (2, 4), (0, 6)]]
LENGTH = 32
SEED = 20260130
STEPS = 4
SAMPLE_KW = {  # Chroma.sample's defaults
    "tspan": (1.0, 0.001), "langevin_factor": 2.0, "inverse_temperature": 10.0, "langevin_isothermal": False,
    "sde_func": "reverse_sde", "integrate_func": "euler_maruyama", "initialize_noise": True,
}  # fmt: skip


def dither_off() -> None:
    """The frame-averaging dither at 0 (``equilibrate_transforms`` calls the module's ``average_transforms``)."""
    from chroma.layers.structure import transforms

    original = transforms.average_transforms

    def undithered(*args, **kwargs):
        kwargs["dither_eps"] = 0.0
        return original(*args, **kwargs)

    transforms.average_transforms = undithered
    transforms._dithered_original = original


def dither_on() -> None:
    from chroma.layers.structure import transforms

    transforms.average_transforms = transforms._dithered_original


def case(name: str, kwargs: dict, X: torch.Tensor, C: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    from chroma.models.graph_backbone import GraphBackbone

    torch.manual_seed(seed)
    model = GraphBackbone(**kwargs).eval()
    model.noise_perturb.loss_rmsd.rmsd.dither = False  # the Kabsch dither (rung 5 only uses it)
    out: dict[str, torch.Tensor] = {"X": X, "C": C}
    out.update({f"ref.{k}": v.detach().clone() for k, v in model.state_dict().items()})
    with torch.no_grad():
        for t in TIMES:
            torch.manual_seed(seed + int(1000 * t))
            out[f"X_t.{t}"] = model.noise_perturb(X, C, t=torch.tensor([t]))
        torch.manual_seed(seed + 7)
        out["X_t.batch_t"] = model.noise_perturb(X, C, t=torch.tensor(BATCH_T))
        dither_off()
        for t in TIMES:
            torch.manual_seed(seed + 1)
            out[f"X0.{t}"] = model.denoise(out[f"X_t.{t}"], C, t)
        torch.manual_seed(seed + 1)
        out["X0.batch_t"] = model.denoise(out["X_t.batch_t"], C, torch.tensor(BATCH_T))
        dither_on()
        torch.manual_seed(seed + 2)
        out["X0.dither_on"] = model.denoise(out["X_t.0.5"], C, 0.5)
        torch.manual_seed(seed + 2)
        again = model.denoise(out["X_t.0.5"], C, 0.5)
        torch.manual_seed(seed + 3)
        other = model.denoise(out["X_t.0.5"], C, 0.5)
        print(name, "ref dither: same seed", float((again - out["X0.dither_on"]).abs().max()),
              "other seed", float((other - out["X0.dither_on"]).abs().max()),
              "vs off", float((out["X0.dither_on"] - out["X0.0.5"]).abs().max()))  # fmt: skip
    if name == "knn":
        out.update(trajectory(model, C, seed))
    return {k: v.detach().contiguous() for k, v in out.items()}


def trajectory(model, C: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """Rung 5: a few Chroma-default SDE steps from the reference's initial helices, noise injected."""
    from chroma.models.chroma import Chroma

    gen = torch.Generator().manual_seed(seed + 5)
    B, L = C.shape
    z_init, z_steps = torch.randn(B, L * 4, 3, generator=gen), torch.randn(STEPS, B, L, 4, 3, generator=gen)
    lengths = [12, 20]  # two chains; the helix spans the whole system
    X_init, C_init, _ = Chroma._init_backbones(model, B, lengths)
    d = model.noise_perturb
    draw = d.base_gaussian.sample
    d.base_gaussian.sample = lambda C_, draw=draw: draw(C_, Z=z_init)
    calls = [0]

    def with_noise(fn):
        def drift(X_, X0_func, C_, t, **kw):
            step = calls[0]
            calls[0] += 1
            return fn(X_, X0_func, C_, t, Z=z_steps[step], **kw)

        return drift

    d.sde_funcs = {k: with_noise(v) for k, v in d.sde_funcs.items()}
    dither_off()
    result = model.sample_sde(C_init, X_init=X_init, N=STEPS, **SAMPLE_KW)
    dither_on()
    return {
        "traj.X_init": X_init, "traj.C": C_init, "traj.Z_init": z_init, "traj.Z_steps": z_steps,
        "traj.states": torch.stack(result["Xunc_trajectory"]), "traj.X_sample": result["X_sample"],
        "traj.Xhat_last": result["Xhat_trajectory"][-1],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=GOLDEN)
    args = parser.parse_args()
    stub_modules()
    import chroma  # noqa: F401  (the reference, importable via PYTHONPATH)

    s = structures()
    patch_centering(s)
    X, C = batch(LAYOUTS, LENGTH, s)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (name, kwargs) in enumerate(CASES.items()):
        seed = SEED + 100 * i
        tensors = case(name, kwargs, X, C, seed)
        meta = {
            "reference": "generate-chroma 1.0.0", "torch": torch.__version__, "init_kwargs": json.dumps(kwargs),
            "seed": str(seed), "times": json.dumps(TIMES), "batch_t": json.dumps(BATCH_T), "steps": str(STEPS),
            "sample_kw": json.dumps(SAMPLE_KW),
        }  # fmt: skip
        path = args.out / f"chroma_backbone_{name}.safetensors"
        save_file(tensors, str(path), metadata=meta)
        print("wrote", path, f"{path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
