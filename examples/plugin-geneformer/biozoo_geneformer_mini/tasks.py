"""The task behind ``zoo embed`` for ``geneformer_mini.rank_value_bert``: cell embeddings into a new ``.h5ad``.

The CLI calls ``embed(model, input_path, output_path, *, batch_size, var_column, layer, seed)`` (plus ``devices``
with ``--devices``) and prints the returned ``cells``, ``dims``, ``key`` and ``steps`` (``biozoo.tasks.EmbedTask``).
``output_path`` is a staged path the CLI publishes when this returns, so the task writes exactly there, atomically.
The core's :func:`biozoo.singlecell.pipeline.embed_task` does all of that around this plugin's pipeline.
"""

from __future__ import annotations

from biozoo.singlecell.pipeline import embed_task
from biozoo_geneformer_mini.cells import GeneformerCells

#: ``zoo embed``: ``obsm['X_geneformer_mini']`` (the mean of the last layer's hidden states over each cell's gene
#: tokens, as Geneformer's cell embeddings) and ``uns['biozoo']['X_geneformer_mini']`` provenance
embed = embed_task(GeneformerCells)
