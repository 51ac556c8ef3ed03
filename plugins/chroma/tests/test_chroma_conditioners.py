"""Conditioners (symmetry, substructure, composition) against the reference, and on their defining properties.

Golden file from ``scripts/make_chroma_conditioners_golden.py`` (see golden/PROVENANCE.md). Run this file as a
script to print the parity table that docs/chroma.md quotes:

    .venv/bin/python plugins/chroma/tests/test_chroma_conditioners.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import torch

from biozoo_chroma.backbone import ChromaBackbone
from biozoo_chroma.conditioners import (
    ComposedConditioner,
    ConditionerError,
    SubstructureConditioner,
    SymmetryConditioner,
    asymmetric_unit,
    flat_bottom_potential,
    point_group,
)
from biozoo_chroma.conditioners.symmetry import chain_center_spread, expand_au
from biozoo_chroma.structures import Protein

GOLDEN = Path(__file__).parent / "golden" / "chroma_conditioners.safetensors"
TOL = 1e-5  # Å (or the quantity's unit), fp32
GRAD_TOL = 1e-5
RMSD_TOL = 1e-3  # Å: assemblies and motifs are exact up to the group's 4-decimal rounding and fp32
DEMO_STEPS = 60


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


# -- defining properties with the shipped demo model ------------------------------------------------------------


@cache
def demo() -> ChromaBackbone:
    import biozoo

    return biozoo.load("chroma/demo").eval()


def quiet(**kwargs) -> dict:
    """Temperature 1 without Langevin: the weak demo model's samples collapse at the reference's defaults."""
    return {"steps": DEMO_STEPS, "seed": 0, "inverse_temperature": 1.0, "langevin_factor": 0.0} | kwargs


def symmetry_rmsd(protein: Protein, G: torch.Tensor) -> float:
    """Largest RMSD (no superposition) between chain j and G_j applied to chain 0, over the copies j."""
    X, C, _ = protein.to_XCS()
    chains = [X[0, C[0] == k + 1].reshape(-1, 3).double() for k in range(G.shape[0])]
    moved = [chains[0] @ g.double().T for g in G]
    return max(float((c - m).pow(2).sum(-1).mean().sqrt()) for c, m in zip(chains, moved, strict=True))


@pytest.mark.parametrize(("group", "chains"), [("C3", [30]), ("D2", [20])])
def test_a_sample_is_symmetric_under_its_group(group: str, chains: list[int]) -> None:
    cond = SymmetryConditioner(group, 5)
    protein = demo().sample(chain_lengths=chains, conditioner=cond, **quiet())
    assert len(protein.chain_ids) == cond.order and len(protein) == cond.order * sum(chains)
    assert symmetry_rmsd(protein, cond.G) < RMSD_TOL
    X = protein.to_XCS()[0][0, :, 1]
    assert torch.isfinite(X).all() and float(X.std()) > 1.0  # a structure, not a point


def test_the_sampled_sub_complex_is_symmetric_before_post_processing() -> None:
    """The denoiser's view (the AU and its neighbours, canonicalised) is itself an exact C3 assembly."""
    cond = SymmetryConditioner("C3", 2)
    protein, extra = demo().sample(chain_lengths=[24], conditioner=cond, full_output=True, **quiet(steps=20))
    raw = extra["Xhat_trajectory"]  # predictions were made on the sub-complex: 3 chains of 24
    assert len(raw) and len(raw[-1]) == 72
    cond.postprocess = None  # the same sampler state, without rebuilding the assembly
    again = demo().sample(chain_lengths=[24], conditioner=cond, **quiet(steps=20))
    assert len(again) == 72 and symmetry_rmsd(again, cond.G) < RMSD_TOL
    assert symmetry_rmsd(protein, cond.G) < RMSD_TOL


