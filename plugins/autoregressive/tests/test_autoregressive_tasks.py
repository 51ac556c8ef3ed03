"""`zoo generate` and `zoo embed` with the shipped autoregressive/pbmc-small model on real held-out PBMCs."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import biozoo
from biozoo.errors import BiozooError
from biozoo_autoregressive import tasks
from biozoo_autoregressive.cells import CellContract
from tests.support.cli import zoo

ROOT = Path(__file__).resolve().parents[3]
CELLS = ROOT / "examples" / "pbmc68k_test.h5ad"
MODEL = "autoregressive/pbmc-small"


@pytest.fixture(scope="module")
def model():
    return biozoo.load(MODEL)


def test_zoo_verify_and_generate_write_well_formed_cells(tmp_path: Path) -> None:
    assert zoo("verify", MODEL).returncode == 0
    out = tmp_path / "generated.h5ad"
    proc = zoo("generate", MODEL, "-n", "24", "-o", str(out), "--seed", "3", "--batch-size", "10")
    assert proc.returncode == 0, proc.stderr
    cells = ad.read_h5ad(out)
    real = ad.read_h5ad(CELLS)
    assert cells.n_obs == 24 and cells.obs_names.is_unique and list(cells.var_names) == list(real.var_names)
    x, bins = cells.X.toarray(), cells.layers["bins"].toarray()
    assert ((x > 0) == (bins > 0)).all() and (bins[bins > 0] >= 1).all()
    assert (cells.obs["n_genes"].to_numpy() == (x > 0).sum(1)).all()
    first = cells.obs["order"].iloc[0].split()
    assert len(first) == len(set(first)) == cells.obs["n_genes"].iloc[0]
    assert np.all(np.diff(x[0, [cells.var_names.get_loc(g) for g in first]]) <= 1.0)  # roughly rank-ordered
    prov = cells.uns["biozoo"]["generate"]
    assert prov["model"] == MODEL and prov["seed"] == 3 and prov["objective"] == "next_token"
    again = tmp_path / "again.h5ad"
    assert zoo("generate", MODEL, "-n", "24", "-o", str(again), "--seed", "3", "--batch-size", "10").returncode == 0
    assert (ad.read_h5ad(again).X != cells.X).nnz == 0  # a seed reproduces the cells


def test_generated_cells_resemble_held_out_cells(model) -> None:
    """A trained model's cells: per-gene mean expression correlates with real held-out cells."""
    contract = CellContract.of(model)
    real = ad.read_h5ad(CELLS)
    generated = tasks.generated_to_anndata(model, model.generate(64, seed=0), contract)[:, list(real.var_names)]
    from biozoo.singlecell.normalize import log1p, normalize_total

    real_x = log1p(normalize_total(real.X, 1e4)).toarray()
    r = np.corrcoef(generated.X.toarray().mean(0), real_x.mean(0))[0, 1]
    assert r > 0.7, r


def test_embed_is_batch_independent_and_cell_specific(model) -> None:
    cells = ad.read_h5ad(CELLS)[:40].copy()
    a, prepared = tasks.cell_embeddings(model, cells, batch_size=64)
    b, _ = tasks.cell_embeddings(model, cells, batch_size=7)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    distances = np.linalg.norm(a[:, None] - a[None], axis=-1)[~np.eye(40, dtype=bool)]
    assert distances.min() > 1e-3
    assert any("highest first" in s for s in prepared.steps)


def test_zoo_embed_writes_provenance(tmp_path: Path) -> None:
    out = tmp_path / "embedded.h5ad"
    proc = zoo("embed", MODEL, str(CELLS), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    result = ad.read_h5ad(out)
    assert result.obsm["X_autoregressive"].shape == (result.n_obs, 128)
    assert "biozoo-autoregressive" in result.uns["biozoo"]["X_autoregressive"]["plugin"]


def test_bad_requests_are_named_and_leave_no_output(tmp_path: Path, model) -> None:
    out = tmp_path / "g.h5ad"
    proc = zoo("generate", MODEL, "-n", "2", "-o", str(out), "--max-length", "5000")
    assert proc.returncode == 1 and "max_length 5000 exceeds" in proc.stderr and "hint:" in proc.stderr
    assert not out.exists()
    with pytest.raises(BiozooError, match="must end in .h5ad"):
        tasks.generate(model, tmp_path / "g.csv", n_cells=2)
    cells = ad.read_h5ad(CELLS)[:5].copy()
    x = cells.X.toarray()
    x[1] = 0
    empty = ad.AnnData(sparse.csr_matrix(x), obs=cells.obs, var=cells.var)
    source = tmp_path / "empty.h5ad"
    empty.write_h5ad(source)
    proc = zoo("embed", MODEL, str(source), "-o", str(out))
    assert proc.returncode == 1 and "express no gene" in proc.stderr and not out.exists()
    unknown = ad.AnnData(cells.X, obs=cells.obs, var=cells.var.set_axis([f"X{i}" for i in range(cells.n_vars)]))
    unknown.write_h5ad(source)
    proc = zoo("embed", MODEL, str(source), "-o", str(out))
    assert proc.returncode == 1 and "are in the vocabulary" in proc.stderr
