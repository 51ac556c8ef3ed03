"""The AnnData -> tokens pipeline (biozoo.singlecell) against scGPT 0.2.4's own functions.

Expected values come from the reference implementation (``tests/support/scgpt_reference.py``);
those tests skip when scgpt/scanpy are not installed. The rest needs only numpy, scipy and anndata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import sparse

from biozoo.errors import BiozooError
from biozoo.singlecell.binning import _quantile_edges, bin_values, bin_values_collator_style
from biozoo.singlecell.errors import DataError
from biozoo.singlecell.normalize import detect_input, log1p, normalize_total
from biozoo.singlecell.tokenize import length_sorted_batches, pad_cells, tokenize_cells
from biozoo.singlecell.vocab import GeneVocabulary
from tests.support.scgpt_reference import load_reference

N_BINS = 51
SEEDS = (0, 7, 2024)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pbmc() -> dict[str, Any]:
    """scanpy's bundled pbmc68k_reduced: recovered UMI counts, its log-normalised raw.X and its z-scored X."""
    sc = pytest.importorskip("scanpy")
    adata = sc.datasets.pbmc68k_reduced()
    log_norm = adata.raw.X.toarray()
    counts = np.rint(np.expm1(log_norm) * adata.obs["n_counts"].to_numpy()[:, None] / 1e4).astype(np.float32)
    return {
        "counts": counts,
        "log1p": log_norm,
        "scaled": np.asarray(adata.X),
        "genes": np.asarray(adata.raw.var_names, dtype=object),
        "cells": np.asarray(adata.obs_names, dtype=object),
    }


@pytest.fixture(scope="module")
def reference() -> Any:
    return load_reference()


@pytest.fixture(scope="module")
def default_vocab(reference: Any) -> GeneVocabulary:
    """The gene vocabulary shipped inside the scgpt wheel, plus scGPT's specials."""
    return GeneVocabulary.from_json(reference.root / "tokenizer" / "default_gene_vocab.json").with_specials()


def _adata(x: Any, genes: list[str] | None = None, cells: list[str] | None = None) -> Any:
    ad = pytest.importorskip("anndata")
    adata = ad.AnnData(X=x)
    if genes is not None:
        adata.var_names = genes
    if cells is not None:
        adata.obs_names = cells
    return adata


def _run_preprocessor(reference: Any, x: np.ndarray, seed: int, **kwargs: Any) -> Any:
    adata = _adata(x.copy())
    np.random.seed(seed)
    reference.preprocess.Preprocessor(binning=N_BINS, **kwargs)(adata)
    return adata


# ----------------------------------------------------------------------------- binning vs the reference


@pytest.mark.parametrize("kind", ["counts", "log1p"])
@pytest.mark.parametrize("seed", SEEDS)
def test_reference_binning_is_bit_identical_to_preprocessor(reference, pbmc, kind, seed):
    x = pbmc[kind]
    expected = _run_preprocessor(reference, x, seed, normalize_total=False).layers["X_binned"]
    np.random.seed(seed)
    dense = bin_values(x, N_BINS, mode="reference")
    np.random.seed(seed)
    from_csr = bin_values(sparse.csr_matrix(x), N_BINS, mode="reference")
    assert dense.dtype == np.int64
    np.testing.assert_array_equal(dense, expected)
    np.testing.assert_array_equal(from_csr, expected)
    if kind == "counts":  # integer counts: ties everywhere, so the random tie-break really is exercised
        np.random.seed(seed + 1)
        assert not np.array_equal(bin_values(x, N_BINS, mode="reference"), expected)


@pytest.mark.parametrize("n_bins", [2, 11, 101])
def test_reference_binning_across_blocks_and_bin_counts(reference, pbmc, monkeypatch, n_bins):
    import biozoo.singlecell.binning as binning

    monkeypatch.setattr(binning, "_BLOCK_CELLS", 97)  # 700 cells -> 8 blocks, the last one partial
    x = pbmc["counts"].copy()
    x[[0, 96, 97, 699]] = 0  # empty cells at block edges draw nothing
    adata = _adata(x.copy())
    np.random.seed(42)
    reference.preprocess.Preprocessor(normalize_total=False, binning=n_bins)(adata)
    np.random.seed(42)
    np.testing.assert_array_equal(bin_values(x, n_bins, mode="reference"), adata.layers["X_binned"])


@pytest.mark.parametrize("log", [False, True])
def test_normalize_log1p_bin_pipeline_matches_preprocessor(reference, pbmc, log):
    adata = _run_preprocessor(reference, pbmc["counts"], 11, normalize_total=1e4, log1p=log)
    ours = normalize_total(pbmc["counts"], 1e4)
    if log:
        # the reference's X_log1p layer is the X_normed array itself, logged in place: both hold log1p
        assert np.shares_memory(adata.layers["X_normed"], adata.layers["X_log1p"])
        ours = log1p(ours)
        np.testing.assert_array_equal(ours, adata.layers["X_log1p"])
    np.testing.assert_array_equal(ours, adata.layers["X_normed"])
    np.random.seed(11)
    np.testing.assert_array_equal(bin_values(ours, N_BINS, mode="reference"), adata.layers["X_binned"])