def test_a_motif_keeps_its_structure_after_sampling() -> None:
    from test_chroma_structures import TS50, needs_data

    if not TS50:
        pytest.skip(needs_data.kwargs["reason"])
    from biozoo_chroma.losses.rmsd import backbone_rmsd

    protein = Protein(TS50[0])
    numbers = protein.residue_ids
    selection = f"{protein.chain_ids[0]}:{numbers[10]}-{numbers[20]}"
    cond = SubstructureConditioner(protein, demo(), selection)
    sample = demo().sample(protein_init=protein, conditioner=cond, **quiet())
    X = sample.to_XCS()[0]
    X0, C0, _ = protein.to_XCS()
    D = cond.D[0]
    assert int(D.sum()) == 11
    assert float(backbone_rmsd(X[:, D], X0[:, D], C0[:, D])[0]) < RMSD_TOL
    rest = ~D & (C0[0] > 0)
    assert float(backbone_rmsd(X[:, rest], X0[:, rest], C0[:, rest])[0]) > 1.0  # the rest was sampled


def test_composition_chains_outputs_and_post_processing_in_order() -> None:
    calls: list[str] = []

    class Shift(torch.nn.Module):
        def __init__(self, name: str, dx: float) -> None:
            super().__init__()
            self.name, self.dx = name, dx

        def forward(self, X, C, O, U, t):  # noqa: E741
            calls.append(self.name)
            return X + self.dx, C, O, U + 1, t

        def postprocess(self, protein: Protein) -> Protein:
            calls.append(f"post {self.name}")
            return protein

    X, C = torch.zeros(1, 5, 4, 3), torch.ones(1, 5, dtype=torch.long)
    composed = ComposedConditioner([Shift("a", 1.0), Shift("b", 2.0)])
    X_out, _, _, U, _ = composed(X, C, torch.zeros(1, 5, 20), torch.zeros(1), torch.tensor([0.5]))
    assert float(X_out.max()) == 3.0 and float(U[0]) == 2.0 and calls == ["a", "b"]
    composed.postprocess(Protein.from_XCS(X + 1, C, torch.zeros_like(C)))
    assert calls[2:] == ["post a", "post b"]


def test_bf16_symmetry_and_substructure_run_and_agree_with_fp32() -> None:
    d, meta = golden()
    _, kwargs = json.loads(meta["sym_cases"])["c3"]
    cond = symmetry_conditioner(kwargs)
    X, C, onehot = d["sym.c3.X"], d["sym.c3.C"], d["sym.c3.O"]
    args = (torch.zeros(1), torch.tensor([0.5]))
    ref = cond(X, C, onehot, *args)[0]
    low = cond(X.bfloat16(), C, onehot.bfloat16(), *args)[0]
    assert low.dtype == torch.bfloat16 and relative(low.float(), ref) < 1e-2
    sub = substructure()
    sub.rg = False
    ref = sub(d["sub.X_noisy"].float(), d["sub.C"], torch.zeros(1, 24, 20), *args)[0]
    low = sub(d["sub.X_noisy"].bfloat16(), d["sub.C"], torch.zeros(1, 24, 20, dtype=torch.bfloat16), *args)[0]
    assert low.dtype == torch.bfloat16 and relative(low.float(), ref) < 2e-2


def test_reconstruction_guidance_adds_energy_and_a_gradient_only_inside_tspan() -> None:
    d, _ = golden()
    cond = substructure()
    C = d["sub.C"]
    for t, inside in ((0.5, True), (0.05, False)):
        X = d["sub.X_noisy"].float().clone().requires_grad_(True)
        _, _, _, U, _ = cond(X, C, torch.zeros(1, 24, 20), torch.zeros(1), torch.tensor([t]))
        assert float(U.detach()[0]) > 0
        (grad,) = torch.autograd.grad(U.sum(), X)
        assert (float(grad.abs().max()) > 0) == inside


# -- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lengths", "group", "message"),
    [
        ([30, 30], "C3", "does not divide the 2 chain"),
        ([30, 30, 30], "D2", "does not divide the 3 chain"),
        ([30, 30, 20], "C3", "do not repeat 3 times"),
        ([30], "X7", "unknown symmetry group 'X7'"),
        ([30], "C0", "outside 1..60"),
        ([30] * 4, "T", "unknown symmetry group"),
    ],
)
def test_bad_symmetry_settings_are_errors_with_hints(lengths: list[int], group: str, message: str) -> None:
    with pytest.raises(ConditionerError, match=message) as e:
        asymmetric_unit(lengths, group)
    assert e.value.hint


