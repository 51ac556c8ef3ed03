"""``xformers``: ``xformers.ops.memory_efficient_attention``, for CUDA GPUs.

Not installable on CPU-only hosts; ``available()`` only looks for the package
and a visible CUDA device (no allocation, no CUDA context), unlike diffusers'
old probe that ran a tiny attention on the GPU.

Mapping: ``[B, H, S, D]`` -> xformers' ``[B, S, H, D]``; causal without a mask
uses ``LowerTriangularFromBottomRightMask`` (biozoo's alignment; the plain
``LowerTriangularMask`` is top-left and would be wrong for ``Sq != Skv``);
any mask (and causal with a mask) becomes one additive bias, materialised
with its last dimension padded to a multiple of 8 as xformers requires; GQA
is emulated by repeating K/V heads. Rows with nothing to attend to are
zeroed explicitly. Priority is below ``sdpa`` until verified on a GPU.
"""

from __future__ import annotations

import torch

from biozoo.attention.contract import AttentionCall, AttentionResult, ProcessorCaps
from biozoo.attention.processors import causal_keep, expand_kv_heads, split_mask
from biozoo_attention.kernels._common import installed, refuse_unsupported


class XformersProcessor:
    """xformers memory-efficient attention: every mask kind (as a bias), causal, GQA, scale, dropout."""

    name = "xformers"
    caps = ProcessorCaps(
        masks=frozenset({"key_padding", "bool", "additive"}),
        causal=True,
        causal_with_mask=True,
        custom_scale=True,
        gqa=True,
        dropout=True,
        need_weights=False,
        dtypes=frozenset({"float32", "float16", "bfloat16"}),
        devices=frozenset({"cuda"}),
        exact=True,
    )

    def available(self) -> tuple[bool, str]:
        if not installed("xformers"):
            return False, "xformers is not installed (pip install xformers; needs a CUDA GPU)"
        if not torch.cuda.is_available():
            return False, "xformers' memory-efficient attention needs a CUDA GPU; this torch sees none"
        return True, ""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall) -> AttentionResult:
        import xformers.ops as xops
        from xformers.ops.fmha.attn_bias import LowerTriangularFromBottomRightMask

        refuse_unsupported(self.name, self.caps, call, q, k)
        b, h, sq, _ = q.shape
        skv = k.shape[2]
        k, v = expand_kv_heads(k, v, h)
        keep, bias = split_mask(call, q.dtype)
        attn_bias: object = None
        if call.causal and keep is None and bias is None:
            attn_bias = LowerTriangularFromBottomRightMask()
        elif keep is not None or bias is not None or call.causal:
            if call.causal:
                c = causal_keep(sq, skv, q.device)
                keep = c if keep is None else keep & c
            full = torch.zeros(b, h, sq, skv, dtype=q.dtype, device=q.device)
            if bias is not None:
                full = full + bias
            if keep is not None:
                full = full.masked_fill(~keep, float("-inf"))
            aligned = torch.zeros(b, h, sq, (skv + 7) // 8 * 8, dtype=q.dtype, device=q.device)
            aligned[..., :skv] = full
            attn_bias = aligned[..., :skv]
        qs, ks, vs = (t.transpose(1, 2) for t in (q, k, v))
        out = xops.memory_efficient_attention(qs, ks, vs, attn_bias=attn_bias, p=call.dropout_p, scale=call.scale)
        out = out.transpose(1, 2)
        if keep is not None or bias is not None:
            dead = ~torch.isfinite(full).any(dim=-1, keepdim=True)  # no `if dead.any()`: no wait for the GPU
            out = out.masked_fill(dead, 0.0)
        elif call.causal and sq > skv:
            out[:, :, : sq - skv] = 0.0
        return AttentionResult(out)
