"""From AnnData to embeddings and annotations: real cells, the shipped model, bad inputs, atomic outputs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch
import yaml
from scipy import sparse

import biozoo
from biozoo.errors import InvalidArgumentError, ManifestError, ModelOutputError
from biozoo.singlecell.anndata_io import write_h5ad_atomic
from biozoo.singlecell.errors import DataError
from biozoo_scgpt import tasks
from tests.support.cli import zoo
from tests.support.models import with_nan_weights

ROOT = Path(__file__).resolve().parents[3]
CELLS = ROOT / "examples" / "pbmc68k_test.h5ad"


@pytest.fixture(scope="module")
def model():
    return biozoo.load("scgpt/cls")


@pytest.fixture
def cells() -> ad.AnnData:
    return ad.read_h5ad(CELLS)


def test_annotations_match_an_independent_pipeline_built_from_reference_functions(model, cells) -> None:
    """scGPT's own Preprocessor (normalise, log1p, bin) + the model on its tokens = our annotate, cell by cell."""
    from tests.support.scgpt_reference import load_reference

    ref = load_reference()
    contract = tasks.InputContract.of(model, binning="reference")  # ties drawn from numpy's global RNG, like scGPT
    genes = np.array(cells.var_names)
    keep = np.array([g in contract.vocabulary for g in genes])
    sub = cells[:, keep].copy()
    np.random.seed(0)
    ref.preprocess.Preprocessor(normalize_total=1e4, log1p=True, binning=51)(sub)
    binned = np.asarray(sub.layers["X_binned"])
    np.random.seed(0)
    ours = tasks.prepare(cells, contract)
    ids = np.array([contract.vocabulary[g] for g in genes[keep]])
    cls_id = contract.vocabulary["<cls>"]
    for i in range(cells.n_obs):  # the same tokens and the same bins, in the same order
        nz = np.flatnonzero(binned[i])
        g, v = ours.cells.cell(i)
        assert g[0] == cls_id and np.array_equal(g[1:], ids[nz]) and np.array_equal(v[1:], binned[i, nz])
    np.random.seed(0)
    probs, _ = tasks.class_probabilities(model, cells, binning="reference", progress=False)
    for i in range(0, cells.n_obs, 7):
        nz = np.flatnonzero(binned[i])
        src = torch.tensor(np.r_[cls_id, ids[nz]])[None]
        val = torch.tensor(np.r_[-2.0, binned[i, nz]], dtype=torch.float32)[None]
        with torch.no_grad():
            logits = model(src, val, torch.zeros_like(src, dtype=torch.bool), CLS=True)["cls_output"]
        torch.testing.assert_close(torch.softmax(logits, -1)[0], torch.from_numpy(probs[i]), atol=1e-5, rtol=0)


def test_embeddings_do_not_depend_on_batching(model, cells) -> None:
    """Length-sorted, padded batches give the same embeddings as one cell at a time."""
    one, _ = tasks.cell_embeddings(model, cells[:12].copy(), batch_size=1, progress=False)
    many, _ = tasks.cell_embeddings(model, cells[:12].copy(), batch_size=64, progress=False, max_tokens=None)
    capped, _ = tasks.cell_embeddings(model, cells[:12].copy(), batch_size=64, progress=False, max_tokens=700)
    np.testing.assert_allclose(many, one, atol=1e-5)
    np.testing.assert_allclose(capped, one, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-5)


