"""AnnData -> token batches for autoregressive models, from the model's manifest ``preprocessing``.

A cell becomes ``<cls>`` + its expressed genes, in rank order (highest expression first, ties in
``var`` order; tGPT/Geneformer style, the default for next_token models) or in ``var`` order (as
scModelForge's binned tokenizer), truncated to the first ``max_len`` tokens, with ``<eos>``
after the last gene when the model has one and the cell fits. Values are log-normalised
expression; bins come from fixed edges (the same for every cell, so a generated bin can be turned
back into a value). The checks, gene matching and normalisation are ``biozoo.singlecell``'s,
shared with every single-cell plugin.

Two tokenizers are registered by name in manifests:

* ``autoregressive.cell_tokenizer``: vocabulary with specials (``<pad>``, ``<unk>``, ``<mask>``,
  ``<cls>``, ``<eos>``) in ``vocab.json``; ``config``: ``gene_order``, ``max_len``, ``bin_edges``.
* ``autoregressive.scmodelforge_tokenizer``: scModelForge's ``gene_vocab.json`` (genes from id 4)
  and its ``tokenizer_config`` (``strategy``, ``max_genes``, ``n_bins``, ``binning_method``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from biozoo.errors import ManifestError
from biozoo.singlecell.binning import MAX_BINS, bin_midpoints, digitize_by_edges, uniform_bin_edges
from biozoo.singlecell.checks import PreprocessingConfig, vocabulary_token
from biozoo.singlecell.errors import DataError
from biozoo.singlecell.outputs import model_preprocessing
from biozoo.singlecell.pipeline import CellPipeline, PreparedCells
from biozoo.singlecell.prepare import log_normalized_matched
from biozoo.singlecell.tokenize import (
    TokenizedCells,
    length_sorted_batches,
    pad_cells,
    rank_order,
    refuse_empty_cells,
    tokenize_cells,
    with_progress,
)
from biozoo.singlecell.vocab import GeneVocabulary

SCMODELFORGE_SPECIALS = ("<pad>", "<unk>", "<mask>", "<cls>")
GeneOrder = Literal["rank", "var"]
GENE_ORDERS: tuple[str, ...] = ("rank", "var")


@dataclass(frozen=True)
class CellContract:
    """What the model expects as input."""

    vocabulary: GeneVocabulary
    gene_order: GeneOrder = "rank"
    max_len: int = 2048
    bin_edges: np.ndarray | None = None  #: None: no bins (scModelForge's rank_value strategy)
    zero_bin: bool = False  #: bin 0 = not expressed only; expressed values get 1 + their interval
    eos_token: str | None = None
    gene_column: str | None = None
    normalize_total: float = 1e4
    n_specials: int = 4

    def bin_values(self) -> np.ndarray:
        """The expression each bin stands for (interval midpoints; 0 for bin 0), to turn bins back into values."""
        assert self.bin_edges is not None
        mids = (self.bin_edges[:-1] + self.bin_edges[1:]) / 2
        return np.concatenate([[0.0], mids]) if self.zero_bin else bin_midpoints(self.bin_edges)

    @property
    def n_genes(self) -> int:
        return len(self.vocabulary) - self.n_specials

    @classmethod
    def of(cls, model: torch.nn.Module) -> CellContract:
        """The model's contract, every setting checked (type, range, tokens in the vocabulary) before any data."""
        manifest, pre, path = model_preprocessing(model)
        config = PreprocessingConfig(pre.config, manifest.id)
        column = pre.config.get("gene_column")
        column = None if column in (None, "index") else str(column)
        max_len_default = getattr(model, "max_seq_len", 2048)
        if pre.name.endswith("scmodelforge_tokenizer"):
            return cls._scmodelforge(path, config, column, model)
        vocab = GeneVocabulary.from_json(path)
        for token in ("<pad>", "<cls>"):
            vocabulary_token(vocab, token, f"{manifest.id}: the special token")
        edges = pre.config.get("bin_edges")
        return cls(
            vocabulary=vocab,
            gene_order=config.choice("gene_order", "rank", GENE_ORDERS),
            max_len=config.integer("max_len", max_len_default, minimum=2),
            bin_edges=None if edges is None else _manifest_edges(edges, manifest.id),
            eos_token=config.token("eos_token", None, vocab),
            zero_bin=config.flag("zero_bin", False),
            gene_column=column,
            normalize_total=config.number("normalize_total", 1e4, positive=True),
            n_specials=config.integer("n_specials", 5, minimum=0, maximum=len(vocab) - 1),
        )

    @classmethod
    def _scmodelforge(
        cls, path: Any, config: PreprocessingConfig, column: str | None, model: torch.nn.Module
    ) -> CellContract:
        import json

        genes = json.loads(path.read_text())
        vocab = GeneVocabulary({**{t: i for i, t in enumerate(SCMODELFORGE_SPECIALS)}, **genes})
        strategy = config.config.get("strategy", "binned_expression")
        n_bins = config.integer("n_bins", getattr(model, "n_bins", 51), minimum=1, maximum=MAX_BINS)
        # quantile edges were fitted on the training data and are not saved with the model; bins are only
        # loss targets in scModelForge's objective, so embeddings and logits do not need them
        uniform = config.config.get("binning_method", "uniform") == "uniform"
        return cls(
            vocabulary=vocab,
            gene_order="rank" if strategy == "rank_value" else "var",
            max_len=config.integer("max_genes", getattr(model, "max_seq_len", 2048), minimum=2),
            bin_edges=uniform_bin_edges(n_bins) if strategy == "binned_expression" and uniform else None,
            gene_column=column,
        )


