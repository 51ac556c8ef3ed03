"""Autoregressive design against the reference (generate-chroma 1.0.0) on random weights, and design selections.

The golden file comes from ``scripts/make_chroma_design_ar_golden.py`` (see golden/PROVENANCE.md). Compared: the
spatial decoding order, the top-p filter, the decoding LCP bias and whole designs at temperature 1e-5 with a fixed
decoding order. Run this file as a script to print the parity table that docs/chroma.md quotes:

    .venv/bin/python plugins/chroma/tests/test_chroma_design_ar.py
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from biozoo.errors import BiozooError, InvalidArgumentError
from biozoo_chroma.design import ChromaDesign, split_design_state_dict
from biozoo_chroma.design.autoregressive import design_autoregressive
from biozoo_chroma.design.decoder import filter_top_p
from biozoo_chroma.design.lcp_decoding import chao_shen_entropy, lcp_bias
from biozoo_chroma.design.selection import SelectionError, banned_states, resolve_selection
from biozoo_chroma.design.traversal import SpatialTraversal
from biozoo_chroma.graph.ops import permute_tensor
from biozoo_chroma.structures import Protein

GOLDEN = Path(__file__).parent / "golden"
TOL = 1e-5  # fp32, worst |difference| / max(1, max |reference|)


@cache
def golden() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    st = pytest.importorskip("safetensors")
    with st.safe_open(str(GOLDEN / "chroma_design_ar.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())  # noqa: SIM118 (not a dict)


@cache
def model() -> ChromaDesign:
    """Our design network from the golden init_kwargs, loaded strictly with the reference's random weights."""
    d, meta = golden()
    m = ChromaDesign(**json.loads(meta["init_kwargs"]))
    ours, _ = split_design_state_dict({k.removeprefix("ref."): v for k, v in d.items() if k.startswith("ref.")})
    m.load_state_dict(ours, strict=True)
    return m.eval()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    a, b = a.float(), b.float()
    same_inf = torch.isinf(a) & torch.isinf(b) & (torch.sign(a) == torch.sign(b))
    diff = torch.where(same_inf, 0.0, (a - b).abs())
    finite = b[torch.isfinite(b)]
    return float(diff.max() / max(1.0, float(finite.abs().max()) if finite.numel() else 1.0))


def mismatches(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a != b).sum())


# Each check returns {what: worst relative difference, or mismatching entries for discrete outputs}.


def check_traversal() -> dict[str, float]:
    d, _ = golden()
    X, C, priority = d["X"], d["C"], d["trav.design.priority"]
    seed = int(golden()[1]["seed"])
    out: dict[str, float] = {}
    det = SpatialTraversal(deterministic=True)
    out["deterministic"] = mismatches(det(X, C), d["trav.design.deterministic"])
    out["deterministic, priority"] = mismatches(det(X, C, priority), d["trav.design.deterministic_priority"])
    for name, kwargs in (("random", {}), ("fixed_alpha", {"smooth_randomize": False, "smooth_alpha": 0.7})):
        trav = SpatialTraversal(**kwargs)
        got = trav(X, C, generator=torch.Generator().manual_seed(seed + 10))
        out[f"{name} (seeded)"] = mismatches(got, d[f"trav.design.{name}"])
        got = trav(X, C, priority, generator=torch.Generator().manual_seed(seed + 11))
        out[f"{name} (seeded), priority"] = mismatches(got, d[f"trav.design.{name}_priority"])
    for pdb in ("4E43", "1ahsA"):
        X_p, C_p = d[f"trav.{pdb}.X"], d[f"trav.{pdb}.C"]
        got = SpatialTraversal()(X_p, C_p, generator=torch.Generator().manual_seed(seed + 12))
        out[f"{pdb} random (seeded; 4-atom X vs the reference's 14-atom X)"] = mismatches(got, d[f"trav.{pdb}.random"])
        out[f"{pdb} deterministic"] = mismatches(SpatialTraversal(deterministic=True)(X_p, C_p),
                                                 d[f"trav.{pdb}.deterministic"])  # fmt: skip
    return out


