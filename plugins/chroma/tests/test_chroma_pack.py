"""Two-stage side-chain packing of the design network against the reference (generate-chroma 1.0.0), random weights.

The golden file comes from ``scripts/make_chroma_pack_golden.py`` (see golden/PROVENANCE.md): a reference
``GraphDesign`` with small public-like init_kwargs on two real all-atom systems (3e8mA; 4E43 with a gap). Run this
file as a script to print the parity table that docs/chroma.md quotes:

    .venv/bin/python plugins/chroma/tests/test_chroma_pack.py
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import pytest
import torch

from biozoo.errors import InvalidArgumentError
from biozoo.nn.checks import ConfigError
from biozoo_chroma.design import ChromaDesign
from biozoo_chroma.design.keys import convert_design_state_dict, split_design_state_dict
from biozoo_chroma.sidechains import SideChainError, chi_angles

GOLDEN = Path(__file__).parent / "golden"
TOL = 1e-5  # fp32, worst |difference| / max(1, max |reference|)
CHI_TOL = 1e-4  # rad: the reference's chi of packed atoms are read back through an acos dihedral (about sqrt(eps))
X_TOL = 1e-4  # Å


@cache
def golden() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    st = pytest.importorskip("safetensors")
    with st.safe_open(str(GOLDEN / "chroma_pack.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())  # noqa: SIM118 (not a dict)


def reference_state() -> dict[str, torch.Tensor]:
    return {k.removeprefix("ref."): v for k, v in golden()[0].items() if k.startswith("ref.")}


def init_kwargs() -> dict:
    return json.loads(golden()[1]["init_kwargs"])


def model(dtype: torch.dtype = torch.float32) -> ChromaDesign:
    """Our design network, side-chain stage included, loaded strictly with the reference's random weights."""
    m = ChromaDesign(**init_kwargs())
    m.load_state_dict(convert_design_state_dict(reference_state()), strict=True)
    return m.eval().to(dtype)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max() / max(1.0, float(b.float().abs().max())))


def absolute(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max())


def check_packing() -> dict[str, float]:
    """Every comparison with the reference: relative differences, chi in rad and X in Å as absolute ones."""
    d, meta = golden()
    m = model()
    X, C, S, t, perm = d["X"], d["C"], d["S"], d["t"], d["permute_idx"]
    out: dict[str, float] = {}
    with torch.no_grad():
        fwd = m(X, C, S, t=t, permute_idx=perm)
        out["teacher-forced logp_chi"] = rel(fwd["logp_chi"], d["fwd.logp_chi"])
        out["teacher-forced chi (rad)"] = absolute(fwd["chi"], d["fwd.chi"])
        out["chi mask mismatches"] = float((fwd["mask_chi"] != d["fwd.mask_chi"].bool()).sum())
        out["teacher-forced logp_S"] = rel(fwd["logp_S"], d["fwd.logp_S"])
        clamped = m.pack(X, C, S, clamped=True, permute_idx=perm)
        out["clamped sequential logp_chi"] = rel(clamped.logp_chi, d["clamped.logp_chi"])
        out["clamped rebuilt X (Å)"] = absolute(clamped.X, d["clamped.X"])
        for T in json.loads(meta["temperatures"]):
            got = m.pack(X, C, S, temperature_chi=T, permute_idx=perm, uniforms=d[f"pack.{T}.uniforms"])
            # the golden's chi are read back from the packed atoms, so ours are too
            out[f"T={T}: chi of the packed atoms (rad)"] = absolute(chi_angles(got.X, C, S)[0], d[f"pack.{T}.chi"])
            out[f"T={T}: chi bin mismatches"] = float(
                (torch.floor((got.chi + math.pi) / (2 * math.pi / 20)) * got.mask_chi
                 != torch.floor((d[f"pack.{T}.chi"] + math.pi) / (2 * math.pi / 20)) * got.mask_chi).sum()
            )  # fmt: skip
            out[f"T={T}: packed X (Å)"] = absolute(got.X, d[f"pack.{T}.X"])
            out[f"T={T}: logp_chi"] = rel(got.logp_chi, d[f"pack.{T}.logp_chi"])
        T = float(meta["masked_temperature"])
        masked = m.pack(X, C, S, temperature_chi=T, permute_idx=perm, mask_sample=d["masked.mask_sample"],
                        uniforms=d["masked.uniforms"])  # fmt: skip
        out["design mask: chi (rad)"] = absolute(masked.chi, d["masked.chi"])
        out["design mask: logp_chi"] = rel(masked.logp_chi, d["masked.logp_chi"])
    return out


