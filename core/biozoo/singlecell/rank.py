"""Rank-value encoding (Geneformer): each cell's expressed genes, most expressed first, from unlogged counts.

Geneformer orders the genes of a cell by ``count / cell total * target_sum / gene median`` and feeds the
first ``max_len`` gene tokens to the model; the values themselves are not inputs, only their order. So
the order has to be computed the way the reference computes it:

* **from unlogged values**: ``expm1(log1p(x))`` does not give ``x`` back in float32, and on
  ``examples/pbmc68k_test.h5ad`` the orders it gives differ in most cells (the tests count them), so
  log-normalised input is refused rather than undone;
* **in float64**: dividing by per-gene medians in float32 makes different values equal (or swaps
  them) and changes the order of about a third of those cells.

Ties (equal float64 values, e.g. two genes with the same count and the same median) are broken by
column order: the gene that comes first in ``var`` comes first. This rule is stable and documented;
Geneformer's ``np.argsort(-values)`` (quicksort) leaves the order of ties unspecified.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from biozoo.singlecell.binning import _check_values, _csr_parts
from biozoo.singlecell.errors import DataError
from biozoo.singlecell.normalize import InputKind, _row_sums, detect_input
from biozoo.singlecell.tokenize import TokenizedCells

#: Geneformer's input size (its 2048-token models) and normalisation target
GENEFORMER_MAX_LEN = 2048
GENEFORMER_TARGET_SUM = 10_000.0
_COUNTS_HINT = "pass the raw counts (adata.layers['counts'], adata.raw.X, or the X your counts came in)"


def _per_cell(name: str, values: Any, n_cells: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n_cells,):
        raise DataError(f"{name} has shape {array.shape}, expected one value per cell ({n_cells})")
    return array


def _per_gene(name: str, values: Any, n_genes: int, hint: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n_genes,):
        raise DataError(f"{name} has shape {array.shape}, expected one value per gene ({n_genes})", hint=hint)
    if not np.all(np.isfinite(array) & (array > 0)):
        raise DataError(f"{name} must be positive and finite for every gene", hint=hint)
    return array


def _check_kind(x: Any, kind: InputKind | None) -> None:
    kind = kind or detect_input(x)
    if kind == "log1p":
        raise DataError(
            "the matrix looks log-normalised (log1p); rank-value encoding needs unlogged values: undoing the log "
            "(expm1) in float32 does not give the same numbers back and changes the gene order of most cells",
            hint=_COUNTS_HINT + "; if these really are unlogged values, pass kind='normalized'",
        )
    if kind == "scaled":
        raise DataError(
            "the matrix holds negative values (z-scored or regressed); genes cannot be ranked by expression",
            hint=_COUNTS_HINT,
        )


def normalized_values(
    x: Any,
    *,
    target_sum: float = GENEFORMER_TARGET_SUM,
    totals: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 ``x / total * target_sum`` of every non-zero, its column, CSR indptr), cells in order.

    ``totals`` are the cells' library sizes (Geneformer's ``n_counts``, counted over *all* genes before
    any gene subset); by default the row sums of ``x``. Cells whose total is 0 keep their values unscaled.
    """
    if not target_sum > 0:
        raise DataError(f"target_sum must be positive, got {target_sum}", hint="Geneformer uses 10,000")
    data, columns, indptr, (n_cells, _) = _csr_parts(x)
    _check_values(data, "rank", "rank-value encoding needs non-negative expression: " + _COUNTS_HINT)
    sums = _row_sums(x) if totals is None else _per_cell("totals", totals, n_cells)
    if not np.all(np.isfinite(sums) & (sums >= 0)):
        raise DataError("totals must be finite and non-negative", hint="pass adata.obs['n_counts'] or leave it out")
    rows = np.repeat(np.arange(n_cells), np.diff(indptr))
    scale = np.where(sums > 0, sums, 1.0)
    return data.astype(np.float64) / scale[rows] * np.float64(target_sum), columns, indptr


def nonzero_medians(x: Any, *, target_sum: float = GENEFORMER_TARGET_SUM, totals: Any = None) -> np.ndarray:
    """Per gene, the median of its non-zero normalised values over the cells of ``x`` (float64).

    Geneformer divides by medians computed over its whole pre-training corpus (shipped with the model);
    use those for a published model. This exact median is for models trained on your own cells. A gene
    that is zero in every cell gets 1.0 (it is never ranked, so the value does not matter).
    """
    _check_kind(x, None)
    values, columns, _ = normalized_values(x, target_sum=target_sum, totals=totals)
    order = np.lexsort((values, columns))
    values, columns = values[order], columns[order]
    medians = np.ones(x.shape[1], dtype=np.float64)
    present, starts, counts = np.unique(columns, return_index=True, return_counts=True)
    lower, upper = starts + (counts - 1) // 2, starts + counts // 2
    medians[present] = (values[lower] + values[upper]) / 2
    return medians


def rank_value_tokens(
    x: Any,
    *,
    max_len: int | None = GENEFORMER_MAX_LEN,
    gene_medians: Any = None,
    gene_ids: Any = None,
    target_sum: float = GENEFORMER_TARGET_SUM,
    totals: Any = None,
    kind: InputKind | None = None,
) -> TokenizedCells:
    """Each cell's non-zero genes ordered by normalised expression, highest first, at most ``max_len``.

    ``x`` is cells x genes (dense or sparse) of counts or otherwise unlogged values; log1p and z-scored
    input is refused (``detect_input``; ``kind`` overrides the guess). Values are ``x / total *
    target_sum`` and then, with ``gene_medians`` (one positive value per column), divided by the gene's
    median, all in float64. Equal values keep column order. ``gene_ids`` maps column ``j`` to a token id
    (default: ``j``). The result has no CLS token; its ``values`` are the float64 values the genes were
    ranked by (so ``rank_order`` keeps the order), and ``pad_cells`` / ``length_sorted_batches`` batch it.
    Cells with no expressed gene have length 0 (``refuse_empty_cells`` reports them).
    """
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
        raise DataError(f"max_len must be a positive integer or None, got {max_len!r}", hint="Geneformer uses 2048")
    n_genes = x.shape[1] if hasattr(x, "shape") and len(x.shape) == 2 else None
    if n_genes is None:
        raise DataError(f"expected a 2-D cells x genes matrix, got {type(x).__name__}", hint="pass adata.X")
    _check_kind(x, kind)
    ids = np.arange(n_genes, dtype=np.int64) if gene_ids is None else np.asarray(gene_ids, dtype=np.int64)
    if ids.shape != (n_genes,):
        raise DataError(f"{ids.size} gene ids for a matrix with {n_genes} genes", hint="pass one id per column")
    values, columns, indptr = normalized_values(x, target_sum=target_sum, totals=totals)
    if gene_medians is not None:
        hint = "pass the model's gene medians for these columns, in var order (subset them with the matrix)"
        values = values / _per_gene("gene_medians", gene_medians, n_genes, hint)[columns]
    lengths = np.diff(indptr)
    rows = np.repeat(np.arange(lengths.size), lengths)
    order = np.lexsort((columns, -values, rows))  # by cell, then value descending, then column
    position = np.arange(order.size) - indptr[rows]  # rows are sorted, so position within the cell
    keep = order if max_len is None else order[position < max_len]
    kept = lengths if max_len is None else np.minimum(lengths, max_len)
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(kept, out=offsets[1:])
    return TokenizedCells(gene_ids=ids[columns[keep]], values=values[keep], offsets=offsets, has_cls=False)
