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
"""

from __future__ import annotations

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
        dead = ~keep.any(dim=-1)
        if bool(dead.any()):
            out = out.masked_fill(dead[:, None], 0.0)
    return out