def test_reference_binning_consumes_exactly_the_reference_random_stream(reference, pbmc):
    """Same global RNG state afterwards: interleaving our binning with other reference code stays in sync."""
    x = pbmc["counts"][:50].copy()
    x[3] = 0  # an all-zero cell draws nothing
    _run_preprocessor(reference, x, 5, normalize_total=False)
    after_reference = np.random.rand()
    np.random.seed(5)
    bin_values(x, N_BINS, mode="reference")
    assert np.random.rand() == after_reference


def test_collator_style_matches_reference_binning(reference, pbmc):
    rows = [
        pbmc["counts"][0],  # with zeros
        pbmc["log1p"][1],
        pbmc["counts"][2][pbmc["counts"][2] > 0],  # no zeros: the reference's whole-row branch
        np.array([5.0], dtype=np.float32),  # a single value: all edges equal
        np.zeros(20, dtype=np.float32),  # all zero
    ]
    for i, row in enumerate(rows):
        np.random.seed(100 + i)
        expected = reference.preprocess.binning(row.copy(), N_BINS)
        np.random.seed(100 + i)
        ours = bin_values_collator_style(row, N_BINS, mode="reference")
        assert ours.dtype == np.int64
        np.testing.assert_array_equal(ours, expected.astype(np.int64))


def test_quantile_edges_equal_numpy_quantile_bits():
    rng = np.random.default_rng(1)
    q = np.linspace(0, 1, N_BINS - 1)
    for dtype in (np.float32, np.float64, np.int64):
        rows = [rng.gamma(0.7, 3.0, size=n).astype(dtype) + 1 for n in (1, 2, 3, 49, 50, 51, 777)]
        rows.append(np.full(9, 4, dtype=dtype))
        sorted_vals = np.concatenate([np.sort(r) for r in rows])
        counts = np.array([r.size for r in rows])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        edges = _quantile_edges(sorted_vals, starts, counts, N_BINS - 1)[0]
        for row, got in zip(rows, edges, strict=True):
            expected = np.quantile(row, q)
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(got, expected)


# ----------------------------------------------------------------------------- binning on its own


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_fast_digitize_equals_exact_rank_fallback(monkeypatch, dtype):
    import biozoo.singlecell.binning as binning

    rng = np.random.default_rng(3)
    x = rng.poisson(1.5, size=(300, 120)).astype(dtype)
    if dtype != np.int32:
        x[:150] = (x[:150] * rng.lognormal(size=x[:150].shape)).astype(dtype)  # tie-free half
    x[7] = 0
    x[8, 1:] = 0  # one value only: every edge equal
    fast = bin_values(x, N_BINS, seed=1)
    monkeypatch.setattr(binning, "_digitize_merged", lambda *args: None)
    np.testing.assert_array_equal(bin_values(x, N_BINS, seed=1), fast)


def test_seeded_binning_is_deterministic_and_leaves_global_rng_alone():
    x = np.random.default_rng(0).poisson(0.8, size=(200, 300)).astype(np.float32)  # counts: many ties
    np.random.seed(1)
    state = np.random.get_state()
    first = bin_values(x, N_BINS, mode="seeded", seed=3)
    np.random.seed(999)  # a different global state must not matter
    second = bin_values(sparse.csr_matrix(x), N_BINS, mode="seeded", seed=3)
    np.testing.assert_array_equal(first, second)
    np.random.set_state(state)
    bin_values(x, N_BINS, mode="seeded", seed=3)
    assert np.random.get_state()[2] == state[2] and np.array_equal(np.random.get_state()[1], state[1])
    assert not np.array_equal(first, bin_values(x, N_BINS, mode="seeded", seed=4))  # ties do get broken by the seed


def test_binning_values_zeros_and_empty_rows():
    x = np.array([[0, 0, 0, 0], [0, 3, 0, 1], [2, 2, 2, 2], [0, 0, 0, 0]], dtype=np.float32)
    binned = bin_values(x, N_BINS, mode="seeded", seed=0)
    assert binned.shape == x.shape and binned.dtype == np.int64
    np.testing.assert_array_equal(binned[[0, 3]], 0)
    assert ((binned > 0) == (x > 0)).all()
    assert binned.max() <= N_BINS - 1 and binned[x > 0].min() >= 1
    assert binned[1, 1] == N_BINS - 1 and binned[1, 3] == 1  # tie-free: max -> top bin, min -> bin 1
    assert bin_values(np.zeros((3, 5)), N_BINS).sum() == 0
    assert bin_values(np.zeros((0, 5)), N_BINS).shape == (0, 5)


