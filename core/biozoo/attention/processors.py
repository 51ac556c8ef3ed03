"""The two processors the core ships: ``eager`` (exact reference math) and ``sdpa``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from biozoo.attention.contract import AttentionCall, AttentionResult, ProcessorCaps

ALL_MASKS = frozenset({"key_padding", "bool", "additive"})
"""Every ``AttentionMask.kind``: ``ProcessorCaps(masks=ALL_MASKS)`` declares a kernel that takes any mask."""


def expand_kv_heads(k: torch.Tensor, v: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat key/value heads for grouped-query attention (``Hkv`` must divide ``heads``)."""
    kv_heads = k.shape[1]
    if kv_heads == heads:
        return k, v
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads are not a multiple of {kv_heads} key/value heads")
    rep = heads // kv_heads
    return k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)


def causal_keep(sq: int, skv: int, device: torch.device, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Bottom-right aligned causal keep-mask ``[Sq, Skv]``, or ``[len(rows), Skv]`` for the query rows
    ``rows`` (absolute indices) when a kernel works on a subset of them."""
    rows = torch.arange(sq, device=device) if rows is None else rows
    cols = torch.arange(skv, device=device)
    return cols[None, :] <= rows[:, None] + (skv - sq)


def split_mask(call: AttentionCall, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The call's mask as (bool keep-mask, additive bias in ``dtype``), each broadcastable to [B,H,Sq,Skv]."""
    if call.mask is None:
        return None, None
    t = call.mask.tensor
    if call.mask.kind == "key_padding":
        return t.to(torch.bool)[:, None, None, :], None
    if call.mask.kind == "bool":
        return t.to(torch.bool), None
    return None, t.to(dtype)


def combined_bias(
    call: AttentionCall, sq: int, skv: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Merge mask and causal flag into (keep-mask, additive bias), each broadcastable to [B,H,Sq,Skv]."""
    keep, bias = split_mask(call, dtype)
    if call.causal:
        c = causal_keep(sq, skv, device)
        keep = c if keep is None else keep & c
    return keep, bias


def sdpa_available() -> tuple[bool, str]:
    """Whether torch's scaled_dot_product_attention exists (shared by every kernel built on it)."""
    if hasattr(F, "scaled_dot_product_attention"):
        return True, ""
    return False, "this torch has no scaled_dot_product_attention (needs torch >= 2.0)"


class EagerProcessor:
    """Plain softmax(QK^T * scale + mask) V: honours everything, returns weights."""

    name = "eager"
    caps = ProcessorCaps(
        masks=ALL_MASKS,
        causal=True,
        causal_with_mask=True,
        custom_scale=True,
        gqa=True,
        dropout=True,
        need_weights=True,
        exact=True,
    )

    def available(self) -> tuple[bool, str]:
        return True, ""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall) -> AttentionResult:
        k, v = expand_kv_heads(k, v, q.shape[1])
        scale = call.scale if call.scale is not None else 1.0 / math.sqrt(q.shape[-1])
        compute = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
        # scale the (small) queries, not the (B x H x Sq x Skv) scores, and edit the scores in place:
        # every full-size temporary avoided here is a score matrix's worth of memory traffic
        scores = torch.matmul(q.to(compute) * scale, k.to(compute).transpose(-2, -1))
        keep, bias = combined_bias(call, q.shape[-2], k.shape[-2], compute, q.device)
        if bias is not None:
            scores += bias
        if keep is not None:
            scores.masked_fill_(~keep, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        if keep is not None or bias is not None:  # rows with nothing to attend to: zeros, not NaN
            weights = torch.nan_to_num(weights, nan=0.0) if weights.requires_grad else weights.nan_to_num_(nan=0.0)
        if call.dropout_p > 0:
            weights = F.dropout(weights, p=call.dropout_p)
        out = torch.matmul(weights, v.to(compute)).to(q.dtype)
        return AttentionResult(out, weights.to(q.dtype) if call.need_weights else None)


class SdpaProcessor:
    """``torch.nn.functional.scaled_dot_product_attention``: fused kernels where torch has them."""

    name = "sdpa"
    caps = ProcessorCaps(
        masks=ALL_MASKS,
        causal=True,
        causal_with_mask=True,
        custom_scale=True,
        gqa=True,
        dropout=True,
        need_weights=False,
        exact=True,
    )

    def available(self) -> tuple[bool, str]:
        return sdpa_available()

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall) -> AttentionResult:
        sq, skv = q.shape[-2], k.shape[-2]
        gqa = k.shape[1] != q.shape[1]
        is_causal = call.causal and call.mask is None and sq == skv
        if is_causal or (call.causal and call.mask is None and sq == 1):  # one query (decoding) sees every key
            mask = None
        else:
            keep, bias = combined_bias(call, sq, skv, q.dtype, q.device)
            if bias is not None and keep is not None:
                mask = bias.masked_fill(~keep, float("-inf"))
            else:
                mask = bias if bias is not None else keep
        if gqa and mask is not None:
            # enable_gqa with a mask falls back to the slow math path in torch; expand instead.
            k, v = expand_kv_heads(k, v, q.shape[1])
            gqa = False
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=call.dropout_p, is_causal=is_causal, scale=call.scale, enable_gqa=gqa
        )
        if mask is not None:  # rows with nothing to attend to: zeros (no `if dead.any()`: that waits for the GPU)
            if mask.dtype == torch.bool:
                dead = ~mask.any(dim=-1, keepdim=True)
            else:
                dead = torch.isneginf(mask).all(dim=-1, keepdim=True)
            out = out.masked_fill(dead, 0.0)
        return AttentionResult(out)