def test_log_normalised_input_gives_the_same_embeddings_as_counts(model, cells) -> None:
    from biozoo.singlecell.normalize import log1p, normalize_total

    logged = cells.copy()
    logged.X = log1p(normalize_total(cells.X, 1e4))
    a, prep_a = tasks.cell_embeddings(model, cells, progress=False)
    b, prep_b = tasks.cell_embeddings(model, logged, progress=False)
    assert prep_a.input_kind == "counts" and prep_b.input_kind == "log1p"
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_zoo_embed_and_annotate_write_provenance(tmp_path: Path) -> None:
    out = tmp_path / "embedded.h5ad"
    proc = zoo("embed", "scgpt/cls", str(CELLS), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    result = ad.read_h5ad(out)
    assert result.obsm["X_scGPT"].shape == (result.n_obs, 128)
    prov = result.uns["biozoo"]["X_scGPT"]
    assert prov["model"] == "scgpt/cls" and prov["seed"] == 0 and "biozoo-scgpt" in prov["plugin"]
    assert len(prov["weights_sha256"]["model.safetensors"]) == 64

    out = tmp_path / "annotated.h5ad"
    proc = zoo("annotate", "scgpt/cls", str(CELLS), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    result = ad.read_h5ad(out)
    assert set(result.obs["scgpt_cls_label"].cat.categories) <= set(result.obs["bulk_labels"].unique()) | {
        *result.uns["biozoo"]["scgpt_cls_label"]["classes"]
    }
    assert ((result.obs["scgpt_cls_confidence"] > 0) & (result.obs["scgpt_cls_confidence"] <= 1)).all()
    accuracy = float((result.obs["scgpt_cls_label"].astype(str) == result.obs["bulk_labels"].astype(str)).mean())
    assert accuracy > 0.3  # ten classes: far above chance (0.1)


def test_annotate_reports_its_preprocessing_like_embed(tmp_path: Path) -> None:
    """The gene-match line is printed and the steps are in the provenance, as docs/scgpt.md says."""
    out = tmp_path / "annotated.h5ad"
    proc = zoo("annotate", "scgpt/cls", str(CELLS), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    line = "matched 765 genes (var_names): 100% of the model's 765, 100% of the data's 765"
    assert line in proc.stdout and "obs['scgpt_cls_label']" in proc.stdout
    steps = ad.read_h5ad(out).uns["biozoo"]["scgpt_cls_label"]["preprocessing"]
    assert str(steps[0]) == line and any("binned into 51 bins" in s for s in steps)


def _bad(cells: ad.AnnData, kind: str) -> ad.AnnData:
    x = cells.X.toarray()
    if kind == "nan":
        x[0, 0] = np.nan
    elif kind == "negative":
        x -= x.mean(0)
    elif kind == "empty":
        x[3] = 0
    out = ad.AnnData(X=sparse.csr_matrix(x), obs=cells.obs.copy(), var=cells.var.copy())
    if kind == "duplicates":
        names = list(out.var_names)
        names[1] = names[0]
        out.var_names = names
    if kind == "no-overlap":
        out.var_names = [f"NOT_A_GENE_{i}" for i in range(out.n_vars)]
    return out


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("nan", "NaN or infinite"),
        ("negative", "negative values"),
        ("empty", "express no gene"),
        ("duplicates", "appear more than once"),
        ("no-overlap", "in the model's vocabulary"),
    ],
)
def test_bad_inputs_are_refused_and_leave_no_output(tmp_path: Path, cells, kind: str, words: str) -> None:
    source = tmp_path / "bad.h5ad"
    write_h5ad_atomic(_bad(cells, kind), source)
    out = tmp_path / "out.h5ad"
    proc = zoo("annotate", "scgpt/cls", str(source), "-o", str(out))
    assert proc.returncode == 1
    assert words in proc.stderr and "hint:" in proc.stderr and "Traceback" not in proc.stderr
    assert "Variable names are not unique" not in proc.stderr  # anndata's warning would come before ours
    assert not out.exists() and not list(tmp_path.glob(".out.h5ad*"))


@pytest.mark.parametrize("command", ["embed", "annotate"])
def test_zero_cells_are_refused_up_front(tmp_path: Path, cells, command: str) -> None:
    source = tmp_path / "none.h5ad"
    write_h5ad_atomic(cells[:0].copy(), source)
    out = tmp_path / "out.h5ad"
    proc = zoo(command, "scgpt/cls", str(source), "-o", str(out))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "has 0 cells (0 x 765); nothing to embed" in proc.stderr.replace("\n", " ")
    assert not out.exists()


def test_nan_outputs_are_refused_and_nothing_is_written(tmp_path: Path, model) -> None:
    """NaN weights used to label every cell with the first class and exit 0."""
    broken = with_nan_weights(model, 'transformer_encoder')
    for task in (tasks.annotate, tasks.embed):
        out = tmp_path / f"{task.__name__}.h5ad"
        with pytest.raises(ModelOutputError, match="scgpt/cls produced NaN or infinite") as info:
            task(broken, CELLS, out, progress=False)
        assert "zoo verify scgpt/cls" in info.value.hint and not out.exists()


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("n_bins", 10**9, "n_bins must be an integer in 2..10,000, got 1000000000"),
        ("n_bins", 1, "n_bins must be an integer in 2..10,000"),
        ("binning", "evil", "binning must be one of 'seeded', 'reference', got 'evil'"),
        ("pad_token", "nope", "pad_token is 'nope', which is not in the model's vocabulary"),
        ("cls_value", "x", "cls_value must be a finite number, got 'x'"),
        ("max_seq_len", 0, "max_seq_len must be an integer >= 2"),
        ("normalize_total", -1, "normalize_total must be a finite number > 0"),
    ],
)
def test_bad_preprocessing_settings_are_refused_before_any_data(tmp_path: Path, key: str, value, words: str) -> None:
    folder = tmp_path / "model"
    shutil.copytree(ROOT / "registry" / "scgpt" / "cls", folder)
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    manifest["preprocessing"]["config"][key] = value
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(ManifestError, match=re.escape(f"scgpt/cls: preprocessing.config.{words}")):
        tasks.InputContract.of(biozoo.load(folder))


