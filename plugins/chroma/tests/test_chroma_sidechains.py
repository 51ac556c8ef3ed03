"""biozoo_chroma.sidechains: geometry tables, chi <-> all-atom coordinates, chi binning and the chi decoder head.

Parity is against ``golden/chroma_sidechains.safetensors`` (the reference's outputs on real all-atom structures,
see PROVENANCE.md; made by scripts/make_chroma_sidechain_golden.py). Real structures (TS50, 4E43, 3PWP, 1BD2)
come from mdanalysistests as in test_chroma_structures.py; those tests skip without it.
Run ``python plugins/chroma/tests/test_chroma_sidechains.py`` to print the worst differences.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from biozoo.errors import BiozooError, InvalidArgumentError
from biozoo_chroma import Protein
from biozoo_chroma.constants import AA20_3, SIDECHAIN_ATOMS
from biozoo_chroma.sidechains import (
    NodePredictorChi,
    SideChainBuilder,
    SideChainError,
    atom_mask,
    bin_edges,
    bins_to_chi,
    chi_angles,
    chi_mask,
    chi_onehot,
    chi_to_bins,
    convert_sidechain_state_dict,
    missing_side_chains,
    protein_chi,
    sample_in_bins,
    swap_symmetric_atoms,
)
from biozoo_chroma.sidechains.tables import geometry_data

GOLDEN_FILE = Path(__file__).parent / "golden" / "chroma_sidechains.safetensors"
TOL = 1e-5


def _data_dir() -> Path | None:
    spec = importlib.util.find_spec("MDAnalysisTests")  # located without importing it (it needs MDAnalysis)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if folder.is_dir() else None


DATA = _data_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="mdanalysistests is not installed (./dev installs it)")
TS50 = sorted((DATA / "dssp").glob("????[A-Z].pdb.gz")) if DATA else []
COMPLEXES = [DATA / "4E43.pdb", DATA / "mmcif" / "3PWP.cif.gz", DATA / "mmcif" / "1BD2.cif.gz"] if DATA else []
pytestmark = pytest.mark.filterwarnings("ignore:.*elements were guessed:UserWarning")


def golden() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDEN_FILE))


def metadata() -> dict[str, str]:
    with safe_open(str(GOLDEN_FILE), "pt") as f:
        return f.metadata()


def head_from_golden(g: dict[str, torch.Tensor]) -> NodePredictorChi:
    head = NodePredictorChi(**json.loads(metadata()["head_kwargs"]))
    ref = {k[len("head.ref.") :]: v for k, v in g.items() if k.startswith("head.ref.")}
    head.load_state_dict(convert_sidechain_state_dict(ref), strict=True)
    return head.eval()


def wrapped(a: torch.Tensor) -> torch.Tensor:
    """Angle differences folded into [-pi, pi]."""
    return torch.atan2(torch.sin(a), torch.cos(a))


def comparisons() -> dict[str, float]:
    """Every parity comparison, name -> worst |difference| (the tests assert these; main() prints them)."""
    g = golden()
    X, C, S = g["X"], g["C"], g["S"]
    builder = SideChainBuilder()
    out: dict[str, float] = {}

    def diff(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
        out[name] = float((got.float() - want.float()).abs().max())

    chi, mask = chi_angles(X, C, S)
    diff("chi from real structures", chi, g["chi.real"])
    diff("chi mask", mask, g["chi.mask"])
    diff("atom mask", atom_mask(C, S), g["mask.atoms"])
    diff("build: native chi", builder(X[:, :, :4], C, S, g["chi.real"])[0], g["build.real"])
    diff("build: atom mask", builder(X[:, :, :4], C, S, g["chi.real"])[1], g["build.real.mask"].squeeze(-1))
    diff("build: ideal rotamers", builder(X[:, :, :4], C, S)[0], g["build.ideal"])
    diff("build: ideal, all-atom X given", builder(X, C, S)[0], g["build.ideal_from_all_atom"])
    diff("build: random chi, random S", builder(X[:, :, :4], C, g["random.S"], g["random.chi"])[0], g["build.random"])
    every = builder(g["every.X"], g["every.C"], g["every.S"], g["every.chi"])[0]
    diff("build: each of the 20 types on one backbone", every, g["every.build"])
    diff("chi of rebuilt (random)", chi_angles(g["build.random"], C, g["random.S"])[0], g["roundtrip.random.chi"])
    diff("chi of rebuilt (native chi)", chi_angles(g["build.real"], C, S)[0], g["roundtrip.real.chi"])
    diff("chi of rebuilt (20 types)", chi_angles(every, g["every.C"], g["every.S"])[0], g["every.roundtrip.chi"])
    diff("symmetric renaming", swap_symmetric_atoms(X, S), g["renamer.real"])
    head = head_from_golden(g)
    args = (S, g["chi.real"], g["chi.mask"], g["head.node_h"], g["head.mask_i"])
    with torch.no_grad():
        logp, log_probs = head(*args)
        diff("head: logp_chi", logp, g["head.eval.logp_chi"])
        diff("head: log_probs_chi", log_probs, g["head.eval.log_probs_chi"])
        head.train()
        diff("head: logp_chi, training (label smoothing)", head(*args)[0], g["head.train.logp_chi"])
        head.eval()
        temperature = float(metadata()["temperature"])
        sample_args = (S, g["chi.mask"], g["head.node_h"], g["head.mask_i"], temperature)
        diff("head: sample, given uniforms", head.sample(*sample_args, uniforms=g["head.sample.uniforms"]),
             g["head.sample.chi"])  # fmt: skip
        torch.manual_seed(int(metadata()["seed"]) + 2)
        diff("head: sample, global RNG seeded as the reference", head.sample(*sample_args), g["head.sample.chi"])
    return out


def test_parity_with_the_reference() -> None:
    """Builder, chi angles, masks, renaming and the chi head equal the reference's outputs (1e-5; measured: 0)."""
    worst = comparisons()
    assert len(worst) == 18
    bad = {k: v for k, v in worst.items() if not v <= TOL}
    assert not bad, bad