def test_binning_ignores_explicit_zeros_and_unsorted_csr():
    dense = np.array([[0, 4, 1, 0, 9], [7, 0, 0, 2, 0]], dtype=np.float64)
    messy = sparse.csr_matrix(
        (np.array([9.0, 0.0, 1.0, 4.0, 2.0, 7.0]), np.array([4, 0, 2, 1, 3, 0]), np.array([0, 4, 6])), shape=(2, 5)
    )
    assert not messy.has_canonical_format
    np.testing.assert_array_equal(bin_values(messy, 5, seed=2), bin_values(dense, 5, seed=2))
    out = bin_values(dense, 5, seed=2, sparse_output=True)
    assert sparse.issparse(out) and out.dtype == np.int64
    np.testing.assert_array_equal(out.toarray(), bin_values(dense, 5, seed=2))


def test_binning_refuses_bad_values_and_arguments():
    with pytest.raises(DataError, match="negative"):
        bin_values(np.array([[1.0, -0.5]]), N_BINS)
    with pytest.raises(DataError, match="NaN"):
        bin_values(np.array([[1.0, np.nan]]), N_BINS)
    with pytest.raises(DataError, match="n_bins"):
        bin_values(np.ones((2, 2)), 1)
    with pytest.raises(DataError, match="global RNG"):
        bin_values(np.ones((2, 2)), N_BINS, mode="reference", seed=1)
    with pytest.raises(DataError, match="unknown binning mode"):
        bin_values(np.ones((2, 2)), N_BINS, mode="other")  # type: ignore[arg-type]


def test_bin_counts_are_bounded_before_allocating():
    """n_bins from a manifest is capped (10**9 would allocate gigabytes of edges); MAX_BINS itself still works."""
    from biozoo.singlecell.binning import MAX_BINS, quantile_bin_edges, uniform_bin_edges

    assert bin_values(np.ones((1, 2)), MAX_BINS).shape == (1, 2)
    for make in (lambda n: bin_values(np.ones((1, 2)), n), uniform_bin_edges, lambda n: quantile_bin_edges([1, 2], n)):
        with pytest.raises(DataError, match=f"n_bins must be an integer in .*{MAX_BINS:,}"):
            make(MAX_BINS + 1)


# ----------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("layout", ["dense", "csr", "csc", "int"])
def test_normalize_total_and_log1p_match_scanpy(pbmc, layout):
    sc = pytest.importorskip("scanpy")
    x: Any = pbmc["counts"]
    rng = np.random.default_rng(0)
    x = x * rng.uniform(0.5, 1.5, size=x.shape[1]).astype(np.float32)  # non-integer: summation order matters
    if layout == "int":
        x = pbmc["counts"].astype(np.int64)
    elif layout in ("csr", "csc"):
        x = sparse.csr_matrix(x) if layout == "csr" else sparse.csc_matrix(x)
    expected = sc.pp.normalize_total(_adata(x.copy()), target_sum=1e4, inplace=False)["X"]
    ours = normalize_total(x, 1e4)
    assert ours.dtype == expected.dtype
    np.testing.assert_array_equal(_dense(ours), _dense(expected))
    np.testing.assert_array_equal(_dense(log1p(ours)), _dense(sc.pp.log1p(expected.copy())))
    expected_log = sc.pp.log1p(x.copy())
    assert log1p(x).dtype == expected_log.dtype
    np.testing.assert_array_equal(_dense(log1p(x)), _dense(expected_log))


def _dense(x: Any) -> np.ndarray:
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


def test_normalize_total_keeps_empty_cells_zero():
    x = np.array([[0, 0], [1, 3]], dtype=np.float32)
    np.testing.assert_array_equal(normalize_total(x, 4.0), [[0, 0], [1, 3]])
    np.testing.assert_array_equal(normalize_total(sparse.csr_matrix(x), 8.0).toarray(), [[0, 0], [2, 6]])
    with pytest.raises(DataError, match="target_sum"):
        normalize_total(x, 0)


def test_detect_input_on_pbmc_variants(pbmc):
    assert detect_input(pbmc["counts"]) == "counts"
    assert detect_input(sparse.csr_matrix(pbmc["counts"])) == "counts"
    assert detect_input(pbmc["log1p"]) == "log1p"  # log-normalised, then subset to 765 genes
    assert detect_input(pbmc["scaled"]) == "scaled"
    assert detect_input(normalize_total(pbmc["counts"])) == "normalized"
    assert detect_input(sparse.csr_matrix(normalize_total(pbmc["counts"]))) == "normalized"
    assert detect_input(log1p(normalize_total(pbmc["counts"]))) == "log1p"
    with pytest.raises(DataError, match="NaN"):
        detect_input(np.array([[1.0, np.inf]]))


# ----------------------------------------------------------------------------- tokenization


def _binned_pbmc(pbmc: dict[str, Any], vocab: GeneVocabulary) -> tuple[np.ndarray, np.ndarray]:
    ids = vocab.ids(pbmc["genes"])
    keep = ids >= 0
    binned = bin_values(pbmc["counts"][:, keep], N_BINS, seed=0)
    return binned, ids[keep]


