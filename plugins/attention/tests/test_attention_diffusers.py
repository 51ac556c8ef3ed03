"""biozoo_attention.Attention against diffusers 0.42's Attention: same keys, same outputs where diffusers is right.

Where diffusers' processors are wrong (qk_norm on the eager path, custom scale
on the SDPA path, is_causal, kv_heads, bool/2-D masks on the eager path, masks
shorter than the keys) the module is checked instead against a float64
reference written here from the definition softmax(Q K^T * scale + mask) V,
under every biozoo processor.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

diffusers_ap = pytest.importorskip("diffusers.models.attention_processor")

import biozoo  # noqa: E402
from biozoo.errors import AttentionError, BiozooError  # noqa: E402
from biozoo_attention.diffusers_compat import Attention  # noqa: E402

DAttention = diffusers_ap.Attention
TOL = 1e-6
DIFFS: dict[str, float] = {}  # case -> max |diff|, printed at the end (pytest -s) for the record


def _usable_processors() -> list[str]:
    """Every registered exact-math processor available here (approximate ones compute another function)."""
    names = []
    for processor in biozoo.get_registry().processors_by_priority():
        if not processor.caps.approximate and processor.available()[0]:
            names.append(processor.name)
    return names


PROCESSORS = _usable_processors()


@pytest.fixture(scope="module", autouse=True)
def _one_thread_then_report() -> Iterator[None]:
    """One intra-op thread for these tiny tensors (thread hand-off costs more than it saves), then the diffs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    for case, diff in sorted(DIFFS.items()):
        print(f"{diff:9.2e}  {case}")


