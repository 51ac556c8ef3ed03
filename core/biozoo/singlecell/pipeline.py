"""One pipeline for every single-cell plugin: AnnData -> model inputs -> per-cell outputs -> a new ``.h5ad``.

What differs between model families is small: how cells become tokens (``prepare``), how tokens
become a batch of model inputs (``batches``) and how a batch becomes embeddings (``embed``). A
plugin subclasses :class:`CellPipeline` for those three; the core does the rest the same way for
everyone: batch limits per device, length-sorted batches on one or several devices
(:func:`biozoo.singlecell.device.run_batches`), refusing NaN outputs, provenance and atomic
writes. :func:`embed_task` turns a pipeline into the ``embed`` task the CLI calls
(:class:`biozoo.tasks.EmbedTask`)::

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

from biozoo.singlecell.tokenize import TokenizedCells

if TYPE_CHECKING:
    import torch

    from biozoo.singlecell.chunked import EngineSpec
    from biozoo.tasks import EmbedResult, EmbedTask

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
    ) -> EmbedResult:
        """Write ``obsm[key]`` (cell embeddings) and ``uns['biozoo'][key]`` provenance to a new ``.h5ad``;
        ``devices`` splits the cells over several devices (the model is copied to each).

        With ``chunk_size``, a folder of shards or a zarr store as input, or a Ray ``engine``, the cells are read
        and embedded a chunk at a time into ``parts`` (default ``OUTPUT.parts``), resumable with ``resume``
        (``restart``: discard what a previous run left), and the output holds obs and ``obsm[key]`` only
        (:mod:`biozoo.singlecell.chunked`)."""
        from biozoo.singlecell.outputs import write_embeddings

        cells = pipeline(model)
        chunked = chunk_size is not None or Path(input_path).is_dir() or (engine is not None and engine.name != "local")
        if chunked:
            from biozoo.singlecell.chunked import embed_in_chunks

            return embed_in_chunks(
                model, pipeline, cells, Path(input_path), Path(output_path), key=key or cells.embedding_key,
                chunk_size=chunk_size, parts=parts, resume=resume, restart=restart, engine=engine,
                batch_size=batch_size, var_column=var_column, layer=layer, seed=seed, progress=progress,
                devices=devices,
            )  # fmt: skip

        def compute(adata: Any) -> tuple[np.ndarray, list[str]]:
            emb, prepared = cells.cell_embeddings(
                adata, batch_size=batch_size, var_column=var_column, layer=layer, seed=seed, progress=progress,
                devices=devices,
            )  # fmt: skip
            return emb, prepared.steps

        return write_embeddings(model, input_path, output_path, compute, key=key or cells.embedding_key, seed=seed)

    return embed
