"""From AnnData to embeddings, annotations and fine-tuned models, for scGPT models.

Cells are prepared and batched by :mod:`biozoo_scgpt.cells` (the model's input contract), run on one or several
devices (:func:`biozoo.singlecell.device.run_batches`), and written atomically, with provenance in ``uns``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from biozoo.errors import BiozooError
from biozoo.nn.precision import upcast
from biozoo.singlecell.anndata_io import read_h5ad, write_h5ad_atomic
from biozoo.singlecell.checks import refuse_non_finite
from biozoo.singlecell.device import batch_limits, run_batches
from biozoo.singlecell.outputs import provenance, write_embeddings
from biozoo_scgpt.cells import InputContract, PreparedCells, batches, prepare

EMBEDDING_KEY = "X_scGPT"


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