def _record(case: str, ours: torch.Tensor, want: torch.Tensor, tol: float = TOL) -> None:
    """Assert max |diff| <= tol * max(1, max |want|): fp32 rounding is relative to the outputs' magnitude.

    (On the spatial_norm layer, outputs reach 7.7 and diffusers' own AttnProcessor
    and AttnProcessor2_0 differ by 1.4e-6.)
    """
    diff = (ours.double() - want.double()).abs().max().item()
    DIFFS[case] = max(diff, DIFFS.get(case, 0.0))
    bound = tol * max(1.0, want.double().abs().max().item())
    assert diff <= bound, f"{case}: max |diff| {diff:.3g} > {bound:.3g}"


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pair(**cfg: Any) -> tuple[Any, Attention]:
    """A diffusers Attention with perturbed weights (so norms and biases matter) and ours loaded from it."""
    torch.manual_seed(0)
    ref = DAttention(**cfg).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.2 * torch.randn_like(p))
    ours = Attention(**cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _run_diffusers(ref: Any, processor: Any, *args: Any, **kwargs: Any) -> Any:
    ref.set_processor(processor)
    with torch.no_grad():
        return ref(*args, **kwargs)


def _run(ours: Attention, processor: str, *args: Any, **kwargs: Any) -> Any:
    with biozoo.use_processor(processor), torch.no_grad():
        out = ours(*args, **kwargs)
    assert biozoo.explain(ours)[0]["ran"] == processor
    return out


def _neg_mask(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """diffusers' additive convention: 0 keeps, -10000 drops; at least the first key always kept."""
    drop = torch.rand(shape, generator=gen) > 0.6
    drop[..., 0] = False
    return drop.float() * -10000.0


# --- identical state-dict keys ------------------------------------------------------------------------------------

KEY_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {"query_dim": 32},
    "biases": {"query_dim": 32, "heads": 4, "dim_head": 8, "bias": True, "out_bias": False},
    "cross+layer_norm": {"query_dim": 32, "cross_attention_dim": 24, "cross_attention_norm": "layer_norm"},
    "cross+group_norm": {
        "query_dim": 32,
        "cross_attention_dim": 24,
        "cross_attention_norm": "group_norm",
        "cross_attention_norm_num_groups": 8,
    },
    "group_norm+residual": {"query_dim": 32, "norm_num_groups": 8, "residual_connection": True},
    "spatial_norm": {"query_dim": 32, "spatial_norm_dim": 6},
    "qk layer_norm": {"query_dim": 32, "heads": 4, "dim_head": 8, "qk_norm": "layer_norm"},
    "qk fp32_layer_norm": {"query_dim": 32, "heads": 4, "dim_head": 8, "qk_norm": "fp32_layer_norm"},
    "qk rms_norm": {"query_dim": 32, "heads": 4, "dim_head": 8, "qk_norm": "rms_norm"},
    "qk rms_norm no affine": {
        "query_dim": 32,
        "heads": 4,
        "dim_head": 8,
        "qk_norm": "rms_norm",
        "elementwise_affine": False,
    },
    "qk l2": {"query_dim": 32, "heads": 4, "dim_head": 8, "qk_norm": "l2"},
    "qk layer_norm_across_heads": {
        "query_dim": 32,
        "heads": 4,
        "kv_heads": 2,
        "dim_head": 8,
        "qk_norm": "layer_norm_across_heads",
    },
    "qk rms_norm_across_heads": {
        "query_dim": 32,
        "heads": 4,
        "kv_heads": 2,
        "dim_head": 8,
        "qk_norm": "rms_norm_across_heads",
    },
    "gqa": {"query_dim": 32, "heads": 4, "kv_heads": 2, "dim_head": 8},
    "added-kv (unclip)": {
        "query_dim": 32,
        "cross_attention_dim": 32,
        "heads": 4,
        "dim_head": 8,
        "added_kv_proj_dim": 24,
        "norm_num_groups": 8,
        "cross_attention_norm": "group_norm",
        "cross_attention_norm_num_groups": 8,
        "qk_norm": "layer_norm",
    },
    "added-kv only_cross": {
        "query_dim": 32,
        "heads": 4,
        "dim_head": 8,
        "added_kv_proj_dim": 24,
        "only_cross_attention": True,
    },
    "joint (sd3)": {
        "query_dim": 32,
        "heads": 4,
        "dim_head": 8,
        "added_kv_proj_dim": 24,
        "context_pre_only": False,
        "qk_norm": "rms_norm",
        "bias": True,
    },
    "joint context_pre_only": {
        "query_dim": 32,
        "heads": 4,
        "dim_head": 8,
        "added_kv_proj_dim": 24,
        "context_pre_only": True,
        "qk_norm": "fp32_layer_norm",
    },
    "joint pre_only wan-norms": {
        "query_dim": 32,
        "heads": 4,
        "kv_heads": 4,
        "dim_head": 8,
        "added_kv_proj_dim": 24,
        "context_pre_only": False,
        "pre_only": True,
        "qk_norm": "rms_norm_across_heads",
    },
    "joint out_dim/out_context_dim": {
        "query_dim": 32,
        "dim_head": 8,
        "out_dim": 64,
        "out_context_dim": 48,
        "added_kv_proj_dim": 24,
        "context_pre_only": False,
    },
    "deprecated attn block": {"query_dim": 32, "norm_num_groups": 8, "_from_deprecated_attn_block": True},
}


@pytest.mark.parametrize("name", list(KEY_CONFIGS))
def test_state_dict_keys_and_shapes_match_diffusers(name: str) -> None:
    ref, ours = _pair(**KEY_CONFIGS[name])  # _pair loads strictly
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert list(got) == list(want)
    assert got == want


# --- parity with diffusers where diffusers is right ---------------------------------------------------------------

EAGER, SDPA = diffusers_ap.AttnProcessor, diffusers_ap.AttnProcessor2_0
BASE = {"query_dim": 32, "heads": 4, "dim_head": 8, "bias": True}


def _x(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed))


