"""scModelForge's fixed-edge binning, rank order and head truncation in biozoo.singlecell.

Expected values are worked out by hand or come from numpy/torch primitives (``torch.bucketize``,
``torch.argsort(stable=True)``, ``np.quantile``), never from the functions under test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import sparse

from biozoo.singlecell.binning import bin_midpoints, digitize_by_edges, quantile_bin_edges, uniform_bin_edges
from biozoo.singlecell.errors import DataError
from biozoo.singlecell.tokenize import TokenizedCells, bin_cells, pad_cells, rank_order, tokenize_cells


def _refused(call: Callable[[], Any], problem: str, fix: str) -> None:
    """``call`` raises a DataError whose message names the problem and whose hint names the fix."""
    with pytest.raises(DataError) as caught:
        call()
    assert re.search(problem, caught.value.message), caught.value.message
    assert caught.value.hint and re.search(fix, caught.value.hint), caught.value.hint


def _torch_digitize(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """scModelForge's digitize_expression semantics spelled out with torch primitives."""
    torch = pytest.importorskip("torch")
    v = torch.from_numpy(np.ascontiguousarray(values))
    bins = torch.bucketize(v, torch.as_tensor(edges[1:-1], dtype=v.dtype), right=False)
    bins = bins.clamp(0, len(edges) - 2)
    bins[v == 0] = 0
    return bins.long().numpy()


# ----------------------------------------------------------------------------- edges


def test_uniform_edges_are_float64_linspace():
    edges = uniform_bin_edges(4, 8.0)
    assert edges.dtype == np.float64
    np.testing.assert_array_equal(edges, [0.0, 2.0, 4.0, 6.0, 8.0])
    default = uniform_bin_edges(51)
    assert default.shape == (52,) and default[0] == 0.0 and default[-1] == 10.0
    np.testing.assert_array_equal(default, np.linspace(0.0, 10.0, 52))
    np.testing.assert_array_equal(uniform_bin_edges(np.int64(1), 3), [0.0, 3.0])


def test_quantile_edges_by_hand():
    # positive values 1, 2, 3, 4: quantiles 0, 1/2, 1 -> 1, 2.5, 4 (zeros ignored)
    np.testing.assert_array_equal(quantile_bin_edges(np.array([0, 1, 0, 2, 3, 4.0]), 2), [1.0, 2.5, 4.0])
    # sorted positives [1, 1, 1, 1, 5]: quantiles at positions 0..4 -> 1, 1, 1, 1, 5 -> deduplicated to [1, 5]
    np.testing.assert_array_equal(quantile_bin_edges(np.array([[1, 1, 0], [1, 5, 1]]), 4), [1.0, 5.0])
    # nothing positive: the reference falls back to uniform edges with value_max
    np.testing.assert_array_equal(quantile_bin_edges(np.zeros((3, 2)), 2, value_max=4.0), [0.0, 2.0, 4.0])


def test_quantile_edges_equal_numpy_on_random_data_dense_and_sparse():
    rng = np.random.default_rng(3)
    x = rng.poisson(0.7, size=(300, 40)).astype(np.float32)
    x = np.log1p(x * rng.uniform(0.5, 2.0, size=(300, 1)).astype(np.float32))
    expected = np.unique(np.quantile(x[x > 0], np.linspace(0.0, 1.0, 52)))
    edges = quantile_bin_edges(x, 51)
    assert edges.dtype == expected.dtype
    np.testing.assert_array_equal(edges, expected)
    assert (np.diff(edges) > 0).all()
    messy = sparse.coo_matrix(x)
    np.testing.assert_array_equal(quantile_bin_edges(messy, 51), expected)
    np.testing.assert_array_equal(quantile_bin_edges(sparse.csr_matrix(x), 51), expected)


# ----------------------------------------------------------------------------- digitize


