"""scanpy's bundled pbmc68k_reduced as raw counts, and the held-out split every demo model shares.

700 PBMCs (10x "Fresh 68k PBMCs, donor A", Zheng et al. 2017) ship inside scanpy; raw UMI
counts for its 765 genes are recovered exactly as ``round(expm1(raw.X) * n_counts / 1e4)``.
The stratified 20% test split (seed 0) is ``examples/pbmc68k_test.h5ad``; no demo model sees it.
"""

from __future__ import annotations

import numpy as np

SEED = 0


def load_counts():
    import anndata as ad
    import scanpy as sc
    from scipy import sparse

    pbmc = sc.datasets.pbmc68k_reduced()
    counts = np.rint(np.expm1(pbmc.raw.X.toarray()) * pbmc.obs["n_counts"].to_numpy()[:, None] / 1e4)
    adata = ad.AnnData(X=sparse.csr_matrix(counts.astype(np.float32)), obs=pbmc.obs[["bulk_labels"]].copy())
    adata.var_names = list(pbmc.raw.var_names)
    adata.obs["bulk_labels"] = adata.obs["bulk_labels"].astype(str)
    adata.uns["source"] = (
        "scanpy.datasets.pbmc68k_reduced(): 10x Fresh 68k PBMCs donor A (Zheng et al. 2017); "
        "raw counts recovered as round(expm1(raw.X) * n_counts / 1e4)"
    )
    return adata


def train_test_split(adata):
    """(train, test) AnnData: the stratified 20% test split (seed 0) of ``bulk_labels``."""
    from biozoo_scgpt.finetune import split

    classes = sorted(adata.obs["bulk_labels"].unique())
    y = np.array([classes.index(v) for v in adata.obs["bulk_labels"]])
    train_idx, test_idx = split(y, 0.2, SEED)
    return adata[train_idx].copy(), adata[test_idx].copy()
