"""From AnnData to embeddings, annotations and fine-tuned models, for scGPT models.

Cells are prepared and batched by :mod:`biozoo_scgpt.cells` (the model's input contract), run on one or several
devices (:func:`biozoo.singlecell.device.run_batches`), and written atomically, with provenance in ``uns``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from biozoo.errors import BiozooError
from biozoo.nn.precision import upcast
from biozoo.singlecell.anndata_io import read_h5ad, write_h5ad_atomic
from biozoo.singlecell.outputs import provenance
from biozoo.singlecell.pipeline import CellPipeline, PreparedCells, embed_task
from biozoo_scgpt.cells import InputContract, batches, prepare


class ScGPTCells(CellPipeline):
    """The core's single-cell pipeline (:mod:`biozoo.singlecell.pipeline`) for scGPT models: the model's
    :class:`~biozoo_scgpt.cells.InputContract`, length-sorted padded batches, L2-normalised CLS embeddings."""

    embedding_key = "X_scGPT"

    def __init__(self, model: torch.nn.Module, binning: str | None = None) -> None:
        super().__init__(model)
        self.contract = InputContract.of(model, binning)

    def prepare(self, adata: Any, *, var_column: str | None, layer: str | None, seed: int) -> PreparedCells:
        return prepare(adata, self.contract, var_column=var_column, layer=layer, seed=seed)

    def batches(
        self, prepared: PreparedCells, *, batch_size: int, max_tokens: int | None, seed: int, progress: bool
    ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        return batches(prepared, self.contract, batch_size, seed, progress, max_tokens=max_tokens)

    def embed(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """L2-normalised CLS embeddings (what scGPT's ``embed_data`` returns), normalised in float32."""
        hidden = model.encode(inputs["src"], inputs["values"], inputs["src_key_padding_mask"])
        return F.normalize(upcast(model.cell_embedding(hidden, inputs["values"])), p=2, dim=1)


def run_cells(
    model: torch.nn.Module,
    adata: Any,
    fn: Callable[[torch.nn.Module, dict], torch.Tensor],
    *,
    binning: str | None = None,
    **options: Any,
) -> tuple[np.ndarray, PreparedCells]:
    """``fn(model, inputs) -> [batch, ...]`` for every cell of ``adata``, in cell order (see
    :meth:`biozoo.singlecell.pipeline.CellPipeline.run` for the options: ``devices``, ``batch_size``,
    ``max_tokens``, ``var_column``, ``layer``, ``seed``, ``progress``, ``what``); ``binning`` as
    :meth:`InputContract.of`. Batches default to 64 cells / 4,096 tokens on a CPU, 1,024 / 65,536 on a GPU."""
    return ScGPTCells(model, binning).run(adata, fn, **options)


def cell_embeddings(
    model: torch.nn.Module, adata: Any, *, binning: str | None = None, **options: Any
) -> tuple[np.ndarray, PreparedCells]:
    """L2-normalised CLS embeddings ``[cells, d]`` (what scGPT's ``embed_data`` returns); options as run_cells."""
    return ScGPTCells(model, binning).cell_embeddings(adata, **options)


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
            f"{model.zoo.manifest.id} has no classification head",
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
    return re.sub(r"[^0-9A-Za-z]+", "_", model.zoo.manifest.id).strip("_").lower() or "model"



# -- tasks behind `zoo embed`, `zoo annotate`, `zoo finetune` -----------------------------------------------------


#: ``zoo embed``: ``obsm['X_scGPT']`` and provenance in a new h5ad (biozoo.tasks.EmbedTask)
embed = embed_task(ScGPTCells)


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
        **provenance(model, "annotate", seed, prepared.steps),
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