# name -> (config, inputs, diffusers processors that are right for it)
PARITY: dict[str, tuple[dict[str, Any], Callable[[], dict[str, Any]], tuple[Any, ...]]] = {
    "self": (BASE, lambda: {"hidden_states": _x(2, 10, 32)}, (EAGER, SDPA)),
    "self + additive mask [B,1,S]": (
        BASE,
        lambda: {"hidden_states": _x(2, 10, 32), "attention_mask": _neg_mask((2, 1, 10), _gen(2))},
        (EAGER, SDPA),
    ),
    "self + additive bias [B,S,S]": (
        BASE,
        lambda: {"hidden_states": _x(2, 10, 32), "attention_mask": _x(2, 10, 10, seed=2)},
        (EAGER, SDPA),
    ),
    "self + additive mask [B*heads,1,S]": (
        BASE,
        lambda: {"hidden_states": _x(2, 10, 32), "attention_mask": _neg_mask((8, 1, 10), _gen(2))},
        (EAGER, SDPA),
    ),
    "self + additive mask [B,1,1,S] (4-D)": (
        BASE,
        lambda: {"hidden_states": _x(2, 10, 32), "attention_mask": _neg_mask((2, 1, 1, 10), _gen(2))},
        (SDPA,),  # the eager path cannot take a 4-D mask
    ),
    "cross + norm_cross layer_norm + mask": (
        {**BASE, "cross_attention_dim": 24, "cross_attention_norm": "layer_norm"},
        lambda: {
            "hidden_states": _x(2, 10, 32),
            "encoder_hidden_states": _x(2, 7, 24, seed=3),
            "attention_mask": _neg_mask((2, 1, 7), _gen(2)),
        },
        (EAGER, SDPA),
    ),
    "cross + norm_cross group_norm": (
        {**BASE, "cross_attention_dim": 24, "cross_attention_norm": "group_norm", "cross_attention_norm_num_groups": 4},
        lambda: {"hidden_states": _x(2, 10, 32), "encoder_hidden_states": _x(2, 7, 24, seed=3)},
        (EAGER, SDPA),
    ),
    "4-D + group_norm + residual + rescale=2": (
        {**BASE, "norm_num_groups": 8, "residual_connection": True, "rescale_output_factor": 2.0},
        lambda: {"hidden_states": _x(2, 32, 4, 5)},
        (EAGER, SDPA),
    ),
    "4-D + spatial_norm(temb)": (
        {**BASE, "spatial_norm_dim": 6, "residual_connection": True},
        lambda: {"hidden_states": _x(2, 32, 4, 4), "temb": _x(2, 6, 2, 2, seed=4)},
        (EAGER, SDPA),
    ),
    "upcast_attention + upcast_softmax (fp32)": (
        {**BASE, "upcast_attention": True, "upcast_softmax": True},
        lambda: {"hidden_states": _x(2, 10, 32)},
        (EAGER, SDPA),
    ),
    "out_dim=64 (8 heads)": ({**BASE, "out_dim": 64}, lambda: {"hidden_states": _x(2, 10, 32)}, (EAGER, SDPA)),
    "qk_norm rms_norm": (
        {**BASE, "qk_norm": "rms_norm"},
        lambda: {"hidden_states": _x(2, 10, 32)},
        (SDPA,),  # diffusers' eager AttnProcessor never applies norm_q/norm_k
    ),
    "qk_norm layer_norm": ({**BASE, "qk_norm": "layer_norm"}, lambda: {"hidden_states": _x(2, 10, 32)}, (SDPA,)),
    "qk_norm l2": ({**BASE, "qk_norm": "l2"}, lambda: {"hidden_states": _x(2, 10, 32)}, (SDPA,)),
    "bool mask [B,1,S] (True=keep)": (
        BASE,
        lambda: {"hidden_states": _x(2, 10, 32), "attention_mask": _neg_mask((2, 1, 10), _gen(2)) == 0},
        (SDPA,),  # the eager path's baddbmm rejects bool masks
    ),
    "2-D additive mask [B,S]": (
        BASE,
        lambda: {"hidden_states": _x(2, 10, 32), "attention_mask": _neg_mask((2, 10), _gen(2))},
        (SDPA,),  # the eager path cannot broadcast a 2-D mask
    ),
    "scale_qk=False": (
        {**BASE, "scale_qk": False},
        lambda: {"hidden_states": _x(2, 10, 32) * 0.3},
        (EAGER,),  # AttnProcessor2_0 ignores attn.scale
    ),
}
PARITY_CASES = [
    pytest.param(name, proc, kernel, id=f"{name}-{proc.__name__}-{kernel}")
    for name, (_, _, procs) in PARITY.items()
    for proc in procs
    for kernel in ("eager", "sdpa")
]


@pytest.mark.parametrize(("name", "diffusers_processor", "kernel"), PARITY_CASES)
def test_matches_diffusers(name: str, diffusers_processor: Any, kernel: str) -> None:
    cfg, inputs, _ = PARITY[name]
    ref, ours = _pair(**cfg)
    args = inputs()
    want = _run_diffusers(ref, diffusers_processor(), **args)
    _record(f"vs diffusers {diffusers_processor.__name__}: {name} [{kernel}]", _run(ours, kernel, **args), want)


