"""One pipeline for every single-cell plugin: AnnData -> model inputs -> per-cell outputs -> a new ``.h5ad``.

What differs between model families is small: how cells become tokens (``prepare``), how tokens
become a batch of model inputs (``batches``) and how a batch becomes embeddings (``embed``). A
plugin subclasses :class:`CellPipeline` for those three; the core does the rest the same way for
everyone: batch limits per device, length-sorted batches on one or several devices
(:func:`biozoo.singlecell.device.run_batches`), refusing NaN outputs, provenance and atomic
writes. :func:`embed_task` turns a pipeline into the ``embed`` task the CLI calls
(:class:`biozoo.tasks.EmbedTask`), and :func:`annotate_task` a pipeline whose models have a classification head
(:meth:`CellPipeline.class_labels`, :meth:`CellPipeline.classify`) into the ``annotate`` task; both run in chunks,
resumably and on Ray, through :mod:`biozoo.singlecell.chunked`::

    class GeneRankCells(CellPipeline):
        embedding_key = "X_generank"
        def prepare(self, adata, *, var_column, layer, seed): ...
        def batches(self, prepared, *, batch_size, max_tokens, seed, progress): ...
        def embed(self, model, inputs): ...

    embed = embed_task(GeneRankCells)  # declared as TaskDecl("embed", ARCH, "my_plugin.tasks:embed")
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from biozoo.errors import BiozooError
from biozoo.singlecell.tokenize import TokenizedCells

if TYPE_CHECKING:
    import torch

    from biozoo.singlecell.chunked import EngineSpec
    from biozoo.tasks import AnnotateResult, AnnotateTask, EmbedResult, EmbedTask

#: one batch: the indices of its cells and the model's inputs as host arrays (moved to the device by the core)
HostBatch = tuple[np.ndarray, dict[str, np.ndarray]]


@dataclass
class PreparedCells:
    """Tokenized cells and what happened on the way (the steps go to the user and into the provenance)."""

    cells: TokenizedCells
    steps: list[str] = field(default_factory=list)
    input_kind: str = ""  #: what the expression was found to be: "counts", "normalized" or "log1p"
    n_genes_matched: int = 0
    n_genes_total: int = 0


class CellPipeline(ABC):
    """How one family of single-cell models reads cells; built from a loaded model (its manifest's contract).

    Subclasses read what they need from the model in ``__init__`` (call ``super().__init__(model)``)
    and implement :meth:`prepare`, :meth:`batches` and :meth:`embed`; ``embedding_key`` is the default
    ``obsm`` key of ``zoo embed``: by convention ``X_<plugin namespace>`` (``X_autoregressive``,
    ``X_geneformer_mini``); scGPT keeps ``X_scGPT``, the key its own tutorials use. ``--key`` overrides it.
    """

    embedding_key: ClassVar[str]

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    @abstractmethod
    def prepare(self, adata: Any, *, var_column: str | None, layer: str | None, seed: int) -> PreparedCells:
        """Checked, gene-matched, normalised and tokenized cells (``biozoo.singlecell.prepare`` does most of it)."""

    @abstractmethod
    def batches(
        self, prepared: PreparedCells, *, batch_size: int, max_tokens: int | None, seed: int, progress: bool
    ) -> Iterator[HostBatch]:
        """Batches of at most ``batch_size`` cells and ``max_tokens`` padded tokens, each cell exactly once."""

    @abstractmethod
    def embed(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """One batch's cell embeddings ``[batch, dims]`` (``model`` is this model or its copy on another device)."""

    def run(
        self,
        adata: Any,
        step: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor],
        *,
        devices: list[torch.device] | None = None,
        batch_size: int | None = None,
        max_tokens: int | None = None,
        var_column: str | None = None,
        layer: str | None = None,
        seed: int = 0,
        progress: bool = True,
        what: str = "outputs",
    ) -> tuple[np.ndarray, PreparedCells]:
        """``step(model, inputs) -> [batch, ...]`` for every cell, in cell order, on the model's device or split
        over ``devices``. Batch limits default to the device's (:func:`biozoo.singlecell.device.batch_limits`);
        NaN or infinite results (``what``, for the message) are refused."""
        from biozoo.singlecell.checks import refuse_non_finite
        from biozoo.singlecell.device import batch_limits, run_batches

        prepared = self.prepare(adata, var_column=var_column, layer=layer, seed=seed)
        device = devices[0] if devices else next(self.model.parameters()).device
        batch_size, max_tokens = batch_limits(device, batch_size, max_tokens)
        out = run_batches(
            self.model,
            self.batches(prepared, batch_size=batch_size, max_tokens=max_tokens, seed=seed, progress=progress),
            step,
            len(prepared.cells),
            devices=devices,
            check=lambda values: refuse_non_finite(values, self.model, what),
        )
        return out, prepared

    def cell_embeddings(self, adata: Any, **options: Any) -> tuple[np.ndarray, PreparedCells]:
        """:meth:`embed` for every cell ``[cells, dims]``, in cell order; options as :meth:`run`."""
        return self.run(adata, self.embed, what="cell embeddings", **options)

    def class_labels(self) -> list[str]:
        """The classes of the model's classification head, in output order. Override it (and :meth:`classify`)
        for models that have one; a model without one is refused here, before any cell is read."""
        record = getattr(self.model, "zoo", None)
        name = record.manifest.id if record is not None else type(self.model).__name__
        raise BiozooError(
            f"{name} has no classification head", "annotate with a fine-tuned model, or run `zoo finetune` first"
        )

    def classify(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """One batch's class probabilities ``[batch, classes]``, in float32 (see :meth:`class_labels`)."""
        raise NotImplementedError(f"{type(self).__name__} does not classify cells")

    def class_probabilities(self, adata: Any, **options: Any) -> tuple[np.ndarray, PreparedCells]:
        """:meth:`classify` for every cell ``[cells, classes]``, in cell order; options as :meth:`run`."""
        self.class_labels()  # no head: refused before preprocessing
        return self.run(adata, self.classify, what="class probabilities", **options)


def _in_chunks(input_path: Path, chunk_size: int | None, engine: EngineSpec | None) -> bool:
    """Whether a task runs in chunks: asked for, a folder of shards or a zarr store, or a Ray engine."""
    return chunk_size is not None or Path(input_path).is_dir() or (engine is not None and engine.name != "local")


def embed_task(pipeline: Callable[[Any], CellPipeline], key: str | None = None) -> EmbedTask:
    """The ``embed`` task (:class:`biozoo.tasks.EmbedTask`) of a pipeline: ``obsm[key]`` and provenance in a new
    ``.h5ad``; ``key`` defaults to the pipeline's ``embedding_key``."""

    def embed(
        model: torch.nn.Module,
        input_path: Path,
        output_path: Path,
        *,
        batch_size: int | None = None,
        var_column: str | None = None,
        layer: str | None = None,
        seed: int = 0,
        key: str | None = key,
        progress: bool = True,
        devices: list[torch.device] | None = None,
        chunk_size: int | None = None,
        parts: Path | None = None,
        resume: bool = False,
        restart: bool = False,
        engine: EngineSpec | None = None,
        per_shard: bool = False,
    ) -> EmbedResult:
        """Write ``obsm[key]`` (cell embeddings) and ``uns['biozoo'][key]`` provenance to a new ``.h5ad``;
        ``devices`` splits the cells over several devices (the model is copied to each).

        With ``chunk_size``, a folder of shards or a zarr store as input, or a Ray ``engine``, the cells are read
        and embedded a chunk at a time into ``parts`` (default ``OUTPUT.parts``), resumable with ``resume``
        (``restart``: discard what a previous run left), and the output holds obs and ``obsm[key]`` only
        (:mod:`biozoo.singlecell.chunked`); ``per_shard`` makes it a folder of one such file per input shard."""
        from biozoo.singlecell.outputs import write_embeddings

        cells = pipeline(model)
        key = key or cells.embedding_key
        options = {"batch_size": batch_size, "var_column": var_column, "layer": layer, "seed": seed,
                   "progress": progress, "devices": devices}  # fmt: skip
        if _in_chunks(input_path, chunk_size, engine):
            from biozoo.singlecell.chunked import ChunkedOutput, run_in_chunks

            obs, dims, steps = run_in_chunks(
                model, pipeline, cells, Path(input_path), Path(output_path), ChunkedOutput.embeddings(key),
                chunk_size=chunk_size, parts=parts, resume=resume, restart=restart, engine=engine, per_shard=per_shard,
                **options,
            )  # fmt: skip
            return {"cells": len(obs), "dims": dims, "key": f"obsm[{key!r}]", "steps": steps}

        def compute(adata: Any) -> tuple[np.ndarray, list[str]]:
            emb, prepared = cells.cell_embeddings(adata, **options)
            return emb, prepared.steps

        return write_embeddings(model, input_path, output_path, compute, key=key, seed=seed)

    return embed


def annotate_task(pipeline: Callable[[Any], CellPipeline]) -> AnnotateTask:
    """The ``annotate`` task (:class:`biozoo.tasks.AnnotateTask`) of a pipeline whose models classify cells:
    ``obs[f'{key}_label']`` and ``obs[f'{key}_confidence']`` in a new ``.h5ad``, ``key`` defaulting to the model's
    id as an identifier (:func:`biozoo.singlecell.outputs.label_key`)."""

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
        devices: list[torch.device] | None = None,
        chunk_size: int | None = None,
        parts: Path | None = None,
        resume: bool = False,
        restart: bool = False,
        engine: EngineSpec | None = None,
        per_shard: bool = False,
    ) -> AnnotateResult:
        """Write the most probable class and its probability per cell into obs, and the provenance (with the
        preprocessing steps and the classes) into ``uns['biozoo'][f'{key}_label']``. Chunked runs, ``devices``
        and ``engine`` as ``embed``: a chunked run's output holds obs only (no expression matrix)."""
        from biozoo.singlecell.outputs import annotation_summary, label_key, write_annotations

        cells = pipeline(model)
        labels = cells.class_labels()  # a model without a classification head stops here
        key = label_key(model) if key is None else key
        options = {"batch_size": batch_size, "var_column": var_column, "layer": layer, "seed": seed,
                   "progress": progress, "devices": devices}  # fmt: skip
        if _in_chunks(input_path, chunk_size, engine):
            from biozoo.singlecell.chunked import ChunkedOutput, run_in_chunks

            obs, _, steps = run_in_chunks(
                model, pipeline, cells, Path(input_path), Path(output_path), ChunkedOutput.annotations(key, labels),
                chunk_size=chunk_size, parts=parts, resume=resume, restart=restart, engine=engine, per_shard=per_shard,
                **options,
            )  # fmt: skip
            return annotation_summary(obs, key, steps)

        def compute(adata: Any) -> tuple[np.ndarray, list[str]]:
            probs, prepared = cells.class_probabilities(adata, **options)
            return probs, prepared.steps

        obs, steps = write_annotations(model, input_path, output_path, compute, key=key, labels=labels, seed=seed)
        return annotation_summary(obs, key, steps)

    return annotate
