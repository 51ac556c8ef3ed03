"""AnnData -> tokens, against scModelForge's own tokenizers run on real PBMC cells (golden/tokenizers.*)."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from safetensors.numpy import load_file

from biozoo.singlecell.binning import quantile_bin_edges, uniform_bin_edges
from biozoo.singlecell.errors import DataError
from biozoo.singlecell.vocab import GeneVocabulary
from biozoo_autoregressive.cells import SCMODELFORGE_SPECIALS, CellContract, prepare, tokens_to_batch

GOLDEN = Path(__file__).parent / "golden"
G = load_file(GOLDEN / "tokenizers.safetensors")
GENES = json.loads((GOLDEN / "tokenizers.json").read_text())["genes"]
VOCAB = GeneVocabulary.from_tokens([*SCMODELFORGE_SPECIALS, *GENES])


def _adata(x: np.ndarray, sparse: bool = False) -> ad.AnnData:
    return ad.AnnData(
        sp.csr_matrix(x) if sparse else x,
        obs=pd.DataFrame(index=[f"c{i}" for i in range(x.shape[0])]),
        var=pd.DataFrame(index=GENES),
    )


def _tokens(x: np.ndarray, contract: CellContract, sparse: bool = False) -> dict[str, np.ndarray]:
    prepared = prepare(_adata(x, sparse), contract)
    return tokens_to_batch(prepared.cells, np.arange(x.shape[0]), contract)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("source", ["cells.X", "cells.counts"])
def test_binned_expression_uniform_matches_the_reference(source: str, sparse: bool) -> None:
    contract = CellContract(VOCAB, gene_order="var", max_len=64, bin_edges=uniform_bin_edges(51, 10.0))
    got = _tokens(G[source], contract, sparse)
    for key in ("input_ids", "attention_mask", "bin_ids"):
        np.testing.assert_array_equal(got[key], G[f"binned_uniform.{key}"], err_msg=key)
    np.testing.assert_allclose(got["values"], G["binned_uniform.values"], rtol=1e-6, atol=1e-6)


def test_binned_expression_quantile_matches_the_reference() -> None:
    edges = quantile_bin_edges(G["cells.X"].reshape(-1), 51)
    np.testing.assert_array_equal(edges, G["quantile.bin_edges"])
    got = _tokens(G["cells.X"], CellContract(VOCAB, gene_order="var", max_len=64, bin_edges=edges))
    np.testing.assert_array_equal(got["bin_ids"], G["binned_quantile.bin_ids"])


def test_rank_value_matches_the_reference() -> None:
    got = _tokens(G["cells.X"], CellContract(VOCAB, gene_order="rank", max_len=64))
    for key in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(got[key], G[f"rank_value.{key}"], err_msg=key)
    np.testing.assert_allclose(got["values"], G["rank_value.values"], rtol=1e-6, atol=1e-6)
    assert "bin_ids" not in got


def test_eos_marks_the_end_of_cells_that_fit() -> None:
    vocab = GeneVocabulary.from_tokens([*SCMODELFORGE_SPECIALS, "<eos>", *GENES])
    contract = CellContract(vocab, max_len=70, bin_edges=uniform_bin_edges(51), eos_token="<eos>", n_specials=5)
    got = _tokens(G["cells.X"], contract)
    lengths = got["attention_mask"].sum(axis=1)
    nonzero = (G["cells.X"] > 0).sum(axis=1)  # 67, 56, 57, 70, 67, 72, 60, 56 genes
    fits = nonzero + 2 <= 70
    ends = got["input_ids"][np.arange(8), lengths - 1]
    assert (ends[fits] == vocab["<eos>"]).all() and (ends[~fits] != vocab["<eos>"]).all()
    np.testing.assert_array_equal(lengths, np.where(fits, nonzero + 2, 69))  # a cut cell keeps room for no EOS
    assert (got["bin_ids"][got["input_ids"] == vocab["<eos>"]] == 0).all()


def test_bad_cells_and_genes_are_named() -> None:
    contract = CellContract(VOCAB, max_len=64)
    x = G["cells.X"].copy()
    x[2] = 0
    with pytest.raises(DataError, match="1 of 8 cells express no gene"):
        prepare(_adata(x), contract)
    other = ad.AnnData(G["cells.X"], var=pd.DataFrame(index=[f"NOPE{i}" for i in range(200)]))
    with pytest.raises(DataError, match=r"none of the 200 genes in var_names .* vocabulary \(200 genes\)"):
        prepare(other, contract)
    with pytest.raises(DataError, match=r"has 0 cells \(0 x 200\); nothing to embed"):
        prepare(_adata(G["cells.X"][:0]), contract)
