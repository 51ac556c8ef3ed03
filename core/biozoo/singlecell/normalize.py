"""Library-size normalisation and log1p, numerically like scanpy, without needing scanpy.

Users arrive with raw counts, normalised, log-normalised or z-scored matrices and rarely say
which. ``detect_input`` guesses so that we can refuse the unusable case (z-scored) and skip
steps that were already done, and the two transforms reproduce ``scanpy.pp.normalize_total``
and ``scanpy.pp.log1p`` (same dtypes, same summation order) so results match scGPT's own
``Preprocessor``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from biozoo.singlecell.errors import DataError

InputKind = Literal["counts", "normalized", "log1p", "scaled"]

#: log1p of library-size-normalised data stays far below this (ln(1e6 + 1) ~ 13.8 for CPM).
LOG1P_MAX = 20.0
#: relative spread of per-cell totals under which they count as "all the same target sum".
_CONSTANT_SUM_RTOL = 1e-3


def _is_sparse(x: Any) -> bool:
    return hasattr(x, "tocsr") and hasattr(x, "nnz")


def _stored_values(x: Any) -> np.ndarray:
    """The entries that matter for the heuristics: stored data of a sparse matrix, all of a dense one."""
    return np.asarray(x.data if _is_sparse(x) else x).ravel()


def _row_sums(x: Any) -> np.ndarray:
    if _is_sparse(x):
        return np.asarray(x.sum(axis=1, dtype=np.float64)).ravel()
    return np.asarray(x, dtype=np.float64).sum(axis=1)


def _nearly_constant(sums: np.ndarray) -> bool:
    sums = sums[sums > 0]
    return sums.size > 1 and float(sums.max() - sums.min()) <= _CONSTANT_SUM_RTOL * float(sums.max())


def detect_input(x: Any) -> InputKind:
    """Guess what a cells x genes matrix holds, from cheap whole-matrix statistics.

    In order:

    * any negative value -> ``"scaled"`` (z-scored / regressed; unusable for scGPT);
    * every value an integer -> ``"counts"``;
    * every non-empty cell sums to the same total (within 0.1%) -> ``"normalized"``;
    * maximum <= 20 -> ``"log1p"`` (log-normalised, possibly subset to some genes afterwards);
    * otherwise -> ``"normalized"`` (e.g. TPM or normalised then gene-subset).

    Non-finite values raise ``DataError``. An all-zero matrix counts as ``"counts"``. The guess can
    be wrong for unusual data (fractions normalised to ``target_sum=1`` and then gene-subset look
    like ``"log1p"``); pass the kind explicitly where a caller knows better.
    """
    values = _stored_values(x)
    if values.size and not np.all(np.isfinite(values)):
        raise DataError(
            "expression matrix holds NaN or infinite values",
            hint="fix or drop those cells/genes before tokenizing (see validate_expression)",
        )
    if values.size == 0:
        return "counts"
    if values.min() < 0:
        return "scaled"
    if np.issubdtype(values.dtype, np.integer) or np.all(np.mod(values, 1) == 0):
        return "counts"
    if _nearly_constant(_row_sums(x)):
        return "normalized"
    if float(values.max()) <= LOG1P_MAX:
        return "log1p"
    return "normalized"


def normalize_total(x: Any, target_sum: float = 1e4) -> Any:
    """Scale every cell to sum to ``target_sum``, as ``scanpy.pp.normalize_total(target_sum=...)`` does.

    Returns a new matrix (dense in, dense out; CSR/CSC in, CSR out). Integer input becomes float32
    like scanpy; all-zero cells stay zero. Sparse totals are accumulated in float64 and dense ones
    with numpy's own sum, mirroring scanpy's two code paths.
    """
    if target_sum <= 0:
        raise DataError(f"target_sum must be positive, got {target_sum}", hint="scGPT uses target_sum=1e4")
    if _is_sparse(x):
        from scipy import sparse

        csr = sparse.csr_matrix(x, copy=True)
        if np.issubdtype(csr.dtype, np.integer):
            csr = csr.astype(np.float32)
        rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
        # bincount adds in storage order in float64, like scanpy's numba loop; then back to the data dtype
        per_cell = np.bincount(rows, weights=csr.data, minlength=csr.shape[0]).astype(csr.dtype)
        factor = per_cell / target_sum
        factor = factor + (factor == 0)
        csr.data = np.true_divide(csr.data, np.repeat(factor, np.diff(csr.indptr)))
        return csr
    dense = np.array(x, copy=True)
    if np.issubdtype(dense.dtype, np.integer):
        dense = dense.astype(np.float32)
    factor = np.sum(dense, axis=1) / target_sum
    factor = factor + (factor == 0)
    return np.true_divide(dense, factor[:, None])


def log1p(x: Any) -> Any:
    """Natural ``log(1 + x)`` elementwise, as ``scanpy.pp.log1p``: float dtypes kept, integers -> float64."""
    if _is_sparse(x):
        out = x.copy()
        if not np.issubdtype(out.dtype, np.floating):
            out = out.astype(np.float64)
        out.data = np.log1p(out.data)
        return out
    dense = np.asarray(x)
    if not np.issubdtype(dense.dtype, np.floating):
        dense = dense.astype(np.float64)
    return np.log1p(dense)
