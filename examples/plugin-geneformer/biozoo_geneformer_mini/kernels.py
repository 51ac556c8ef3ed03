"""The plugin's attention kernel: exact softmax attention computed over chunks of queries.

Why: a Geneformer cell is up to 2048 gene tokens, and a kernel that materialises the full ``[B, H, S, S]`` score
matrix needs 2048² floats per head and cell. This one holds ``[B, H, CHUNK, S]`` at a time, so memory grows with
``S`` instead of ``S²``, and every row is the same softmax the core's ``eager`` kernel computes. It implements the
core's processor contract (:mod:`biozoo.attention`): masks arrive as True = attend; a query row with no key to
attend to gives zeros, never NaN; the ``caps`` say what it can honour, and a named kernel asked for more raises
instead of silently dropping a flag (``biozoo.attention.unsupported``).
"""

from __future__ import annotations

import math

import torch

from biozoo.attention import AttentionCall, AttentionResult, ProcessorCaps

CHUNK = 256  # queries per chunk


class ChunkedAttention:
    """``softmax(q kᵀ · scale + mask) v`` for ``CHUNK`` queries at a time (``geneformer-chunked``)."""

    name = "geneformer-chunked"
    caps = ProcessorCaps(
        masks=frozenset({"key_padding"}),  # what a BERT encoder passes; anything else is refused, not ignored
        custom_scale=True,
        dtypes=frozenset({"float32", "float64", "bfloat16", "float16"}),
        devices=frozenset({"cpu", "cuda"}),
        exact=True,
    )

    def available(self) -> tuple[bool, str]:
        return True, ""  # pure torch: usable wherever torch is

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall) -> AttentionResult:
        scale = call.scale if call.scale is not None else 1.0 / math.sqrt(q.shape[-1])
        compute = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype  # half types: f32 math
        keys, values = k.to(compute).transpose(-2, -1), v.to(compute)
        keep = None if call.mask is None else call.mask.tensor.to(torch.bool)[:, None, None, :]  # [B, 1, 1, Skv]
        out = torch.empty_like(q)
        for start in range(0, q.shape[-2], CHUNK):
            rows = slice(start, start + CHUNK)
            scores = torch.matmul(q[..., rows, :].to(compute) * scale, keys)
            if keep is not None:
                scores = scores.masked_fill(~keep, float("-inf"))
            weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # all keys masked: zeros, not NaN
            out[..., rows, :] = torch.matmul(weights, values).to(q.dtype)
        return AttentionResult(out)