def test_data_file_is_the_reference_table() -> None:
    """The JSON's atoms are Chroma's 14-atom order, and its tables equal the reference's buffers exactly."""
    data = geometry_data()
    assert "generate-chroma 1.0.0" in data["provenance"]
    assert {k: tuple(v["atoms"]) for k, v in data["residues"].items()} == SIDECHAIN_ATOMS
    g = golden()
    reference = {k[len("ref.") :]: v for k, v in g.items() if k.startswith("ref.")}
    assert set(reference) == {
        "chi_to_X._Z", "chi_to_X._parents", "chi_to_X._chi_ix", "X_to_chi._chi_atom_sets",
        "loss_rmsd.renamer._symmetry_indices",
    }  # fmt: skip
    assert convert_sidechain_state_dict(reference) == {}  # every table checked against ours, then dropped
    for key in reference:
        tampered = dict(reference)
        tampered[key] = tampered[key].clone()
        tampered[key].view(-1)[7] += 1
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            convert_sidechain_state_dict(tampered)


def test_head_state_dict_maps_from_the_reference() -> None:
    """The reference head's keys map onto ours (strict); its bin edges are checked constants, not parameters."""
    g = golden()
    ref = {k[len("head.ref.") :]: v for k, v in g.items() if k.startswith("head.ref.")}
    mapped = convert_sidechain_state_dict({f"decoder_chi.decoder_chi.{k}": v for k, v in ref.items()})
    assert set(mapped) == {f"decoder_chi.decoder_chi.{k}" for k in ref if not k.startswith("bins_")}
    head = head_from_golden(g)
    assert set(head.state_dict()) == {k for k in ref if not k.startswith("bins_")}
    bad = dict(ref, bins_left=ref["bins_left"] + 1e-3)
    with pytest.raises(ValueError, match="bins_left"):
        convert_sidechain_state_dict(bad)


