"""AnnData -> scGPT-style tokens, shared by every single-cell plugin.

The pipeline is numpy-only (no torch at import time) and does not need anndata or scanpy
unless a function that reads or writes AnnData is called, so ``import biozoo`` stays light:

1. ``anndata_io``: read/validate/write h5ad, match genes to a vocabulary;
2. ``normalize``: detect what ``X`` holds, ``normalize_total``/``log1p`` like scanpy;
3. ``binning``: scGPT's per-cell quantile binning, bit-identical to the reference, and
   scModelForge's fixed (uniform/quantile) edges with ``digitize_by_edges``/``bin_midpoints``;
4. ``tokenize``: ``[<cls>] + non-zero genes`` per cell, rank order, sampling or head truncation,
   padding, length-sorted batches.
5. ``rank``: Geneformer's rank-value encoding, genes by normalised expression computed in float64
   from unlogged counts (log1p input is refused), optionally divided by per-gene medians.
6. ``pipeline``: :class:`~biozoo.singlecell.pipeline.CellPipeline`, the three (or five, with a classification
   head) steps a plugin writes, and ``embed_task``/``annotate_task``, the CLI's tasks made from it;
7. ``stream``, ``sharded``, ``chunked``: the same tasks a chunk at a time, resumable, on Ray (docs/scale.md).
"""
