"""From AnnData to embeddings, annotations and fine-tuned models, for scGPT models.

Cells are prepared and batched by :mod:`biozoo_scgpt.cells` (the model's input contract), run on one or several
devices (:func:`biozoo.singlecell.device.run_batches`), and written atomically, with provenance in ``uns``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from biozoo.nn.precision import upcast
from biozoo.singlecell.pipeline import CellPipeline, PreparedCells, annotate_task, embed_task
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

    def class_labels(self) -> list[str]:
        """The cell types of the fine-tuned classification head (``cls_decoder``); a pretrained model has none."""
        head = self.model.cls_decoder
        if head is None:
            return super().class_labels()
        return head.labels or [str(i) for i in range(head.n_cls)]

    def classify(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Softmax of the classification head, in float32."""
        return torch.softmax(upcast(model(**inputs, CLS=True)["cls_output"]), dim=-1)


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


def class_probabilities(
    model: torch.nn.Module, adata: Any, *, binning: str | None = None, **options: Any
) -> tuple[np.ndarray, list[str]]:
    """Softmax over the model's cell-type classes ``[cells, classes]`` and the class names; options as run_cells."""
    cells = ScGPTCells(model, binning)
    probs, _ = cells.class_probabilities(adata, **options)
    return probs, cells.class_labels()


# -- tasks behind `zoo embed`, `zoo annotate`, `zoo finetune` -----------------------------------------------------


#: ``zoo embed``: ``obsm['X_scGPT']`` and provenance in a new h5ad (biozoo.tasks.EmbedTask)
embed = embed_task(ScGPTCells)


#: ``zoo annotate``: ``obs['<model>_label']``, ``obs['<model>_confidence']`` in a new h5ad (biozoo.tasks.AnnotateTask)
annotate = annotate_task(ScGPTCells)


def finetune(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Cell-type fine-tuning; see :mod:`biozoo_scgpt.finetune`."""
    from biozoo_scgpt.finetune import finetune as run

    return run(*args, **kwargs)