def test_bad_conditioner_arguments_are_errors_with_hints() -> None:
    with pytest.raises(ConditionerError, match=r"shape \[n, 3, 3\]"):
        SymmetryConditioner(torch.eye(3), 1)
    with pytest.raises(ConditionerError, match="num_chain_neighbors"):
        SymmetryConditioner("C3", -1)
    with pytest.raises(ConditionerError, match="seed_idx"):
        SymmetryConditioner("C3", 2, seed_idx=3)
    with pytest.raises(ConditionerError, match="cannot be called"):
        ComposedConditioner([SymmetryConditioner("C3", 2), "C3"])


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ("A:500-510", "motif residues 'A:500-510': residue 500 is not in chain A"),
        ("Z:1-3", "motif residues 'Z:1-3': chain 'Z' does not exist"),
        ("A B", "the whole protein"),
        (torch.zeros(24, dtype=torch.bool), "empty"),
        (torch.ones(5, dtype=torch.bool), "shape"),
    ],
)
def test_motif_residues_outside_the_structure_are_errors(selection, message: str) -> None:
    protein, _ = motif_protein()
    with pytest.raises(ConditionerError, match=message) as e:
        SubstructureConditioner(protein, backbone(), selection)
    assert e.value.hint


def test_motif_residues_without_coordinates_are_errors() -> None:
    d, _ = golden()
    C = d["sub.C"].clone()
    C[0, 3] = -C[0, 3]
    protein = Protein.from_XCS(d["sub.X"], C, torch.zeros_like(C))
    with pytest.raises(ConditionerError, match="no backbone coordinates"):
        SubstructureConditioner(protein, backbone(), d["sub.D"][0])
    cond = SubstructureConditioner(protein, backbone(), "A:10-12")
    with pytest.raises(ConditionerError, match="has 24 residues but the sampler's system has 30"):
        cond(torch.zeros(1, 30, 4, 3), torch.ones(1, 30, dtype=torch.long), torch.zeros(1, 30, 20), 0, 0.5)


# -- CLI -----------------------------------------------------------------------------------------------------------


def zoo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "biozoo.cli.app", *args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd
    )


