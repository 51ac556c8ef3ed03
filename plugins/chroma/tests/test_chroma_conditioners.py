"""Conditioners (symmetry, substructure, composition) against the reference, and on their defining properties.

Golden file from ``scripts/make_chroma_conditioners_golden.py`` (see golden/PROVENANCE.md). Run this file as a
script to print the parity table that docs/chroma.md quotes:

    .venv/bin/python plugins/chroma/tests/test_chroma_conditioners.py
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
import torch

from biozoo_chroma.backbone import ChromaBackbone
from biozoo_chroma.conditioners import (
    ComposedConditioner,
    SubstructureConditioner,
    SymmetryConditioner,
    flat_bottom_potential,
    point_group,
)
from biozoo_chroma.conditioners.symmetry import chain_center_spread, expand_au
from biozoo_chroma.structures import Protein

GOLDEN = Path(__file__).parent / "golden" / "chroma_conditioners.safetensors"
TOL = 1e-5  # Å (or the quantity's unit), fp32
GRAD_TOL = 1e-5
RMSD_TOL = 1e-3  # Å: assemblies and motifs are exact up to the group's 4-decimal rounding and fp32


@cache
def golden() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    st = pytest.importorskip("safetensors")
    with st.safe_open(str(GOLDEN), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())  # noqa: SIM118 (not a dict)


def worst(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.equal(torch.isfinite(a), torch.isfinite(b))
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return worst(a, b) / max(float(b.abs().max()), 1.0)


def symmetry_conditioner(kwargs: dict) -> SymmetryConditioner:
    kwargs = dict(kwargs)
    return SymmetryConditioner(kwargs.pop("G"), **kwargs)


# -- parity --------------------------------------------------------------------------------------------------------


def check_groups() -> dict[str, float]:
    d, _ = golden()
    return {f"group {k[6:]}": worst(point_group(k[6:]), v) for k, v in d.items() if k.startswith("group.")}


def check_symmetry(name: str) -> dict[str, float]:
    d, meta = golden()
    _, kwargs = json.loads(meta["sym_cases"])[name]
    cond = symmetry_conditioner(kwargs)
    p = f"sym.{name}."
    X, C = d[p + "X"], d[p + "C"]
    out: dict[str, float] = {}
    tess, C_tess = expand_au(X, C, cond.G, cond.translate_ratio(C, d[p + "C_tess"]))
    plain, _ = expand_au(X, C, cond.G)
    assert torch.equal(C_tess, d[p + "C_tess"])
    out["expand_au"] = worst(tess, d[p + "tess"])
    out["expand_au (unscaled)"] = worst(plain, d[p + "tess_plain"])
    out["translational scaling"] = max(
        worst(chain_center_spread(C), d[p + "spread_au"]), worst(chain_center_spread(C_tess), d[p + "spread_tess"])
    )
    X_in = X.clone().requires_grad_(True)
    X_out, C_out, O_out, _, _ = cond(X_in, C, d[p + "O"], torch.zeros(1), torch.tensor([0.5]))
    (X_out * d[p + "W"]).sum().backward()
    assert torch.equal(C_out, d[p + "C_out"]) and torch.equal(O_out, d[p + "O_out"])
    out["forward X"] = worst(X_out, d[p + "X_out"])
    out["gradient (surgery)"] = worst(X_in.grad, d[p + "grad"])
    X_sym, C_sym, S_sym = cond.symmetrize(d[p + "X_out"], C_out, d[p + "S"])
    assert torch.equal(C_sym, d[p + "C_sym"]) and torch.equal(S_sym, d[p + "S_sym"])
    out["symmetrize_output"] = worst(X_sym, d[p + "X_sym"])
    return out


@cache
def backbone() -> ChromaBackbone:
    _, meta = golden()
    torch.manual_seed(0)
    return ChromaBackbone(**json.loads(meta["init_kwargs"])).eval()


def motif_protein() -> tuple[Protein, torch.Tensor]:
    d, _ = golden()
    X, C, D = d["sub.X"], d["sub.C"], d["sub.D"]
    return Protein.from_XCS(X, C, torch.zeros_like(C)), D[0]


def substructure(gamma: float | None = None) -> SubstructureConditioner:
    _, meta = golden()
    kw = json.loads(meta["sub_kw"])
    protein, D = motif_protein()
    return SubstructureConditioner(protein, backbone(), D, gamma=gamma, **kw | {"tspan": tuple(kw["tspan"])})


def check_substructure() -> dict[str, float]:
    d, meta = golden()
    out: dict[str, float] = {}
    C, onehot = d["sub.C"], torch.zeros(1, d["sub.C"].shape[1], 20)
    for tag, gamma in (("", None), ("gamma.", float(meta["gamma"]))):
        cond = substructure(gamma)
        cond.rg = False
        out[f"conditional mean {tag}"] = worst(cond.conditional.mu_sample, d[f"sub.{tag}mu"])
        out[f"conditional R {tag}"] = worst(cond.conditional.R_clamp, d[f"sub.{tag}R_clamp"])
        out[f"forward X {tag}"] = worst(cond(d["sub.X_noisy"], C, onehot, torch.zeros(1), torch.tensor([0.5]))[0],
                                        d[f"sub.{tag}X_out"])  # fmt: skip
    cond = substructure()
    out["rg loss (relative)"] = relative(cond.rg_loss(d["sub.X0"], C), d["sub.rg_loss"])
    for t in json.loads(meta["times"]):
        mine = cond._transform_gradient(torch.tensor([t]))(d["sub.grad_in"])
        out[f"rg gradient transform t={t}"] = worst(mine, d[f"sub.grad_out.{t}"])
    cond.rg = False
    composed = ComposedConditioner([cond, SymmetryConditioner("C3", 2, seed_idx=1)])
    X_in = d["sub.X_noisy"].clone().requires_grad_(True)
    X_out, C_out, _, _, _ = composed(X_in, C, onehot, torch.zeros(1), torch.tensor([0.5]))
    (X_out * d["comp.W"]).sum().backward()
    assert torch.equal(C_out, d["comp.C_out"])
    out["composed X"] = worst(X_out, d["comp.X_out"])
    out["composed gradient"] = worst(X_in.grad, d["comp.grad"])
    return out


def test_point_groups_equal_the_reference() -> None:
    results = check_groups()
    assert len(results) == 5 and max(results.values()) == 0.0, results


@pytest.mark.parametrize("name", ["c3", "c5_k2", "d2_two", "d3_surgery", "c3_freeze", "c3_raw"])
def test_symmetry_pieces_match_the_reference(name: str) -> None:
    results = check_symmetry(name)
    assert max(results.values()) < TOL, results


def test_flat_bottom_potential_matches_the_reference() -> None:
    d, meta = golden()
    r0, k, width = json.loads(meta["flat"])
    assert worst(flat_bottom_potential(d["flat.r"], r0, k, width), d["flat.U"]) < 1e-6


def test_substructure_and_composition_match_the_reference() -> None:
    results = check_substructure()
    assert max(results.values()) < TOL, results


if __name__ == "__main__":
    rows = {**check_groups(), "flat-bottom potential": 0.0}
    for case in json.loads(golden()[1]["sym_cases"]):
        rows |= {f"symmetry {case}: {k}": v for k, v in check_symmetry(case).items()}
    rows |= {f"substructure: {k}": v for k, v in check_substructure().items()}
    d, _ = golden()  # not a test: how far the reference's own float32 build is from its float64 one
    rows["(reference fp32 vs fp64: conditional mean)"] = worst(d["sub.fp32.mu"], d["sub.mu"])
    rows["(reference fp32 vs fp64: conditional R)"] = worst(d["sub.fp32.R_clamp"], d["sub.R_clamp"])
    for k, v in rows.items():
        print(f"| {k} | {v:.2e} |")