def test_chi_head_is_a_registered_component_with_typed_ports() -> None:
    """``chroma.chi_head`` builds from config and consumes the graph network's node embeddings, sizes included."""
    from biozoo.assembly import build_component
    from biozoo.manifest.schema import ComponentRef
    from biozoo.plugins.declarations import ComponentKind
    from biozoo.registry import get_registry
    from biozoo_chroma.graph import GraphNN

    registry = get_registry()
    assert registry.component_class("chroma.chi_head", ComponentKind.HEAD) is NodePredictorChi
    config = {"num_alphabet": 20, "num_chi_bins": 36, "dim_nodes": 24, "dim_hidden": 16}
    head = build_component(
        registry, ComponentRef(name="chroma.chi_head", config=config), ComponentKind.HEAD, "components.chi_head"
    )
    produced = {p.meaning: p for p in GraphNN(num_layers=1, dim_nodes=24, dim_edges=8).ports().outputs}
    node_h = next(p for p in head.ports().inputs if p.name == "node_h")
    assert produced[node_h.meaning].shape == node_h.shape
    assert head.ports().outputs[1].shape == ("B", "L", 4, 36)


def test_round_trip_chi_to_coordinates_to_chi() -> None:
    """Random chi on real backbones, every residue type: chi -> X -> chi gives the chi back (mod 2 pi)."""
    g = golden()
    X, C = g["every.X"], g["every.C"]
    S = g["every.S"]
    chi = (torch.rand((*S.shape, 4), generator=torch.Generator().manual_seed(0)) * 2 - 1) * math.pi
    built, atoms = SideChainBuilder()(X, C, S, chi)
    back, mask = chi_angles(built, C, S)
    assert mask.any(-1).sum() > 0.8 * mask.shape[0] * mask.shape[1]
    # acos-based dihedrals (the reference's) lose ~sqrt(float32 eps) where chi is near 0 or pi
    assert wrapped(back - chi)[mask].abs().max() < 2e-3
    assert wrapped(back - chi)[mask].abs().median() < 1e-5
    assert (back[~mask] == 0).all()
    assert torch.equal(atoms, atom_mask(C, S)) and (built[~atoms] == 0).all()
    assert torch.equal(built[:, :, :4][atoms[:, :, :4]], X[atoms[:, :, :4]])  # the backbone is kept as given


def test_masks_per_residue_type() -> None:
    """Chi counts (A, G: 0; R, K: 4) and atom counts per type; residues without structure have none."""
    S = torch.arange(20).view(1, 20)
    counts = chi_mask(torch.ones_like(S), S).sum(-1)[0].tolist()
    assert dict(zip("ACDEFGHIKLMNPQRSTVWY", counts, strict=True)) == dict(
        A=0, C=1, D=2, E=3, F=2, G=0, H=2, I=2, K=4, L=2, M=3, N=2, P=2, Q=3, R=4, S=1, T=1, V=1, W=2, Y=2
    )
    assert atom_mask(torch.ones_like(S), S).sum(-1)[0].tolist() == [4 + len(SIDECHAIN_ATOMS[n]) for n in AA20_3]
    for c in (0, -1):
        assert not chi_mask(torch.full_like(S, c), S).any() and not atom_mask(torch.full_like(S, c), S).any()


def test_builder_is_differentiable() -> None:
    """Gradients flow to chi (only chi a residue type has) and to the backbone; ideal geometry needs no chi."""
    g = golden()
    X, C, S = g["X"][:, :, :4].clone().requires_grad_(True), g["C"], g["S"]
    chi = g["chi.real"].clone().requires_grad_(True)
    built, _ = SideChainBuilder()(X, C, S, chi)
    built.pow(2).sum().backward()
    mask = chi_mask(C, S)
    assert torch.isfinite(chi.grad).all() and torch.isfinite(X.grad).all()
    assert (chi.grad[~mask] == 0).all() and (chi.grad[mask] != 0).float().mean() > 0.9
    assert X.grad[C > 0].abs().sum() > 0


