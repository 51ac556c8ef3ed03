"""The design network and Potts design against the reference (generate-chroma 1.0.0) on random weights (rung 6).

The golden files come from ``scripts/make_chroma_design_golden.py`` (see golden/PROVENANCE.md): a reference
``GraphDesign`` with small public-like init_kwargs on a two-chain and a one-chain system. Run this file as a
script to print the parity table that docs/chroma.md quotes:

    .venv/bin/python plugins/chroma/tests/test_chroma_design.py
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from biozoo.errors import BiozooError, InvalidArgumentError
from biozoo_chroma.design import ChromaDesign, is_chi_stage_key, split_design_state_dict
from biozoo_chroma.design.complexity import lcp_penalty
from biozoo_chroma.design.potts import (
    fold_symmetry,
    potts_energy,
    proposal_dlmc,
    proposal_gibbs,
    pseudolikelihood,
    sample_potts,
)

GOLDEN = Path(__file__).parent / "golden"
TOL = 1e-5  # fp32, worst |difference| / max(1, max |reference|)


@cache
def golden() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    st = pytest.importorskip("safetensors")
    tensors: dict[str, torch.Tensor] = {}
    for name in ("chroma_design", "chroma_design_J"):
        with st.safe_open(str(GOLDEN / f"{name}.safetensors"), "pt") as f:
            tensors.update({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118 (not a dict)
            meta = dict(f.metadata())
    return tensors, meta


def reference_state() -> dict[str, torch.Tensor]:
    return {k.removeprefix("ref."): v for k, v in golden()[0].items() if k.startswith("ref.")}


def model(dtype: torch.dtype = torch.float32) -> ChromaDesign:
    """Our design network from the golden init_kwargs, loaded strictly with the reference's random weights."""
    m = ChromaDesign(**json.loads(golden()[1]["init_kwargs"]))
    ours, _ = split_design_state_dict(reference_state())
    m.load_state_dict(ours, strict=True)
    return m.eval().to(dtype)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max() / max(1.0, float(b.float().abs().max())))


# Each check returns {what: worst relative difference}; discrete outputs count mismatches (must be 0).


def check_network() -> dict[str, float]:
    d, _ = golden()
    m = model()
    X, C, t, perm = d["X"], d["C"], d["t"], d["permute_idx"]
    out: dict[str, float] = {}
    with torch.no_grad():
        enc = m.encode(X, C, t)
        out["edge_idx mismatches"] = float((enc.edge_idx != d["enc.edge_idx"]).sum())
        out["encoder node_h"] = rel(enc.node_h, d["enc.node_h"])
        out["encoder edge_h"] = rel(enc.edge_h, d["enc.edge_h"])
        out["encoder node_h, t=None"] = rel(m.encode(X, C).node_h, d["enc_t0.node_h"])
        h, J = m.potts(enc)
        out["Potts h"], out["Potts J"] = rel(h, d["h"]), rel(J, d["J"])
        rows: dict[str, list[torch.Tensor]] = {k: [] for k in ("U", "U_i", "pl", "potts", "marg", "ar")}
        for S in d["S_eval"]:
            U, U_i = potts_energy(S, h, J, enc.edge_idx)
            o = m(X, C, S, t=t, permute_idx=perm)
            for k, v in zip(rows, (U, U_i, pseudolikelihood(S, h, J, enc.edge_idx), o["logp_S_potts"],
                                   o["logp_S_marginals"], o["logp_S"]), strict=True):  # fmt: skip
                rows[k].append(v)
        stack = {k: torch.stack(v) for k, v in rows.items()}
        out["energy U(S)"] = rel(stack["U"], d["energy.U"])
        out["local energies U_i"] = rel(stack["U_i"], d["energy.U_i"])
        out["pseudo-likelihood"] = rel(stack["pl"], d["pseudolikelihood"])
        out["logp_S_potts"] = rel(stack["potts"], d["logp_S_potts"])
        out["logp_S_marginals"] = rel(stack["marg"], d["logp_S_marginals"])
        out["logp_S (teacher forced)"] = rel(stack["ar"], d["logp_S"])
        args = (C, d["S_eval"][0], *enc, perm)
        out["logp_S (sequential, clamped)"] = rel(m.decoder.decode(*args, sample=False)[1], d["ar.clamped_logp_S"])
        gen = torch.Generator().manual_seed(0)
        S_low, logp_low = m.decoder.decode(*args, temperature=1e-4, generator=gen)
        present = enc.mask_i > 0  # padding and gaps have uniform log-probabilities: any type is a fair draw
        out["AR sample at T=1e-4 mismatches"] = float((S_low != d["ar.S_lowT"])[present].sum())
        out["AR sample at T=1e-4 logp_S"] = rel(logp_low, d["ar.logp_S_lowT"])
    return out