# -- tests ------------------------------------------------------------------------------------------------------


def test_keys_cover_every_reference_key():
    """Every reference key loads (strict) or is a constant table checked and dropped; only norms are renamed."""
    ref = reference_state()
    ours, dropped = split_design_state_dict(ref)
    m = ChromaDesign(**init_kwargs())
    assert set(ours) == set(m.state_dict())
    assert {k.split(".")[0] for k in ours} >= {"embed_S", "encoder_S_gnn", "decoder_chi"}
    tables = ("_Z", "_parents", "_chi_ix", "_chi_atom_sets", "_symmetry_indices", "bins_left", "bins_right",
              "_t_atom", "_R_atom", "R_to_F")  # fmt: skip
    assert dropped and all(k.endswith(tables) for k in dropped)
    assert {k.split(".")[0] for k in dropped} >= {"chi_to_X", "X_to_chi", "loss_rmsd", "decoder", "decoder_chi"}
    for k, v in ref.items():
        if k not in dropped:
            assert torch.equal(ours[k.removesuffix("weights") + "weight" if k.endswith("norm_layer.weights") else k], v)
    bad = dict(ref)
    bad["decoder_chi.chi_to_X._Z"] = ref["decoder_chi.chi_to_X._Z"] + 1.0
    with pytest.raises(ValueError, match="decoder_chi.chi_to_X._Z"):
        split_design_state_dict(bad)


def test_packing_matches_the_reference():
    for what, diff in check_packing().items():
        limit = 0 if "mismatches" in what else X_TOL if "Å" in what else CHI_TOL if "rad" in what else TOL
        assert diff <= limit, (what, diff)


def test_sequential_clamped_equals_teacher_forced():
    """The step-by-step decoder scores the structure's own chi exactly as the parallel pass does (t = 0)."""
    d, _ = golden()
    m = model()
    with torch.no_grad():
        fwd = m(d["X"], d["C"], d["S"], permute_idx=d["permute_idx"])
        clamped = m.pack(d["X"], d["C"], d["S"], clamped=True, permute_idx=d["permute_idx"])
    assert rel(clamped.logp_chi, fwd["logp_chi"]) <= TOL
    assert torch.equal(clamped.chi, fwd["chi"].float())


def test_low_temperature_picks_the_most_likely_bins_and_keeps_the_backbone():
    """At T = 1e-3 every chi falls in a most likely bin (given the chi before it); backbone atoms never move."""
    d, _ = golden()
    m = model()
    X, C, S, perm = d["X"], d["C"], d["S"], d["permute_idx"]
    with torch.no_grad():
        out = m.pack(X, C, S, permute_idx=perm, generator=torch.Generator().manual_seed(1))
        enc = m.encode_sequence(m.encode(out.X, C), S)
        logp, log_probs = m.decoder_chi(S, out.chi, out.mask_chi, *enc, perm)
    # random weights give near-flat bins: a bin within a few T of the best can still win, one 20 T below cannot
    best = log_probs.max(-1).values * out.mask_chi
    assert (logp >= best - 20 * 1e-3).all() and (logp < best - 1e-5).sum() <= 2
    observed = (C > 0).unsqueeze(-1).unsqueeze(-1)
    assert torch.equal(out.X[:, :, :4] * observed, X[:, :, :4] * observed)
    assert torch.allclose(chi_angles(out.X, C, S)[0], out.chi * out.mask_chi, atol=CHI_TOL)


def test_pack_is_seeded_and_leaves_the_global_generator_alone():
    d, _ = golden()
    m = model()
    X, C, S = d["X"][:, :, :4], d["C"], d["S"]  # a backbone alone is enough when every residue is packed
    state = torch.get_rng_state()
    a = m.pack(X, C, S, temperature_chi=1.0, generator=torch.Generator().manual_seed(5))
    b = m.pack(X, C, S, temperature_chi=1.0, generator=torch.Generator().manual_seed(5))
    c = m.pack(X, C, S, temperature_chi=1.0)  # a fresh generator
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a.X, b.X) and torch.equal(a.permute_idx, b.permute_idx)
    assert not torch.equal(a.chi, c.chi)
    assert a.X.shape == (*C.shape, 14, 3)