def test_bins_both_directions() -> None:
    """chi -> (bin, offset) -> chi is the identity on [-pi, pi); the bin agrees with the reference's one-hot."""
    chi = torch.linspace(-math.pi, math.pi, 1001)[:-1] + 1e-4
    for n in (20, 36, 7):
        index, offset = chi_to_bins(chi, n)
        assert ((offset >= 0) & (offset < 1)).all() and index.min() == 0 and index.max() == n - 1
        assert (bins_to_chi(index, offset, n) - chi).abs().max() < 1e-5
        assert torch.equal(chi_onehot(chi, bin_edges(n)).argmax(-1), index)
    edges = bin_edges(20)
    assert chi_onehot(torch.tensor(math.pi), edges).sum() == 0  # the reference's convention: +pi is in no bin
    assert chi_to_bins(torch.tensor(math.pi), 20)[0] == 0  # wrapped: +pi is -pi
    # sampling at a very low temperature lands in the most likely bin, at the offset u gives inside it
    logits = torch.randn(5, 20, generator=torch.Generator().manual_seed(1))
    u = torch.full((5,), 0.5)
    sample = sample_in_bins(logits / 1e-4, u, edges)
    assert torch.equal(chi_to_bins(sample, 20)[0], logits.argmax(-1))
    assert (chi_to_bins(sample, 20)[1] - 0.5).abs().max() < 1e-3