def test_tokenize_and_pad_match_reference(reference, pbmc, default_vocab):
    binned, gene_ids = _binned_pbmc(pbmc, default_vocab)
    tk = reference.gene_tokenizer
    batch = binned[:64]
    cls_id, pad_id = default_vocab["<cls>"], default_vocab["<pad>"]
    tokenized = tk.tokenize_batch(batch, gene_ids, append_cls=True, include_zero_gene=False, cls_id=cls_id)
    expected = tk.pad_batch(tokenized, max_len=10_000, vocab={"<pad>": pad_id}, pad_token="<pad>", pad_value=-2)
    for x in (batch, sparse.csr_matrix(batch)):
        cells = tokenize_cells(x, gene_ids, cls_id=cls_id, cls_value=0.0)
        for i, (genes, values, _) in enumerate(tokenized):
            got_genes, got_values = cells.cell(i)
            np.testing.assert_array_equal(got_genes, genes.numpy())
            np.testing.assert_array_equal(got_values, values.numpy())
        padded = pad_cells(cells, pad_id=pad_id, pad_value=-2, max_len=10_000)
        np.testing.assert_array_equal(padded.genes, expected["genes"].numpy())
        np.testing.assert_array_equal(padded.values, expected["values"].numpy())
        np.testing.assert_array_equal(padded.padding_mask, expected["genes"].numpy() == pad_id)
        assert padded.genes.dtype == np.int64 and padded.values.dtype == np.float32
        assert padded.padding_mask.dtype == np.bool_


def test_include_zero_genes_matches_reference(reference, pbmc, default_vocab):
    binned, gene_ids = _binned_pbmc(pbmc, default_vocab)
    tk = reference.gene_tokenizer
    tokenized = tk.tokenize_batch(binned[:5], gene_ids, include_zero_gene=True, cls_id=7)
    cells = tokenize_cells(sparse.csr_matrix(binned[:5]), gene_ids, cls_id=7, include_zero_genes=True)
    for i, (genes, values, _) in enumerate(tokenized):
        np.testing.assert_array_equal(cells.cell(i)[0], genes.numpy())
        np.testing.assert_array_equal(cells.cell(i)[1], values.numpy())


@pytest.mark.parametrize("seed", SEEDS)
def test_reference_sampling_matches_pad_batch(reference, pbmc, default_vocab, seed):
    binned, gene_ids = _binned_pbmc(pbmc, default_vocab)
    tk = reference.gene_tokenizer
    pad_id = default_vocab["<pad>"]
    tokenized = tk.tokenize_batch(binned[:32], gene_ids, cls_id=default_vocab["<cls>"])
    np.random.seed(seed)
    expected = tk.pad_batch(tokenized, max_len=100, vocab={"<pad>": pad_id}, pad_value=-2)
    cells = tokenize_cells(binned[:32], gene_ids, cls_id=default_vocab["<cls>"])
    np.random.seed(seed)
    padded = pad_cells(cells, pad_id=pad_id, pad_value=-2, max_len=100, sampling="reference")
    np.testing.assert_array_equal(padded.genes, expected["genes"].numpy())
    np.testing.assert_array_equal(padded.values, expected["values"].numpy())


