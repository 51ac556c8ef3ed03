"""From AnnData to embeddings, annotations and fine-tuned models, for scGPT models.

The pipeline per cell: check the expression (finite, non-negative, no empty
cells, unique genes), match genes to the vocabulary by a chosen ``var``
column, bring the values to what the model was trained on (raw counts are
normalised and log1p-transformed; log-normalised input is used as is; scaled
input is refused), bin per cell, tokenize as ``[<cls>] + expressed genes``,
and run in batches sorted by length so that little compute goes to padding.
Outputs are written atomically, with provenance in ``uns``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from biozoo.errors import BiozooError, InvalidArgumentError
from biozoo.nn.precision import upcast
from biozoo.singlecell.anndata_io import read_h5ad, write_h5ad_atomic
from biozoo.singlecell.binning import MAX_BINS, bin_values
from biozoo.singlecell.checks import PreprocessingConfig, refuse_non_finite
from biozoo.singlecell.device import batch_limits, run_batches
from biozoo.singlecell.outputs import model_preprocessing, provenance, write_embeddings
from biozoo.singlecell.prepare import log_normalized_matched
from biozoo.singlecell.tokenize import (
    TokenizedCells,
    length_sorted_batches,
    pad_cells,
    refuse_empty_cells,
    tokenize_cells,
    with_progress,
)
from biozoo.singlecell.vocab import GeneVocabulary

EMBEDDING_KEY = "X_scGPT"
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


@dataclass
class PreparedCells:
    """Tokenized cells plus what happened on the way (for reports and provenance)."""

    cells: TokenizedCells
    n_genes_matched: int
    n_genes_total: int
    input_kind: str
    steps: list[str] = field(default_factory=list)


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
    return PreparedCells(cells, match.n_matched, match.n_total, kind, steps)


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


def run_cells(
    model: torch.nn.Module,
    adata: Any,
    fn: Callable[[torch.nn.Module, dict], torch.Tensor],
    *,
    devices: list[torch.device] | None = None,
    batch_size: int | None = None,
    var_column: str | None = None,
    layer: str | None = None,
    seed: int = 0,
    progress: bool = True,
    binning: str | None = None,
    max_tokens: int | None = None,
    what: str = "outputs",
) -> tuple[np.ndarray, PreparedCells]:
    """Prepare ``adata`` for ``model``, run ``fn(model, inputs) -> [batch, ...]`` over length-sorted batches,
    and return the results in cell order (inference mode), on the model's device or split over ``devices``
    (:func:`biozoo.singlecell.device.run_batches`). Batches hold at most ``batch_size`` cells
    and ``max_tokens`` padded tokens; both default to the device's (:func:`biozoo.singlecell.device.batch_limits`:
    64 cells / 4,096 tokens on a CPU, 1,024 / 65,536 on a GPU). NaN or infinite results (``what``, for the
    message) are refused (on a GPU a few batches later than the one that has them, not to stall it)."""
    contract = InputContract.of(model, binning)
    prepared = prepare(adata, contract, var_column=var_column, layer=layer, seed=seed)
    device = devices[0] if devices else next(model.parameters()).device
    batch_size, max_tokens = batch_limits(device, batch_size, max_tokens)
    out = run_batches(
        model,
        batches(prepared, contract, batch_size, seed, progress, max_tokens=max_tokens),
        fn,
        len(prepared.cells),
        devices=devices,
        check=lambda values: refuse_non_finite(values, model, what),
    )
    return out, prepared


def cell_embeddings(model: torch.nn.Module, adata: Any, **options: Any) -> tuple[np.ndarray, PreparedCells]:
    """L2-normalised CLS embeddings ``[cells, d]`` (what scGPT's ``embed_data`` returns); options as run_cells."""

    def fn(m: torch.nn.Module, inputs: dict) -> torch.Tensor:
        hidden = m.encode(inputs["src"], inputs["values"], inputs["src_key_padding_mask"])
        return F.normalize(upcast(m.cell_embedding(hidden, inputs["values"])), p=2, dim=1)  # norm in float32

    return run_cells(model, adata, fn, what="cell embeddings", **options)


def class_probabilities(model: torch.nn.Module, adata: Any, **options: Any) -> tuple[np.ndarray, list[str]]:
    """Softmax over the model's cell-type classes ``[cells, classes]`` and the class names."""
    probs, labels, _ = _class_probabilities(model, adata, **options)
    return probs, labels


def _class_probabilities(
    model: torch.nn.Module, adata: Any, **options: Any
) -> tuple[np.ndarray, list[str], PreparedCells]:
    """``class_probabilities`` plus the prepared cells (their preprocessing steps go into the output)."""
    if model.cls_decoder is None:
        raise BiozooError(
            f"{model.zoo_manifest.id} has no classification head",
            "annotate with a fine-tuned model, e.g. scgpt/cls, or run `zoo finetune` first",
        )
    labels = model.cls_decoder.labels or [str(i) for i in range(model.cls_decoder.n_cls)]

    def fn(m: torch.nn.Module, inputs: dict) -> torch.Tensor:
        return torch.softmax(upcast(m(**inputs, CLS=True)["cls_output"]), dim=-1)

    probs, prepared = run_cells(model, adata, fn, what="class probabilities", **options)
    return probs, labels, prepared


def label_key(model: torch.nn.Module) -> str:
    """The obs column prefix for a model's annotations: its manifest id as an identifier.

    ``scgpt/cls`` -> ``scgpt_cls`` (columns ``scgpt_cls_label``, ``scgpt_cls_confidence``), so two models'
    annotations of the same cells sit side by side instead of overwriting each other.
    """
    return re.sub(r"[^0-9A-Za-z]+", "_", model.zoo_manifest.id).strip("_").lower() or "model"


# -- tasks behind `zoo embed`, `zoo annotate`, `zoo finetune` -----------------------------------------------------


def _provenance(model: torch.nn.Module, task: str, seed: int, prepared: PreparedCells | None = None) -> dict:
    from biozoo_scgpt import __version__

    return provenance(model, task, f"biozoo-scgpt {__version__}", seed, prepared.steps if prepared else [])


def embed(
    model: torch.nn.Module,
    input_path: Path,
    output_path: Path,
    *,
    batch_size: int | None = None,
    var_column: str | None = None,
    layer: str | None = None,
    seed: int = 0,
    key: str = EMBEDDING_KEY,
    progress: bool = True,
    devices: list[torch.device] | None = None,
) -> dict[str, Any]:
    """Write ``obsm[key]`` (cell embeddings) and ``uns['biozoo']`` provenance to a new h5ad; ``devices``
    splits the cells over several devices (the model is copied to each)."""
    from biozoo_scgpt import __version__

    def compute(adata: Any) -> tuple[np.ndarray, list[str]]:
        emb, prepared = cell_embeddings(
            model, adata, batch_size=batch_size, var_column=var_column, layer=layer, seed=seed, progress=progress,
            devices=devices,
        )  # fmt: skip
        return emb, prepared.steps

    return write_embeddings(
        model, input_path, output_path, compute, key=key, plugin=f"biozoo-scgpt {__version__}", seed=seed
    )


def annotate(
    model: torch.nn.Module,
    input_path: Path,
    output_path: Path,
    *,
    batch_size: int | None = None,
    var_column: str | None = None,
    layer: str | None = None,
    seed: int = 0,
    key: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``obs[f'{key}_label']`` and ``obs[f'{key}_confidence']`` (softmax of the predicted class).

    ``key`` defaults to the model's id as an identifier (:func:`label_key`). Provenance, with the
    preprocessing steps, goes to ``uns['biozoo'][f'{key}_label']``.
    """
    import pandas as pd

    key = label_key(model) if key is None else key
    adata = read_h5ad(input_path)
    probs, labels, prepared = _class_probabilities(
        model, adata, batch_size=batch_size, var_column=var_column, layer=layer, seed=seed, progress=progress
    )
    best = probs.argmax(axis=1)
    adata.obs[f"{key}_label"] = pd.Categorical([labels[i] for i in best], categories=labels)
    adata.obs[f"{key}_confidence"] = probs[np.arange(len(best)), best].astype(np.float32)
    adata.uns.setdefault("biozoo", {})[f"{key}_label"] = {
        **_provenance(model, "annotate", seed, prepared),
        "classes": labels,
    }
    write_h5ad_atomic(adata, output_path)
    counts = adata.obs[f"{key}_label"].value_counts()
    return {
        "cells": adata.n_obs,
        "labels": {str(k): int(v) for k, v in counts.items() if v},
        "mean_confidence": float(adata.obs[f"{key}_confidence"].mean()),
        "key": f"obs[{key + '_label'!r}], obs[{key + '_confidence'!r}]",
        "steps": prepared.steps,
    }


def finetune(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Cell-type fine-tuning; see :mod:`biozoo_scgpt.finetune`."""
    from biozoo_scgpt.finetune import finetune as run

    return run(*args, **kwargs)