def _manifest_edges(edges: Any, model_id: str) -> np.ndarray:
    """``bin_edges`` from a manifest as float64, refused unless 2..MAX_BINS + 1 strictly increasing finite numbers."""
    try:
        array = np.asarray(edges, dtype=np.float64)
        if array.size > MAX_BINS + 1:
            raise DataError(f"{array.size} edges, more than the {MAX_BINS + 1:,} allowed")
        bin_midpoints(array)  # checks shape, finiteness and order
    except (DataError, TypeError, ValueError) as exc:
        reason = exc.message if isinstance(exc, DataError) else str(exc)
        raise ManifestError(
            f"{model_id}: preprocessing.config.bin_edges are not usable ({reason})",
            "fix preprocessing.config.bin_edges in the model's manifest.yaml: strictly increasing finite numbers",
        ) from None
    return array


def prepare(
    adata: Any, contract: CellContract, *, var_column: str | None = None, layer: str | None = None
) -> PreparedCells:
    """Checks, gene matching, log-normalisation and tokenization (see the module docstring)."""
    matched = log_normalized_matched(
        adata,
        contract.vocabulary,
        n_specials=contract.n_specials,
        var_column=var_column if var_column is not None else contract.gene_column,
        layer=layer,
        target_sum=contract.normalize_total,
    )
    cells = tokenize_cells(matched.x, matched.gene_ids, cls_id=contract.vocabulary["<cls>"], cls_value=0.0)
    refuse_empty_cells(cells, adata.obs_names)
    steps = list(matched.steps)
    if contract.gene_order == "rank":
        cells = rank_order(cells)
        steps.append("genes ordered by expression, highest first (ties in var order)")
    else:
        steps.append("genes in var order")
    longest = int(cells.lengths.max())
    if longest > contract.max_len:
        steps.append(f"cells longer than {contract.max_len} tokens keep their first {contract.max_len}")
    return PreparedCells(cells, steps, matched.input_kind, matched.match.n_matched, matched.match.n_total)


def tokens_to_batch(cells: TokenizedCells, idx: np.ndarray, contract: CellContract) -> dict[str, np.ndarray]:
    """Right-padded ``input_ids``, ``attention_mask``, ``values`` and ``bin_ids`` (+ ``<eos>``) for cells ``idx``."""
    vocab = contract.vocabulary
    eos = None if contract.eos_token is None else vocab[contract.eos_token]
    room = contract.max_len - (1 if eos is not None else 0)
    batch = pad_cells(cells, idx, pad_id=vocab["<pad>"], pad_value=0.0, max_len=room, truncation="head")
    ids, values, padding = batch.genes, batch.values, batch.padding_mask
    lengths = (~padding).sum(axis=1)
    if eos is not None:
        complete = cells.lengths[np.asarray(idx)] <= room  # the whole cell fit: mark its end
        width = ids.shape[1] + int(complete.any() and (lengths[complete] == ids.shape[1]).any())
        ids = np.pad(ids, ((0, 0), (0, width - ids.shape[1])), constant_values=vocab["<pad>"])
        values = np.pad(values, ((0, 0), (0, width - values.shape[1])))
        rows = np.flatnonzero(complete)
        ids[rows, lengths[rows]] = eos
        lengths = lengths + complete
    mask = np.arange(ids.shape[1])[None, :] < lengths[:, None]
    out = {"input_ids": ids, "attention_mask": mask.astype(np.int64), "values": np.where(mask, values, 0.0)}
    if contract.bin_edges is not None:
        values32 = out["values"].astype(np.float32)
        bins = digitize_by_edges(values32, contract.bin_edges)
        if contract.zero_bin:  # scModelForge's bin 0 also holds small values; here it means "not expressed"
            bins = np.where(values32 > 0, bins + 1, 0)
        bins[:, 0] = 0
        bins[~mask] = 0
        if eos is not None:
            bins[ids == eos] = 0
        out["bin_ids"] = bins
    out["values"] = out["values"].astype(np.float32)
    return out


class AutoregressiveCells(CellPipeline):
    """The core's single-cell pipeline (:mod:`biozoo.singlecell.pipeline`) for autoregressive models."""

    embedding_key = "X_autoregressive"

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        self.contract = CellContract.of(model)

    def prepare(self, adata: Any, *, var_column: str | None, layer: str | None, seed: int) -> PreparedCells:
        return prepare(adata, self.contract, var_column=var_column, layer=layer)

    def batches(
        self, prepared: PreparedCells, *, batch_size: int, max_tokens: int | None, seed: int, progress: bool
    ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Length-sorted batches (a cell's length counts its ``<eos>``), right-padded by :func:`tokens_to_batch`."""
        contract = self.contract
        lengths = np.minimum(prepared.cells.lengths + (contract.eos_token is not None), contract.max_len)
        groups, _ = length_sorted_batches(lengths, batch_size, max_tokens=max_tokens)
        for idx in with_progress(groups, progress):
            yield idx, tokens_to_batch(prepared.cells, idx, contract)

    def embed(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model.encode(**inputs)