def check_top_p() -> dict[str, float]:
    d, _ = golden()
    logits = d["top_p.logits"]
    return {
        f"top-p filter, p={p:g}": rel(filter_top_p(logits, float(p)), d["top_p.filtered"][i])
        for i, p in enumerate(d["top_p.p"].tolist())
    }


def check_lcp_bias() -> dict[str, float]:
    d, _ = golden()
    C, perm, S = d["C"], d["permute_idx"], d["lcp.S"]
    B, L = C.shape
    S_p, C_p = permute_tensor(S, 1, perm), permute_tensor(C, 1, perm)
    idx_p = permute_tensor(torch.arange(L).expand(B, L), 1, perm)
    e, m = d["lcp.edge_idx_p"], d["lcp.mask_ij_p"]
    out = {}
    for key, w in (("lcp.bias", 30), ("lcp.bias_w8", 8)):
        got = torch.stack([lcp_bias(t, S_p, C_p, idx_p, e[:, t : t + 1], m[:, t : t + 1], w=w) for t in range(L)])
        out[f"LCP decoding bias, w={w}, every step"] = rel(got, d[key])
    return out


def run_design(name: str, **overrides) -> tuple[torch.Tensor, torch.Tensor]:
    d, meta = golden()
    opts = dict(json.loads(meta["designs"])[name])
    mask = opts.pop("mask", None)
    X, C, t = d["X"], d["C"], d["t"]
    m = model()
    enc = m.encode(X, C, t)
    kwargs = {
        "mask_sample": None if mask is None else d[f"design.mask.{mask}"], "permute_idx": d["permute_idx"],
        "ban_S": opts.get("ban_S"), "top_p": opts.get("top_p_S"), "regularization": opts["regularization"],
        "temperature": float(meta["temperature"]), "generator": torch.Generator().manual_seed(0), **overrides,
    }  # fmt: skip
    res = design_autoregressive(m, enc, X, C, d["design.S"], **kwargs)
    return res.S, res.logp_S


def check_designs() -> dict[str, float]:
    d, meta = golden()
    out = {}
    present = d["C"] > 0  # positions without structure have uniform log-probabilities: random in both
    for name in json.loads(meta["designs"]):
        S, logp = run_design(name)
        out[f"design {name}: S mismatches"] = mismatches(S[present], d[f"design.{name}.S"][present])
        out[f"design {name}: logp_S"] = rel(logp, d[f"design.{name}.logp_S"])
    return out


CHECKS = (check_traversal, check_top_p, check_lcp_bias, check_designs)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_parity(check) -> None:
    bad = {k: v for k, v in check().items() if not v <= TOL}
    assert not bad, bad


def test_design_uses_lcp_and_masks() -> None:
    """The golden designs differ from each other where their options should make them differ."""
    d, _ = golden()
    assert mismatches(d["design.plain.S"], d["design.lcp.S"]) > 5  # LCP changed the low-temperature design
    kept = d["design.mask.positions"] == 0
    S, _ = run_design("masked")
    assert torch.equal(S[kept], d["design.S"][kept])
    assert not torch.isin(S[~kept], torch.tensor([1, 10, 12, 18])).any()  # C, M, P, W banned


# -- traversal properties -------------------------------------------------------------------------------------


def chain(pdb: str) -> tuple[torch.Tensor, torch.Tensor]:
    d, _ = golden()
    return d[f"trav.{pdb}.X"], d[f"trav.{pdb}.C"]