@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
@pytest.mark.parametrize("only_cross", [False, True])
@pytest.mark.parametrize("diffusers_processor", ["AttnAddedKVProcessor", "AttnAddedKVProcessor2_0"])
def test_added_kv_matches_diffusers(diffusers_processor: str, only_cross: bool, kernel: str) -> None:
    """UnCLIP-style added K/V: a text mask [B,1,Stext] covers the context keys, which come first."""
    ref, ours = _pair(
        query_dim=32,
        cross_attention_dim=32,
        heads=4,
        dim_head=8,
        added_kv_proj_dim=24,
        norm_num_groups=8,
        bias=True,
        upcast_softmax=True,
        cross_attention_norm="group_norm",
        cross_attention_norm_num_groups=8,
        only_cross_attention=only_cross,
    )
    args: dict[str, Any] = {"hidden_states": _x(2, 32, 4, 4), "encoder_hidden_states": _x(2, 7, 24, seed=3)}
    if not only_cross:  # with only_cross_attention diffusers pads the mask past the keys and fails
        args["attention_mask"] = _neg_mask((2, 1, 7), _gen(2))
    want = _run_diffusers(ref, getattr(diffusers_ap, diffusers_processor)(), **args)
    case = f"vs diffusers {diffusers_processor}: added-KV{' only_cross' if only_cross else ' + text mask'} [{kernel}]"
    _record(case, _run(ours, kernel, **args), want)


@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
@pytest.mark.parametrize("context_pre_only", [False, True])
def test_joint_matches_diffusers(context_pre_only: bool, kernel: str) -> None:
    """SD3-style joint attention (JointAttnProcessor2_0), with and without context tokens."""
    cfg = {
        "query_dim": 32,
        "heads": 4,
        "dim_head": 8,
        "out_dim": 32,
        "added_kv_proj_dim": 24,
        "context_pre_only": context_pre_only,
        "qk_norm": "rms_norm",
        "eps": 1e-6,
        "bias": True,
    }
    ref, ours = _pair(**cfg)
    x, ctx = _x(2, 10, 32), _x(2, 6, 24, seed=3)
    want = _run_diffusers(ref, diffusers_ap.JointAttnProcessor2_0(), x, ctx)
    got = _run(ours, kernel, x, ctx)
    tag = f"context_pre_only={context_pre_only} [{kernel}]"
    _record(f"vs diffusers JointAttnProcessor2_0: image part, {tag}", got[0], want[0])
    _record(f"vs diffusers JointAttnProcessor2_0: context part, {tag}", got[1], want[1])
    _record(
        f"vs diffusers JointAttnProcessor2_0: no context, {tag}",
        _run(ours, kernel, x),
        _run_diffusers(ref, diffusers_ap.JointAttnProcessor2_0(), x),
    )


def test_joint_honours_the_mask_diffusers_drops() -> None:
    """Masking the last context keys == dropping those context tokens (for the tokens that remain)."""
    _, ours = _pair(query_dim=32, heads=4, dim_head=8, added_kv_proj_dim=24, context_pre_only=False)
    x, ctx = _x(2, 10, 32), _x(2, 6, 24, seed=3)
    keep = torch.ones(2, 16, dtype=torch.bool)
    keep[:, 10 + 4 :] = False
    with torch.no_grad():
        masked = ours(x, ctx, attention_mask=keep)
        short = ours(x, ctx[:, :4])
    _record("joint + key mask vs truncated context: image part", masked[0], short[0])
    _record("joint + key mask vs truncated context: context part", masked[1][:, :4], short[1])


# --- where diffusers is wrong: float64 reference from the definition -------------------------------------------


def _norm64(t: torch.Tensor, kind: str | None, sd: dict[str, torch.Tensor], name: str, eps: float) -> torch.Tensor:
    if kind == "rms_norm":
        return t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + eps) * sd[f"{name}.weight"]
    if kind == "layer_norm":
        centred = t - t.mean(-1, keepdim=True)
        std = torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps)
        return centred / std * sd[f"{name}.weight"] + sd[f"{name}.bias"]
    assert kind is None
    return t


