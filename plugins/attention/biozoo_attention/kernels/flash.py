"""``flash``: the ``flash-attn`` package (Dao et al.), for CUDA GPUs with fp16/bf16.

Not installable on the CPU-only hosts biozoo's CI runs on, so ``available()``
says why (package missing, no CUDA) without touching the GPU: it only checks
that the package can be found and that torch was built with a visible CUDA
device, never allocating device memory or creating a CUDA context.

Mapping from the call: ``[B, H, S, D]`` is transposed to flash's
``[B, S, H, D]``; causal uses flash-attn >= 2.1's bottom-right alignment (the
same as biozoo's); GQA is native; a ``key_padding`` mask unpads the keys and
runs ``flash_attn_varlen_func`` (queries stay dense), so no compute goes to
padded keys. Other mask kinds are not supported and are declared as such, and
so is causal *with* a key-padding mask: varlen flash aligns causal to each
sequence's own key count (``j <= i + n_b - Sq``), not to the padded length
(``j <= i + Skv - Sq``) as biozoo does, so it would be silently wrong.

Priority is below ``sdpa`` on purpose: this code cannot be verified here, so
``auto`` should not prefer it until ``check_kernel`` has passed on a CUDA host
(see biozoo_attention.conformance).
"""

from __future__ import annotations

from importlib import metadata

import torch

from biozoo.attention.contract import AttentionCall, AttentionResult, ProcessorCaps
from biozoo_attention.kernels._common import installed, refuse_unsupported

MIN_VERSION = (2, 1)  # bottom-right causal alignment


class FlashProcessor:
    """flash-attn 2: dense or key-padded (varlen), causal (without a mask), GQA, custom scale, dropout."""

    name = "flash"
    caps = ProcessorCaps(
        masks=frozenset({"key_padding"}),
        causal=True,
        causal_with_mask=False,  # see the module docstring
        custom_scale=True,
        gqa=True,
        dropout=True,
        need_weights=False,
        dtypes=frozenset({"float16", "bfloat16"}),
        devices=frozenset({"cuda"}),
        exact=True,
    )

    def available(self) -> tuple[bool, str]:
        if not installed("flash_attn"):
            return False, "flash-attn is not installed (pip install flash-attn>=2.1; needs a CUDA GPU and toolkit)"
        try:
            version = tuple(int(p) for p in metadata.version("flash-attn").split(".")[:2])
        except (metadata.PackageNotFoundError, ValueError):
            version = MIN_VERSION
        if version < MIN_VERSION:
            found = ".".join(map(str, version))
            return False, f"flash-attn {found} is too old: bottom-right causal needs >= 2.1 (pip install -U flash-attn)"
        if not torch.cuda.is_available():
            return False, "flash-attn needs a CUDA GPU; this torch sees none"
        return True, ""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall) -> AttentionResult:
        from flash_attn import flash_attn_func, flash_attn_varlen_func

        refuse_unsupported(self.name, self.caps, call, q, k)
        b, h, sq, d = q.shape
        skv = k.shape[2]
        qs, ks, vs = (t.transpose(1, 2) for t in (q, k, v))  # [B, S, H, D]
        if call.mask is None:
            out = flash_attn_func(qs, ks, vs, dropout_p=call.dropout_p, softmax_scale=call.scale, causal=call.causal)
            return AttentionResult(out.transpose(1, 2))
        keep = call.mask.tensor.to(torch.bool)
        lengths = keep.sum(dim=1, dtype=torch.int32)
        cu_k = torch.nn.functional.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
        cu_q = torch.arange(0, (b + 1) * sq, sq, dtype=torch.int32, device=q.device)
        flat_keep = keep.reshape(-1)
        k_packed = ks.reshape(b * skv, *ks.shape[2:])[flat_keep]
        v_packed = vs.reshape(b * skv, *vs.shape[2:])[flat_keep]
        out = flash_attn_varlen_func(
            qs.reshape(b * sq, h, d),
            k_packed,
            v_packed,
            cu_seqlens_q=cu_q,
            cu_seqlens_k=cu_k,
            max_seqlen_q=sq,
            max_seqlen_k=int(lengths.max()),
            dropout_p=call.dropout_p,
            softmax_scale=call.scale,
        )
        out = out.reshape(b, sq, h, -1).transpose(1, 2)
        dead = lengths == 0
        if bool(dead.any()):
            out = out.masked_fill(dead[:, None, None, None], 0.0)
        return AttentionResult(out)