def test_digitize_on_and_around_exact_edges_by_hand():
    edges = np.array([0.0, 2.0, 4.0, 6.0, 8.0])  # inner edges 2, 4, 6; bins 0..3
    values = np.array([0, 1, 2, np.nextafter(2, 3), 3, 4, 5, 6, 7, 8, 9, 1e9, -1, np.inf, -np.inf])
    expected = [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 0, 3, 0]
    out = digitize_by_edges(values, edges)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, expected)
    single = values.astype(np.float32)
    assert single[3] == 2.0  # the next float64 after 2 rounds back to 2 in float32 ...
    np.testing.assert_array_equal(digitize_by_edges(single, edges), [*expected[:3], 0, *expected[4:]])
    single[3] = np.nextafter(np.float32(2), np.float32(3))  # ... the next float32 does not
    np.testing.assert_array_equal(digitize_by_edges(single, edges), expected)
    np.testing.assert_array_equal(digitize_by_edges(np.array([0, 3, 5, 9]), edges), [0, 1, 2, 3])  # ints -> float32
    np.testing.assert_array_equal(digitize_by_edges(values, np.array([0.0, 8.0])), np.zeros(values.size))  # one bin
    # edges below zero (custom ones): exact zeros are still forced to bin 0, other values are not
    signed = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
    around_zero = np.array([0.0, -0.0, -1.0, -3.0, 1.0, 3.0])
    np.testing.assert_array_equal(digitize_by_edges(around_zero, signed), [0, 0, 1, 0, 2, 3])
    np.testing.assert_array_equal(_torch_digitize(around_zero, signed), [0, 0, 1, 0, 2, 3])


def test_digitize_compares_in_the_values_dtype():
    edges = np.array([0.0, 0.1, 0.2, 1.0])  # inner 0.1, 0.2 (float64)
    # float32(0.1) == float32(edge 0.1), so it is not above that edge -> bin 0, as in the reference;
    # the same number held in float64 (0.10000000149...) lies above the float64 edge -> bin 1.
    assert digitize_by_edges(np.array([0.1], dtype=np.float32), edges)[0] == 0
    assert digitize_by_edges(np.array([np.float32(0.1)], dtype=np.float64), edges)[0] == 1
    assert digitize_by_edges(np.array([0.1]), edges)[0] == 0
    for dtype in (np.float32, np.float64):
        values = np.array([0.1, 0.2, 0.15, np.float32(0.2)], dtype=dtype)
        np.testing.assert_array_equal(digitize_by_edges(values, edges), _torch_digitize(values, edges))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_digitize_equals_torch_bucketize_on_random_and_edge_exact_values(dtype):
    rng = np.random.default_rng(11)
    for edges in (uniform_bin_edges(51, 10.0), uniform_bin_edges(7, 3.3), np.sort(rng.uniform(0, 5, 20))):
        cast = edges.astype(dtype)
        values = np.concatenate(
            [
                rng.uniform(-1, 12, 5000),
                np.zeros(50),
                cast,  # exactly on every edge (in the values' dtype)
                np.nextafter(cast, np.inf, dtype=dtype),
                np.nextafter(cast, -np.inf, dtype=dtype),
                edges,  # float64 edges rounded to float32: ties decided after rounding
            ]
        ).astype(dtype)
        rng.shuffle(values)
        out = digitize_by_edges(values, edges)
        np.testing.assert_array_equal(out, _torch_digitize(values, edges))
        assert out.min() >= 0 and out.max() <= edges.size - 2
        grid = digitize_by_edges(values[:4000].reshape(40, 100), edges)  # shape is kept
        assert grid.shape == (40, 100)
        np.testing.assert_array_equal(grid.ravel(), out[:4000])


def test_bin_midpoints_decode_back_into_their_bins():
    np.testing.assert_array_equal(bin_midpoints([0.0, 2.0, 4.0, 6.0, 8.0]), [0.0, 3.0, 5.0, 7.0])
    edges = uniform_bin_edges(50, 10.0)  # bins 0.2 wide
    mid = bin_midpoints(edges)
    assert mid.dtype == np.float64 and mid.shape == (50,) and mid[0] == 0.0
    np.testing.assert_allclose(mid[1:], np.arange(1, 50) * 0.2 + 0.1)
    np.testing.assert_array_equal(_torch_digitize(mid.astype(np.float32), edges), np.arange(50))
    np.testing.assert_array_equal(digitize_by_edges(mid.astype(np.float32), edges), np.arange(50))


# ----------------------------------------------------------------------------- rank order


