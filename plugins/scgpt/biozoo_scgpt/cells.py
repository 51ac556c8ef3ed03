"""scGPT's input side: what a model expects (its input contract) and cells prepared and batched for it.

The pipeline per cell: check the expression (finite, non-negative, no empty cells, unique genes), match genes to
the vocabulary by a chosen ``var`` column, bring the values to what the model was trained on (raw counts are
normalised and log1p-transformed; log-normalised input is used as is; scaled input is refused), bin per cell,
tokenize as ``[<cls>] + expressed genes``, and batch by length so that little compute goes to padding. Shared by
the inference tasks (:mod:`biozoo_scgpt.tasks`) and fine-tuning (:mod:`biozoo_scgpt.finetune`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from biozoo.errors import InvalidArgumentError
from biozoo.singlecell.binning import MAX_BINS, bin_values
from biozoo.singlecell.checks import PreprocessingConfig
from biozoo.singlecell.outputs import model_preprocessing
from biozoo.singlecell.pipeline import PreparedCells
from biozoo.singlecell.prepare import log_normalized_matched
from biozoo.singlecell.tokenize import (
    length_sorted_batches,
    pad_cells,
    refuse_empty_cells,
    tokenize_cells,
    with_progress,
)
from biozoo.singlecell.vocab import GeneVocabulary

#: how ties between equal values are broken when binning (see biozoo.singlecell.binning)
BINNING_MODES = ("seeded", "reference")


@dataclass(frozen=True)
class InputContract:
    """What an scGPT model expects, read from its manifest's ``preprocessing`` section."""

    vocabulary: GeneVocabulary
    n_bins: int = 51
    max_seq_len: int = 1200
    pad_token: str = "<pad>"
    cls_token: str = "<cls>"
    pad_value: float = -2
    cls_value: float = -2
    gene_column: str | None = None
    normalize_total: float = 1e4
    binning: str = "seeded"  # or "reference": numpy's global RNG, as scGPT's Preprocessor

    @classmethod
    def of(cls, model: torch.nn.Module, binning: str | None = None) -> InputContract:
        """The model's contract; ``binning`` overrides how ties are broken ("seeded" or "reference")."""
        contract = cls._of(model)
        if binning is None:
            return contract
        if binning not in BINNING_MODES:
            raise InvalidArgumentError(f"binning must be 'seeded' or 'reference', got {binning!r}", "binning='seeded'")
        return replace(contract, binning=binning)

    @classmethod
    def _of(cls, model: torch.nn.Module) -> InputContract:
        """Every setting read with its type and range checked, before any data is touched."""
        manifest, pre, vocab_path = model_preprocessing(model)
        vocab = GeneVocabulary.from_json(vocab_path)
        config = PreprocessingConfig(pre.config, manifest.id)
        column = pre.config.get("gene_column")
        return cls(
            vocabulary=vocab,
            n_bins=config.integer("n_bins", cls.n_bins, minimum=2, maximum=MAX_BINS),
            max_seq_len=config.integer("max_seq_len", cls.max_seq_len, minimum=2),
            pad_token=config.token("pad_token", cls.pad_token, vocab),
            cls_token=config.token("cls_token", cls.cls_token, vocab),
            pad_value=config.number("pad_value", cls.pad_value),
            cls_value=config.number("cls_value", cls.cls_value),
            gene_column=None if column in (None, "index") else str(column),
            normalize_total=config.number("normalize_total", cls.normalize_total, positive=True),
            binning=config.choice("binning", cls.binning, BINNING_MODES),
        )


def prepare(
    adata: Any,
    contract: InputContract,
    *,
    var_column: str | None = None,
    layer: str | None = None,
    seed: int = 0,
    min_gene_fraction: float = 0.5,
) -> PreparedCells:
    """Checks, gene matching, normalisation, binning and tokenization (see the module docstring)."""
    column = var_column if var_column is not None else contract.gene_column
    matched = log_normalized_matched(
        adata,
        contract.vocabulary,
        n_specials=3,
        var_column=column,
        layer=layer,
        target_sum=contract.normalize_total,
        min_gene_fraction=min_gene_fraction,
    )
    x, match, kind, steps = matched.x, matched.match, matched.input_kind, matched.steps
    if contract.binning == "reference":  # numpy's global RNG, exactly as scGPT's Preprocessor
        binned = bin_values(x, contract.n_bins, mode="reference", sparse_output=True)
        steps.append(f"binned into {contract.n_bins} bins per cell (ties from numpy's global RNG, as scGPT)")
    else:
        binned = bin_values(x, contract.n_bins, mode="seeded", seed=seed, sparse_output=True)
        steps.append(f"binned into {contract.n_bins} bins per cell (ties broken with seed {seed})")
    cells = tokenize_cells(
        binned, match.ids[match.matched], cls_id=contract.vocabulary[contract.cls_token], cls_value=contract.cls_value
    )
    refuse_empty_cells(cells, adata.obs_names)
    return PreparedCells(cells, steps, kind, match.n_matched, match.n_total)


def batches(
    prepared: PreparedCells,
    contract: InputContract,
    batch_size: int,
    seed: int = 0,
    progress: bool = True,
    order: np.ndarray | None = None,
    max_tokens: int | None = None,
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Yield ``(cell indices, model inputs as host arrays)`` over length-sorted, right-padded batches.

    ``max_tokens`` caps a batch's padded size (cells x tokens) as well as its cell count.
    """
    cells = prepared.cells
    if order is None:
        lengths = np.minimum(cells.lengths, contract.max_seq_len)
        groups, _ = length_sorted_batches(lengths, batch_size, max_tokens=max_tokens)
    else:
        groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng = np.random.default_rng(seed)
    pad_id = contract.vocabulary[contract.pad_token]
    for idx in with_progress(groups, progress):
        batch = pad_cells(
            cells, idx, pad_id=pad_id, pad_value=contract.pad_value, max_len=contract.max_seq_len, seed=rng
        )
        yield (
            idx,
            {"src": batch.genes, "values": batch.values, "src_key_padding_mask": batch.padding_mask},
        )
