"""``varlen``: padding-free attention for key-padded (ragged) batches.

Single-cell batches are right-padded to the longest cell: with lengths spread
over 100..1200, almost half of a dense ``[B, H, S, S]`` score matrix is
padding. This kernel gathers each sequence's valid keys/values and runs SDPA
on just those, grouping sequences whose valid keys are identical in count and
placement into one call, so no FLOP goes to padded keys. The math is the
same softmax: the result is exact.

Two registered names, because the contract cannot yet say which *queries* are
padding:

* ``varlen`` computes every query row, as the contract requires: padded query
  rows of a self-attention call still attend to the valid keys (what eager
  returns there). Exact, auto-eligible. If the call carries a ``query_keep``
  (bool ``[B, Sq]``, True = a real query; a proposed ``AttentionCall`` field
  that modules would set for self-attention over padded tokens), rows marked
  False are skipped and left at zero: then no compute goes to padding at all.
* ``varlen-self`` is for self-attention over right-padded tokens (the scGPT
  encoder) until that field exists: when ``Sq == Skv`` it takes the
  key-padding mask as the query padding too, skips those rows and returns
  zeros there (what PyTorch's nested-tensor encoder fast path returns). Valid
  rows are exact; padded rows differ from the contract, so it is declared
  ``approximate`` and ``auto`` never picks it: name it for models whose
  padded outputs are discarded.

Both support causal (bottom-right, in original positions, so holes in the
mask are handled), GQA (``enable_gqa``), custom scale and dropout, and accept
only ``key_padding`` masks (or none).

On CUDA in float16/bfloat16 (non-causal, no dropout) both take a packed path
instead of the per-group loop: the valid keys of the whole batch are packed
into one ``[tokens, H, D]`` tensor and a single flash-attention varlen call
(``torch.nn.attention.varlen.varlen_attn``, torch >= 2.10) attends each query
to its own sequence's keys. ``varlen`` still computes every query row (packed
at full length); ``varlen-self`` packs the queries too. Non-causal attention
does not depend on key order, so any key-padding pattern is exact. The packing has
a fixed size (``nonzero_static``), so nothing waits for the GPU.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F

from biozoo.attention.contract import AttentionCall, AttentionResult, ProcessorCaps
from biozoo.attention.processors import causal_keep, sdpa_available
from biozoo_attention.kernels._common import refuse_unsupported


class VarlenProcessor:
    """Per-sequence SDPA on only the valid keys; every query row computed (exact per the contract)."""

    name = "varlen"
    skip_padded_queries = False
    caps = ProcessorCaps(
        masks=frozenset({"key_padding"}),
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
        refuse_unsupported(self.name, self.caps, call, q, k)
        b, h, sq, _ = q.shape
        skv = k.shape[2]
        if call.mask is None:  # nothing is padding: one dense call
            mask = causal_keep(sq, skv, q.device) if call.causal else None
            return AttentionResult(_sdpa(q, k, v, mask, call, square_causal=call.causal and sq == skv))
        keep = call.mask.tensor.to(torch.bool)
        # Which query rows matter: AttentionCall.query_keep ([B, Sq], True = a real query; other rows are
        # don't-care) lets `varlen` skip padded queries too.
        query_keep = call.query_keep
        if query_keep is None and self.skip_padded_queries and sq == skv:
            query_keep = keep
        if packed_path_applies(q, call):
            qk = None if query_keep is None else query_keep.to(torch.bool)
            return AttentionResult(packed_attention(q, k, v, keep, qk, call.scale, _flash_varlen()))
        out = q.new_zeros(b, h, sq, v.shape[-1])
        for rows, kidx, qidx in _groups(keep, None if query_keep is None else query_keep.to(torch.bool)):
            if kidx.numel() == 0 or (qidx is not None and qidx.numel() == 0):
                continue  # no valid key (zeros), or no query worth computing
            kprefix = _is_prefix(kidx)
            kb, vb = _take(k, rows, kidx, kprefix), _take(v, rows, kidx, kprefix)
            if qidx is None:
                qb, positions, qprefix = _take(q, rows, None, False), torch.arange(sq, device=q.device), False
            else:
                qprefix = _is_prefix(qidx)
                qb, positions = _take(q, rows, qidx, qprefix), qidx
            mask = causal_keep(sq, skv, q.device, rows=positions)[:, kidx] if call.causal else None
            square = (
                call.causal and sq == skv and kprefix and qprefix and qidx is not None and qidx.numel() == kidx.numel()
            )
            ob = _sdpa(qb, kb, vb, mask, call, square_causal=square)
            if qidx is None:
                out[rows] = ob
            elif qprefix:
                out[rows, :, : qidx.numel()] = ob
            else:
                out[rows[:, None], :, qidx[None, :]] = ob.transpose(1, 2)
        return AttentionResult(out)


class VarlenSelfProcessor(VarlenProcessor):
    """``varlen`` that also skips padded *query* rows of self-attention (zeros there); named use only."""

    name = "varlen-self"
    skip_padded_queries = True
    # zeros at padded query rows: not the contract's function there, so never `auto`
    caps = replace(VarlenProcessor.caps, exact=False, approximate=True)


# -- the packed path (CUDA, half precision) -------------------------------------------------------------------

PackedKernel = Callable[..., torch.Tensor]  # (q [Tq,H,D], k [Tk,H,D], v, cu_q, cu_k, max_q, max_k, scale) -> out


@functools.cache
def _flash_varlen() -> PackedKernel | None:
    """torch's flash-attention varlen entry point, adapted to one signature (``None`` where torch lacks it)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    takes_scale = "scale" in inspect.signature(varlen_attn).parameters  # torch 2.10 has no scale argument

    def kernel(q, k, v, cu_q, cu_k, max_q, max_k, scale):  # type: ignore[no-untyped-def]
        if scale is not None and not takes_scale:
            q = q * (scale * math.sqrt(q.shape[-1]))  # its default scale is 1/sqrt(D)
            scale = None
        extra = {"scale": scale} if takes_scale and scale is not None else {}
        return varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, **extra)

    return kernel