def test_finetune_options_are_checked_before_reading_data(tmp_path: Path, model) -> None:
    """epochs=0 used to write an untrained "fine-tuned" model; the input here does not even exist.

    (The CLI refuses these values itself, see tests/test_cli_errors.py; this is the Python API.)"""
    from biozoo_scgpt.finetune import finetune

    missing = tmp_path / "no-such-input.h5ad"
    bad = [
        ({"epochs": 0}, "--epochs"),
        ({"lr": float("nan")}, "--lr"),
        ({"lr": 0.0}, "--lr"),
        ({"val_fraction": 1.5}, "--val-fraction"),
        ({"val_fraction": 0.0}, "--val-fraction"),
        ({"patience": -1}, "--patience"),
        ({"batch_size": 0}, "--batch-size"),
    ]
    for options, flag in bad:
        with pytest.raises(InvalidArgumentError) as info:
            finetune(model, missing, tmp_path / "out", label_column="bulk_labels", progress=False, **options)
        assert flag in info.value.hint, options
    none = tmp_path / "none.h5ad"
    write_h5ad_atomic(ad.read_h5ad(CELLS)[:0].copy(), none)
    with pytest.raises(DataError, match=r"has 0 cells \(0 x 765\); nothing to train on"):  # was an IndexError
        finetune(model, none, tmp_path / "out", label_column="bulk_labels", progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_var_column_and_not_h5ad(tmp_path: Path, model, cells) -> None:
    with pytest.raises(DataError, match="var column 'symbol'"):
        tasks.cell_embeddings(model, cells, var_column="symbol", progress=False)
    fake = tmp_path / "cells.h5ad"
    fake.write_text("gene,cell\nA,1\n")
    proc = zoo("embed", "scgpt/cls", str(fake), "-o", str(tmp_path / "o.h5ad"))
    assert (proc.returncode == 1 and "not an HDF5" in proc.stderr.replace("\n", " ")) or "h5ad" in proc.stderr
    same = zoo("embed", "scgpt/cls", str(CELLS), "-o", str(CELLS))
    assert same.returncode == 1 and "overwrite the input" in same.stderr


def test_finetune_writes_a_verifiable_publishable_folder(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    proc = zoo(
        "finetune",
        "scgpt/cls",
        str(CELLS),
        "-o",
        str(out),
        "--label-column",
        "bulk_labels",
        "--epochs",
        "2",
        "--id",
        "lab/pbmc-mine",
    )
    assert proc.returncode == 0, proc.stderr
    assert "validation accuracy" in proc.stdout
    verify = zoo("verify", str(out))
    assert verify.returncode == 0, verify.stderr
    model = biozoo.load(out)
    assert model.zoo.manifest.id == "lab/pbmc-mine" and model.cls_decoder.labels
    annotated = tmp_path / "mine.h5ad"  # the label columns are named after the model, not always scgpt_label
    assert zoo("annotate", str(out), str(CELLS), "-o", str(annotated)).returncode == 0
    obs = ad.read_h5ad(annotated).obs
    assert "lab_pbmc_mine_label" in obs and "lab_pbmc_mine_confidence" in obs and "scgpt_label" not in obs
    missing = zoo("finetune", "scgpt/cls", str(CELLS), "-o", str(tmp_path / "x"), "--label-column", "celltype")
    assert missing.returncode == 1 and "obs has no column 'celltype'" in missing.stderr
    assert not (tmp_path / "x").exists()