def check_potts_maths() -> dict[str, float]:
    d, _ = golden()
    h, J, edge_idx, C = d["h"], d["J"], d["enc.edge_idx"], d["C"]
    out: dict[str, float] = {}
    assert float(d["proposal.penalty"]) > 0  # the penalty's gradient is part of what the proposals compare
    for name, fn in (("dlmc", proposal_dlmc), ("gibbs", proposal_gibbs)):
        U, logq = fn(d["proposal.S"], h[:1], J[:1], edge_idx[:1], 0.5, lambda x: lcp_penalty(x, C[:1], w=8))
        out[f"{name} proposal U / log q"] = max(rel(U, d[f"proposal.{name}.U"]), rel(logq, d[f"proposal.{name}.logq"]))
    onehot = F.one_hot(d["lcp.S"], 20).float().requires_grad_(True)
    U = lcp_penalty(onehot, d["lcp.C"])
    (grad,) = torch.autograd.grad(U.sum(), [onehot])
    out["LCP penalty (one-hot / states)"] = max(rel(U.detach(), d["lcp.U"]),
                                                rel(lcp_penalty(d["lcp.S"], d["lcp.C"]), d["lcp.U_long"]))  # fmt: skip
    out["LCP gradient"] = rel(grad, d["lcp.grad"])
    h_f, J_f, e_f, mi_f, mij_f = fold_symmetry(2, h, J, edge_idx, d["enc.mask_i"], d["enc.mask_ij"])
    out["fold h"] = rel(h_f, d["fold.h"])
    out["fold masks, edge_idx mismatches"] = float(
        (mi_f != d["fold.mask_i"]).sum() + (mij_f != d["fold.mask_ij"]).sum() + (e_f != d["fold.edge_idx"]).sum()
    )
    n = h_f.shape[1]
    U_f = torch.stack([potts_energy(S[:, :n], h_f, J_f, e_f)[0] for S in d["S_eval"]])
    out["fold energies"] = rel(U_f, d["fold.U"])
    return out


def sampled_energies() -> dict[str, torch.Tensor]:
    """Our final energies at the golden's matched sampling settings, one run per seed."""
    d, meta = golden()
    cfg = json.loads(meta["sampling"])
    k = cfg["coupling_scale"]
    h, J = k * d["h"], k * d["J"]
    out = {}
    for proposal in ("dlmc", "chromatic"):
        runs = []
        for seed in range(cfg["seeds"]):
            _, U = sample_potts(
                h, J, d["enc.edge_idx"], d["enc.mask_i"], d["enc.mask_ij"], S=d["S_eval"][0],
                num_sweeps=cfg[f"sweeps_{proposal}"], temperature=cfg["temperature"],
                temperature_init=cfg["temperature_init"], proposal=proposal,
                generator=torch.Generator().manual_seed(seed),
            )  # fmt: skip
            runs.append(U)
        out[proposal] = torch.stack(runs)
    return out


# -- tests ------------------------------------------------------------------------------------------------------


def test_keys_map_mechanically_onto_ours():
    """Every reference key is ours (strict load, side-chain stage included) or a constant table checked and
    dropped; nothing else is renamed (test_chroma_pack.py checks the side-chain stage's keys in detail)."""
    ref = reference_state()
    ours, dropped = split_design_state_dict(ref)
    m = ChromaDesign(**json.loads(golden()[1]["init_kwargs"]))
    assert set(ours) == set(m.state_dict())
    assert {k.split(".")[0] for k in ours if is_chi_stage_key(k)} == {"embed_S", "encoder_S_gnn", "decoder_chi"}
    # the graph modules' rules and the side-chain tables only: norms' .weights renamed, constants (checked) dropped
    renamed = {k for k in ref if k not in dropped and k not in ours}
    rules = ("norm_layer.weights", "frame_builder._t_atom", "frame_builder._R_atom", "rmsd.R_to_F")
    assert renamed | {k for k in dropped if not is_chi_stage_key(k)} == {k for k in ref if k.endswith(rules)}
    for k in ours:
        assert torch.equal(ours[k], ref.get(k, ref.get(k.removesuffix("weight") + "weights")))


def test_network_matches_the_reference():
    out = check_network()
    for what, diff in out.items():
        assert diff <= (0 if "mismatches" in what else TOL), (what, diff)


def test_potts_maths_matches_the_reference():
    for what, diff in check_potts_maths().items():
        assert diff <= (0 if "mismatches" in what else TOL), (what, diff)


def test_lcp_is_per_system_where_the_reference_repeats_the_first():
    """Batched, every system gets its own penalty; the reference gives each the first system's (documented)."""
    d, _ = golden()
    ours = lcp_penalty(d["lcp.S"], d["lcp.C"])
    assert rel(ours, d["lcp.U_long"]) <= TOL and len(set(ours.tolist())) == 3
    assert torch.allclose(d["lcp.U_batched"], d["lcp.U_long"][:1].expand(3))


def test_sampled_energies_match_the_reference_statistically():
    """Mean final energy per system within 4 standard errors of the reference's (different random streams)."""
    d, _ = golden()
    ours = sampled_energies()
    for proposal, U in ours.items():
        ref = d[f"stats.U_{proposal}"]
        n = U.shape[0]
        se = ((U.var(0) + ref.var(0)) / n).sqrt()
        assert ((U.mean(0) - ref.mean(0)).abs() <= 4 * se).all(), (proposal, U.mean(0), ref.mean(0), se)
        # and far below random sequences: sampling works at all
        assert (U.mean(0) < d["stats.U_random"].mean(0) - 5 * d["stats.U_random"].std(0)).all()