def packed_path_applies(q: torch.Tensor, call: AttentionCall) -> bool:
    """Flash varlen's domain: CUDA, float16/bfloat16, head size a multiple of 8 up to 256, no causal, no dropout."""
    return (
        q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
        and q.shape[-1] % 8 == 0
        and q.shape[-1] <= 256
        and not call.causal
        and call.dropout_p == 0.0
        and _flash_varlen() is not None
    )


def packed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    keep: torch.Tensor,
    query_keep: torch.Tensor | None,
    scale: float | None,
    kernel: PackedKernel | None,
) -> torch.Tensor:
    """Non-causal attention of ``q [B,H,Sq,D]`` over the kept keys of ``k``/``v`` through one packed varlen call.

    Keys (and, with ``query_keep``, queries) are packed across the batch; without ``query_keep`` every query row
    is kept at full length. Rows without a valid key, and dropped query rows, are zero. ``kernel`` takes packed
    ``[tokens, H, D]`` tensors and int32 cumulative lengths (flash-attention's varlen convention).
    """
    assert kernel is not None
    b, h, sq, d = q.shape
    if k.shape[1] != h:  # GQA: the packed kernel wants as many key heads as query heads
        k, v = k.repeat_interleave(h // k.shape[1], dim=1), v.repeat_interleave(h // v.shape[1], dim=1)
    skv = keep.shape[1]
    k_index, cu_k = _packing(keep)
    k_rows = k.transpose(1, 2).reshape(b * skv, h, d).index_select(0, k_index)
    v_rows = v.transpose(1, 2).reshape(b * skv, h, v.shape[-1]).index_select(0, k_index)
    if query_keep is None:
        q_rows = q.transpose(1, 2).reshape(b * sq, h, d)
        cu_q = torch.arange(0, (b + 1) * sq, sq, device=q.device, dtype=torch.int32)
    else:
        q_index, cu_q = (k_index, cu_k) if query_keep is keep else _packing(query_keep)
        q_rows = q.transpose(1, 2).reshape(b * sq, h, d).index_select(0, q_index)
    out_rows = kernel(q_rows, k_rows, v_rows, cu_q, cu_k, sq, skv, scale)  # upper bounds: no sync for the max
    if query_keep is None:
        out = out_rows.reshape(b, sq, h, -1)
    else:  # rows past the packed total are not written by the kernel: zero them, then add each row in place
        written = torch.arange(out_rows.shape[0], device=q.device) < cu_q[-1]
        out_rows = torch.where(written[:, None, None], out_rows, 0)
        out = out_rows.new_zeros(b * sq, h, out_rows.shape[-1]).index_add_(0, q_index, out_rows)
        out = out.reshape(b, sq, h, -1)
    has_keys = keep.any(dim=1).to(out.dtype)[:, None, None, None]  # rows with nothing to attend to are zero
    return (out * has_keys).transpose(1, 2)


def _packing(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of the kept positions, padded to ``B * S`` with index 0, and int32 cumulative counts.

    ``nonzero_static`` has a fixed output size, so the host never waits for the count; the padding rows are
    past the last cumulative count, where the kernel never looks.
    """
    flat = keep.reshape(-1)
    index = torch.nonzero_static(flat, size=flat.numel(), fill_value=0).reshape(-1)
    return index, F.pad(keep.sum(1).cumsum(0), (1, 0)).to(torch.int32)


def _groups(
    keep: torch.Tensor, query_keep: torch.Tensor | None
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Batch rows grouped by identical (valid keys, valid queries): ``[(rows, key idx, query idx or None)]``.

    Right padding (every row a prefix) groups by lengths without looking at the patterns.
    """
    device = keep.device
    groups: dict[object, list[int]] = {}
    if _all_prefix(keep) and (query_keep is None or _all_prefix(query_keep)):
        nk = keep.sum(dim=1).tolist()
        nq = [None] * len(nk) if query_keep is None else query_keep.sum(dim=1).tolist()
        for row, key in enumerate(zip(nk, nq, strict=True)):
            groups.setdefault(key, []).append(row)
        return [
            (
                torch.tensor(rows, device=device),
                torch.arange(n, device=device),
                None if m is None else torch.arange(m, device=device),
            )
            for (n, m), rows in groups.items()
        ]
    for row in range(keep.shape[0]):
        key = (tuple(keep[row].tolist()), None if query_keep is None else tuple(query_keep[row].tolist()))
        groups.setdefault(key, []).append(row)
    out = []
    for rows in groups.values():
        qidx = None if query_keep is None else query_keep[rows[0]].nonzero().flatten()
        out.append((torch.tensor(rows, device=device), keep[rows[0]].nonzero().flatten(), qidx))
    return out


def _all_prefix(keep: torch.Tensor) -> bool:
    """Every row is ``True...True False...False`` (right padding)."""
    return bool((keep.long().cumprod(dim=1).sum(dim=1) == keep.sum(dim=1)).all())


def _is_prefix(idx: torch.Tensor) -> bool:
    return idx.numel() == 0 or int(idx[-1]) == idx.numel() - 1


def _take(t: torch.Tensor, rows: torch.Tensor, idx: torch.Tensor | None, prefix: bool) -> torch.Tensor:
    """``t[rows][:, :, idx]`` with as few copies as possible (a view for one row and prefix keys)."""
    if rows.numel() == 1:
        r = int(rows[0])
        t = t[r : r + 1]
    else:
        t = t.index_select(0, rows)
    if idx is None:
        return t
    return t[:, :, : idx.numel()] if prefix else t.index_select(2, idx)


def _sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    keep: torch.Tensor | None,
    call: AttentionCall,
    square_causal: bool = False,
) -> torch.Tensor:
    """SDPA with an optional ``[Sq, Skv]`` keep-mask; ``square_causal`` uses SDPA's own causal path instead."""
    gqa = k.shape[1] != q.shape[1]
    if square_causal:
        keep = None
    if gqa and keep is not None:  # enable_gqa with a mask takes torch's slow math path: expand instead
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        gqa = False
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=keep, dropout_p=call.dropout_p, is_causal=square_causal, scale=call.scale, enable_gqa=gqa
    )
    if keep is not None:
        dead = ~keep.any(dim=-1)  # no `if dead.any()`: that would wait for the GPU on every call
        out = out.masked_fill(dead[:, None], 0.0)
    return out
