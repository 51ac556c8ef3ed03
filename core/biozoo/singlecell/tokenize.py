"""Cells -> token sequences -> padded batches, as scGPT's ``tokenize_batch`` + ``pad_batch`` do.

A cell becomes ``[<cls>] + ids of its non-zero genes`` (in ``var`` order) with values
``[cls_value] + its (binned) values``. scGPT itself is inconsistent about ``cls_value``: its
``embed_data`` path uses ``pad_value`` (-2), its tutorials (``tokenize_batch``) use 0, so it is a
required choice here. Sequences live in one flat ragged structure (``TokenizedCells``) because a
list of 100k small arrays costs more than the data.

Cells longer than ``max_len`` keep their CLS and a random ``max_len - 1`` of their genes. By
default the kept genes come in the random order the sampler returns, like the reference (scGPT has
no positional encoding, so order does not change its output); ``keep_order=True`` keeps them in
``var`` order instead, which order-sensitive (autoregressive) models need. ``truncation="head"``
keeps the first ``max_len`` tokens instead, as scModelForge's tokenizers do; with ``rank_order``
first (genes by value, descending) that is its rank-value tokenizer's "top expressed genes".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeVar

import numpy as np

from biozoo.singlecell.binning import _csr_parts, digitize_by_edges
from biozoo.singlecell.errors import DataError

T = TypeVar("T")
SamplingMode = Literal["seeded", "reference"]
TruncationMode = Literal["sample", "head"]


@dataclass(frozen=True)
class TokenizedCells:
    """Ragged token sequences: cell ``i`` is ``gene_ids[offsets[i]:offsets[i+1]]`` (same for ``values``)."""

    gene_ids: np.ndarray  #: int64, all cells back to back
    values: np.ndarray  #: float32, aligned with gene_ids
    offsets: np.ndarray  #: int64, n_cells + 1
    has_cls: bool  #: position 0 of every cell is the CLS token

    def __len__(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per cell (CLS included)."""
        return np.diff(self.offsets)

    def cell(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(gene ids, values) of cell ``i``."""
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return self.gene_ids[lo:hi], self.values[lo:hi]


class PaddedBatch(NamedTuple):
    """A right-padded batch, ready for ``torch.from_numpy``."""

    genes: np.ndarray  #: int64 [B, T]
    values: np.ndarray  #: float32 [B, T]
    padding_mask: np.ndarray  #: bool [B, T], True = padding (PyTorch's key_padding_mask convention)


def tokenize_cells(
    x: Any,
    gene_ids: Sequence[int] | np.ndarray,
    *,
    cls_id: int | None,
    cls_value: float = 0.0,
    include_zero_genes: bool = False,
) -> TokenizedCells:
    """Turn a cells x genes matrix (dense or sparse, raw or binned) into per-cell token sequences.

    ``gene_ids[j]`` is the vocabulary id of column ``j``; all must be >= 0 (subset the matrix to
    ``GeneMatch.matched`` first). ``cls_id=None`` adds no CLS token. Zeros are dropped unless
    ``include_zero_genes``; explicit zeros stored in a sparse matrix are dropped too.
    """
    ids = np.asarray(gene_ids, dtype=np.int64)
    n_cols = x.shape[1] if hasattr(x, "shape") and len(x.shape) == 2 else None
    if n_cols is None:
        raise DataError(f"expected a 2-D cells x genes matrix, got {type(x).__name__}", hint="pass adata.X")
    if ids.ndim != 1 or ids.size != n_cols:
        raise DataError(
            f"{ids.size} gene ids for a matrix with {n_cols} genes",
            hint="pass one vocabulary id per column (GeneMatch.ids[GeneMatch.matched] with X[:, matched])",
        )
    if (ids < 0).any():
        raise DataError(
            f"{int((ids < 0).sum())} columns have no vocabulary id (-1)",
            hint="subset to the matched genes first: adata[:, match.matched], gene_ids=match.ids[match.matched]",
        )
    extra = 0 if cls_id is None else 1
    if include_zero_genes:
        dense = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
        counts = np.full(dense.shape[0], n_cols, dtype=np.int64)
        body_genes = np.tile(ids, dense.shape[0])
        body_values = dense.astype(np.float32, copy=False).ravel()
    else:
        data, columns, indptr, _ = _csr_parts(x)
        counts = np.diff(indptr).astype(np.int64)
        body_genes = ids[columns]
        body_values = data.astype(np.float32, copy=False)
    offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts + extra, out=offsets[1:])
    total = int(offsets[-1])
    genes = np.empty(total, dtype=np.int64)
    values = np.empty(total, dtype=np.float32)
    body = np.ones(total, dtype=bool)
    if extra:
        starts = offsets[:-1]
        genes[starts] = cls_id
        values[starts] = cls_value
        body[starts] = False
    genes[body] = body_genes
    values[body] = body_values
    return TokenizedCells(gene_ids=genes, values=values, offsets=offsets, has_cls=bool(extra))


def _sample_positions(n: int, keep: int, has_cls: bool, mode: SamplingMode, rng: np.random.Generator) -> np.ndarray:
    """Positions (within one cell) of the tokens kept when it is longer than ``keep``; CLS stays first."""
    if has_cls:
        if mode == "reference":
            chosen = np.random.choice(n - 1, keep - 1, replace=False) + 1
        else:
            chosen = rng.choice(n - 1, keep - 1, replace=False) + 1
        return np.concatenate([[0], chosen])
    if mode == "reference":
        return np.random.choice(n, keep, replace=False)
    return rng.choice(n, keep, replace=False)


def pad_cells(
    cells: TokenizedCells,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    pad_id: int,
    pad_value: float,
    max_len: int | None = None,
    keep_order: bool = False,
    sampling: SamplingMode = "seeded",
    seed: int | np.random.Generator = 0,
    truncation: TruncationMode = "sample",
) -> PaddedBatch:
    """Pad the cells ``indices`` (default: all) to the batch's longest, capped at ``max_len``.

    Longer cells are subsampled (see module docstring), or with ``truncation="head"`` cut to their
    first ``max_len`` tokens (CLS + the next ``max_len - 1``; ``keep_order``, ``sampling`` and
    ``seed`` then play no part). ``sampling="seeded"`` draws from
    ``np.random.default_rng(seed)`` (or the Generator given); ``"reference"`` calls
    ``np.random.choice`` on numpy's global RNG once per long cell, in batch order, exactly like
    scGPT's ``pad_batch``, so ``np.random.seed(s)`` reproduces it.
    """
    rows = np.arange(len(cells)) if indices is None else np.asarray(indices, dtype=np.int64)
    if rows.ndim != 1 or rows.size == 0:
        raise DataError("pad_cells needs at least one cell index", hint="pass a non-empty 1-D list of cell indices")
    if sampling not in ("seeded", "reference"):
        raise DataError(f"unknown sampling mode {sampling!r}", hint="use 'seeded' or 'reference'")
    if truncation not in ("sample", "head"):
        raise DataError(
            f"unknown truncation mode {truncation!r}",
            hint="use 'sample' (random genes, scGPT) or 'head' (first max_len tokens, scModelForge)",
        )
    minimum = 2 if cells.has_cls else 1
    if max_len is not None and max_len < minimum:
        raise DataError(
            f"max_len={max_len} leaves no room for genes",
            hint=f"use max_len >= {minimum} (scGPT checkpoints use 1200)",
        )
    lengths = cells.lengths[rows]
    width = int(lengths.max()) if max_len is None else min(int(lengths.max()), max_len)
    columns = np.arange(width)
    kept = np.minimum(lengths, width)
    padding = columns[None, :] >= kept[:, None]
    source = np.where(padding, 0, cells.offsets[rows][:, None] + columns[None, :])  # the head of every cell
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    to_sample = np.flatnonzero(lengths > width) if truncation == "sample" else np.empty(0, dtype=np.int64)
    for b in to_sample:
        positions = _sample_positions(int(lengths[b]), width, cells.has_cls, sampling, rng)
        if keep_order:
            positions = np.sort(positions)
        source[b] = cells.offsets[rows[b]] + positions
    if cells.gene_ids.size:
        genes = np.where(padding, pad_id, cells.gene_ids[source])
        values = np.where(padding, np.float32(pad_value), cells.values[source]).astype(np.float32, copy=False)
    else:
        genes = np.full(padding.shape, pad_id, dtype=np.int64)
        values = np.full(padding.shape, pad_value, dtype=np.float32)
    return PaddedBatch(genes=genes.astype(np.int64, copy=False), values=values, padding_mask=padding)


def rank_order(cells: TokenizedCells) -> TokenizedCells:
    """Each cell's genes by value, highest first, CLS (if any) kept first: scModelForge's rank-value order.

    The sort is stable, so equal values keep their ``var`` order, as in the reference's
    ``torch.argsort(-values, stable=True)``; it compares the stored float32 values, as the
    reference does after its float32 conversion. The reference also drops zeros, which
    ``tokenize_cells`` does unless ``include_zero_genes`` (zeros then sort last). NaN is refused.
    """
    if np.isnan(cells.values).any():
        raise DataError(
            "cannot rank cells with NaN values",
            hint="run validate_expression() on the matrix before tokenize_cells()",
        )
    cell_of_token = np.repeat(np.arange(len(cells)), cells.lengths)
    keys = [-cells.values, cell_of_token]  # np.lexsort: last key is primary, and the sort is stable
    if cells.has_cls:
        body = np.ones(cells.gene_ids.size, dtype=np.int8)
        body[cells.offsets[:-1]] = 0
        keys.insert(1, body)
    order = np.lexsort(keys)
    return TokenizedCells(
        gene_ids=cells.gene_ids[order], values=cells.values[order], offsets=cells.offsets, has_cls=cells.has_cls
    )


def bin_cells(cells: TokenizedCells, edges: np.ndarray) -> np.ndarray:
    """Per-token int64 bins aligned with ``cells.gene_ids``: ``digitize_by_edges`` on the values, CLS gets 0.

    This is scModelForge's ``bin_ids`` for a ``BinnedExpressionTokenizer`` cell (its CLS bin is 0 too).
    For a padded batch, ``digitize_by_edges(batch.values, edges)`` works on the 2-D array directly;
    set the CLS column and the padding to whatever the model expects there.
    """
    bins = digitize_by_edges(cells.values, edges)
    if cells.has_cls and len(cells):
        bins[cells.offsets[:-1]] = 0
    return bins


def length_sorted_batches(
    lengths: Sequence[int] | np.ndarray,
    batch_size: int,
    *,
    descending: bool = True,
    max_tokens: int | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Split cell indices into batches of similar length, so little compute is spent on padding.

    Returns ``(batches, restore)``: ``batches`` are index arrays, longest first by default (an
    out-of-memory error then shows up on the first batch, not the last); the sort is stable, so ties
    keep their input order. ``restore`` puts results back: ``np.concatenate(per_batch)[restore]``
    is in the original cell order. ``max_tokens`` also caps each batch's padded size (cells x its
    longest cell): long cells then come in smaller batches, which keeps the attention matrices and
    activations in cache (a batch always holds at least one cell).
    """
    if batch_size < 1:
        raise DataError(
            f"batch_size must be >= 1, got {batch_size}", hint="pass e.g. --batch-size 64 (batch_size=64 in Python)"
        )
    if max_tokens is not None and max_tokens < 1:
        raise DataError(f"max_tokens must be >= 1 (or None), got {max_tokens}", hint="use e.g. max_tokens=8192")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths if descending else lengths, kind="stable")
    if max_tokens is None:
        batches = [order[i : i + batch_size] for i in range(0, order.size, batch_size)]
    else:
        batches, start = [], 0
        while start < order.size:
            end = min(start + batch_size, order.size)
            longest = int(lengths[order[start:end]].max())
            end = min(end, start + max(1, max_tokens // max(longest, 1)))
            batches.append(order[start:end])
            start = end
    restore = np.empty_like(order)
    restore[order] = np.arange(order.size)
    return batches, restore


def with_progress(items: Sequence[T], enabled: bool, desc: str = "cells", unit: str = "batch") -> Iterable[T]:
    """``items`` behind a tqdm bar on stderr (cleared when done) when ``enabled``; tqdm is imported only then.

    Every single-cell task shows the same bar, so a 70-second embedding run never looks hung.
    """
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit, leave=False)


def refuse_empty_cells(cells: TokenizedCells, obs_names: Sequence[Any]) -> None:
    """Cells with no token besides CLS cannot be embedded or annotated: name them instead of returning noise."""
    empty = np.flatnonzero(cells.lengths <= (1 if cells.has_cls else 0))
    if empty.size:
        names = ", ".join(str(obs_names[i]) for i in empty[:5])
        raise DataError(
            f"{empty.size} cells express none of the model's genes (e.g. {names})",
            hint="drop empty cells first (e.g. scanpy.pp.filter_cells(adata, min_genes=1)), or check the gene column "
            "(--var-column, var_column= in Python)",
        )