def test_design_mask_keeps_the_other_residues_side_chains():
    d, _ = golden()
    m = model()
    X, C, S, keep = d["X"], d["C"], d["S"], d["masked.mask_sample"] <= 0
    out = m.pack(X, C, S, temperature_chi=1.0, mask_sample=d["masked.mask_sample"],
                 generator=torch.Generator().manual_seed(0))  # fmt: skip
    native, _ = chi_angles(X, C, S)
    assert torch.allclose(out.chi[keep], native[keep].float())
    assert not torch.allclose(out.chi[~keep], native[~keep].float(), atol=1e-2)


def test_bf16_is_finite_and_close_to_fp32():
    """bf16 weights and structure: logp_chi within 5% of max |fp32| on the same rounded coordinates (bf16 moves
    atoms by up to 0.1 Å, enough to move a chi to another bin), chi kept in float32, every output finite."""
    d, _ = golden()
    X, C, S, t, perm = d["X"], d["C"], d["S"], d["t"], d["permute_idx"]
    with torch.no_grad():
        ref = model()(X.bfloat16().float(), C, S, t=t, permute_idx=perm)["logp_chi"]
        low = model(torch.bfloat16)(X.bfloat16(), C, S, t=t, permute_idx=perm)["logp_chi"]
        packed = model(torch.bfloat16).pack(X.bfloat16(), C, S, permute_idx=perm, uniforms=d["pack.0.001.uniforms"])
    assert low.dtype == torch.bfloat16 and torch.isfinite(low.float()).all()
    assert rel(low, ref) < 0.05, rel(low, ref)
    assert packed.chi.dtype == torch.float32 and torch.isfinite(packed.X.float()).all()
    assert packed.X.dtype == torch.bfloat16


def test_bad_input_is_refused_with_a_hint():
    d, _ = golden()
    m = model()
    X, C, S = d["X"], d["C"], d["S"]
    unknown = C.clone()
    unknown[1] = -unknown[1].abs()  # system 1: every residue without structure (unknown residues, masked)
    no_side_chains = X.clone()
    no_side_chains[0, 3, 4:] = 0
    cases = [
        (InvalidArgumentError, dict(C=unknown), "nothing to pack in system(s) 1"),
        (InvalidArgumentError, dict(mask_sample=torch.zeros_like(S)), "is selected"),
        (InvalidArgumentError, dict(temperature_chi=0.0), "temperature_chi must be a finite number > 0"),
        (InvalidArgumentError, dict(temperature_chi=-1.0), "temperature_chi must be a finite number > 0"),
        (InvalidArgumentError, dict(temperature_chi=float("nan")), "temperature_chi must be a finite number > 0"),
        (InvalidArgumentError, dict(S=S + 20), "outside 0..19"),
        (InvalidArgumentError, dict(S=S[:, :5]), "S must be an integer sequence"),
        (SideChainError, dict(X=X[:, :, :4], clamped=True), "no side chains"),
        (SideChainError, dict(X=no_side_chains, clamped=True), "1 residue(s) whose side chains are read lack"),
        (SideChainError, dict(X=X[:, :, :4], mask_sample=torch.ones_like(S)), "no side chains"),
    ]
    for kind, kwargs, message in cases:
        args = {"X": X, "C": C, "S": S, **kwargs}
        with pytest.raises(kind) as info:
            m.pack(**args)
        assert message in info.value.message, (kwargs.keys(), info.value.message)
        assert info.value.hint
    one_stage = ChromaDesign(dim_nodes=8, dim_edges=8, num_neighbors=4, decoder_num_hidden=8, num_layers=1,
                             sidechains=False, separate_packing=False)  # fmt: skip
    with pytest.raises(InvalidArgumentError, match="no side-chain stage"):
        one_stage.pack(X, C, S)
    with pytest.raises(ConfigError, match="not implemented"):
        ChromaDesign(dim_nodes=8, dim_edges=8, num_neighbors=4, sidechain_embedding="mixed_chi_X")


if __name__ == "__main__":
    table = check_packing()
    width = max(map(len, table))
    for what, diff in table.items():
        print(f"{what:<{width}}  {diff:.2g}")
    d, _ = golden()
    with torch.no_grad():
        kw = {"t": d["t"], "permute_idx": d["permute_idx"]}
        a = model()(d["X"].bfloat16().float(), d["C"], d["S"], **kw)
        b = model(torch.bfloat16)(d["X"].bfloat16(), d["C"], d["S"], **kw)
    print("bf16 vs fp32 logp_chi:", round(rel(b["logp_chi"], a["logp_chi"]), 4))
