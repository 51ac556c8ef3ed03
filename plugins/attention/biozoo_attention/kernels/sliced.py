"""``sliced``: exact softmax attention computed a slice of queries at a time.

Why: eager and the SDPA math path materialise the whole ``[B, H, Sq, Skv]``
score matrix; for scGPT-sized batches (32 cells x 8 heads x 1200 x 1200) that
is 1.4 GB in float32. Softmax is row-wise, so query rows can be processed in
slices with identical results and a peak of ``B * H * slice * Skv`` scores.
Unlike diffusers' ``SlicedAttnProcessor`` (which slices the ``B*H`` axis and
so still holds full ``Sq x Skv`` rows per head), the bound here does not grow
with ``Sq``.

The slice is ``slice_size`` rows if set, else as many rows as fit in
``max_elements`` scores (default 2**24, i.e. 64 MB of float32 scores per
slice; the peak is about two slices, scores then probabilities, computed in
place when autograd does not need the intermediates). Tune a process-wide instance with
``get_registry().processor("sliced").slice_size = 64``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from biozoo.attention.contract import AttentionCall, AttentionResult, ProcessorCaps
from biozoo.attention.processors import causal_keep, split_mask
from biozoo_attention.kernels._common import compute_dtype, grouped, refuse_unsupported, scale_of

ALL_MASKS = frozenset({"key_padding", "bool", "additive"})


class SlicedProcessor:
    """Softmax attention over query slices: bounded memory, same math as ``eager`` (no weights)."""

    name = "sliced"
    caps = ProcessorCaps(
        masks=ALL_MASKS,
        causal=True,
        causal_with_mask=True,
        custom_scale=True,
        gqa=True,
        dropout=True,
        need_weights=False,  # returning weights would need the full matrix this kernel exists to avoid
        exact=True,
    )

    def __init__(self, slice_size: int | None = None, max_elements: int = 2**24) -> None:
        self.slice_size = slice_size
        self.max_elements = max_elements

    def available(self) -> tuple[bool, str]:
        return True, ""

    def rows_per_slice(self, batch: int, heads: int, sq: int, skv: int) -> int:
        """Query rows per slice: ``slice_size``, or what fits ``max_elements`` scores (at least one row)."""
        if self.slice_size is not None:
            return max(1, min(self.slice_size, sq))
        return max(1, min(sq, self.max_elements // max(1, batch * heads * skv)))

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall) -> AttentionResult:
        refuse_unsupported(self.name, self.caps, call, q, k)
        b, h, sq, d = q.shape
        hkv, skv = k.shape[1], k.shape[2]
        if h % hkv:
            raise ValueError(f"{h} query heads are not a multiple of {hkv} key/value heads")
        ctype = compute_dtype(q.dtype)
        scale = scale_of(call, d)
        qg = q.reshape(b, hkv, h // hkv, sq, d)
        kt = k.to(ctype).transpose(-2, -1).unsqueeze(2)  # [B, Hkv, 1, D, Skv]
        vg = v.to(ctype).unsqueeze(2)  # [B, Hkv, 1, Skv, Dv]
        keep, bias = split_mask(call, ctype)
        keep = None if keep is None else grouped(keep, hkv)  # [B, Hkv, rep|1, Sq|1, Skv], lined up with qg
        bias = None if bias is None else grouped(bias, hkv)
        out = torch.empty(b, hkv, h // hkv, sq, v.shape[-1], dtype=q.dtype, device=q.device)
        step = self.rows_per_slice(b, h, sq, skv)
        # in place where autograd allows it: peak stays ~2 slices of scores (scores, then probabilities)
        inplace = not (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)))
        slices = 0
        for start in range(0, sq, step):
            stop = min(sq, start + step)
            scores = torch.matmul(qg[:, :, :, start:stop].to(ctype), kt)  # [B, Hkv, rep, n, Skv]
            scores = scores.mul_(scale) if inplace else scores * scale
            if bias is not None:
                rows = _rows(bias, start, stop)
                scores = scores.add_(rows) if inplace else scores + rows
            row_keep = None if keep is None else _rows(keep, start, stop)
            if call.causal:
                c = causal_keep(sq, skv, q.device, rows=torch.arange(start, stop, device=q.device))
                row_keep = c if row_keep is None else row_keep & c
            if row_keep is not None:
                scores = (scores.masked_fill_ if inplace else scores.masked_fill)(~row_keep, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            del scores
            if row_keep is not None or bias is not None:  # rows with nothing to attend to: zeros, not NaN
                weights = weights.nan_to_num_(nan=0.0) if inplace else torch.nan_to_num(weights, nan=0.0)
            if call.dropout_p > 0:
                weights = F.dropout(weights, p=call.dropout_p, inplace=inplace)
            out[:, :, :, start:stop] = torch.matmul(weights, vg).to(q.dtype)
            slices += 1
        return AttentionResult(out.reshape(b, h, sq, v.shape[-1]), extras={"query_slices": slices, "slice_rows": step})


def _rows(t: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of a mask's query axis (dim -2), unless it broadcasts over queries."""
    return t if t.shape[-2] == 1 else t[..., start:stop, :]
