"""Rank-value encoding (biozoo.singlecell.rank) against an independent per-cell numpy computation.

The reference below is deliberately naive: one cell at a time, dense, Python's stable ``sorted`` on
``(-value, column)``. It is computed in float64 (what rank_value_tokens promises) and in float32
(what it must not do), on examples/pbmc68k_test.h5ad (raw counts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from biozoo.singlecell.errors import DataError
from biozoo.singlecell.rank import nonzero_medians, rank_value_tokens
from biozoo.singlecell.tokenize import pad_cells, rank_order

anndata = pytest.importorskip("anndata")

PBMC = Path(__file__).resolve().parents[1] / "examples" / "pbmc68k_test.h5ad"


@pytest.fixture(scope="module")
def counts() -> sparse.csr_matrix:
    return anndata.read_h5ad(PBMC).X


@pytest.fixture(scope="module")
def medians(counts: sparse.csr_matrix) -> np.ndarray:
    """Per gene, np.median of its non-zero CP10k values (1.0 for a gene never seen)."""
    dense = counts.toarray().astype(np.float64)
    norm = dense / dense.sum(axis=1, keepdims=True) * 1e4
    return np.array([np.median(col[col > 0]) if (col > 0).any() else 1.0 for col in norm.T])


def _reference(
    counts: sparse.csr_matrix, medians: np.ndarray | None, max_len: int | None, dtype: type, totals=None
) -> list:
    dense = counts.toarray()
    out = []
    for r, row in enumerate(dense):
        genes = np.flatnonzero(row)
        total = row.astype(np.float64).sum() if totals is None else totals[r]
        values = row[genes].astype(dtype) / dtype(total) * dtype(1e4)
        if medians is not None:
            values = values / medians[genes].astype(dtype)
        ranked = sorted(range(genes.size), key=lambda i: (-values[i], genes[i]))
        out.append([int(genes[i]) for i in ranked][:max_len])
    return out


def _orders(cells) -> list:
    return [cells.cell(i)[0].tolist() for i in range(len(cells))]


def test_pbmc_has_140_cells_of_raw_counts(counts: sparse.csr_matrix) -> None:
    assert counts.shape == (140, 765)
    assert np.all(np.mod(counts.data, 1) == 0)


@pytest.mark.parametrize("max_len", [None, 2048, 50, 1])
@pytest.mark.parametrize("dense", [False, True])
def test_orders_equal_the_float64_reference(counts, medians, max_len: int | None, dense: bool) -> None:
    x = counts.toarray() if dense else counts
    got = rank_value_tokens(x, gene_medians=medians, max_len=max_len)
    assert _orders(got) == _reference(counts, medians, max_len, np.float64)
    assert got.values.dtype == np.float64 and not got.has_cls


def test_without_medians_the_order_is_by_count_then_column(counts) -> None:
    got = rank_value_tokens(counts, max_len=None)
    assert _orders(got) == _reference(counts, None, None, np.float64)
    assert _orders(got) == _reference(counts, None, None, np.float32)  # a per-cell scale cannot reorder


def test_float32_would_change_the_order_of_many_cells_float64_does_not(counts, medians) -> None:
    want64 = _reference(counts, medians, None, np.float64)
    want32 = _reference(counts, medians, None, np.float32)
    differ = sum(a != b for a, b in zip(want64, want32, strict=True))
    assert differ >= 30  # 46 of 140: float32 merges (or swaps) values that float64 keeps apart
    assert _orders(rank_value_tokens(counts, gene_medians=medians, max_len=None)) == want64


def test_a_float32_tie_is_broken_by_the_float64_values() -> None:
    x = np.array([[4.0, 4.0, 1.0]])
    medians = np.array([1.0 + 2.0**-30, 1.0, 1.0])  # the same number in float32
    assert np.float32(medians[0]) == np.float32(medians[1])
    assert _orders(rank_value_tokens(x, gene_medians=medians)) == [[1, 0, 2]]


def test_equal_values_keep_column_order_and_zeros_are_left_out() -> None:
    x = sparse.csr_matrix(np.array([[3, 5, 0, 3, 5], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=np.float32))
    got = rank_value_tokens(x, gene_ids=[10, 11, 12, 13, 14], max_len=3)
    assert _orders(got) == [[11, 14, 10], [], [10, 11, 12]]
    assert got.lengths.tolist() == [3, 0, 3]
    np.testing.assert_array_equal(got.cell(0)[1], np.array([5, 5, 3]) / 16 * 1e4)


def test_totals_are_used_as_given(counts, medians) -> None:
    """Geneformer's n_counts (over all genes, before any subset): a different total rounds differently,
    and near-ties after the division by medians can then swap, so the totals are part of the result."""
    library = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel() * 2.5
    scaled = rank_value_tokens(counts, gene_medians=medians, totals=library, max_len=None)
    assert _orders(scaled) == _reference(counts, medians, None, np.float64, totals=library)
    plain = rank_value_tokens(counts, gene_medians=medians, max_len=None)
    np.testing.assert_allclose(scaled.values.sum() * 2.5, plain.values.sum(), rtol=1e-12)


def test_the_result_is_already_rank_ordered_and_batches(counts, medians) -> None:
    cells = rank_value_tokens(counts, gene_medians=medians, gene_ids=np.arange(765) + 2, max_len=64)
    again = rank_order(cells)
    np.testing.assert_array_equal(again.gene_ids, cells.gene_ids)
    batch = pad_cells(cells, [0, 1], pad_id=0, pad_value=0.0, truncation="head")
    assert batch.genes.shape == (2, 64) and batch.genes[0].tolist() == (cells.cell(0)[0]).tolist()


def test_nonzero_medians_equal_numpys_median(counts, medians) -> None:
    np.testing.assert_array_equal(nonzero_medians(counts), medians)


def test_log1p_input_is_refused_because_undoing_it_reorders_cells(counts, medians) -> None:
    dense = counts.toarray().astype(np.float64)
    logged = np.log1p((dense / dense.sum(axis=1, keepdims=True) * 1e4).astype(np.float32))
    with pytest.raises(DataError, match="log-normalised") as info:
        rank_value_tokens(sparse.csr_matrix(logged), gene_medians=medians)
    assert "counts" in info.value.hint and "kind='normalized'" in info.value.hint
    with pytest.raises(DataError, match="log-normalised"):
        nonzero_medians(logged)
    # why: expm1 of the float32 log does not give the same numbers back, and the orders change
    undone = sparse.csr_matrix(np.expm1(logged))
    got = _orders(rank_value_tokens(undone, gene_medians=medians, kind="normalized", max_len=None))
    want = _reference(counts, medians, None, np.float64)
    assert sum(a != b for a, b in zip(got, want, strict=True)) > 70  # 106 of 140 cells


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gene_medians": np.ones(3)}, "gene_medians has shape"),
        ({"gene_medians": np.array([1.0, 0.0, 1.0, 1.0])}, "positive and finite"),
        ({"gene_ids": [1, 2]}, "2 gene ids for a matrix with 4 genes"),
        ({"max_len": 0}, "max_len must be a positive integer"),
        ({"target_sum": 0}, "target_sum must be positive"),
        ({"totals": [1.0, 2.0]}, "totals has shape"),
    ],
)
def test_bad_arguments_are_data_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        rank_value_tokens(np.array([[1.0, 2.0, 0.0, 3.0]]), **kwargs)


def test_negative_values_are_refused() -> None:
    with pytest.raises(DataError, match="negative") as info:
        rank_value_tokens(np.array([[1.0, -2.0], [0.5, 1.0]]))
    assert "counts" in info.value.hint
