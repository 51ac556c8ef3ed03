"""What every single-cell task needs around its model: the model's input contract and provenance-stamped outputs.

Plugins differ in how they tokenize and run cells; reading the manifest's ``preprocessing``
section, recording where an output came from, and writing the result atomically are the same
for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
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
