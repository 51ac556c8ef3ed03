"""Tasks behind ``zoo embed`` and ``zoo generate`` for autoregressive models; outputs written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from biozoo.errors import BiozooError, InvalidArgumentError
from biozoo.nn.sampling import check_sampling
from biozoo.singlecell.anndata_io import write_h5ad_atomic
from biozoo.singlecell.outputs import provenance
from biozoo.singlecell.pipeline import PreparedCells, embed_task
from biozoo.singlecell.tokenize import with_progress
from biozoo_autoregressive.cells import AutoregressiveCells, CellContract

GENERATE_BATCH_CPU, GENERATE_BATCH_GPU = 64, 1024  # cells per batch `generate` uses when none is given


def cell_embeddings(model: torch.nn.Module, adata: Any, **options: Any) -> tuple[np.ndarray, PreparedCells]:
    """``model.encode`` for every cell, in cell order: ``[cells, hidden]``; options as
    :meth:`biozoo.singlecell.pipeline.CellPipeline.run`. NaN or infinite embeddings are refused."""
    return AutoregressiveCells(model).cell_embeddings(adata, **{"progress": False, **options})


#: ``zoo embed``: ``obsm['X_autoregressive']`` and provenance in a new h5ad (biozoo.tasks.EmbedTask)
embed = embed_task(AutoregressiveCells)


def generated_to_anndata(model: torch.nn.Module, cells: Any, contract: CellContract, first_index: int = 0) -> Any:
    """Sampled cells -> AnnData over the vocabulary's genes: ``X`` = bin midpoints (log-normalised scale),
    ``layers['bins']`` = the sampled bins, ``obs['n_genes']``, ``obs['order']`` keeps the sampled gene order."""
    import anndata as ad
    import pandas as pd
    from scipy import sparse

    if contract.bin_edges is None:
        raise BiozooError("this model has no bin edges, so sampled bins cannot be turned into expression")
    vocab = contract.vocabulary
    specials = {vocab.token(i) for i in model.special_token_ids} | (
        {contract.eos_token} if contract.eos_token else set()
    )
    genes = [t for t in vocab if t not in specials]
    column_of = np.full(len(vocab), -1, dtype=np.int64)
    column_of[[vocab[g] for g in genes]] = np.arange(len(genes))
    ids, bins = cells.gene_ids.cpu().numpy(), cells.bin_ids.cpu().numpy()
    lengths = cells.lengths.cpu().numpy()
    rows = np.repeat(np.arange(len(lengths)), lengths)
    keep = np.arange(ids.shape[1])[None, :] < lengths[:, None]
    cols = column_of[ids[keep]]
    midpoints = contract.bin_values().astype(np.float32)
    shape = (len(lengths), len(genes))
    x = sparse.csr_matrix((midpoints[bins[keep]], (rows, cols)), shape=shape)
    binned = sparse.csr_matrix((bins[keep].astype(np.int32), (rows, cols)), shape=shape)
    obs = pd.DataFrame(
        {
            "n_genes": lengths.astype(np.int64),
            "ended": cells.ended.cpu().numpy(),
            "order": [" ".join(vocab.token(int(g)) for g in row[:n]) for row, n in zip(ids, lengths, strict=True)],
        },
        index=[f"generated-{first_index + i}" for i in range(len(lengths))],
    )
    return ad.AnnData(x, obs=obs, var=pd.DataFrame(index=genes), layers={"bins": binned})


def generate(
    model: torch.nn.Module,
    output_path: Path,
    *,
    n_cells: int = 100,
    max_length: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = 0,
    batch_size: int | None = None,
    use_cache: bool = True,
    progress: bool = True,
    compile: bool = False,
) -> dict[str, Any]:
    """Sample ``n_cells`` cells and write them to a new h5ad (see :func:`generated_to_anndata`).

    Every option is checked before anything is sampled; ``max_length=None`` means as many genes as
    the model was trained on (0 is refused, not read as "no limit"). ``batch_size=None``: 64 cells
    on CPU, 1024 elsewhere (a GPU's decoding step costs about the same for 64 cells or 1024).
    """
    import anndata as ad

    if output_path.suffix != ".h5ad":
        raise BiozooError(f"the output {output_path} must end in .h5ad", "e.g. -o generated.h5ad")
    check_sampling(temperature, top_k, top_p, n=n_cells)
    if batch_size is None:
        batch_size = GENERATE_BATCH_CPU if next(model.parameters()).device.type == "cpu" else GENERATE_BATCH_GPU
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(
            f"batch_size must be >= 1, got {batch_size!r}", "pass e.g. --batch-size 64 (batch_size= in Python)"
        )
    contract = CellContract.of(model)
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise InvalidArgumentError(
            f"max_length must be >= 1 gene per cell, got {max_length!r}",
            f"pass --max-length N with 1 <= N <= {contract.max_len - 2}, or leave it out for up to "
            f"{contract.max_len - 2} (max_length=None in Python)",
        )
    if max_length is not None and max_length > contract.max_len - 2:
        raise BiozooError(
            f"max_length {max_length} exceeds what this model was trained on: {contract.max_len} tokens "
            f"including <cls> and <eos>, so at most {contract.max_len - 2} genes",
            f"use --max-length {contract.max_len - 2} or less",
        )
    parts = []
    sizes = [min(batch_size, n_cells - start) for start in range(0, n_cells, batch_size)]
    for i, size in enumerate(with_progress(sizes, progress, desc="generating")):
        cells = model.generate(
            size,
            max_length=contract.max_len - 2 if max_length is None else max_length,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=None if seed is None else seed + i,
            use_cache=use_cache,
            compile=compile,
        )
        parts.append(generated_to_anndata(model, cells, contract, first_index=sum(sizes[:i])))
    adata = ad.concat(parts, merge="same") if len(parts) > 1 else parts[0]
    settings = {"temperature": temperature, "top_k": top_k or 0, "top_p": top_p or 1.0, "max_length": max_length or 0}
    adata.uns["biozoo"] = {
        "generate": {**provenance(model, "generate", seed), "objective": model.objective, "sampling": settings}
    }
    write_h5ad_atomic(adata, output_path)
    return {
        "cells": adata.n_obs,
        "genes_per_cell": float(adata.obs["n_genes"].mean()),
        "ended": int(adata.obs["ended"].sum()),
        "output": str(output_path),
    }