def test_subsampling_keeps_cls_is_seeded_and_can_keep_order():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(6, 40)).astype(np.float32)
    x[5] = 0
    x[5, :3] = 1  # a short cell: padded, not sampled
    cells = tokenize_cells(x, np.arange(100, 140), cls_id=1, cls_value=-2.0)
    a = pad_cells(cells, pad_id=0, pad_value=-2, max_len=10, seed=5)
    b = pad_cells(cells, pad_id=0, pad_value=-2, max_len=10, seed=5)
    c = pad_cells(cells, pad_id=0, pad_value=-2, max_len=10, seed=6)
    assert a.genes.shape == (6, 10)
    np.testing.assert_array_equal(a.genes, b.genes)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.genes, c.genes)
    assert (a.genes[:, 0] == 1).all() and (a.values[:, 0] == -2).all()
    for row, genes in enumerate(a.genes[:5]):
        assert len(set(genes[1:])) == 9 and not a.padding_mask[row].any()
        columns = genes[1:] - 100
        np.testing.assert_array_equal(a.values[row, 1:], x[row, columns])  # values travel with their genes
    np.testing.assert_array_equal(a.genes[5], [1, 100, 101, 102, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(a.padding_mask[5], [False] * 4 + [True] * 6)
    ordered = pad_cells(cells, pad_id=0, pad_value=-2, max_len=10, seed=5, keep_order=True)
    np.testing.assert_array_equal(np.sort(ordered.genes[:5], axis=1), np.sort(a.genes[:5], axis=1))
    assert (np.diff(ordered.genes[:5, 1:], axis=1) > 0).all()


def test_tokenize_without_cls_and_bad_gene_ids():
    x = np.array([[0, 2, 0], [1, 0, 3]], dtype=np.float32)
    cells = tokenize_cells(x, [10, 11, 12], cls_id=None)
    assert not cells.has_cls and list(cells.lengths) == [1, 2]
    padded = pad_cells(cells, [1, 0], pad_id=0, pad_value=-2)
    np.testing.assert_array_equal(padded.genes, [[10, 12], [11, 0]])
    np.testing.assert_array_equal(padded.values, [[1, 3], [2, -2]])
    with pytest.raises(DataError, match="no vocabulary id"):
        tokenize_cells(x, [10, -1, 12], cls_id=1)
    with pytest.raises(DataError, match="2 gene ids for a matrix with 3 genes"):
        tokenize_cells(x, [10, 11], cls_id=1)
    with pytest.raises(DataError, match="max_len"):
        pad_cells(tokenize_cells(x, [1, 2, 3], cls_id=0), pad_id=0, pad_value=0, max_len=1)


def test_length_sorted_batches_restore_original_order():
    lengths = np.array([5, 9, 1, 9, 3, 7, 2])
    batches, restore = length_sorted_batches(lengths, 3)
    assert [list(b) for b in batches] == [[1, 3, 5], [0, 4, 6], [2]]
    per_batch = [lengths[b] * 10 for b in batches]  # any per-cell result computed batch by batch
    np.testing.assert_array_equal(np.concatenate(per_batch)[restore], lengths * 10)
    batches, restore = length_sorted_batches(lengths, 4, descending=False)
    assert list(lengths[np.concatenate(batches)]) == sorted(lengths)
    np.testing.assert_array_equal(np.concatenate(batches)[restore], np.arange(lengths.size))
    with pytest.raises(DataError, match="batch_size"):
        length_sorted_batches(lengths, 0)


# ----------------------------------------------------------------------------- vocabulary


def test_vocabulary_roundtrip_specials_and_hash(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"B": 1, "A": 0, "<pad>": 2}))
    vocab = GeneVocabulary.from_json(path)
    assert len(vocab) == 3 and vocab["A"] == 0 and "B" in vocab and "C" not in vocab
    np.testing.assert_array_equal(vocab.ids(["B", "C", "A"]), [1, -1, 0])
    assert vocab.ids(["B"]).dtype == np.int64
    full = vocab.with_specials()
    assert [full[t] for t in ("<pad>", "<cls>", "<eoc>")] == [2, 3, 4]
    assert len(vocab) == 3  # with_specials returns a copy
    out = full.to_json(tmp_path / "sub" / "out.json")
    assert GeneVocabulary.from_json(out) == full
    assert json.loads(out.read_text()) == {"A": 0, "B": 1, "<pad>": 2, "<cls>": 3, "<eoc>": 4}
    reformatted = tmp_path / "other.json"
    reformatted.write_text(json.dumps({"<pad>": 2, "A": 0, "B": 1}, indent=4))
    assert GeneVocabulary.from_json(reformatted).sha256 == vocab.sha256 != full.sha256
    with pytest.raises(KeyError, match="not in the vocabulary"):
        vocab["C"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"A": 0, "B": 2}', "outside 0..1"),
        ('{"A": 0, "B": 0}', "used by both"),
        ('{"A": "0"}', "not an integer"),
        ('["A", "B"]', "not an object"),
        ('{"A": 0,', "not valid JSON"),
    ],
)
def test_vocabulary_refuses_malformed_files(tmp_path, content, match):
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(DataError, match=match) as info:
        GeneVocabulary.from_json(path)
    assert str(path) in str(info.value) and "hint:" in str(info.value)
    with pytest.raises(DataError, match="does not exist"):
        GeneVocabulary.from_json(tmp_path / "missing.json")


def test_scgpt_census_vocab_gets_specials_at_the_end(reference):
    vocab = GeneVocabulary.from_json(reference.root / "tokenizer" / "default_census_vocab.json")
    assert len(vocab) == 60694
    full = vocab.with_specials()
    assert (len(full), full["<pad>"], full["<cls>"], full["<eoc>"]) == (60697, 60694, 60695, 60696)


# ----------------------------------------------------------------------------- AnnData input checks


def test_read_h5ad_refuses_missing_and_non_h5ad_files(tmp_path):
    from biozoo.singlecell.anndata_io import read_h5ad

    with pytest.raises(DataError, match="does not exist"):
        read_h5ad(tmp_path / "nope.h5ad")
    text = tmp_path / "cells.h5ad"
    text.write_text("cell,CD3E\nc1,3\n")
    with pytest.raises(DataError, match=r"no HDF5 signature \(a text file") as info:
        read_h5ad(text)
    assert "write_h5ad" in str(info.value)
    empty = tmp_path / "empty.h5ad"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_h5ad(empty)
    with pytest.raises(DataError, match="is a folder"):
        read_h5ad(tmp_path)