def test_traversal_is_a_permutation_with_priority_groups_in_order() -> None:
    X, C = chain("4E43")
    L = C.shape[1]
    priority = (torch.arange(L) % 3 == 0).float().unsqueeze(0)
    for seed in range(5):
        perm = SpatialTraversal()(X, C, priority, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(perm.sort(-1).values, torch.arange(L).unsqueeze(0))
        assert priority[0, perm[0]].diff().min() >= 0  # every priority-0 residue before every priority-1 one


def test_traversal_is_spatially_local() -> None:
    """Consecutive residues of the smoothed order are closer in space than in an unsmoothed random order.

    On 1ahsA (126 residues, kNN-30 smoothing) the mean CA distance between consecutively decoded residues is about
    12 A against 18 A; the test asks for a ratio below 0.8 on the mean over 8 seeds."""
    X, C = chain("1ahsA")
    CA = X[0, :, 1]

    def step_distance(perm: torch.Tensor) -> float:
        P = CA[perm[0]]
        return float((P[1:] - P[:-1]).norm(dim=-1).mean())

    smoothed = SpatialTraversal(smooth_randomize=False)
    plain = SpatialTraversal(smooth_steps=0)
    near = [step_distance(smoothed(X, C, generator=torch.Generator().manual_seed(s))) for s in range(8)]
    far = [step_distance(plain(X, C, generator=torch.Generator().manual_seed(s))) for s in range(8)]
    assert np.mean(near) < 0.8 * np.mean(far), (near, far)


def test_traversal_seeded_repeats_and_leaves_global_rng() -> None:
    X, C = chain("1ahsA")
    state = torch.random.get_rng_state()
    a = SpatialTraversal()(X, C, generator=torch.Generator().manual_seed(3))
    b = SpatialTraversal()(X, C, generator=torch.Generator().manual_seed(3))
    c = SpatialTraversal()(X, C, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(state, torch.random.get_rng_state())


# -- decoding pieces -----------------------------------------------------------------------------------------


def test_chao_shen_singletons_and_uniform() -> None:
    """Only singletons: estimated coverage 0, entropy 0; many draws of k types: close to log k."""
    assert float(chao_shen_entropy(torch.tensor([1.0, 1.0, 1.0, 0.0]))) == 0.0
    assert abs(float(chao_shen_entropy(torch.tensor([50.0] * 4))) - np.log(4)) < 1e-3


def test_top_p_keeps_the_top_state_and_the_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_top_p(logits, 0.01)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_top_p(logits, 0.85)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_top_p(logits, 1.0)).all()


def test_top_p_overrides_temperature() -> None:
    """At temperature 1e3 draws are near-uniform; with top-p 1e-3 only the top type survives, so the design is the
    argmax design (same decoding order) wherever the decoder has structure."""
    d, _ = golden()
    present = d["C"] > 0  # without structure, every type ties and the filter keeps an arbitrary one
    S_wide, _ = run_design("plain", temperature=1e3, permute_idx=None, regularization=None)
    S_top, _ = run_design("plain", temperature=1e3, top_p=1e-3, regularization=None)
    S_argmax, _ = run_design("plain", temperature=1e-5, regularization=None)
    assert len(S_wide.unique()) > 10
    assert torch.equal(S_top[present], S_argmax[present])


def test_design_seeded_and_batched_like_one_at_a_time() -> None:
    """A seed repeats a design; systems in a batch are designed independently (the reference's batched LCP bias and
    type mask mix systems), so the argmax design of the batch is that of each system alone."""
    d, meta = golden()
    a, _ = run_design("lcp", temperature=1.0, permute_idx=None, generator=torch.Generator().manual_seed(5))
    b, _ = run_design("lcp", temperature=1.0, permute_idx=None, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    m, X, C, t, perm = model(), d["X"], d["C"], d["t"], d["permute_idx"]
    mask = d["design.mask.positions"]
    batched, _ = run_design("masked")
    for i in range(C.shape[0]):
        one = slice(i, i + 1)
        alone = design_autoregressive(m, m.encode(X[one], C[one], t[one]), X[one], C[one], d["design.S"][one],
                                      mask_sample=mask[one], permute_idx=perm[one], ban_S=["C", "W", "M", "P"],
                                      top_p=0.6, temperature=float(meta["temperature"])).S  # fmt: skip
        present = C[one] > 0
        assert torch.equal(alone[present], batched[one][present])


def test_design_bf16() -> None:
    """In bf16 the design runs (fp32 sampling of bf16 logits) and mostly agrees with fp32's argmax design."""
    d, meta = golden()
    m = ChromaDesign(**json.loads(meta["init_kwargs"]))
    m.load_state_dict(model().state_dict())
    m = m.eval().to(torch.bfloat16)
    X, C = d["X"], d["C"]
    res = design_autoregressive(m, m.encode(X.bfloat16(), C, d["t"]), X, C, permute_idx=d["permute_idx"],
                                temperature=1e-5, generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert res.S.shape == C.shape and res.logp_S.dtype == torch.bfloat16 and torch.isfinite(res.logp_S).all()
    present = C > 0
    agree = float((res.S[present] == d["design.lcp.S"][present]).float().mean())
    assert agree > 0.6, agree


def test_sequence_decoder_is_a_registered_component_with_typed_ports() -> None:
    """``chroma.sequence_decoder`` builds from config, reads the design encoder's graph and a decoding order."""
    from biozoo.assembly import build_component
    from biozoo.manifest.schema import ComponentRef
    from biozoo.plugins.declarations import ComponentKind
    from biozoo.registry import get_registry
    from biozoo_chroma.design.decoder import SequenceDecoder

    registry = get_registry()
    assert registry.component_class("chroma.sequence_decoder", ComponentKind.DECODER) is SequenceDecoder
    init = json.loads(golden()[1]["init_kwargs"])
    config = {"design_kwargs": init, "num_alphabet": 20, "decoder_num_hidden": 32, "label_smoothing": 0.1}
    decoder = build_component(registry, ComponentRef(name="chroma.sequence_decoder", config=config),
                              ComponentKind.DECODER, "components.sequence_decoder")  # fmt: skip
    decoder.load_state_dict(model().decoder.state_dict())
    decoder.eval()
    encoder = model().encoder
    produced = {p.name: p for c in (encoder.feature_graph, encoder.gnn) for p in c.ports().outputs}
    inputs = {p.name: p for p in decoder.ports().inputs}
    for name in ("node_h", "edge_h", "edge_idx", "mask_i", "mask_ij"):
        assert (inputs[name].meaning, inputs[name].shape) == (produced[name].meaning, produced[name].shape), name
    assert inputs["permute_idx"].meaning == "decoding-order"
    assert decoder.ports().outputs[1].shape == ("B", "L", 20)
    d, _ = golden()
    enc = model().encode(d["X"], d["C"], d["t"])
    with torch.no_grad():
        logp, _ = decoder(d["design.S"], *enc, d["permute_idx"])
    clamped = model().decoder.decode(d["C"], d["design.S"], *enc, d["permute_idx"], sample=False)[1]
    assert rel(logp, clamped) < TOL


# -- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"temperature": 0.0}, "temperature_S must be a finite number > 0"),
        ({"temperature": -1.0}, "temperature_S must be a finite number > 0"),
        ({"temperature": float("inf")}, "temperature_S must be a finite number > 0"),
        ({"top_p": 0.0}, "top_p_S must be in (0, 1]"),
        ({"top_p": 1.5}, "top_p_S must be in (0, 1]"),
        ({"ban_S": list("ACDEFGHIKLMNPQRSTVWY")}, "every residue type is banned"),
        ({"ban_S": ["X"]}, "unknown residues in the banned set"),
        ({"ban_S": ["AC"]}, "unknown residues in the banned set"),
        ({"regularization": "entropy"}, "unknown regularization"),
        ({"permute_idx": torch.zeros(2, 24, dtype=torch.long)}, "permute_idx must be"),
        ({"permute_idx": torch.arange(23).expand(2, 23)}, "permute_idx must be"),
        ({"mask_sample": torch.ones(2, 23)}, "mask_sample has shape"),
    ],
)
def test_bad_design_arguments(kwargs, needle) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        run_design("lcp", **kwargs)
    assert needle in err.value.message and err.value.hint


def test_banned_everywhere_a_selection_designs() -> None:
    """Banning all types allowed at a designed position (a per-position type mask) is refused with a hint."""
    types = torch.zeros(2, 24, 20)
    types[:, :, :2] = 1.0  # A or C everywhere
    with pytest.raises(InvalidArgumentError) as err:
        run_design("lcp", mask_sample=types, ban_S=["A", "C"])
    assert "no residue to choose" in err.value.message


# -- selections -----------------------------------------------------------------------------------------------


def protein() -> Protein:
    """Two chains: A numbered 1-5, 7, 8, 8A, 8B, 9 (a numbering gap and insertion codes) and B numbered -2..3."""
    d, _ = golden()
    X, C = d["X"][0:1, :16], torch.tensor([[1] * 10 + [2] * 6])
    numbers = [1, 2, 3, 4, 5, 7, 8, 8, 8, 9, -2, -1, 0, 1, 2, 3]
    codes = [""] * 7 + ["A", "B"] + [""] * 7
    return Protein.from_XCS(X, C, torch.zeros_like(C), chain_ids=["A", "B"], residue_ids=numbers,
                            insertion_codes=codes)  # fmt: skip


def selected(selection) -> list[int]:
    return torch.nonzero(resolve_selection(protein(), selection)[0]).flatten().tolist()


@pytest.mark.parametrize(
    ("selection", "positions"),
    [
        ("A", list(range(10))),
        ("B", list(range(10, 16))),
        ("A:2-4", [1, 2, 3]),
        ("A:5-8", [4, 5, 6]),  # across the numbering gap (no 6), up to 8 without its insertions
        ("A:8-9", [6, 7, 8, 9]),  # 8, 8A, 8B, 9 in file order
        ("A:8A", [7]),
        ("A:8A-8B", [7, 8]),
        ("B:-2--1,1", [10, 11, 13]),
        ("A:1 B:3", [0, 15]),
        ("A:1;B:3", [0, 15]),
        (["A:1", "B:0-1"], [0, 12, 13]),
        ("A:3,3,2-3", [1, 2]),
    ],
)
def test_selection_strings(selection, positions) -> None:
    assert selected(selection) == positions


def test_selection_masks() -> None:
    mask = torch.zeros(16, dtype=torch.bool)
    mask[[2, 5]] = True
    assert selected(mask) == [2, 5]
    assert selected(mask.numpy()[None]) == [2, 5]


@pytest.mark.parametrize(
    ("selection", "message", "hint"),
    [
        ("C", "chain 'C' does not exist", "its chains are 'A', 'B'"),
        ("C:1-5", "chain 'C' does not exist", "'A', 'B'"),
        ("A:6", "residue 6 is not in chain A", "chain A has residues 1-5, 7-8, 8A, 8B, 9"),
        ("A:1-12", "residue 12 is not in chain A", "chain A has residues 1-5"),
        ("B:4", "residue 4 is not in chain B", "chain B has residues -2-3"),
        ("A:5-2", "runs backwards", "2-5"),
        ("A:", "cannot be read", "A:10-20"),
        ("A:1-", "cannot be read", "B:5,7,9-12"),
        ("A:x", "cannot be read", "A:10-20"),
        ("", "empty", "A:10-20"),
        (torch.ones(15, dtype=torch.bool), "shape [15]", "[16]"),
        (torch.ones(16), "not bool", "boolean mask"),
        (3, "must be a boolean mask or a string", "A:10-20"),
    ],
)
def test_bad_selections(selection, message, hint) -> None:
    with pytest.raises(SelectionError) as err:
        resolve_selection(protein(), selection)
    assert isinstance(err.value, BiozooError)
    assert message in err.value.message, err.value.message
    assert hint in err.value.hint, err.value.hint


def test_selection_drives_design() -> None:
    """A resolved selection is the design mask: unselected positions keep their residues."""
    d, _ = golden()
    X, C = d["X"][:1], d["C"][:1]
    p = Protein.from_XCS(X, C, d["design.S"][:1], chain_ids=["A", "B"])
    mask = resolve_selection(p, "B")
    m = model()
    res = design_autoregressive(m, m.encode(X, C, d["t"][:1]), X, C, d["design.S"][:1], mask_sample=mask,
                                temperature=1.0, generator=torch.Generator().manual_seed(1))  # fmt: skip
    keep = ~mask
    assert torch.equal(res.S[keep], d["design.S"][:1][keep])
    in_b = torch.nonzero(mask[0]).flatten()
    order = res.permute_idx[0].tolist()
    assert min(order.index(i) for i in in_b.tolist()) == len(order) - len(in_b)  # kept residues decode first


def test_banned_states() -> None:
    assert banned_states(None) == [] and banned_states(("W", "C", "C")) == [1, 18]


if __name__ == "__main__":
    for check in CHECKS:
        for what, value in check().items():
            print(f"{what:80s} {value:.2g}")
