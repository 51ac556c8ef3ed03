"""What every single-cell task needs around its model: the model's input contract and provenance-stamped outputs.

Plugins differ in how they tokenize and run cells; reading the manifest's ``preprocessing``
section, recording where an output came from, and writing the result atomically are the same
for all of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from biozoo.errors import BiozooError
from biozoo.singlecell.anndata_io import read_h5ad, write_h5ad_atomic


def model_preprocessing(model: Any) -> tuple[Any, Any, Path]:
    """``(manifest, preprocessing, vocabulary path)`` of a model loaded with ``biozoo.load``."""
    from biozoo.api import zoo_record

    record = zoo_record(model)
    manifest = record.manifest if record is not None else None
    if record is None or manifest is None or manifest.preprocessing is None:
        raise BiozooError(
            "this model has no preprocessing section in its manifest, so its input genes are unknown",
            "load models with biozoo.load(); single-cell models carry a gene vocabulary",
        )
    pre = manifest.preprocessing
    if "vocabulary" not in pre.files:
        raise BiozooError(
            f"{manifest.id}: preprocessing.files has no 'vocabulary', so genes cannot be matched",
            "save the model with its gene vocabulary (vocab.json / gene_vocab.json)",
        )
    return manifest, pre, record.location.file(pre.files["vocabulary"])


def plugin_of(model: Any) -> str:
    """The distribution and version of the plugin that runs ``model`` ("biozoo-scgpt 0.3.0"), read from the
    registry by the model's architecture; the architecture's name when no installed plugin claims it."""
    from biozoo.api import zoo_record
    from biozoo.registry import get_registry

    record = zoo_record(model)
    if record is None:
        return "unknown"
    architecture = record.manifest.architecture.name
    status = get_registry().plugin_status(architecture.split(".", 1)[0])
    return f"{status.distribution} {status.version}" if status is not None else architecture


def provenance(model: Any, task: str, seed: int | None, steps: list[str] | None = None) -> dict:
    """Model id, where it came from, weight hashes, plugin version, seed, preprocessing steps and the precision
    it ran in (weights' dtype, autocast dtype or "off": outputs of bfloat16 runs differ from float32 ones)."""
    from biozoo.nn.precision import describe

    manifest = model.zoo.manifest
    return {
        "task": task,
        "model": manifest.id,
        "origin": model.zoo.report.origin,
        "weights_sha256": {f.path: f.sha256 for f in manifest.weights.files} if manifest.weights else {},
        "plugin": plugin_of(model),
        "seed": -1 if seed is None else seed,
        "preprocessing": steps or [],
        "precision": describe(model),
    }


def write_embeddings(
    model: Any,
    input_path: Path,
    output_path: Path,
    compute: Callable[[Any], tuple[np.ndarray, list[str]]],
    *,
    key: str,
    seed: int,
) -> dict[str, Any]:
    """Read cells, ``compute(adata) -> (embeddings, steps)``, write ``obsm[key]`` + provenance to a new h5ad."""
    adata = read_h5ad(input_path)
    emb, steps = compute(adata)
    adata.obsm[key] = emb
    adata.uns.setdefault("biozoo", {})[key] = provenance(model, "embed", seed, steps)
    write_h5ad_atomic(adata, output_path)
    return {"cells": adata.n_obs, "dims": emb.shape[1], "key": f"obsm[{key!r}]", "steps": steps}


def label_key(model: Any) -> str:
    """The obs column prefix for a model's annotations: its manifest id as an identifier.

    ``scgpt/cls`` -> ``scgpt_cls`` (columns ``scgpt_cls_label``, ``scgpt_cls_confidence``), so two models'
    annotations of the same cells sit side by side instead of overwriting each other.
    """
    return re.sub(r"[^0-9A-Za-z]+", "_", model.zoo.manifest.id).strip("_").lower() or "model"


def annotation_columns(probabilities: Iterable[np.ndarray], labels: list[str], key: str) -> dict[str, Any]:
    """``{key}_label`` (the most probable class, categorical over ``labels``) and ``{key}_confidence`` (its
    probability, float32) from class probabilities ``[cells, classes]``, given whole or in consecutive chunks."""
    import pandas as pd

    best, confidence = [], []
    for probs in probabilities:
        top = probs.argmax(axis=1)
        best.append(top)
        confidence.append(probs[np.arange(len(top)), top].astype(np.float32))
    codes = np.concatenate(best) if best else np.zeros(0, dtype=np.int64)
    return {
        f"{key}_label": pd.Categorical.from_codes(codes, categories=labels),
        f"{key}_confidence": np.concatenate(confidence) if confidence else np.zeros(0, dtype=np.float32),
    }


def annotation_provenance(model: Any, seed: int, steps: list[str], labels: list[str]) -> dict:
    """What ``uns['biozoo'][f'{key}_label']`` holds: the provenance and the classes."""
    return {**provenance(model, "annotate", seed, steps), "classes": labels}


def write_annotations(
    model: Any,
    input_path: Path,
    output_path: Path,
    compute: Callable[[Any], tuple[np.ndarray, list[str]]],
    *,
    key: str,
    labels: list[str],
    seed: int,
) -> tuple[Any, list[str]]:
    """Read cells, ``compute(adata) -> (class probabilities, steps)``, write the annotation columns and provenance
    to a new h5ad. Returns the new obs and the steps."""
    adata = read_h5ad(input_path)
    probs, steps = compute(adata)
    for column, values in annotation_columns([probs], labels, key).items():
        adata.obs[column] = values
    adata.uns.setdefault("biozoo", {})[f"{key}_label"] = annotation_provenance(model, seed, steps, labels)
    write_h5ad_atomic(adata, output_path)
    return adata.obs, steps


def annotation_summary(obs: Any, key: str, steps: list[str]) -> dict[str, Any]:
    """What ``annotate`` returns (:class:`biozoo.tasks.AnnotateResult`), read from the annotated obs."""
    counts = obs[f"{key}_label"].value_counts()
    return {
        "cells": len(obs),
        "labels": {str(k): int(v) for k, v in counts.items() if v},
        "mean_confidence": float(np.mean(obs[f"{key}_confidence"])) if len(obs) else 0.0,
        "key": f"obs[{key + '_label'!r}], obs[{key + '_confidence'!r}]",
        "steps": steps,
    }