@pytest.mark.filterwarnings("ignore:Element .* was written without encoding metadata")
def test_read_h5ad_refuses_hdf5_that_is_not_anndata(tmp_path):
    h5py = pytest.importorskip("h5py")
    from biozoo.singlecell.anndata_io import read_h5ad

    path = tmp_path / "matrix.h5"
    with h5py.File(path, "w") as handle:
        handle["matrix"] = np.ones(3)
    with pytest.raises(DataError, match="HDF5 file but not a readable AnnData") as info:
        read_h5ad(path)
    assert "read_10x_h5" in str(info.value)


def _small_adata(x: np.ndarray) -> Any:
    genes = [f"G{i}" for i in range(x.shape[1])]
    return _adata(x, genes=genes, cells=[f"cell{i}" for i in range(x.shape[0])])


def test_validate_expression_accepts_good_data_and_reports_kind(pbmc):
    from biozoo.singlecell.anndata_io import validate_expression

    adata = _adata(sparse.csr_matrix(pbmc["counts"]), genes=list(pbmc["genes"]))
    assert validate_expression(adata) == "counts"
    adata.layers["lognorm"] = pbmc["log1p"]
    assert validate_expression(adata, layer="lognorm") == "log1p"
    with pytest.raises(DataError, match=r"layer 'missing' not found; available layers: \['lognorm'\]"):
        validate_expression(adata, layer="missing")


def test_validate_expression_refuses_nan_and_negative():
    from biozoo.singlecell.anndata_io import validate_expression

    x = np.ones((3, 4), dtype=np.float32)
    x[1, 2] = np.nan
    with pytest.raises(DataError, match="1 NaN or infinite"):
        validate_expression(_small_adata(x))
    counts = np.random.default_rng(0).poisson(1.0, size=(20, 5)).astype(np.float32)
    scaled = _adata((counts - counts.mean(0)) / counts.std(0))  # what sc.pp.scale leaves in X
    with pytest.raises(DataError, match="negative values") as info:
        validate_expression(scaled)
    message = str(info.value)
    assert "scGPT needs non-negative expression" in message
    assert "raw counts" in message and "adata.raw" in message


def test_validate_expression_refuses_empty_cells():
    from biozoo.singlecell.anndata_io import validate_expression

    x = np.ones((10, 3), dtype=np.float32)
    x[[2, 4, 5, 6, 7, 8, 9]] = 0
    with pytest.raises(DataError, match="7 of 10 cells express no gene") as info:
        validate_expression(_small_adata(sparse.csr_matrix(x)))
    message = str(info.value)
    assert "'cell2', 'cell4', 'cell5', 'cell6', 'cell7', ..." in message and "filter_cells" in message


def test_validate_expression_refuses_duplicate_genes():
    from biozoo.singlecell.anndata_io import validate_expression

    adata = _adata(np.ones((2, 4), dtype=np.float32), genes=["A", "B", "A", "C"])
    adata.var["symbol"] = ["X", "Y", "Z", "Y"]
    with pytest.raises(DataError, match=r"1 gene names appear more than once in var_names.*'A'") as info:
        validate_expression(adata)
    assert "var_names_make_unique" in str(info.value)
    with pytest.raises(DataError, match=r"var column 'symbol' \(e.g. 'Y'\)"):
        validate_expression(adata, var_column="symbol")


def test_match_genes(pbmc, default_vocab):
    from biozoo.singlecell.anndata_io import match_genes

    adata = _adata(pbmc["counts"], genes=list(pbmc["genes"]))
    match = match_genes(adata, default_vocab)
    assert match.n_total == 765 and match.n_matched == 702  # as found in the research notes
    assert match.ids.dtype == np.int64 and match.matched.sum() == 702 and match.column is None
    assert len(match.unmatched_examples) == 5 and all(g not in default_vocab for g in match.unmatched_examples)
    np.testing.assert_array_equal(match.ids[match.matched], default_vocab.ids(pbmc["genes"][match.matched]))
    assert match_genes(adata, default_vocab, "index").n_matched == 702


def test_match_genes_refuses_too_few_and_suggests_a_better_column():
    from biozoo.singlecell.anndata_io import match_genes

    vocab = GeneVocabulary.from_tokens(["CD3E", "CD4", "MS4A1", "LYZ", "<pad>"])
    adata = _adata(np.ones((2, 4), dtype=np.float32), genes=["CD3E", "CD4", "MS4A1", "LYZ"])
    adata.var["gene_ids"] = ["ENSG00000198851", "ENSG00000010610", "ENSG00000156738", "ENSG00000090382"]
    with pytest.raises(DataError) as info:
        match_genes(adata, vocab, var_column="gene_ids")
    message = str(info.value)
    assert "none of the 4 genes in var column 'gene_ids' is in the model's vocabulary (4 genes)" in message
    assert "'ENSG00000198851'" in message
    assert "var_names (4 genes, 100% of the model's)" in message and "Ensembl" in message
    assert "--var-column index (var_column=None in Python)" in message
    adata.var_names = ["CD3E", "X1", "X2", "X3"]
    with pytest.raises(DataError) as info:
        match_genes(adata, vocab)
    assert (
        "only 1 gene of var_names (adata.var.index) is in the model's vocabulary: 25% of the data's 4 and 25% of "
        "the model's 4; need at least 50% of the data's genes;" in str(info.value)
    )
    assert match_genes(adata, vocab, min_fraction=0.25).n_matched == 1
    with pytest.raises(DataError, match="need at least 25% of the data's genes, and at least 2 matched genes"):
        match_genes(adata, vocab, min_fraction=0.25, min_genes=2)