def test_sampling_is_seeded_and_leaves_the_global_generator_alone():
    d, _ = golden()
    args = (d["h"], d["J"], d["enc.edge_idx"], d["enc.mask_i"], d["enc.mask_ij"])
    state = torch.get_rng_state()
    a = sample_potts(*args, S=d["S_eval"][0], num_sweeps=3, generator=torch.Generator().manual_seed(1))
    b = sample_potts(*args, S=d["S_eval"][0], num_sweeps=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("proposal", ["dlmc", "chromatic"])
def test_design_potts_keeps_fixed_positions_bans_residues_and_folds_symmetry(proposal):
    d, _ = golden()
    m = model()
    X, C, S = d["X"], d["C"], d["S_eval"][0]
    mask = torch.ones_like(S)
    mask[:, :5] = 0
    gen = torch.Generator().manual_seed(3)
    out, _ = m.design_potts(X, C, S, mask_sample=mask, ban_S="CW", num_sweeps=4, proposal=proposal, generator=gen)
    assert torch.equal(out[:, :5], S[:, :5])
    free = out[:, 5:]
    assert not (free == 1).any() and not (free == 18).any()  # C, W
    sym, _ = m.design_potts(X, C, symmetry_order=2, num_sweeps=4, proposal=proposal, generator=gen)
    assert torch.equal(sym[:, :12], sym[:, 12:])


def test_bad_input_is_refused_with_a_hint():
    d, _ = golden()
    m = model()
    X, C = d["X"], d["C"]
    cases = [
        (dict(ban_S="ACDEFGHIKLMNPQRSTVWY"), "every residue type is banned"),
        (dict(ban_S="AXZ"), "unknown residues"),
        (dict(temperature=0.0), "temperature must be a finite number > 0"),
        (dict(temperature=-1.0), "temperature must be a finite number > 0"),
        (dict(symmetry_order=3), "does not divide the number of chains (2)"),
        (dict(symmetry_order=5), "does not divide"),
        (dict(proposal="gibbs"), "unknown Potts proposal"),
        (dict(num_sweeps=0), "sweeps must be an integer >= 1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidArgumentError, match=None) as info:
            m.design_potts(X, C, num_sweeps=kwargs.pop("num_sweeps", 2), **kwargs)
        assert message in info.value.message, (kwargs, info.value.message)
        assert info.value.hint
    # a per-position mask whose allowed residues are all banned
    allowed = torch.zeros(*C.shape, 20)
    allowed[:, :, [1, 18]] = 1
    with pytest.raises(BiozooError, match="no residue to choose"):
        m.design_potts(X, C, d["S_eval"][0], mask_sample=allowed, ban_S="CW", num_sweeps=2)
    no_potts = ChromaDesign(dim_nodes=8, dim_edges=8, num_neighbors=4, decoder_num_hidden=8, num_layers=1)
    with pytest.raises(InvalidArgumentError, match="no potts head"):
        no_potts.design_potts(X, C, num_sweeps=2)


def test_bf16_is_finite_and_close_to_fp32():
    """bf16 weights and embeddings: every output finite; h, J and the log-likelihoods within 5% of max |fp32|."""
    d, _ = golden()
    X, C, t, perm, S = d["X"], d["C"], d["t"], d["permute_idx"], d["S_eval"][0]
    with torch.no_grad():
        ref = model()(X, C, S, t=t, permute_idx=perm)
        low = model(torch.bfloat16)(X.bfloat16(), C, S, t=t, permute_idx=perm)
    for key in ("h", "J", "logp_S_potts", "logp_S_marginals", "logp_S"):
        assert low[key].dtype == torch.bfloat16 and torch.isfinite(low[key].float()).all(), key
        assert rel(low[key], ref[key]) < 0.05, (key, rel(low[key], ref[key]))


if __name__ == "__main__":
    table = {**check_network(), **check_potts_maths()}
    width = max(map(len, table))
    for what, diff in table.items():
        print(f"{what:<{width}}  {diff:.2g}")
    d, _ = golden()
    for proposal, U in sampled_energies().items():
        ref = d[f"stats.U_{proposal}"]
        print(f"{proposal}: ours {U.mean(0).tolist()} ± {U.std(0).tolist()}; reference {ref.mean(0).tolist()} ± "
              f"{ref.std(0).tolist()}; random {d['stats.U_random'].mean(0).tolist()}")
    with torch.no_grad():
        args = (d["X"], d["C"], d["S_eval"][0])
        kw = {"t": d["t"], "permute_idx": d["permute_idx"]}
        a, b = model()(*args, **kw), model(torch.bfloat16)(d["X"].bfloat16(), d["C"], d["S_eval"][0], **kw)
    print("bf16 vs fp32:", {k: round(rel(b[k], a[k]), 4) for k in ("h", "J", "logp_S_potts", "logp_S_marginals",
                                                                   "logp_S")})  # fmt: skip