def reference64(
    attn: Attention,
    x: torch.Tensor,
    ctx: torch.Tensor | None = None,
    *,
    qk_norm: str | None = None,
    keep: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(Q K^T * scale + bias, masked where ~keep or acausal) V, float64, from attn's weights (plain, 3-D)."""
    sd = {k: v.double() for k, v in attn.state_dict().items()}

    def linear(t: torch.Tensor, name: str) -> torch.Tensor:
        out = t @ sd[f"{name}.weight"].T
        return out + sd[f"{name}.bias"] if f"{name}.bias" in sd else out

    heads, kv_heads, d = attn.heads, attn.kv_heads, attn.dim_head
    x = x.double()
    c = x if ctx is None else ctx.double()
    q = linear(x, "to_q").unflatten(-1, (heads, d)).transpose(1, 2)
    k = linear(c, "to_k").unflatten(-1, (kv_heads, d)).transpose(1, 2)
    v = linear(c, "to_v").unflatten(-1, (kv_heads, d)).transpose(1, 2)
    q, k = _norm64(q, qk_norm, sd, "norm_q", 1e-5), _norm64(k, qk_norm, sd, "norm_k", 1e-5)
    k, v = k.repeat_interleave(heads // kv_heads, dim=1), v.repeat_interleave(heads // kv_heads, dim=1)
    scores = q @ k.transpose(-1, -2) * (d**-0.5 if scale is None else scale)
    if bias is not None:
        scores = scores + bias.double()
    if keep is not None:
        scores = scores.masked_fill(~keep, -math.inf)
    if causal:  # bottom-right: query i of Sq sees keys j <= i + Skv - Sq
        sq, skv = scores.shape[-2:]
        allowed = torch.arange(skv)[None, :] <= torch.arange(sq)[:, None] + (skv - sq)
        scores = scores.masked_fill(~allowed, -math.inf)
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row with no key: zeros, biozoo's convention
    out = (probs @ v).transpose(1, 2).flatten(2)
    return linear(out, "to_out.0")


def _keep(*shape: int, seed: int = 2) -> torch.Tensor:
    keep = torch.rand(shape, generator=_gen(seed)) > 0.4
    keep[..., 0] = True
    return keep


# name -> (config, call -> (ours args, ours kwargs, reference64 kwargs)); each documents what diffusers gets wrong
WRONG: dict[str, tuple[dict[str, Any], Callable[[], tuple[tuple, dict[str, Any], dict[str, Any]]]]] = {
    # AttnProcessor (eager) never applies norm_q/norm_k: 0.78 off in the research parity run
    "qk_norm rms_norm (diffusers eager skips it)": (
        {**BASE, "qk_norm": "rms_norm"},
        lambda: ((_x(2, 10, 32),), {}, {"qk_norm": "rms_norm"}),
    ),
    "qk_norm layer_norm (diffusers eager skips it)": (
        {**BASE, "qk_norm": "layer_norm"},
        lambda: ((_x(2, 10, 32),), {}, {"qk_norm": "layer_norm"}),
    ),
    # AttnProcessor2_0 ignores attn.scale (and so a non-default scale)
    "scale_qk=False (diffusers sdpa ignores attn.scale)": (
        {**BASE, "scale_qk": False},
        lambda: ((_x(2, 10, 32) * 0.3,), {}, {"scale": 1.0}),
    ),
    "call scale=0.2 (diffusers: deprecated LoRA scale, ignored)": (
        BASE,
        lambda: ((_x(2, 10, 32),), {"scale": 0.2}, {"scale": 0.2}),
    ),
    # every generic diffusers processor passes is_causal=False
    "is_causal=True, self (diffusers ignores it)": (
        {**BASE, "is_causal": True},
        lambda: ((_x(2, 10, 32),), {}, {"causal": True}),
    ),
    "call is_causal=True, cross Sq<Skv, bottom-right": (
        {**BASE, "cross_attention_dim": 24},
        lambda: ((_x(2, 5, 32), _x(2, 8, 24, seed=3)), {"is_causal": True}, {"causal": True}),
    ),
    "causal + additive mask": (
        BASE,
        lambda: (
            (_x(2, 10, 32),),
            {"is_causal": True, "attention_mask": _x(2, 1, 10, seed=2)},
            {"causal": True, "bias": _x(2, 1, 10, seed=2)[:, None]},
        ),
    ),
    # kv_heads: AttnProcessor raises, AttnProcessor2_0 mis-reshapes q into more tokens and fails at to_out
    "GQA kv_heads=2": ({**BASE, "kv_heads": 2}, lambda: ((_x(2, 10, 32),), {}, {})),
    "MQA kv_heads=1 + bool mask": (
        {**BASE, "kv_heads": 1},
        lambda: ((_x(2, 10, 32),), {"attention_mask": _keep(2, 1, 10)}, {"keep": _keep(2, 1, 10)[:, None]}),
    ),
    "GQA cross + qk_norm rms_norm": (
        {**BASE, "kv_heads": 2, "cross_attention_dim": 24, "qk_norm": "rms_norm"},
        lambda: ((_x(2, 5, 32), _x(2, 8, 24, seed=3)), {}, {"qk_norm": "rms_norm"}),
    ),
    # bool keep-masks: AttnProcessor raises (baddbmm dtype)
    "bool mask [B,1,Skv]": (
        BASE,
        lambda: ((_x(2, 10, 32),), {"attention_mask": _keep(2, 1, 10)}, {"keep": _keep(2, 1, 10)[:, None]}),
    ),
    "bool mask [B,Sq,Skv]": (
        BASE,
        lambda: ((_x(2, 10, 32),), {"attention_mask": _keep(2, 10, 10)}, {"keep": _keep(2, 10, 10)[:, None]}),
    ),
    "bool mask [B,heads,Sq,Skv]": (
        BASE,
        lambda: ((_x(2, 10, 32),), {"attention_mask": _keep(2, 4, 10, 10)}, {"keep": _keep(2, 4, 10, 10)}),
    ),
    # 2-D masks: AttnProcessor cannot broadcast them
    "2-D bool mask [B,Skv]": (
        BASE,
        lambda: ((_x(2, 10, 32),), {"attention_mask": _keep(2, 10)}, {"keep": _keep(2, 10)[:, None, None]}),
    ),
    "2-D additive mask [B,Skv], cross": (
        {**BASE, "cross_attention_dim": 24},
        lambda: (
            (_x(2, 5, 32), _x(2, 8, 24, seed=3)),
            {"attention_mask": _x(2, 8, seed=2)},
            {"bias": _x(2, 8, seed=2)[:, None, None]},
        ),
    ),
    # shorter masks: prepare_attention_mask pads by target_length (#11063), so both processors fail;
    # the mask covers the leading keys and the keys it does not mention are attended
    "additive mask shorter than keys (8 of 11)": (
        {**BASE, "cross_attention_dim": 24},
        lambda: (
            (_x(2, 5, 32), _x(2, 11, 24, seed=3)),
            {"attention_mask": _neg_mask((2, 1, 8), _gen(2))},
            {"bias": torch.cat([_neg_mask((2, 1, 8), _gen(2)), torch.zeros(2, 1, 3)], -1)[:, None]},
        ),
    ),
    "bool mask shorter than keys (7 of 10)": (
        BASE,
        lambda: (
            (_x(2, 10, 32),),
            {"attention_mask": _keep(2, 7)},
            {"keep": torch.cat([_keep(2, 7), torch.ones(2, 3, dtype=torch.bool)], -1)[:, None, None]},
        ),
    ),
    # a query with nothing to attend to: diffusers gives NaN (bool) or a uniform average (-10000); biozoo: zeros
    "fully masked row -> zero attention": (
        BASE,
        lambda: (
            (_x(2, 10, 32),),
            {"attention_mask": torch.tensor([[False] * 10, [True] * 10])[:, None]},
            {"keep": torch.tensor([[False] * 10, [True] * 10])[:, None, None]},
        ),
    ),
}


# Cases whose difference lies in the module (qk_norm, mask normalisation) hand kernels nothing new: the kernel
# sees the same kinds of call as in the others. They run under the core processors only, to keep the file fast.
MODULE_ONLY = {
    "qk_norm rms_norm (diffusers eager skips it)",
    "qk_norm layer_norm (diffusers eager skips it)",
    "GQA cross + qk_norm rms_norm",
    "2-D bool mask [B,Skv]",
    "2-D additive mask [B,Skv], cross",
    "additive mask shorter than keys (8 of 11)",
    "bool mask shorter than keys (7 of 10)",
}
WRONG_CASES = [
    pytest.param(name, processor, id=f"{name}-{processor}")
    for name in WRONG
    for processor in PROCESSORS
    if name not in MODULE_ONLY or processor in ("eager", "sdpa")
]


@pytest.mark.parametrize(("name", "processor"), WRONG_CASES)
def test_matches_float64_definition_where_diffusers_is_wrong(name: str, processor: str) -> None:
    cfg, make = WRONG[name]
    _, ours = _pair(**cfg)
    args, kwargs, ref_kwargs = make()
    want = reference64(ours, *args, **ref_kwargs)
    try:
        got = _run(ours, processor, *args, **kwargs)
    except AttentionError as exc:  # a kernel that cannot honour the call must say so, never run it wrongly
        assert "cannot run this call" in str(exc)
        return
    assert torch.isfinite(got).all()
    _record(f"vs float64 definition: {name} [{processor}]", got, want, tol=2e-6)
    if processor == "eager":  # the same module in float64: the semantics match exactly, not just within fp32
        double_args = [a.double() for a in args]
        double_kwargs = {
            k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in kwargs.items()
        }
        _record(
            f"float64 module vs float64 definition: {name}",
            _run(ours.double(), "eager", *double_args, **double_kwargs),
            want,
            tol=1e-12,
        )


def test_every_processor_agrees_on_spatial_and_added_kv_layers() -> None:
    """The same module gives the same outputs (fp32 tolerance) under every processor that accepts the call."""
    layers = [
        (
            Attention(**{**BASE, "norm_num_groups": 8, "residual_connection": True, "rescale_output_factor": 2.0}),
            {"hidden_states": _x(2, 32, 4, 5), "attention_mask": _neg_mask((2, 1, 20), _gen(2))},
        ),
        (
            Attention(**BASE, added_kv_proj_dim=24, norm_num_groups=8, kv_heads=2, qk_norm="rms_norm"),
            {"hidden_states": _x(2, 32, 4, 4), "encoder_hidden_states": _x(2, 7, 24, seed=3)},
        ),
    ]
    for i, (attn, args) in enumerate(layers):
        attn.eval()
        want = _run(attn, "eager", **args)
        for processor in PROCESSORS:
            try:
                got = _run(attn, processor, **args)
            except AttentionError:
                continue
            _record(f"processor agreement: layer {i} [{processor} vs eager]", got, want, tol=2e-6)


def _swap_attention(model: torch.nn.Module) -> int:
    """Replace every diffusers Attention (plain UNet/VAE kinds) by ours, loaded from its state dict."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, DAttention):
                continue
            assert child.norm_q is None and child.added_kv_proj_dim is None and child.spatial_norm is None
            gn = child.group_norm
            ours = Attention(
                query_dim=child.query_dim,
                cross_attention_dim=child.cross_attention_dim if child.is_cross_attention else None,
                heads=child.heads,
                dim_head=child.inner_dim // child.heads,
                bias=child.use_bias,
                upcast_attention=child.upcast_attention,
                upcast_softmax=child.upcast_softmax,
                norm_num_groups=gn.num_groups if gn is not None else None,
                eps=gn.eps if gn is not None else 1e-5,
                out_bias=child.to_out[0].bias is not None,
                rescale_output_factor=child.rescale_output_factor,
                residual_connection=child.residual_connection,
                _from_deprecated_attn_block=child._from_deprecated_attn_block,
            )
            ours.load_state_dict(child.state_dict(), strict=True)
            setattr(parent, name, ours.eval())
            swapped += 1
    return swapped


def test_drop_in_for_a_diffusers_unet() -> None:
    """Swapped into a tiny UNet2DConditionModel (self and cross attention, encoder mask), outputs do not change."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()
    sample, ctx = _x(2, 4, 8, 8), _x(2, 7, 32, seed=3)
    text_mask = torch.ones(2, 7)
    text_mask[1, 5:] = 0  # the UNet turns this 1/0 keep-mask into an additive bias before attention
    with torch.no_grad():
        want_unet = unet(sample, torch.tensor([10, 20]), ctx, encoder_attention_mask=text_mask).sample
        assert _swap_attention(unet) == 8
        _record(
            "drop-in: tiny UNet2DConditionModel + encoder mask",
            unet(sample, torch.tensor([10, 20]), ctx, encoder_attention_mask=text_mask).sample,
            want_unet,
        )
    assert all(row["ran"] in PROCESSORS for row in biozoo.explain(unet))  # every swapped module went through biozoo


# --- the API around it ---------------------------------------------------------------------------------------


def test_unknown_call_keywords_raise() -> None:
    attn = Attention(**BASE)
    x = _x(1, 4, 32)
    for kwargs in ({"foo": 1}, {"image_rotary_emb": None}, {"ip_adapter_masks": None}):
        with pytest.raises(TypeError, match=next(iter(kwargs))):
            attn(x, **kwargs)


@pytest.mark.parametrize(
    ("cfg", "error", "argument"),
    [
        ({"processor": object()}, NotImplementedError, "processor"),
        ({"processor": diffusers_ap.AttnAddedKVProcessor()}, ValueError, "processor"),
        ({"added_kv_proj_dim": 24, "rescale_output_factor": 2.0}, NotImplementedError, "rescale_output_factor"),
        ({"added_kv_proj_dim": 24, "spatial_norm_dim": 6}, NotImplementedError, "spatial_norm_dim"),
        ({"added_kv_proj_dim": 24, "context_pre_only": False, "norm_num_groups": 8}, NotImplementedError, "norm_num"),
        (
            {"added_kv_proj_dim": 24, "context_pre_only": False, "residual_connection": True},
            NotImplementedError,
            "resid",
        ),
        ({"context_pre_only": False}, NotImplementedError, "context_pre_only"),
        ({"only_cross_attention": True}, ValueError, "only_cross_attention"),
        ({"qk_norm": "batch_norm"}, ValueError, "qk_norm"),
        ({"kv_heads": 3}, ValueError, "kv_heads"),
        ({"processor": "no-such-kernel"}, BiozooError, "no-such-kernel"),
    ],
)
def test_constructor_refuses_what_it_cannot_honour(cfg: dict[str, Any], error: type, argument: str) -> None:
    with pytest.raises(error, match=argument):
        Attention(**{**BASE, **cfg})


@pytest.mark.parametrize(
    ("mask", "error"),
    [
        (torch.ones(2, 1, 10, dtype=torch.int64), TypeError),  # 1/0 added to scores would mean nothing
        (torch.zeros(2, 1, 11), ValueError),  # longer than the keys
        (torch.zeros(3, 1, 10), ValueError),  # neither B nor B*heads
        (torch.zeros(2, 3, 10, 10), ValueError),  # 3 heads of 4
    ],
)
def test_bad_masks_raise(mask: torch.Tensor, error: type) -> None:
    with pytest.raises(error):
        Attention(**BASE)(_x(2, 10, 32), attention_mask=mask)


def test_diffusers_processor_maps_to_a_default_that_selection_overrides() -> None:
    attn = Attention(**BASE, processor=diffusers_ap.AttnProcessor()).eval()
    x = _x(1, 4, 32)
    attn(x)
    assert attn.default_processor_name == "eager"
    assert biozoo.explain(attn)[0]["ran"] == "eager"
    with biozoo.use_processor("sdpa"):
        attn(x)
    assert biozoo.explain(attn)[0]["ran"] == "sdpa"
    attn.set_processor(diffusers_ap.AttnProcessor2_0())  # diffusers' method pins this module
    with biozoo.use_processor("eager"):
        attn(x)
    assert attn.get_processor() == "sdpa"
    assert biozoo.explain(attn)[0]["ran"] == "sdpa"


def test_model_wide_set_processor_reaches_nested_modules() -> None:
    model = torch.nn.ModuleDict({"a": Attention(**BASE), "b": Attention(**BASE, qk_norm="rms_norm")}).eval()
    biozoo.set_processor(model, "eager")
    biozoo.set_processor(model, "sdpa", where="b")
    x = _x(1, 4, 32)
    model["a"](x)
    model["b"](x)
    assert {row["module"]: row["ran"] for row in biozoo.explain(model)} == {"a": "eager", "b": "sdpa"}


def test_deprecated_attention_block_keys_load() -> None:
    """``_from_deprecated_attn_block``: query/key/value/proj_attn load into to_q/to_k/to_v/to_out.0."""
    cfg = {**BASE, "norm_num_groups": 8, "residual_connection": True, "_from_deprecated_attn_block": True}
    _, src = _pair(**cfg)
    renames = {"to_q.": "query.", "to_k.": "key.", "to_v.": "value.", "to_out.0.": "proj_attn."}
    old = {}
    for key, value in src.state_dict().items():
        new = next((key.replace(a, b, 1) for a, b in renames.items() if key.startswith(a)), key)
        old[new] = value
    assert "proj_attn.weight" in old
    dst = Attention(**cfg).eval()
    dst.load_state_dict(old, strict=True)
    x = _x(2, 32, 3, 3)
    with torch.no_grad():
        _record("deprecated attention block keys: reload", dst(x), src(x), tol=0.0)


def test_upcast_runs_the_kernel_in_fp32_for_half_inputs() -> None:
    _, ours = _pair(**BASE, upcast_softmax=True)
    x = _x(2, 10, 32)
    with torch.no_grad():
        want = ours(x)
        got = ours.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16
    _record("bf16 + upcast_softmax vs fp32 (bf16 tolerance)", got, want, tol=5e-2)


def test_package_import_does_not_import_torch() -> None:
    package_root = Path(__import__("biozoo_attention").__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package_root), os.environ.get("PYTHONPATH", "")])}
    code = "import sys, biozoo_attention; assert 'torch' not in sys.modules; print(biozoo_attention.__version__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0.1.0"