def _wide_adata(n_matched: int, n_data: int, n_model: int) -> tuple[Any, GeneVocabulary]:
    """``n_data`` genes, the first ``n_matched`` of them in a vocabulary of ``n_model`` genes + 3 specials."""
    vocab = GeneVocabulary.from_tokens([*(f"G{i}" for i in range(n_model)), "<pad>", "<cls>", "<eoc>"])
    genes = [f"G{i}" for i in range(n_matched)] + [f"X{i}" for i in range(n_data - n_matched)]
    return _adata(sparse.csr_matrix(np.ones((2, n_data), dtype=np.float32)), genes=genes), vocab


def test_gene_match_line_says_both_sides():
    """743 of a model's 765 genes found among 30,727: 97% of the model's, 2.4% of the data's (not "743/30727")."""
    from biozoo.singlecell.prepare import log_normalized_matched

    adata, vocab = _wide_adata(743, 30727, 765)
    matched = log_normalized_matched(adata, vocab, n_specials=3)
    assert matched.steps[0] == "matched 743 genes (var_names): 97% of the model's 765, 2.4% of the data's 30,727"
    assert (matched.match.model_fraction, matched.match.n_model_genes) == (743 / 765, 765)


def test_gene_match_refusal_states_the_rule_from_both_sides():
    from biozoo.singlecell.prepare import log_normalized_matched

    adata, vocab = _wide_adata(0, 40, 765)
    with pytest.raises(DataError) as info:
        log_normalized_matched(adata, vocab, n_specials=3)
    message = info.value.message
    assert message.startswith("none of the 40 genes in var_names (adata.var.index) is in the model's vocabulary")
    assert "need at least 50% of the data's genes or 50% of the model's genes" in message
    assert " 0%" not in message and "and 1" not in message  # was: "need at least 0% and 1"
    adata, vocab = _wide_adata(10, 40, 765)
    with pytest.raises(DataError) as info:
        log_normalized_matched(adata, vocab, n_specials=3)
    assert "25% of the data's 40 and 1.3% of the model's 765" in info.value.message
    adata.var["symbol"] = [f"G{i}" for i in range(30)] + [f"Y{i}" for i in range(10)]
    with pytest.raises(DataError) as info:
        log_normalized_matched(adata, vocab, n_specials=3)
    assert info.value.hint.startswith("other gene columns match more genes: 'symbol' (30 genes, 3.9% of the model's)")
    assert "pass --var-column symbol (var_column='symbol' in Python)" in info.value.hint
    assert log_normalized_matched(adata, vocab, n_specials=3, var_column="symbol").match.n_matched == 30


def test_empty_anndata_is_refused_up_front_without_dangling_examples():
    from biozoo.singlecell.anndata_io import match_genes
    from biozoo.singlecell.prepare import log_normalized_matched

    vocab = GeneVocabulary.from_tokens(["A", "B", "<pad>"])
    for shape in ((0, 0), (0, 2)):
        with pytest.raises(DataError, match=r"has 0 cells \(0 x \d\); nothing to embed") as info:
            log_normalized_matched(_adata(np.zeros(shape, dtype=np.float32)), vocab, n_specials=1)
        assert "not found e.g." not in str(info.value)
    with pytest.raises(DataError, match=r"has 0 genes \(3 x 0\)"):
        log_normalized_matched(_adata(np.zeros((3, 0), dtype=np.float32)), vocab, n_specials=1)
    with pytest.raises(DataError) as info:  # match_genes alone (no validation first): no "not found e.g. "
        match_genes(_adata(np.zeros((0, 0), dtype=np.float32)), vocab)
    assert info.value.message == "the data has no genes: var_names (adata.var.index) is empty"


def test_hints_name_the_cli_flag_and_the_python_keyword():
    from biozoo.singlecell.anndata_io import match_genes, validate_expression

    adata = _small_adata(np.ones((2, 2), dtype=np.float32))
    with pytest.raises(DataError) as info:
        validate_expression(adata, layer="counts")
    assert "--layer NAME (layer= in Python)" in info.value.hint and "layer=None" in info.value.hint
    with pytest.raises(DataError) as info:
        match_genes(adata, GeneVocabulary.from_tokens(["G0"]), var_column="symbol")
    assert "--var-column NAME (var_column= in Python)" in info.value.hint
    adata.X = None
    with pytest.raises(DataError) as info:
        validate_expression(adata)
    assert "--layer NAME (layer= in Python)" in info.value.hint
    with pytest.raises(DataError) as info:
        length_sorted_batches([1, 2], 0)
    assert "--batch-size 64 (batch_size=64 in Python)" in info.value.hint


