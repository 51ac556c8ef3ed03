"""scGPT's per-cell value binning, bit-identical to ``scgpt.preprocess`` and vectorised.

For each cell (row), with ``nz`` its non-zero values in gene order::

    edges = np.quantile(nz, np.linspace(0, 1, n_bins - 1))      # duplicates kept
    l, r = np.digitize(nz, edges), np.digitize(nz, edges, right=True)
    bins = ceil(rand * (r - l) + l)                              # uniform in r+1..l on tied edges

Zeros stay bin 0, non-zeros get 1..n_bins-1, all-zero cells stay all zero. The random draw only
matters where edges repeat, which integer counts make common. Two ways to draw it:

* ``mode="reference"``: ``np.random.rand`` from numpy's global RNG, one value per non-zero entry,
  cells in row order, exactly the stream scGPT's ``Preprocessor`` consumes (its one
  ``rand(n_nonzero)`` call per non-empty cell and our one call per block of cells read the same
  numbers, since the legacy generator has no buffering between calls). Seed with
  ``np.random.seed(s)`` and the result equals ``Preprocessor(binning=n_bins)``'s ``X_binned``.
* ``mode="seeded"``: ``np.random.default_rng(seed)`` consumed the same way: deterministic, no
  global state touched.

Everything is done for blocks of cells at once (no Python loop over cells): the quantiles follow
numpy's own ``linear`` formula step by step in the input dtype so the edges are the same bits
``np.quantile`` gives, and the digitize counts come from where each edge sits among the sorted
values (exact comparisons only, no arithmetic on the values).

scModelForge's ``BinnedExpressionTokenizer`` bins differently: one set of edges for all cells
(``uniform_bin_edges`` or ``quantile_bin_edges``), applied by ``digitize_by_edges``; no randomness.
``bin_midpoints`` maps those bins back to expression values.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from biozoo.singlecell.errors import DataError

BinMode = Literal["reference", "seeded"]

#: cells per vectorised block; bounds the temporary memory to a few times the block's non-zeros.
_BLOCK_CELLS = 4096
#: most bins accepted (scGPT and scModelForge use 51): edges are allocated per block of cells, so
#: ``n_bins=10**9`` from a manifest would otherwise ask for gigabytes before failing
MAX_BINS = 10_000


def _csr_parts(x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """(data, column indices, indptr, shape) of the non-zeros, rows in order, columns ascending.

    Explicit zeros stored in a sparse matrix are dropped (they are not non-zeros to scGPT, which
    densifies first). Dense input needs numpy only, so binning works without scipy installed.
    """
    if hasattr(x, "tocsr") and hasattr(x, "nnz"):
        from scipy import sparse

        csr = sparse.csr_matrix(x)
        if not csr.has_canonical_format or (csr.data == 0).any():
            csr = csr.copy()
            csr.sum_duplicates()
            csr.eliminate_zeros()
        return csr.data, csr.indices, csr.indptr, (int(csr.shape[0]), int(csr.shape[1]))
    dense = np.asarray(x)
    if dense.ndim != 2:
        raise DataError(
            f"expected a 2-D cells x genes matrix, got shape {dense.shape}",
            hint="pass adata.X (or a layer), one row per cell",
        )
    rows, columns = np.nonzero(dense)
    indptr = np.zeros(dense.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=dense.shape[0]), out=indptr[1:])
    return dense[rows, columns], columns, indptr, (int(dense.shape[0]), int(dense.shape[1]))


def _check_values(
    data: np.ndarray,
    action: str = "bin",
    negative_hint: str = "scGPT bins non-negative expression: use raw counts or log-normalised data, not z-scored X",
) -> None:
    if data.size and not np.all(np.isfinite(data)):
        raise DataError(
            f"cannot {action} NaN or infinite expression values",
            hint="run validate_expression() first and fix or drop the offending cells",
        )
    if data.size and data.min() < 0:
        raise DataError(f"cannot {action} negative expression values (minimum {data.min()})", hint=negative_hint)


def _quantile_edges(
    sorted_vals: np.ndarray, starts: np.ndarray, counts: np.ndarray, n_edges: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cell ``np.quantile(vals, np.linspace(0, 1, n_edges))``, numpy's ``linear`` method, same bits.

    ``sorted_vals`` holds each cell's values ascending, cell after cell, from ``starts`` with
    ``counts`` entries (all > 0). Mirrors numpy's ``_quantile``: virtual index ``(n-1)*q``,
    indices at or past the end clamp to the last value (with numpy's odd gamma there), and
    ``_lerp``: ``a + (b-a)*t`` but ``b - (b-a)*(1-t)`` where ``t >= 0.5``, ``b - a`` in the input dtype.
    Returns the edges [cells, n_edges] and the positions in ``sorted_vals`` of ``a`` and ``b``.
    """
    q = np.linspace(0, 1, n_edges)
    virtual = (counts - 1).astype(np.float64)[:, None] * q[None, :]
    previous = np.floor(virtual)
    following = previous + 1
    above = virtual >= (counts - 1)[:, None]
    previous[above] = -1
    following[above] = -1
    previous_idx = previous.astype(np.intp)
    following_idx = following.astype(np.intp)
    gamma = virtual - previous_idx
    last = (starts + counts - 1)[:, None]
    lo = np.where(previous_idx < 0, last, starts[:, None] + previous_idx)
    hi = np.where(following_idx < 0, last, starts[:, None] + following_idx)
    a, b = sorted_vals[lo], sorted_vals[hi]
    diff = b - a
    edges = np.add(a, diff * gamma)
    high = gamma >= 0.5
    np.subtract(b, diff * (1 - gamma), out=edges, where=high, casting="unsafe", dtype=edges.dtype.type)
    return edges, lo, hi