def test_head_sampling_respects_masks_and_temperature() -> None:
    """Samples are zero where there is no chi; a generator makes them repeatable; temperature <= 0 is refused."""
    g = golden()
    head = head_from_golden(g)
    args = (g["S"], g["chi.mask"], g["head.node_h"], g["head.mask_i"])
    with torch.no_grad():
        a = head.sample(*args, 1e-3, generator=torch.Generator().manual_seed(3))
        b = head.sample(*args, 1e-3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and (a[~g["chi.mask"].bool()] == 0).all()
    assert a.abs().max() <= math.pi
    for bad in (0, -1.0, float("nan"), "1"):
        with pytest.raises(InvalidArgumentError, match="temperature_chi") as info:
            head.sample(*args, bad)  # type: ignore[arg-type]
        assert info.value.hint


def test_bf16() -> None:
    """Builder, chi angles and head run in bfloat16 and stay close to float32 on the same (rounded) inputs."""
    g = golden()
    X, C, S = g["X"].bfloat16(), g["C"], g["S"]
    chi = g["chi.real"].bfloat16()
    built, _ = SideChainBuilder()(X, C, S, chi)
    reference, _ = SideChainBuilder()(X.float(), C, S, chi.float())
    assert built.dtype == torch.bfloat16 and torch.isfinite(built.float()).all()
    assert (built.float() - reference).abs().max() / reference.abs().max() < 0.01
    angles, mask = chi_angles(X, C, S)
    assert angles.dtype == torch.bfloat16
    assert wrapped(angles.float() - chi_angles(X.float(), C, S)[0])[mask].abs().max() < 0.02
    head = head_from_golden(g)
    with torch.no_grad():
        full, _ = head(S, g["chi.real"], g["chi.mask"], g["head.node_h"], g["head.mask_i"])
        half = head.bfloat16()(S, g["chi.real"], g["chi.mask"], g["head.node_h"].bfloat16(), g["head.mask_i"])[0]
        assert half.dtype == torch.bfloat16
        assert (half.float() - full).abs().max() / full.abs().max() < 0.03
        sample = head.sample(S, g["chi.mask"], g["head.node_h"].bfloat16(), g["head.mask_i"], 0.5,
                             uniforms=g["head.sample.uniforms"])  # fmt: skip
        assert torch.isfinite(sample).all()


@needs_data
@pytest.mark.parametrize("path", TS50 + COMPLEXES, ids=lambda p: p.name.split(".")[0])
def test_real_structures_chi_and_rebuild(path: Path, tmp_path: Path) -> None:
    """Every TS50 chain, 4E43, 3PWP, 1BD2: chi from the file; rebuilding from them gives the chi back and
    side chains near the native ones (measured: median 0.13-0.21 A, RMSD 0.20-0.51 A per structure); the rebuilt
    all-atom structure is written and read back unchanged."""
    protein = Protein(path)
    missing = missing_side_chains(protein)
    if missing:  # residues with unresolved side-chain atoms: refused by name; the rest are used as tensors
        with pytest.raises(SideChainError, match=missing[0].split(" of ")[0]):
            protein_chi(protein)
        X, C, S = protein.to_XCS(all_atom=True)  # incomplete residues are C < 0 there
        chi, mask = chi_angles(X, C, S)
    else:
        X, C, S, chi, mask = protein_chi(protein)
    assert mask.sum() > 0
    built, atoms = SideChainBuilder()(X, C, S, chi)
    assert wrapped(chi_angles(built, C, S)[0] - chi)[mask].abs().max() < 2e-3
    # ideal bond geometry with native chi: side chains within a fraction of an angstrom of the native ones
    side = atoms.clone()
    side[:, :, :4] = False
    deviation = (built - X)[side].norm(dim=-1)
    assert deviation.median() < 0.25 and deviation.pow(2).mean().sqrt() < 0.6, deviation
    copy = Protein.from_XCS(built, C, S, chain_ids=protein.chain_ids, residue_ids=protein.residue_ids,
                            insertion_codes=protein.insertion_codes)  # fmt: skip
    copy.to_CIF(tmp_path / "rebuilt.cif")
    X2, C2, S2 = Protein(tmp_path / "rebuilt.cif").to_XCS(all_atom=True)
    assert torch.equal(C2, C) and torch.equal(S2, S) and (X2 - built).abs().max() < 1e-4


@needs_data
def test_incomplete_side_chains_are_named() -> None:
    """2xdgA has residues with unresolved side-chain atoms: chi are refused, naming those residues, with a hint."""
    protein = Protein(DATA / "dssp" / "2xdgA.pdb.gz")
    missing = missing_side_chains(protein)
    assert len(missing) == 5 and all(" of chain A" in m for m in missing)
    with pytest.raises(SideChainError) as info:
        protein_chi(protein)
    assert isinstance(info.value, BiozooError) and "5 residue(s) lack" in info.value.message
    assert all(m in info.value.message for m in missing) and "all-atom" in info.value.hint


def test_backbone_only_structure_is_refused(tmp_path: Path) -> None:
    """A file with backbone atoms only: asking for chi names the residues (the first 8, then a count)."""
    g = golden()
    X, C, S = g["X"][:1, :12, :4], g["C"][:1, :12], g["S"][:1, :12]
    Protein.from_XCS(X, C, S).to_PDB(tmp_path / "bb.pdb")
    protein = Protein(tmp_path / "bb.pdb")
    with pytest.raises(SideChainError) as info:
        protein_chi(protein)
    glycines = int((S == 5).sum())  # glycine has no side chain, so it is never missing one
    message = info.value.message
    assert message.startswith("no residue has a complete side chain") or f"{12 - glycines} residue(s)" in message
    assert "1 of chain A" in message and f"and {12 - glycines - 8} more" in message
    assert "SideChainBuilder" in info.value.hint


def main() -> None:
    for name, value in comparisons().items():
        print(f"{name:55s} {value:.2e}")


if __name__ == "__main__":
    main()


def test_tables_built_first_under_the_meta_device_are_cpu_tensors() -> None:
    """`zoo verify` assembles on the meta device: the cached tables must not become meta tensors there."""
    import importlib

    module = importlib.import_module("biozoo_chroma.sidechains.tables")
    module.tables.cache_clear()
    try:
        with torch.device("meta"):
            built = module.tables()
        assert built.internal.device.type == "cpu" and built.parents.device.type == "cpu"
        assert int(built.num_atoms.max()) == 14
    finally:
        module.tables.cache_clear()