def _cells() -> tuple[np.ndarray, TokenizedCells]:
    x = np.array([[1, 3, 0, 3, 2], [0, 0, 0, 0, 0], [5, 5, 5, 0, 1], [0, 0, 4, 0, 0]], dtype=np.float32)
    return x, tokenize_cells(x, [10, 11, 12, 13, 14], cls_id=1, cls_value=-2.0)


def test_rank_order_by_hand_with_ties_and_cls():
    _, cells = _cells()
    ranked = rank_order(cells)
    np.testing.assert_array_equal(ranked.offsets, cells.offsets)
    assert ranked.has_cls
    # CLS (value -2, which would otherwise sort last) stays first; ties keep var order
    expected_genes = [[1, 11, 13, 14, 10], [1], [1, 10, 11, 12, 14], [1, 12]]
    expected_values = [[-2, 3, 3, 2, 1], [-2], [-2, 5, 5, 5, 1], [-2, 4]]
    for i in range(4):
        genes, values = ranked.cell(i)
        np.testing.assert_array_equal(genes, expected_genes[i])
        np.testing.assert_array_equal(values, expected_values[i])
    assert ranked.values.dtype == np.float32 and ranked.gene_ids.dtype == np.int64


def test_rank_order_without_cls_and_with_zero_genes():
    x, _ = _cells()
    plain = rank_order(tokenize_cells(x, [10, 11, 12, 13, 14], cls_id=None))
    np.testing.assert_array_equal(plain.cell(0)[0], [11, 13, 14, 10])
    assert plain.cell(1)[0].size == 0
    np.testing.assert_array_equal(plain.cell(2)[0], [10, 11, 12, 14])
    with_zeros = rank_order(tokenize_cells(x[:1], [10, 11, 12, 13, 14], cls_id=1, include_zero_genes=True))
    np.testing.assert_array_equal(with_zeros.gene_ids, [1, 11, 13, 14, 10, 12])  # the zero sorts last


def test_rank_order_equals_torch_stable_argsort_per_cell():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, size=(50, 30)).astype(np.float32)  # many ties
    genes = np.arange(100, 130)
    ranked = rank_order(tokenize_cells(x, genes, cls_id=3, cls_value=0.0))
    for i in range(x.shape[0]):
        expr, ids = torch.from_numpy(x[i]), torch.from_numpy(genes)
        keep = expr > 0
        order = torch.argsort(-expr[keep], stable=True)
        got_genes, got_values = ranked.cell(i)
        np.testing.assert_array_equal(got_genes, np.concatenate([[3], ids[keep][order].numpy()]))
        np.testing.assert_array_equal(got_values[1:], expr[keep][order].numpy())


def test_rank_order_refuses_nan():
    cells = TokenizedCells(
        gene_ids=np.array([1, 5, 6]), values=np.array([0, np.nan, 1], dtype=np.float32),
        offsets=np.array([0, 3]), has_cls=True,
    )  # fmt: skip
    _refused(lambda: rank_order(cells), "NaN", "validate_expression")


# ----------------------------------------------------------------------------- truncation and bins


def test_head_truncation_keeps_cls_and_the_first_tokens():
    _, cells = _cells()
    ranked = rank_order(cells)
    batch = pad_cells(ranked, pad_id=0, pad_value=0.0, max_len=3, truncation="head")
    np.testing.assert_array_equal(batch.genes, [[1, 11, 13], [1, 0, 0], [1, 10, 11], [1, 12, 0]])
    np.testing.assert_array_equal(batch.values, [[-2, 3, 3], [-2, 0, 0], [-2, 5, 5], [-2, 4, 0]])
    np.testing.assert_array_equal(batch.padding_mask, [[0, 0, 0], [0, 1, 1], [0, 0, 0], [0, 0, 1]])
    again = pad_cells(ranked, pad_id=0, pad_value=0.0, max_len=3, truncation="head", seed=99, sampling="reference")
    np.testing.assert_array_equal(again.genes, batch.genes)  # no randomness involved
    x, _ = _cells()
    plain = tokenize_cells(x, [10, 11, 12, 13, 14], cls_id=None)
    head = pad_cells(plain, [2, 0], pad_id=0, pad_value=-1.0, max_len=2, truncation="head")
    np.testing.assert_array_equal(head.genes, [[10, 11], [10, 11]])  # var order, first max_len genes
    wide = pad_cells(cells, pad_id=0, pad_value=0.0, truncation="head")  # no max_len: nothing is cut
    np.testing.assert_array_equal(wide.genes[0], [1, 10, 11, 13, 14])


