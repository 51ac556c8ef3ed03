"""biozoo_chroma.sidechains.losses: per-residue side-chain RMSD (with symmetric renaming) and side-chain clashes.

Parity is against ``golden/chroma_sidechain_losses.safetensors`` (the reference's ``LossSideChainRMSD`` and
``LossSidechainClashes`` on real structures with side chains rebuilt from noisy chi, on the same structures with
their symmetric atoms renamed, and on random inputs with gaps and padding; see PROVENANCE.md; made by
scripts/make_chroma_sidechain_losses_golden.py). TS50 chains come from mdanalysistests (skipped without it).
Run ``python plugins/chroma/tests/test_chroma_sidechain_losses.py`` to print the worst differences.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from test_chroma_sidechains import TS50, needs_data  # the TS50 chains, found as that file finds them

from biozoo.errors import BiozooError, InvalidArgumentError
from biozoo.nn.checks import ConfigError
from biozoo_chroma import Protein
from biozoo_chroma.constants import AA20_3
from biozoo_chroma.sidechains import SideChainBuilder, atom_mask, chi_angles, swap_symmetric_atoms
from biozoo_chroma.sidechains.losses import (
    RMSD_EPS,
    SideChainClashLoss,
    SideChainRMSDLoss,
    sidechain_clashes,
    sidechain_rmsd,
    vdw_radii_table,
)

GOLDEN_FILE = Path(__file__).parent / "golden" / "chroma_sidechain_losses.safetensors"
TOL = 1e-5
CASES = ("real", "flip", "ts50", "random")
#: bf16 vs fp32 on the same bf16-rounded inputs (measured worst: see main(); docs/chroma.md has the numbers)
BF16_RMSD_REL, BF16_SMOOTH_REL = 0.01, 0.01

pytestmark = pytest.mark.filterwarnings("ignore:.*elements were guessed:UserWarning")


def golden() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDEN_FILE))


def metadata() -> dict[str, str]:
    with safe_open(str(GOLDEN_FILE), "pt") as f:
        return f.metadata()


def case_inputs(g: dict[str, torch.Tensor], case: str) -> tuple[torch.Tensor, ...]:
    """``(X, X_target, C, S)`` of a golden case (``flip`` shares ``real``'s target, C and S)."""
    base = "real" if case == "flip" else case
    return g[f"{case}.X"], g[f"{base}.X_target"], g[f"{base}.C"], g[f"{base}.S"]


def comparisons() -> dict[str, float]:
    """Every parity comparison, name -> worst |difference| (relative to max(1, |reference|) for the smooth sums,
    which add hundreds of sigmoids in another order); the tests assert these, main() prints them."""
    g, meta = golden(), metadata()
    alpha, k = float(meta["smooth_cutoff_alpha"]), int(meta["num_neighbors"])
    rmsd_loss = SideChainRMSDLoss()
    clash_loss = SideChainClashLoss(k)
    smooth_loss = SideChainClashLoss(k, use_smooth_cutoff=True, smooth_cutoff_alpha=alpha)
    out: dict[str, float] = {}

    def diff(name: str, got: torch.Tensor, want: torch.Tensor, relative: bool = False) -> None:
        scale = want.abs().clamp(min=1.0) if relative else 1.0
        out[name] = max(out.get(name, 0.0), float(((got - want).abs() / scale).max()))

    for case in CASES:
        X, X_target, C, S = case_inputs(g, case)
        diff("rmsd", rmsd_loss(X, X_target, C, S), g[f"{case}.rmsd"])
        diff("rmsd, no symmetry", rmsd_loss(X, X_target, C, S, include_symmetry=False), g[f"{case}.rmsd.no_symmetry"])
        diff("clashes (own kNN graph)", clash_loss(X, C, S), g[f"{case}.clashes"])
        diff("clashes of the target", clash_loss(X_target, C, S), g[f"{case}.clashes.target"])
        causal = clash_loss(X, C, S, edge_idx=g[f"{case}.edge_idx"], mask_ij=g[f"{case}.mask_ij_causal"])
        diff("clashes, given graph + causal mask_ij", causal, g[f"{case}.clashes.causal"])
        diff("clashes, mask_j", clash_loss(X, C, S, mask_j=g[f"{case}.mask_j"]), g[f"{case}.clashes.mask_j"])
        diff("smooth clashes (relative)", smooth_loss(X, C, S), g[f"{case}.clashes.smooth"], relative=True)
        X_grad = X.clone().requires_grad_(True)
        rmsd_loss(X_grad, X_target, C, S).sum().backward()
        diff("d rmsd / dX", X_grad.grad, g[f"{case}.grad.rmsd"])
        X_grad = X.clone().requires_grad_(True)
        smooth_loss(X_grad, C, S).sum().backward()
        diff("d smooth clashes / dX", X_grad.grad, g[f"{case}.grad.clashes.smooth"])
    return out


def test_parity_with_the_reference() -> None:
    """RMSD (both namings or one), clashes (own graph, given graph with a causal mask, mask_j, smooth) and their
    gradients equal the reference's on real, renamed and random inputs (1e-5; measured: see main())."""
    worst = comparisons()
    assert len(worst) == 9
    bad = {k: v for k, v in worst.items() if not v <= TOL}
    assert not bad, bad


def test_golden_cases_are_not_trivial() -> None:
    """The goldens exercise what they claim: noisy rebuilds clash and miss, renaming matters, gaps are zero."""
    g = golden()
    mask = g["real.C"] > 0
    assert (g["real.rmsd"][mask] > 0.3).float().mean() > 0.5
    assert g["ts50.clashes"].sum() > 0 and g["random.clashes"].sum() > 0 and g["random.clashes.causal"].sum() > 0
    assert (g["random.clashes.causal"] <= g["random.clashes"]).all()
    assert (g["flip.rmsd.no_symmetry"] > g["flip.rmsd"] + 0.5).any()
    assert (g["random.rmsd"][g["random.C"] <= 0] == 0).all() and (g["random.C"] < 0).any()


def test_symmetric_renaming_costs_nothing() -> None:
    """A structure against itself renamed: every residue scores sqrt(eps) (the smoothing floor) with symmetry, and
    exactly the symmetric residues (Asp, Glu, Phe, Tyr, Arg) score more without it."""
    g = golden()
    _, X, C, S = case_inputs(g, "real")
    flipped = swap_symmetric_atoms(X, S)
    floor = math.sqrt(RMSD_EPS)
    present = C > 0
    with_symmetry = sidechain_rmsd(flipped, X, C, S)
    assert torch.allclose(with_symmetry[present], torch.full_like(with_symmetry[present], floor), atol=1e-6)
    symmetric = torch.tensor([AA20_3.index(n) for n in ("ASP", "GLU", "PHE", "TYR", "ARG")])
    is_symmetric = torch.isin(S, symmetric) & present
    without = sidechain_rmsd(flipped, X, C, S, include_symmetry=False)
    assert (without[is_symmetric] > floor + 0.5).all()
    assert torch.allclose(without[present & ~is_symmetric], with_symmetry[present & ~is_symmetric])


def test_rmsd_values_and_masks() -> None:
    """A shift of d Angstrom of every side-chain atom gives sqrt(n d^2 / (n + eps) + eps); gaps and padding are 0;
    glycine (no side-chain atoms) scores the floor sqrt(eps), as in the reference."""
    g = golden()
    X, C, S = g["random.X_target"], g["random.C"], g["random.S"]
    shifted = X.clone()
    shifted[:, :, 4:, 0] += 2.0
    n = atom_mask(C, S)[:, :, 4:].sum(-1).float()
    expected = torch.sqrt(n * 4.0 / (n + RMSD_EPS) + RMSD_EPS) * (C > 0)
    rmsd = sidechain_rmsd(shifted, X, C, S, include_symmetry=False)
    assert torch.allclose(rmsd, expected, atol=1e-5)
    glycine = torch.full_like(S, AA20_3.index("GLY"))
    assert torch.allclose(sidechain_rmsd(shifted, X, C, glycine)[C > 0], torch.tensor(math.sqrt(RMSD_EPS)))


def _two_residues(types: tuple[str, str], atom_i: int, atom_j: int, distance: float) -> tuple[torch.Tensor, ...]:
    """Residue 0 and 1 with every atom on its own far-apart grid point, except atom slot ``atom_i`` of residue 0
    placed ``distance`` Angstrom from slot ``atom_j`` of residue 1."""
    grid = torch.stack(torch.meshgrid(torch.arange(2.0), torch.arange(14.0), indexing="ij"), -1)  # [2, 14, 2]
    X = torch.cat([grid * 8.0, torch.zeros(2, 14, 1)], -1).unsqueeze(0)  # atoms 8 A apart
    X[0, 0, atom_i] = X[0, 1, atom_j] + torch.tensor([distance, 0.0, 0.0])
    S = torch.tensor([[AA20_3.index(types[0]), AA20_3.index(types[1])]])
    return X, torch.ones(1, 2, dtype=torch.long), S


@pytest.mark.parametrize(
    ("types", "atom_i", "atom_j", "distance", "expected"),
    [
        (("ALA", "GLY"), 4, 0, 1.90, [1, 0]),  # CB (C, 1.7) to N (1.55): cutoff 1.975 A; counted at i only
        (("ALA", "GLY"), 4, 0, 2.05, [0, 0]),  # just outside the cutoff
        (("CYS", "GLY"), 5, 1, 2.05, [1, 0]),  # SG (S, 1.8) to CA (C, 1.7): cutoff 2.10 A
        (("ALA", "ALA"), 4, 4, 1.50, [1, 1]),  # side chain to side chain: counted at both residues
        (("GLY", "ALA"), 1, 4, 1.50, [0, 1]),  # backbone of i to side chain of j: only j's outgoing clash
        (("GLY", "GLY"), 1, 1, 0.50, [0, 0]),  # backbone to backbone never counts
        (("GLY", "ALA"), 4, 0, 0.50, [0, 0]),  # slot 4 of glycine is no atom
    ],
)
def test_clash_rules(types: tuple[str, str], atom_i: int, atom_j: int, distance: float, expected: list[int]) -> None:
    """Which pairs count, with van der Waals radii by element and PyMOL's cutoff (r_i + r_j) / 2 + 0.35."""
    X, C, S = _two_residues(types, atom_i, atom_j, distance)
    assert sidechain_clashes(X, C, S).tolist() == [[float(v) for v in expected]]


def test_clash_masks_self_and_neighbours() -> None:
    """A residue's own atoms are no clash (it is in its own kNN list); mask_j and mask_ij remove neighbours."""
    X, C, S = _two_residues(("ALA", "ALA"), 4, 4, 1.5)
    X_self = X.clone()
    X_self[0, 0, 4] = X_self[0, 0, 1] + 0.5  # CB on its own CA
    X_self[0, 1, 4] = X_self[0, 1, 1] + 0.5
    assert sidechain_clashes(X_self, C, S).sum() == 0
    assert sidechain_clashes(X, C, S, mask_j=torch.tensor([[1.0, 0.0]])).tolist() == [[0.0, 1.0]]
    edge_idx = torch.tensor([[[0, 1], [1, 0]]])
    mask_ij = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # residue 0's edge to 1 is off (a causal mask)
    assert sidechain_clashes(X, C, S, edge_idx=edge_idx, mask_ij=mask_ij).tolist() == [[0.0, 1.0]]
    gap = torch.tensor([[1, -1]])
    assert sidechain_clashes(X, torch.cat([C[:, :1], gap[:, 1:]], 1), S).sum() == 0


def test_vdw_radii_by_element() -> None:
    """Radii follow each slot's element: backbone N/CA/C/O, Cys SG and Met SD sulfur, His ND1 nitrogen."""
    radii = vdw_radii_table()
    assert radii[AA20_3.index("GLY")].tolist()[:5] == pytest.approx([1.55, 1.7, 1.7, 1.52, 0.0])
    assert radii[AA20_3.index("CYS"), 5] == pytest.approx(1.8) and radii[AA20_3.index("MET"), 6] == pytest.approx(1.8)
    assert radii[AA20_3.index("HIS"), 6] == pytest.approx(1.55)


def test_differentiable() -> None:
    """RMSD and smooth clashes have finite gradients (also at X == X_target, a tie of the two namings); the hard
    count carries none."""
    g = golden()
    X, X_target, C, S = case_inputs(g, "ts50")
    X_same = X_target.clone().requires_grad_(True)
    sidechain_rmsd(X_same, X_target, C, S).sum().backward()
    assert torch.isfinite(X_same.grad).all()
    X_grad = X.clone().requires_grad_(True)
    smooth = sidechain_clashes(X_grad, C, S, smooth_alpha=2.0)
    smooth.sum().backward()
    assert torch.isfinite(X_grad.grad).all() and X_grad.grad.abs().sum() > 0
    assert not sidechain_clashes(X.clone().requires_grad_(True), C, S).requires_grad


def test_bf16() -> None:
    """bf16 inputs: computed in float32 on the rounded coordinates, returned in bf16; clash counts equal fp32's on
    the same rounded inputs, RMSD and smooth counts within 1% (bf16 output rounding); gradients flow."""
    g = golden()
    for case in CASES:
        X, X_target, C, S = case_inputs(g, case)
        X, X_target = X.bfloat16(), X_target.bfloat16()
        half, full = sidechain_rmsd(X, X_target, C, S), sidechain_rmsd(X.float(), X_target.float(), C, S)
        assert half.dtype == torch.bfloat16
        assert ((half.float() - full).abs() / full.clamp(min=1.0)).max() < BF16_RMSD_REL
        assert torch.equal(sidechain_clashes(X, C, S).float(), sidechain_clashes(X.float(), C, S))
        smooth_half = sidechain_clashes(X, C, S, smooth_alpha=2.0)
        smooth_full = sidechain_clashes(X.float(), C, S, smooth_alpha=2.0)
        assert ((smooth_half.float() - smooth_full).abs() / smooth_full.clamp(min=1.0)).max() < BF16_SMOOTH_REL
    X_grad = X.clone().requires_grad_(True)
    (sidechain_rmsd(X_grad, X_target, C, S).sum() + sidechain_clashes(X_grad, C, S, smooth_alpha=2.0).sum()).backward()
    assert X_grad.grad.dtype == torch.bfloat16 and torch.isfinite(X_grad.grad.float()).all()


def test_no_host_sync_with_check_false() -> None:
    """With check=False both losses run on meta tensors, where any .item()/bool()/nonzero() would raise: no host
    syncs (the default check=True validates once on entry, which needs them)."""
    g = golden()
    X, X_target, C, S = (t.to("meta") for t in case_inputs(g, "random"))
    assert sidechain_rmsd(X, X_target, C, S, check=False).shape == C.shape
    assert sidechain_clashes(X, C, S, mask_j=g["random.mask_j"].to("meta"), check=False).shape == C.shape
    with pytest.raises((RuntimeError, NotImplementedError)):  # the checks do sync, proving the meta probe works
        sidechain_rmsd(X, X_target, C, S)


def _bad_inputs() -> list[tuple[str, dict, str]]:
    g = golden()
    X, X_target, C, S = case_inputs(g, "random")
    empty = C.clone()
    empty[1] = torch.where(empty[1] > 0, -empty[1], empty[1])  # protein 1: every residue masked
    edge_idx = g["random.edge_idx"]
    return [
        ("X_target shape", {"X_target": X_target[:, :-1]}, "X_target must have X's shape"),
        ("backbone-only X", {"X": X[:, :, :4], "X_target": X_target[:, :, :4]}, "all-atom tensor"),
        ("S shape", {"S": S[:, :-1]}, "S must be an integer sequence"),
        ("S float", {"S": S.float()}, "S must be an integer sequence"),
        ("S out of range", {"S": S + 20}, "outside 0..19"),
        ("C shape", {"C": C[:1]}, "C must be an integer chain map"),
        ("all-masked protein", {"C": empty}, "batch element(s) [1] have no residue with coordinates"),
        ("mask_j shape", {"mask_j": torch.ones(2, 3)}, "mask_j must be [B, L]"),
        ("edge_idx shape", {"edge_idx": edge_idx[:1]}, "edge_idx must be [B, L, K]"),
        ("edge_idx float", {"edge_idx": edge_idx.float()}, "integer residue indices"),
        ("mask_ij shape", {"edge_idx": edge_idx, "mask_ij": torch.ones(2, 48, 3)}, "mask_ij must have"),
        ("mask_ij alone", {"mask_ij": g["random.mask_ij"]}, "without the edge_idx"),
    ]


@pytest.mark.parametrize(("name", "change", "message"), _bad_inputs(), ids=[c[0] for c in _bad_inputs()])
def test_bad_input_is_refused_with_a_hint(name: str, change: dict, message: str) -> None:
    """Mismatched shapes, wrong dtypes, bad residue types and an all-masked protein: BiozooError with a hint, from
    whichever loss takes the argument (an all-masked protein would otherwise score 0 silently)."""
    g = golden()
    X, X_target, C, S = case_inputs(g, "random")
    args = {"X": X, "X_target": X_target, "C": C, "S": S} | change
    graph_args = {k: args[k] for k in ("edge_idx", "mask_ij", "mask_j") if k in args}
    calls = []
    if not graph_args:
        calls.append(lambda: sidechain_rmsd(args["X"], args["X_target"], args["C"], args["S"]))
    if "X_target" not in change:
        calls.append(lambda: sidechain_clashes(args["X"], args["C"], args["S"], **graph_args))
    for call in calls:
        with pytest.raises(InvalidArgumentError) as info:
            call()
        assert isinstance(info.value, BiozooError) and message in info.value.message and info.value.hint


def test_bad_config_names_the_argument() -> None:
    with pytest.raises(ConfigError, match="num_neighbors"):
        SideChainClashLoss(num_neighbors=0)
    with pytest.raises(ConfigError, match="smooth_cutoff_alpha"):
        SideChainClashLoss(use_smooth_cutoff=True, smooth_cutoff_alpha=-1.0)
    with pytest.raises(ConfigError, match="eps"):
        SideChainRMSDLoss(eps=0.0)


@needs_data
@pytest.mark.parametrize("path", TS50[:10], ids=lambda p: p.name.split(".")[0])
def test_real_chains_rebuilt_from_noisy_chi(path: Path) -> None:
    """TS50 chains, side chains rebuilt by the builder from the native chi plus noise: the mean RMSD grows with
    the noise; ideal geometry with native chi stays within ~0.5 A; native side chains barely clash."""
    X, C, S = Protein(path).to_XCS(all_atom=True)  # residues with unresolved side chains are C < 0
    chi, _ = chi_angles(X, C, S)
    present = C > 0
    generator = torch.Generator().manual_seed(0)
    means = []
    for noise in (0.0, 0.3, 1.0):
        noisy = chi + noise * torch.randn(chi.shape, generator=generator)
        built, _ = SideChainBuilder()(X, C, S, noisy)
        means.append(float(sidechain_rmsd(built, X, C, S)[present].mean()))
    assert means[0] < 0.5 and means[0] < means[1] < means[2], means
    assert float(sidechain_clashes(X, C, S)[present].mean()) < 0.2


def main() -> None:
    for name, value in comparisons().items():
        print(f"{name:45s} {value:.2e}")


if __name__ == "__main__":
    main()