def test_zoo_sample_symmetry_writes_whole_assemblies(tmp_path: Path) -> None:
    from biozoo_chroma.tasks import read_header

    args = ["sample", "chroma/demo", "--steps", "30", "--inverse-temperature", "1", "--langevin-factor", "0"]
    done = zoo(*args, "-o", "out", "--chains", "20,20,20", "--symmetry", "C3", "-n", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name in ("sample_000.pdb", "sample_001.pdb"):
        protein = Protein(tmp_path / "out" / name)
        assert protein.chain_ids == ("A", "B", "C") and len(protein) == 60
        assert symmetry_rmsd(protein, point_group("C3")) < 0.01  # PDB's 3 decimals
        assert read_header(tmp_path / "out" / name)["symmetry"] == "C3"
    bad = zoo(*args, "-o", "bad", "--chains", "20,20", "--symmetry", "C3", cwd=tmp_path)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "error: symmetry C3 has 3 copies, which does not divide the 2 chain(s)" in bad.stderr
    assert "hint: give a multiple of 3 chains" in bad.stderr
    assert not (tmp_path / "bad").exists()


def radius_of_gyration(protein: Protein) -> float:
    ca = protein.to_XCS()[0][0, :, 1]
    return float((ca - ca.mean(0)).square().sum(-1).mean().sqrt())


def test_zoo_sample_motif_keeps_the_motif_and_scaffolds_around_it(tmp_path: Path) -> None:
    """`zoo sample --motif`: the motif's backbone and residue types exactly, the file's numbering, a compact
    scaffold."""
    from test_chroma_structures import TS50, needs_data

    if not TS50:
        pytest.skip(needs_data.kwargs["reason"])
    from biozoo_chroma.losses.rmsd import backbone_rmsd
    from biozoo_chroma.tasks import read_header

    native = Protein(TS50[0])  # 1ahsA: residues 126-251, so the selection is in the file's numbering
    chain, numbers = native.chain_ids[0], native.residue_ids
    selection = f"{chain}:{numbers[14]}-{numbers[24]}"
    args = ["sample", "chroma/demo", "--motif", str(TS50[0]), "--motif-residues", selection]
    done = zoo(*args, "-o", "out", "--steps", "100", "--design", "autoregressive", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    sample = Protein(tmp_path / "out" / "sample_000.pdb")
    assert sample.chain_ids == native.chain_ids and list(sample.residue_ids) == list(numbers)
    X = sample.to_XCS()[0]
    X0, C0, _ = native.to_XCS()
    motif = torch.zeros(len(native), dtype=torch.bool)
    motif[14:25] = True
    assert float(backbone_rmsd(X[:, motif], X0[:, motif], C0[:, motif])[0]) < 0.01  # PDB's 3 decimals
    assert sample.sequence()[14:25] == native.sequence()[14:25]  # the motif keeps its residues; the rest is designed
    assert float(backbone_rmsd(X[:, ~motif], X0[:, ~motif], C0[:, ~motif])[0]) > 1.0
    # the reference's substructure settings by default keep the scaffold together (the reverse SDE at its
    # defaults gives Rg ~200 Å here; the native chain has 13.8 Å)
    assert radius_of_gyration(sample) < 60.0
    header = read_header(tmp_path / "out" / "sample_000.pdb")
    assert (header["sde"], header["langevin_factor"], header["inverse_temperature"]) == ("langevin", "4.0", "8.0")
    assert (header["motif"], header["motif_residues"]) == (TS50[0].name, selection)
    given = zoo(*args, "-o", "given", "--steps", "5", "--inverse-temperature", "9", "--sde", "reverse_sde",
                "--format", "cif", cwd=tmp_path)  # fmt: skip  (mmCIF: 5 reverse-SDE steps leave PDB's columns)
    assert given.returncode == 0, given.stderr[-3000:]
    header = read_header(tmp_path / "given" / "sample_000.cif")
    assert (header["sde"], header["langevin_factor"], header["inverse_temperature"]) == ("reverse_sde", "4.0", "9.0")


@pytest.mark.parametrize(
    ("extra", "error", "hint"),
    [
        (["--motif-residues", "A:1-5"], "error: --motif-residues needs --motif", "hint: give both"),
        (["--motif", "{file}"], "error: --motif needs --motif-residues", "hint: give both"),
        (["--motif", "{file}", "--motif-residues", "A:130", "--length", "50"], "error: --motif samples the motif "
         "file's own chains", "hint: leave out --length/--chains"),
        (["--motif", "{file}", "--motif-residues", "A:130", "--symmetry", "C2"],
         "error: --motif and --symmetry cannot be combined", "hint: leave out --symmetry or --motif"),
        (["--motif", "missing.pdb", "--motif-residues", "A:130"], "error: the input missing.pdb is missing",
         "hint: give existing .pdb or .cif"),
        (["--motif", "{file}", "--motif-residues", "A:1-5"], "error: motif residues 'A:1-5': residue 1 is not in "
         "chain A", "hint: chain A has residues 126-251"),
        (["--motif", "{file}", "--motif-residues", "A"], "error: the motif selection is the whole protein",
         "hint: select only the residues to keep"),
    ],
)  # fmt: skip
def test_zoo_sample_motif_refuses_bad_options_with_hints(tmp_path: Path, extra: list[str], error: str, hint: str):
    from test_chroma_structures import TS50, needs_data

    if not TS50:
        pytest.skip(needs_data.kwargs["reason"])
    args = [a.replace("{file}", str(TS50[0])) for a in extra]
    done = zoo("sample", "chroma/demo", "-o", "out", "--steps", "2", *args, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert error in done.stderr and hint in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


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