def _digitize_merged(
    sorted_vals: np.ndarray, starts: np.ndarray, edges: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """``np.digitize`` left and right counts for the sorted values, without comparing every value to every edge.

    Each edge lies between the two neighbouring sorted values it was interpolated from
    (``sorted_vals[lo] <= edge <= sorted_vals[hi]``), so how many of its cell's values are
    ``< edge`` (``lt``) and ``<= edge`` (``le``) follows from the tie groups around ``lo``/``hi``.
    Then, with ``j`` a value's position in its cell, ``#{edges <= v_j} = #{k: lt_k <= j}`` and
    ``#{edges < v_j} = #{k: le_k <= j}``: two histograms and a cumulative sum. Returns None if
    rounding ever put an edge outside its neighbours; the caller then uses the exact slow path.
    """
    a, b = sorted_vals[lo], sorted_vals[hi]
    if not (np.all(a <= edges) and np.all(edges <= b)):
        return None
    total = sorted_vals.size
    new_group = np.ones(total, dtype=bool)
    new_group[1:] = sorted_vals[1:] != sorted_vals[:-1]
    new_group[starts] = True
    group_starts = np.flatnonzero(new_group)
    group_ends = np.append(group_starts[1:], total)
    group = np.cumsum(new_group) - 1
    tie_start, tie_end = group_starts[group], group_ends[group]
    lt = np.where(edges == a, tie_start[lo], tie_end[lo])  # global positions
    le = np.where(edges == b, tie_end[hi], tie_end[lo])
    cell_end = np.append(starts[1:], total)[:, None]
    cell_start = np.repeat(starts, np.diff(np.append(starts, total)))
    counts_out = []
    for bound in (lt, le):
        inside = bound < cell_end  # == cell end: no value of the cell reaches it
        cumulative = np.zeros(total + 1, dtype=np.int64)
        np.cumsum(np.bincount(bound[inside], minlength=total), out=cumulative[1:])
        counts_out.append(cumulative[1:] - cumulative[cell_start])
    return counts_out[0], counts_out[1]


def _digitize_by_rank(values: np.ndarray, value_cell: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell ``np.digitize(v, edges[cell])`` and ``..., right=True`` by exact global ranks (slow, always exact).

    Values and edges are replaced by their rank among all of them (``np.unique``), so the key
    ``cell * n_unique + rank`` orders (cell, value) pairs exactly; the edge keys are then globally
    sorted (edges ascend within a cell) and one ``searchsorted`` per side does every cell.
    """
    n_cells, n_edges = edges.shape
    both = np.concatenate([edges.ravel(), values.astype(edges.dtype, copy=False)])
    _, rank = np.unique(both, return_inverse=True)
    width = np.int64(rank.max()) + 1
    edge_keys = np.repeat(np.arange(n_cells, dtype=np.int64), n_edges) * width + rank[: edges.size]
    value_keys = value_cell.astype(np.int64) * width + rank[edges.size :]
    offset = value_cell.astype(np.int64) * n_edges
    left = np.searchsorted(edge_keys, value_keys, side="right") - offset
    right = np.searchsorted(edge_keys, value_keys, side="left") - offset
    return left, right


def _bin_block(data: np.ndarray, indptr: np.ndarray, n_bins: int, draw: Any) -> np.ndarray:
    """Bins for the stored non-zeros of one CSR block (``data`` in row order, columns ascending)."""
    counts = np.diff(indptr)
    nonempty = counts > 0
    cell_of_value = np.repeat(np.arange(counts.size)[nonempty], counts[nonempty])
    compact = np.cumsum(nonempty) - 1  # block row -> index among non-empty rows
    value_cell = compact[cell_of_value]
    starts = indptr[:-1][nonempty] - indptr[0]
    order = np.lexsort((data, value_cell))
    sorted_vals = data[order]
    edges, lo, hi = _quantile_edges(sorted_vals, starts, counts[nonempty], n_bins - 1)
    merged = _digitize_merged(sorted_vals, starts, edges, lo, hi)
    if merged is None:
        left, right = _digitize_by_rank(data, value_cell, edges)
    else:
        left, right = np.empty(data.size, dtype=np.int64), np.empty(data.size, dtype=np.int64)
        left[order], right[order] = merged
    rands = draw(data.size)
    digits = rands * (right - left) + left
    return np.ceil(digits).astype(np.int64)


def _drawer(mode: BinMode, seed: int | np.random.Generator | None) -> Any:
    if mode == "reference":
        if seed is not None:
            raise DataError(
                "mode='reference' draws from numpy's global RNG and takes no seed",
                hint="call np.random.seed(s) first, or use mode='seeded' with seed=s",
            )
        return np.random.rand
    if mode == "seeded":
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(0 if seed is None else seed)
        return rng.random
    raise DataError(f"unknown binning mode {mode!r}", hint="use mode='reference' or mode='seeded'")


def bin_values(
    x: Any,
    n_bins: int = 51,
    *,
    mode: BinMode = "seeded",
    seed: int | np.random.Generator | None = None,
    sparse_output: bool = False,
) -> Any:
    """Bin every cell (row) of a dense or sparse matrix the way scGPT's ``Preprocessor(binning=n_bins)`` does.

    Returns int64 bins (0 for zero, 1..n_bins-1 otherwise) as a dense array of ``x``'s shape, or a
    scipy CSR matrix with ``sparse_output=True`` (same non-zero pattern as ``x``). ``seed`` is
    for ``mode="seeded"`` only (default 0). Refuses NaN, inf and negative values.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or not 2 <= n_bins <= MAX_BINS:
        raise DataError(f"n_bins must be an integer in 2..{MAX_BINS:,}, got {n_bins!r}", hint="scGPT uses n_bins=51")
    draw = _drawer(mode, seed)
    data, columns, indptr, shape = _csr_parts(x)
    _check_values(data)
    out = np.empty(data.size, dtype=np.int64)
    for begin in range(0, shape[0], _BLOCK_CELLS):
        end = min(begin + _BLOCK_CELLS, shape[0])
        lo, hi = indptr[begin], indptr[end]
        if hi > lo:
            out[lo:hi] = _bin_block(data[lo:hi], indptr[begin : end + 1], int(n_bins), draw)
    if sparse_output:
        from scipy import sparse

        return sparse.csr_matrix((out, np.array(columns), np.array(indptr)), shape=shape)
    binned = np.zeros(shape, dtype=np.int64)
    binned[np.repeat(np.arange(shape[0]), np.diff(indptr)), columns] = out
    return binned


def bin_values_collator_style(
    row: Any,
    n_bins: int = 51,
    *,
    mode: BinMode = "seeded",
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """One cell binned like ``scgpt.preprocess.binning(row, n_bins)``, the function scGPT's DataCollator uses.

    The reference takes quantiles over the whole row when the row has no zeros and over the
    non-zeros otherwise; both give the same numbers (all entries *are* the non-zeros), so this is
    ``bin_values`` on one row. Differences that remain are the reference's output dtype (it
    returns the input's float dtype for numpy input) and its crash on all-zero torch rows; here
    the result is always int64 and an all-zero row gives zeros without drawing random numbers.
    """
    values = np.asarray(row)
    if values.ndim != 1:
        raise DataError(f"expected one cell (a 1-D row), got shape {values.shape}", hint="use bin_values for matrices")
    return bin_values(values[None, :], n_bins, mode=mode, seed=seed)[0]


# ----------------------------------------------------------------------------- scModelForge's fixed edges


def _check_n_bins(n_bins: Any) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or not 1 <= n_bins <= MAX_BINS:
        raise DataError(
            f"n_bins must be an integer in 1..{MAX_BINS:,}, got {n_bins!r}", hint="scModelForge uses n_bins=51"
        )
    return int(n_bins)


def uniform_bin_edges(n_bins: int, value_max: float = 10.0) -> np.ndarray:
    """scModelForge's ``"uniform"`` edges: ``np.linspace(0.0, value_max, n_bins + 1)``, float64.

    ``value_max`` is the top of the last bin, but larger values still land in it (the top bin is
    open-ended in ``digitize_by_edges``); scModelForge's default is 10.0, for log1p data.
    """
    n_bins = _check_n_bins(n_bins)
    if isinstance(value_max, bool) or not isinstance(value_max, int | float | np.integer | np.floating):
        raise DataError(f"value_max must be a number, got {value_max!r}", hint="e.g. value_max=10.0 for log1p data")
    if not np.isfinite(value_max) or value_max <= 0:
        raise DataError(
            f"value_max must be finite and > 0, got {value_max!r}",
            hint="use the largest expression value you expect (scModelForge: 10.0 for log1p data)",
        )
    return np.linspace(0.0, float(value_max), n_bins + 1)


def quantile_bin_edges(values: Any, n_bins: int, *, value_max: float = 10.0) -> np.ndarray:
    """scModelForge's ``"quantile"`` edges (what ``BinnedExpressionTokenizer.fit`` computes).

    ``np.unique(np.quantile(v[v > 0], np.linspace(0, 1, n_bins + 1)))`` over all values given
    (any shape, dense or sparse): strictly increasing, and fewer than ``n_bins + 1`` edges when
    quantiles coincide, so the number of bins is ``len(edges) - 1``, not ``n_bins``. With no positive
    value at all it falls back to ``uniform_bin_edges(n_bins, value_max)``, as the reference does.
    Refused where the reference would go wrong quietly: NaN/inf and negative values, and a single
    distinct positive value (one edge, which the reference turns into bin -1).
    """
    n_bins = _check_n_bins(n_bins)
    sparse_input = hasattr(values, "tocsr") and hasattr(values, "nnz")
    data = _csr_parts(values)[0] if sparse_input else np.asarray(values).ravel()  # implicit zeros are not > 0
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise DataError(f"cannot take quantiles of {data.dtype} values", hint="pass a numeric expression matrix")
    _check_values(
        data,
        "compute quantile bin edges from",
        "fit the edges on non-negative expression (counts or log1p-normalised), not z-scored X",
    )
    positive = data[data > 0]
    if positive.size == 0:
        return uniform_bin_edges(n_bins, value_max)
    edges = np.unique(np.quantile(positive, np.linspace(0.0, 1.0, n_bins + 1)))
    if edges.size < 2:
        raise DataError(
            f"every non-zero value is {edges[0]!r}, so the quantile edges collapse to a single edge",
            hint="fit on more (varied) cells, or use uniform_bin_edges(n_bins, value_max)",
        )
    return edges


def _check_edges(edges: Any) -> np.ndarray:
    e = np.asarray(edges)
    if e.ndim != 1 or e.size < 2 or not np.issubdtype(e.dtype, np.number):
        raise DataError(
            f"bin edges must be a 1-D numeric array of at least 2 entries, got shape {e.shape} ({e.dtype})",
            hint="build them with uniform_bin_edges() or quantile_bin_edges()",
        )
    if not np.all(np.isfinite(e)):
        raise DataError("bin edges contain NaN or infinity", hint="build them with uniform_bin_edges()")
    if not np.all(np.diff(e) > 0):
        raise DataError(
            "bin edges must increase strictly",
            hint="sort and deduplicate them (np.unique(edges)), or build them with uniform_bin_edges()",
        )
    return e


def digitize_by_edges(values: Any, edges: Any) -> np.ndarray:
    """scModelForge's ``digitize_expression``: int64 bins in ``[0, len(edges) - 2]``, same shape as ``values``.

    With ``n = len(edges) - 1`` bins and inner edges ``e = edges[1:-1]``, a value ``v`` gets the
    ``i`` with ``e[i-1] < v <= e[i]`` (``torch.bucketize(..., right=False)``, here
    ``np.searchsorted(side="left")``), clamped to ``n - 1``; exact zeros get 0. So bin 0 also holds
    ``(0, edges[1]]`` and negatives, and the top bin everything above ``edges[-2]``. Like the
    reference, the comparison is in the values' float dtype (edges rounded to it, which decides
    ties: float32 values need float32 edges); non-float values are converted to float32 first,
    as the reference tokenizers do. NaN values are refused.
    """
    e = _check_edges(edges)
    v = np.asarray(values)
    if not np.issubdtype(v.dtype, np.floating):
        if not (np.issubdtype(v.dtype, np.number) or v.dtype == bool):
            raise DataError(f"cannot bin {v.dtype} values", hint="pass numeric expression values")
        v = v.astype(np.float32)
    if np.isnan(v).any():
        raise DataError(
            f"cannot bin NaN expression values ({int(np.isnan(v).sum())} found)",
            hint="run validate_expression() first and fix or drop the offending cells",
        )
    n_bins = e.size - 1
    bins = np.searchsorted(e[1:-1].astype(v.dtype), v, side="left").astype(np.int64)
    np.clip(bins, 0, n_bins - 1, out=bins)  # searchsorted already stays in range; kept to mirror the reference
    bins[v == 0] = 0
    return bins


def bin_midpoints(edges: Any) -> np.ndarray:
    """The expression value each bin stands for (float64, one per bin): 0.0 for bin 0, else the bin's centre.

    Bin 0 holds the zeros (and everything up to ``edges[1]``), so it decodes to 0; bin ``i > 0`` to
    ``(edges[i] + edges[i+1]) / 2``. Used to turn generated bins back into expression.
    """
    e = _check_edges(edges).astype(np.float64)
    mid = (e[:-1] + e[1:]) / 2
    mid[0] = 0.0
    return mid
