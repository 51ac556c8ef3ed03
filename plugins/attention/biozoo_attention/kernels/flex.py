"""``flex``: ``torch.nn.attention.flex_attention`` with the call expressed as ``score_mod`` / ``block_mask``.

Every feature of the call is honoured explicitly: typed masks, causal (aligned
bottom-right, with or without a mask: diffusers' flex backend silently drops
``is_causal`` when no mask is given), custom scale and GQA (``enable_gqa``).
Flex returns zeros for query rows with nothing to attend to, as the contract
asks.

**Compiled or not.** Flex is a fused, block-sparse kernel only under
``torch.compile``; called eagerly it falls back to an unfused implementation
that materialises the scores (and warns). Measured on the 2-vCPU CPU host
(B=4, H=8, S=512, D=64, key padding; torch 2.13): SDPA 35 ms, eager flex
~300 ms, compiled flex 27 ms + 24 ms to build the block mask, after a
19 s first compile and ~4 s per new shape. Single-cell batches change shape on
nearly every call, so compiling by default would cost far more than it
saves. Default: not compiled (the warning about that is silenced once,
because it is a decision, not an accident). Opt in with
``BIOZOO_FLEX_COMPILE=1`` or ``FlexProcessor(compile=True)``; compiled mode
also turns key-padding, bool and causal masks into a ``BlockMask`` so fully
masked blocks are skipped.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import torch

from biozoo.attention.contract import AttentionCall, AttentionResult, ProcessorCaps
from biozoo.attention.processors import split_mask
from biozoo_attention.kernels._common import as_4d, refuse_unsupported

ALL_MASKS = frozenset({"key_padding", "bool", "additive"})
_EAGER_WARNING = "flex_attention called without torch.compile"


_silenced = False


def _silence_eager_warning() -> None:
    """Uncompiled flex is a documented choice here, not a mistake torch needs to warn about (once per process)."""
    global _silenced
    if not _silenced:
        warnings.filterwarnings("ignore", message=_EAGER_WARNING, category=UserWarning)
        _silenced = True


def _env_compile() -> bool:
    return os.environ.get("BIOZOO_FLEX_COMPILE", "").strip().lower() in ("1", "true", "yes")


class FlexProcessor:
    """FlexAttention; eager by default on purpose (see module docstring), compiled on request."""

    name = "flex"
    caps = ProcessorCaps(
        masks=ALL_MASKS,
        causal=True,
        causal_with_mask=True,
        custom_scale=True,
        gqa=True,
        dropout=False,  # flex has no dropout; it is never silently dropped (the caps reject it)
        need_weights=False,
        devices=frozenset({"cpu", "cuda"}),
        exact=True,
    )

    def __init__(self, compile: bool | None = None) -> None:
        self.compile = _env_compile() if compile is None else compile
        self._compiled: Callable[..., Any] | None = None

    def available(self) -> tuple[bool, str]:
        try:
            from torch.nn.attention import flex_attention  # noqa: F401
        except ImportError as exc:
            return False, f"torch {torch.__version__} has no flex_attention (needs torch >= 2.5): {exc}"
        return True, ""

    def _kernel(self) -> Callable[..., Any]:
        from torch.nn.attention.flex_attention import flex_attention

        if not self.compile:
            _silence_eager_warning()
            return flex_attention
        if self._compiled is None:
            self._compiled = torch.compile(flex_attention, dynamic=False)
        return self._compiled

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall) -> AttentionResult:
        refuse_unsupported(self.name, self.caps, call, q, k)
        if self.compile:
            score_mod, block_mask = _compiled_mods(call, q, k)
        else:
            score_mod, block_mask = _eager_mods(call, q, k), None
        out = self._kernel()(
            q, k, v, score_mod=score_mod, block_mask=block_mask, scale=call.scale, enable_gqa=k.shape[1] != q.shape[1]
        )
        return AttentionResult(out)


def _eager_mods(call: AttentionCall, q: torch.Tensor, k: torch.Tensor) -> Callable[..., Any]:
    """One ``score_mod`` structure for every call, for eager flex.

    Eager flex still traces ``score_mod`` with dynamo (backend "eager") and
    retraces whenever the closure's structure changes. Here the mask and bias
    are always tensors (stride-0 expansions when absent, so no memory) and
    causal is data, which keeps that to a handful of traces per process.
    """
    b, h, sq, _ = q.shape
    skv = k.shape[2]
    device = q.device
    bias_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    keep, bias = split_mask(call, bias_dtype)
    keep = torch.ones((), dtype=torch.bool, device=device) if keep is None else keep
    bias = torch.zeros((), dtype=bias_dtype, device=device) if bias is None else bias
    keep = as_4d(keep).expand(b, h, sq, skv)
    bias = as_4d(bias).expand(b, h, sq, skv)
    offset = torch.tensor(skv - sq, device=device)
    causal = torch.tensor(call.causal, device=device)

    def score_mod(score: Any, bi: Any, hi: Any, qi: Any, ki: Any) -> Any:
        ok = keep[bi, hi, qi, ki] & ((ki <= qi + offset) | ~causal)
        return torch.where(ok, score + bias[bi, hi, qi, ki].to(score.dtype), -float("inf"))

    return score_mod


def _compiled_mods(call: AttentionCall, q: torch.Tensor, k: torch.Tensor) -> tuple[Callable[..., Any] | None, Any]:
    """``score_mod`` for an additive bias and a ``BlockMask`` for everything boolean, for compiled flex.

    Inductor's CPU flex template only accepts plain (non-expanded) captured
    buffers, so broadcast dimensions are indexed at 0 instead of expanded.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    b, h, sq, _ = q.shape
    skv = k.shape[2]
    offset = skv - sq
    padding = keep = bias = None
    if call.mask is not None:
        t = call.mask.tensor
        if call.mask.kind == "key_padding":
            padding = t.to(torch.bool).contiguous()
        elif call.mask.kind == "bool":
            keep = as_4d(t.to(torch.bool)).contiguous()
        else:
            bias = as_4d(t.to(torch.float64 if q.dtype == torch.float64 else torch.float32)).contiguous()
    score_mod = None
    if bias is not None:
        bb, bh, bq = (int(n > 1) for n in bias.shape[:3])

        def score_mod(score: Any, bi: Any, hi: Any, qi: Any, ki: Any) -> Any:
            return score + bias[bi * bb, hi * bh, qi * bq, ki].to(score.dtype)

    if padding is None and keep is None and not call.causal:
        return score_mod, None
    kb, kh, kq = (int(n > 1) for n in keep.shape[:3]) if keep is not None else (0, 0, 0)
    causal = call.causal

    def mask_mod(bi: Any, hi: Any, qi: Any, ki: Any) -> Any:
        ok = ki >= 0
        if padding is not None:
            ok = ok & padding[bi, ki]
        if keep is not None:
            ok = ok & keep[bi * kb, hi * kh, qi * kq, ki]
        if causal:
            ok = ok & (ki <= qi + offset)
        return ok

    batched = padding is not None or (keep is not None and kb == 1)
    block_mask = create_block_mask(
        mask_mod, B=b if batched else None, H=h if kh else None, Q_LEN=sq, KV_LEN=skv, device=q.device
    )
    return score_mod, block_mask
