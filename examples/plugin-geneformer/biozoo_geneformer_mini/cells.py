"""AnnData -> rank-value gene tokens for this model, from its manifest's ``preprocessing`` section.

Geneformer's input is not expression values but an *order*: each cell's genes sorted by ``count / cell total *
target_sum / gene median``, highest first, the first ``max_len`` of them as token ids. Every step is the core's
(:mod:`biozoo.singlecell`): expression checks and gene matching (``anndata_io``), the ranking in float64 from
unlogged counts (``rank.rank_value_tokens``; log-normalised input is refused, because undoing the log changes the
order), padding and length-sorted batches (``tokenize``), and running them on one or several devices into a new
``.h5ad`` (``pipeline``). This module only reads the model's contract (vocabulary, gene medians, ``max_len``) and
fills in the three steps of :class:`biozoo.singlecell.pipeline.CellPipeline` that differ between model families.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biozoo.errors import ManifestError
from biozoo.singlecell.anndata_io import match_genes, validate_expression
from biozoo.singlecell.checks import PreprocessingConfig, vocabulary_token
from biozoo.singlecell.outputs import model_preprocessing
from biozoo.singlecell.pipeline import CellPipeline, HostBatch, PreparedCells
from biozoo.singlecell.rank import GENEFORMER_MAX_LEN, GENEFORMER_TARGET_SUM, rank_value_tokens
from biozoo.singlecell.tokenize import length_sorted_batches, pad_cells, refuse_empty_cells, with_progress
from biozoo.singlecell.vocab import GeneVocabulary

SPECIALS = ("<pad>", "<mask>")  # Geneformer's token dictionary: <pad> = 0, <mask> = 1, then the genes
MIN_GENE_FRACTION = 0.5  # refuse data sharing less than half its genes with the model, and half the model's


@dataclass(frozen=True)
class RankValueContract:
    """What the model expects: its vocabulary, per-token gene medians (or none), and at most ``max_len`` genes."""

    vocabulary: GeneVocabulary
    medians: np.ndarray | None  #: float64 per token id (specials 1.0); None: rank by normalised counts alone
    max_len: int = GENEFORMER_MAX_LEN
    target_sum: float = GENEFORMER_TARGET_SUM
    gene_column: str | None = None

    @property
    def pad_id(self) -> int:
        return self.vocabulary["<pad>"]

    @classmethod
    def of(cls, model: torch.nn.Module) -> RankValueContract:
        """Read and check the contract (types, ranges, files) before any data is touched."""
        manifest, pre, vocab_path = model_preprocessing(model)
        config = PreprocessingConfig(pre.config, manifest.id)
        vocab = GeneVocabulary.from_json(vocab_path)
        for token in SPECIALS:
            vocabulary_token(vocab, token, f"{manifest.id}: the special token")
        positions = model.embedding.max_positions  # core.bert_embedding's table: longer inputs cannot run
        column = pre.config.get("gene_column")
        medians = pre.files.get("gene_medians")
        return cls(
            vocabulary=vocab,
            medians=None if medians is None else _medians(model.zoo.location.file(medians), vocab, manifest.id),
            max_len=config.integer("max_len", min(GENEFORMER_MAX_LEN, positions), minimum=1, maximum=positions),
            target_sum=config.number("target_sum", GENEFORMER_TARGET_SUM, positive=True),
            gene_column=None if column in (None, "index") else str(column),
        )


def _medians(path: Path, vocab: GeneVocabulary, model_id: str) -> np.ndarray:
    """``{gene: median}`` JSON -> float64 per token id; every gene of the vocabulary needs a positive median."""
    hint = f"write {path.name} as a JSON object {{gene: median}} covering every gene of the vocabulary"
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{model_id}: cannot read the gene medians {path.name}: {exc}", hint) from None
    genes = [t for t in vocab if t not in SPECIALS]
    missing = [g for g in genes if g not in table] if isinstance(table, dict) else genes
    if missing:
        raise ManifestError(f"{model_id}: {path.name} has no median for {len(missing)} genes, e.g. {missing[:3]}", hint)
    medians = np.ones(len(vocab), dtype=np.float64)
    try:
        medians[vocab.ids(genes)] = np.asarray([table[g] for g in genes], dtype=np.float64)
    except (TypeError, ValueError):
        raise ManifestError(f"{model_id}: {path.name} holds a median that is not a number", hint) from None
    if not np.all(np.isfinite(medians) & (medians > 0)):
        raise ManifestError(f"{model_id}: {path.name} holds a median that is not a positive number", hint)
    return medians


def prepare(
    adata: Any, contract: RankValueContract, *, var_column: str | None = None, layer: str | None = None
) -> PreparedCells:
    """Check the expression, match genes, rank each cell's genes (see the module docstring)."""
    column = var_column if var_column is not None else contract.gene_column
    kind = validate_expression(adata, layer=layer, var_column=column)
    match = match_genes(
        adata,
        contract.vocabulary,
        column,
        min_fraction=MIN_GENE_FRACTION,
        min_model_fraction=MIN_GENE_FRACTION,
        n_specials=len(SPECIALS),
    )
    x = adata.X if layer is None else adata.layers[layer]
    totals = np.asarray(x.sum(axis=1, dtype=np.float64)).ravel()  # over all genes, as Geneformer's n_counts
    ids, x = match.ids[match.matched], x[:, match.matched]
    cells = rank_value_tokens(
        x,
        max_len=contract.max_len,
        gene_medians=None if contract.medians is None else contract.medians[ids],
        gene_ids=ids,
        target_sum=contract.target_sum,
        totals=totals,
        kind=kind,
    )
    refuse_empty_cells(cells, adata.obs_names)
    by = " / gene median" if contract.medians is not None else ""
    steps = [
        match.summary(),
        f"genes ranked by value / cell total * {contract.target_sum:g}{by} in float64 (input: {kind}; "
        "totals over all genes), highest first, ties in var order",
    ]
    longer = int((np.asarray((x != 0).sum(axis=1)).ravel() > contract.max_len).sum())
    if longer:
        steps.append(f"{longer} cells with more than {contract.max_len} expressed genes keep their top ones")
    return PreparedCells(cells, steps, kind, match.n_matched, match.n_total)


class GeneformerCells(CellPipeline):
    """The core's single-cell pipeline for ``geneformer_mini.rank_value_bert``: ``zoo embed`` runs it."""

    embedding_key = "X_geneformer_mini"

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        self.contract = RankValueContract.of(model)

    def prepare(self, adata: Any, *, var_column: str | None, layer: str | None, seed: int) -> PreparedCells:
        return prepare(adata, self.contract, var_column=var_column, layer=layer)  # no randomness: seed unused

    def batches(
        self, prepared: PreparedCells, *, batch_size: int, max_tokens: int | None, seed: int, progress: bool
    ) -> Iterator[HostBatch]:
        """Length-sorted, right-padded batches of ``input_ids`` and ``padding_mask`` (True = padding)."""
        groups, _ = length_sorted_batches(prepared.cells.lengths, batch_size, max_tokens=max_tokens)
        for idx in with_progress(groups, progress):
            batch = pad_cells(
                prepared.cells, idx, pad_id=self.contract.pad_id, pad_value=0.0, max_len=self.contract.max_len,
                truncation="head",
            )  # fmt: skip
            yield idx, {"input_ids": batch.genes, "padding_mask": batch.padding_mask}

    def embed(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model.embed_cells(**inputs)  # the mean over gene tokens, without the MLM head
