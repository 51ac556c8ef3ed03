"""Multi-head attention whose math is delegated to a swappable processor.

The module owns the weights and layer logic (projections, optional qk-norm,
rotary positions, KV cache); the processor owns only ``softmax(QK^T)V``. So a
model switches between ``eager``, ``sdpa`` or a plugin's kernel without any
change to its state dict. ``packed_projections=True`` keeps the projections in one
``in_proj_weight`` as :class:`torch.nn.MultiheadAttention` does (one matmul, and
checkpoints of PyTorch-built models load with their own key names).

Mask arguments follow :class:`torch.nn.MultiheadAttention`, so modules ported
from PyTorch code keep their call sites: ``key_padding_mask`` is bool
``[B, Skv]`` with **True = padding**, ``attn_mask`` is either bool with
**True = not allowed** or float added to the scores, shaped ``[Sq, Skv]``,
``[B, Sq, Skv]`` or ``[B, H, Sq, Skv]`` (unlike PyTorch, 3-D means per batch
element, not ``[B*H, ...]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from biozoo.attention.contract import AttentionCall, AttentionMask
from biozoo.attention.selection import AttentionSettable, attend
from biozoo.nn.checks import ConfigError, check_int, check_probability


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (``weight``), as used for qk-norm."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float() if dtype in (torch.float16, torch.bfloat16) else x
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def make_norm(kind: str | None, dim: int, eps: float) -> nn.Module | None:
    if kind is None:
        return None
    if kind == "layer_norm":
        return nn.LayerNorm(dim, eps=eps)
    if kind == "rms_norm":
        return RMSNorm(dim, eps=eps)
    raise ValueError(f"unknown norm {kind!r}; use 'layer_norm', 'rms_norm' or None")


@dataclass
class KVCache:
    """Keys and values seen so far, per attention module, for incremental decoding.

    Growing (``max_length=None``): each update concatenates, so every step copies the whole cache.
    Static (``max_length`` set): each module gets one ``[B, heads, max_length, head_dim]`` buffer
    per keys and values on first use, written in place at the update's position, and attention
    reads a view of the first ``position + S`` entries: no copies and no new allocations per step
    (what a GPU decoding loop needs). Both give the same keys and values.
    """

    layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    max_length: int | None = None
    filled: dict[int, int] = field(default_factory=dict)  #: static: positions written, per module

    def length(self) -> int:
        if self.max_length is not None:
            return max(self.filled.values(), default=0)
        return next(iter(self.layers.values()))[0].shape[-2] if self.layers else 0

    def update(
        self, key: int, k: torch.Tensor, v: torch.Tensor, position: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Add ``k``/``v`` ``[B, heads, S, head_dim]`` at ``position`` (static; default: after what is
        there; a growing cache always appends); returns every key and value up to and including them."""
        if self.max_length is None:
            if key in self.layers:
                old_k, old_v = self.layers[key]
                k, v = torch.cat([old_k, k], dim=-2), torch.cat([old_v, v], dim=-2)
            self.layers[key] = (k, v)
            return k, v
        start = self.filled.get(key, 0) if position is None else position
        end = start + k.shape[-2]
        if end > self.max_length:
            raise ValueError(f"the static KV cache holds {self.max_length} positions; position {end - 1} is past it")
        if key not in self.layers:
            b, h, _, d = k.shape
            self.layers[key] = (k.new_zeros(b, h, self.max_length, d), v.new_zeros(b, h, self.max_length, v.shape[-1]))
        buffer_k, buffer_v = self.layers[key]
        buffer_k[:, :, start:end].copy_(k)
        buffer_v[:, :, start:end].copy_(v)
        self.filled[key] = end
        return buffer_k[:, :, :end], buffer_v[:, :, :end]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows ``rows`` (index or bool mask), e.g. when finished sequences leave the batch."""
        self.layers = {key: (k[rows], v[rows]) for key, (k, v) in self.layers.items()}


class MultiHeadAttention(AttentionSettable, nn.Module):
    """Self or cross attention with GQA/MQA, masks, causal, qk-norm and rotary, via a processor."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        out_bias: bool | None = None,
        dropout: float = 0.0,
        qk_norm: str | None = None,
        qk_norm_eps: float = 1e-6,
        scale: float | None = None,
        packed_projections: bool = False,
    ) -> None:
        super().__init__()
        check_int("embed_dim", embed_dim)
        check_int("num_heads", num_heads)
        for name, size in (("num_kv_heads", num_kv_heads), ("head_dim", head_dim), ("kdim", kdim), ("vdim", vdim)):
            if size is not None:
                check_int(name, size)
        check_probability("dropout", dropout)
        if head_dim is None:
            if embed_dim % num_heads:
                raise ConfigError("num_heads", f"must divide embed_dim ({embed_dim}), got {num_heads}")
            head_dim = embed_dim // num_heads
        num_kv_heads = num_kv_heads or num_heads
        if num_heads % num_kv_heads:
            raise ConfigError("num_kv_heads", f"must divide num_heads ({num_heads}), got {num_kv_heads}")
        self.embed_dim, self.num_heads, self.num_kv_heads, self.head_dim = embed_dim, num_heads, num_kv_heads, head_dim
        self.dropout, self.scale = dropout, scale
        self.packed = packed_projections
        q_dim, kv_dim = num_heads * head_dim, num_kv_heads * head_dim
        if packed_projections:
            if (kdim or embed_dim) != embed_dim or (vdim or embed_dim) != embed_dim:
                raise ValueError("packed_projections needs kdim == vdim == embed_dim (one [q; k; v] matrix)")
            self.in_proj_weight = nn.Parameter(torch.empty(q_dim + 2 * kv_dim, embed_dim))
            self.in_proj_bias = nn.Parameter(torch.zeros(q_dim + 2 * kv_dim)) if bias else None
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            self.q_proj = nn.Linear(embed_dim, q_dim, bias=bias)
            self.k_proj = nn.Linear(kdim or embed_dim, kv_dim, bias=bias)
            self.v_proj = nn.Linear(vdim or embed_dim, kv_dim, bias=bias)
        self.out_proj = nn.Linear(num_heads * head_dim, embed_dim, bias=bias if out_bias is None else out_bias)
        self.q_norm = make_norm(qk_norm, head_dim, qk_norm_eps)
        self.k_norm = make_norm(qk_norm, head_dim, qk_norm_eps)

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, s, _ = x.shape
        return x.reshape(b, s, heads, self.head_dim).transpose(1, 2)

    def _project(
        self, query: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values, split into heads: ``[B, heads, S, head_dim]``."""
        if not self.packed:
            kv_input = query if context is None else context
            q, k, v = self.q_proj(query), self.k_proj(kv_input), self.v_proj(kv_input)
        else:
            q_dim = self.num_heads * self.head_dim
            sizes = [q_dim, self.num_kv_heads * self.head_dim, self.num_kv_heads * self.head_dim]
            if context is None:  # one matmul for all three, as torch.nn.MultiheadAttention does
                q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).split(sizes, dim=-1)
            else:
                parts = [q_dim, 2 * sizes[1]]
                w_q, w_kv = self.in_proj_weight.split(parts)
                b_q, b_kv = (None, None) if self.in_proj_bias is None else self.in_proj_bias.split(parts)
                q = F.linear(query, w_q, b_q)
                k, v = F.linear(context, w_kv, b_kv).chunk(2, dim=-1)
        return self._heads(q, self.num_heads), self._heads(k, self.num_kv_heads), self._heads(v, self.num_kv_heads)

    def forward(
        self,
        query: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        key_padding_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        scale: float | None = None,
        rotary: Any | None = None,
        position_offset: int = 0,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``query [B,Sq,E]``, ``context [B,Skv,kdim]`` (None = self attention) -> ``([B,Sq,E], weights|None)``.

        ``weights`` is per head, ``[B, H, Sq, Skv]``, and only computed when asked.
        ``rotary`` is a rotary positional encoding (``rotate(q, k, offset=...)``);
        ``cache`` appends this call's keys/values for incremental decoding.
        """
        q, k, v = self._project(query, context)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rotary is not None:
            q, k = rotary.rotate(q, k, offset=position_offset)
        if cache is not None:
            k, v = cache.update(id(self), k, v, position_offset)
        self_padded = context is None and cache is None and key_padding_mask is not None
        call = AttentionCall(
            mask=_to_mask(key_padding_mask, attn_mask, q.dtype),
            query_keep=~key_padding_mask if self_padded else None,  # padded tokens' own outputs are not read
            causal=is_causal,
            scale=scale if scale is not None else self.scale,
            dropout_p=self.dropout if self.training else 0.0,
            need_weights=need_weights,
        )
        result = attend(self, q, k, v, call)
        out = result.output.transpose(1, 2).reshape(query.shape[0], query.shape[1], self.num_heads * self.head_dim)
        return self.out_proj(out), result.weights

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, kv_heads={self.num_kv_heads}, head_dim={self.head_dim}"


def _to_mask(
    key_padding_mask: torch.Tensor | None, attn_mask: torch.Tensor | None, dtype: torch.dtype
) -> AttentionMask | None:
    """PyTorch-convention masks -> one typed keep-mask or additive bias for the processor."""
    if key_padding_mask is not None and key_padding_mask.dtype != torch.bool:
        raise TypeError("key_padding_mask must be bool with True marking padding (torch.nn.MultiheadAttention style)")
    if attn_mask is None:
        return None if key_padding_mask is None else AttentionMask("key_padding", ~key_padding_mask)
    if attn_mask.dim() == 2:
        attn_mask = attn_mask[None, None]
    elif attn_mask.dim() == 3:
        attn_mask = attn_mask[:, None]
    if attn_mask.dtype == torch.bool:
        keep = ~attn_mask
        if key_padding_mask is not None:
            keep = keep & ~key_padding_mask[:, None, None, :]
        return AttentionMask("bool", keep)
    bias = attn_mask.to(dtype)
    if key_padding_mask is not None:
        bias = bias.masked_fill(key_padding_mask[:, None, None, :], -math.inf)
    return AttentionMask("additive", bias)