def test_sample_truncation_is_still_the_default():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 5, size=(8, 40)).astype(np.float32)
    cells = tokenize_cells(x, np.arange(100, 140), cls_id=1)
    default = pad_cells(cells, pad_id=0, pad_value=0.0, max_len=10, seed=4)
    sampled = pad_cells(cells, pad_id=0, pad_value=0.0, max_len=10, seed=4, truncation="sample")
    np.testing.assert_array_equal(default.genes, sampled.genes)
    head = pad_cells(cells, pad_id=0, pad_value=0.0, max_len=10, truncation="head")
    np.testing.assert_array_equal(head.genes[:, 1:], np.tile(np.arange(100, 109), (8, 1)))
    assert not np.array_equal(default.genes, head.genes)
    _refused(lambda: pad_cells(cells, pad_id=0, pad_value=0.0, truncation="tail"), "truncation", "'head'")  # type: ignore[arg-type]


def test_bin_cells_aligns_with_tokens_and_zeroes_cls():
    x = np.array([[0, 1, 3, 9], [5, 0, 0, 0]], dtype=np.float32)
    cells = tokenize_cells(x, [10, 11, 12, 13], cls_id=1, cls_value=7.0)  # 7 alone would be bin 3
    edges = np.array([0.0, 2.0, 4.0, 6.0, 8.0])
    bins = bin_cells(cells, edges)
    assert bins.dtype == np.int64
    np.testing.assert_array_equal(bins, [0, 0, 1, 3, 0, 2])
    plain = tokenize_cells(x, [10, 11, 12, 13], cls_id=None)
    np.testing.assert_array_equal(bin_cells(plain, edges), [0, 1, 3, 2])


# ----------------------------------------------------------------------------- bad input


def test_bad_input_names_the_fix():
    for n_bins in (0, -3, True, 2.5, "51"):
        _refused(lambda n=n_bins: uniform_bin_edges(n, 10.0), "n_bins", "n_bins=51")
        _refused(lambda n=n_bins: quantile_bin_edges(np.ones(4), n), "n_bins", "n_bins=51")
    for value_max in (0, -1.0, np.inf, np.nan):
        _refused(lambda v=value_max: uniform_bin_edges(10, v), "value_max", "largest expression value")
    _refused(lambda: uniform_bin_edges(10, "10"), "value_max", "value_max=10.0")  # type: ignore[arg-type]

    values = np.array([0.0, 1.0, 5.0])
    for edges in ([0, 2, 1, 3], [0, 1, 1, 2], [3, 2, 1, 0]):
        _refused(lambda e=edges: digitize_by_edges(values, np.array(e, dtype=float)), "increase strictly", "np.unique")
        _refused(lambda e=edges: bin_midpoints(e), "increase strictly", "np.unique")
    _refused(lambda: digitize_by_edges(values, np.array([0.0])), "at least 2", "uniform_bin_edges")
    _refused(lambda: digitize_by_edges(values, np.ones((2, 3))), "1-D", "uniform_bin_edges")
    _refused(lambda: digitize_by_edges(values, np.array([0.0, np.nan, 2.0])), "NaN", "uniform_bin_edges")
    _refused(lambda: digitize_by_edges(np.array([1.0, np.nan]), uniform_bin_edges(4)), "NaN", "validate_expression")
    _refused(lambda: digitize_by_edges(np.array(["a"]), uniform_bin_edges(4)), "cannot bin", "numeric")

    _refused(lambda: quantile_bin_edges(np.array([1.0, np.nan]), 4), "NaN", "validate_expression")
    _refused(lambda: quantile_bin_edges(np.array([1.0, -0.5]), 4), "negative", "not z-scored")
    _refused(lambda: quantile_bin_edges(np.array([0.0, 3.0, 3.0]), 4), "single edge", "uniform_bin_edges")
    _refused(lambda: quantile_bin_edges(np.zeros(3), 4, value_max=0), "value_max", "largest expression value")