def test_read_h5ad_leaves_duplicate_genes_to_our_own_error(tmp_path):
    """anndata's "Variable names are not unique" warning does not come before our error that names the fix."""
    import warnings

    from biozoo.singlecell.anndata_io import read_h5ad, validate_expression, write_h5ad_atomic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_h5ad_atomic(_adata(np.ones((2, 3), dtype=np.float32), genes=["A", "B", "A"]), tmp_path / "dup.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adata = read_h5ad(tmp_path / "dup.h5ad")
        with pytest.raises(DataError, match="appear more than once"):
            validate_expression(adata)


def test_match_genes_missing_column_lists_available_ones():
    from biozoo.singlecell.anndata_io import match_genes

    adata = _adata(np.ones((2, 2), dtype=np.float32), genes=["A", "B"])
    adata.var["feature_name"] = ["A", "B"]
    with pytest.raises(
        DataError, match=r"var column 'gene_symbol' not found; available var columns: \['feature_name'\]"
    ):
        match_genes(adata, GeneVocabulary.from_tokens(["A"]), var_column="gene_symbol")


# ----------------------------------------------------------------------------- atomic writes


def test_write_h5ad_atomic_roundtrip(tmp_path):
    from biozoo.singlecell.anndata_io import read_h5ad, write_h5ad_atomic

    adata = _small_adata(np.arange(6, dtype=np.float32).reshape(2, 3))
    path = write_h5ad_atomic(adata, tmp_path / "out" / "cells.h5ad")
    back = read_h5ad(path)
    np.testing.assert_array_equal(back.X, adata.X)
    assert list(back.var_names) == ["G0", "G1", "G2"]
    assert os.listdir(tmp_path / "out") == ["cells.h5ad"]


def test_write_h5ad_atomic_failure_leaves_target_untouched(tmp_path, monkeypatch):
    ad = pytest.importorskip("anndata")
    from biozoo.singlecell.anndata_io import write_h5ad_atomic

    target = tmp_path / "cells.h5ad"
    target.write_bytes(b"previous version")
    seen: list[Path] = []

    def crash_midway(self: Any, filename: Any, **kwargs: Any) -> None:
        Path(filename).write_bytes(b"\x89HDF\r\n\x1a\n half of a file")
        seen.append(Path(filename))
        raise OSError("disk full")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        write_h5ad_atomic(_small_adata(np.ones((2, 2), dtype=np.float32)), target)
    assert target.read_bytes() == b"previous version"
    assert seen and seen[0].parent == tmp_path and seen[0] != target
    assert sorted(os.listdir(tmp_path)) == ["cells.h5ad"]


def test_data_error_is_a_biozoo_and_value_error():
    assert issubclass(DataError, BiozooError) and issubclass(DataError, ValueError)


def test_core_pipeline_needs_neither_torch_anndata_nor_scipy():
    """The modules import, and dense data bin and tokenize, with those packages unavailable."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('torch', 'anndata', 'scanpy', 'scipy'): sys.modules[name] = None\n"
        "import numpy as np\n"
        "import biozoo.singlecell.anndata_io, biozoo.singlecell.checks, biozoo.singlecell.vocab\n"
        "from biozoo.singlecell.binning import bin_values\n"
        "from biozoo.singlecell.normalize import detect_input, log1p, normalize_total\n"
        "from biozoo.singlecell.tokenize import pad_cells, tokenize_cells\n"
        "x = log1p(normalize_total(np.array([[0, 2, 1], [3, 0, 0]], dtype=np.float32)))\n"
        "assert detect_input(x) == 'log1p'\n"
        "cells = tokenize_cells(bin_values(x, 51), [5, 6, 7], cls_id=1)\n"
        "print(pad_cells(cells, pad_id=0, pad_value=-2).genes.tolist())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[[1, 6, 7], [1, 5, 0]]"


def test_length_sorted_batches_cap_padded_tokens():
    lengths = np.array([100, 1000, 250, 990, 260, 240, 5000])
    batches, restore = length_sorted_batches(lengths, 4, max_tokens=2000)
    assert [b.tolist() for b in batches] == [[6], [1, 3], [4, 2, 5, 0]]  # 5000 alone (>= 1 cell), 2x1000, 4x260
    assert all(len(b) * lengths[b].max() <= 2000 or len(b) == 1 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches)[restore], np.arange(7))
    with pytest.raises(DataError, match="max_tokens"):
        length_sorted_batches(lengths, 4, max_tokens=0)
