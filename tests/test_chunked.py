"""Chunked ``zoo embed`` and ``zoo annotate`` (issue 14): streaming input, resumable sharded output, shards and
zarr, the Ray engine.

The expected values are the unchunked run's (whose own parity with the references is tested per plugin): a chunked
run must give the same embeddings for models whose preprocessing draws nothing (autoregressive), each chunk the
unchunked result of its cells with its chunk seed (scGPT, whose binning draws), and the same file whether or not
it was killed and resumed, whichever engine ran it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("biozoo_autoregressive")
pytest.importorskip("biozoo_scgpt")
anndata = pytest.importorskip("anndata")

CELLS = Path(__file__).resolve().parents[1] / "examples" / "pbmc68k_test.h5ad"  # 140 PBMCs
AR, SCGPT = "autoregressive/pbmc-small", "scgpt/cls"
#: float32 noise: the same cells batched with other cells (other padding, other matmul blocking) differ by up to
#: 4e-5 here, 3e-4 seen between processes on a loaded machine (the autoregressive --key test)
TOL = 3e-4
SAME = 1e-5  # the same chunks and batches: a resumed run against an uninterrupted one


def zoo(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "biozoo.cli.app", *args], capture_output=True, text=True, timeout=600, cwd=cwd,
        env=environ,
    )  # fmt: skip


def embedding(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    adata = anndata.read_h5ad(path)
    return np.asarray(adata.obsm[key]), np.asarray(adata.obs_names)


def shards(tmp_path: Path, sizes: tuple[int, ...] = (50, 50, 40)) -> Path:
    """The PBMC file split into .h5ad shards in a folder, in order."""
    from biozoo.singlecell.anndata_io import write_h5ad_atomic

    adata = anndata.read_h5ad(CELLS)
    folder = tmp_path / "shards"
    folder.mkdir()
    start = 0
    for i, size in enumerate(sizes):
        write_h5ad_atomic(adata[start : start + size].copy(), folder / f"part{i}.h5ad")
        start += size
    return folder


def test_chunked_embed_equals_the_unchunked_run_with_flat_output(tmp_path: Path) -> None:
    full = zoo("embed", AR, str(CELLS), "-o", "full.h5ad", cwd=tmp_path)
    chunked = zoo("embed", AR, str(CELLS), "-o", "chunked.h5ad", "--chunk-size", "45", cwd=tmp_path)
    assert full.returncode == 0 and chunked.returncode == 0, chunked.stderr[-2000:]
    a, names_a = embedding(tmp_path / "full.h5ad", "X_autoregressive")
    b, names_b = embedding(tmp_path / "chunked.h5ad", "X_autoregressive")
    np.testing.assert_allclose(b, a, atol=TOL, rtol=0)
    assert (names_a == names_b).all()
    out = anndata.read_h5ad(tmp_path / "chunked.h5ad")
    assert out.n_vars == 0 and out.X is None  # obs and embeddings only
    assert list(out.obs["bulk_labels"]) == list(anndata.read_h5ad(CELLS).obs["bulk_labels"])
    chunking = out.uns["biozoo"]["X_autoregressive"]["chunking"]
    assert chunking["chunk_size"] == 45 and chunking["chunks"] == 4 and chunking["engine"] == "local"
    assert not (tmp_path / "chunked.h5ad.parts").exists()  # removed once assembled
    assert oct((tmp_path / "chunked.h5ad").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_killed_run_resumes_to_the_same_file(tmp_path: Path) -> None:
    args = ["embed", SCGPT, str(CELLS), "--chunk-size", "40"]
    clean = zoo(*args, "-o", "clean.h5ad", cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr[-2000:]
    marker = tmp_path / "killed-once"
    killed = zoo(*args, "-o", "out.h5ad", cwd=tmp_path,
                 env={"BIOZOO_FAIL_ONCE_AT_CHUNK": f"s00000-c000002:{marker}"})  # fmt: skip
    assert killed.returncode == 17 and marker.exists()  # the process died at the third chunk
    assert not (tmp_path / "out.h5ad").exists()
    parts = tmp_path / "out.h5ad.parts"
    assert sorted(p.name for p in (parts / "chunks").iterdir()) == ["s00000-c000000.npz", "s00000-c000001.npz"]
    again = zoo(*args, "-o", "out.h5ad", cwd=tmp_path)
    assert again.returncode == 1 and "a previous run left" in again.stderr and "--resume" in again.stderr
    other = zoo("embed", SCGPT, str(CELLS), "--chunk-size", "40", "--seed", "1", "-o", "out.h5ad", "--resume",
                cwd=tmp_path)  # fmt: skip
    assert other.returncode == 1 and "was made by another run" in other.stderr
    assert "settings.seed: 0 then, 1 now" in other.stderr
    assert "hint:" in other.stderr and "Traceback" not in other.stderr
    model = zoo("embed", AR, str(CELLS), "--chunk-size", "40", "-o", "out.h5ad", "--resume", "--key", "X_scGPT",
                cwd=tmp_path)  # fmt: skip
    assert model.returncode == 1 and "model: 'scgpt/cls' then, 'autoregressive/pbmc-small' now" in model.stderr
    resumed = zoo(*args, "-o", "out.h5ad", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, names_a = embedding(tmp_path / "clean.h5ad", "X_scGPT")
    b, names_b = embedding(tmp_path / "out.h5ad", "X_scGPT")
    np.testing.assert_allclose(b, a, atol=SAME, rtol=0)  # the same per-chunk seeds: scGPT's binning draws agree
    assert (names_a == names_b).all() and not parts.exists()


def write_zarr(adata, path: Path) -> None:
    """``adata.write_zarr`` with pandas 3's string columns as object strings (anndata 0.12 refuses to write the
    nullable ones unless told to; the core's .h5ad writer does the same conversion)."""
    for frame in (adata.obs, adata.var):
        frame.index = frame.index.astype(object)
        for column in frame.columns:
            if frame[column].dtype == "string" or str(frame[column].dtype) == "str":
                frame[column] = frame[column].astype(object)
    adata.write_zarr(path)


def test_a_folder_of_shards_and_a_zarr_store_give_the_file_s_embeddings(tmp_path: Path) -> None:
    folder = shards(tmp_path)
    write_zarr(anndata.read_h5ad(CELLS), tmp_path / "cells.zarr")
    base = zoo("embed", AR, str(CELLS), "-o", "file.h5ad", cwd=tmp_path)
    assert base.returncode == 0
    expected, names = embedding(tmp_path / "file.h5ad", "X_autoregressive")
    for source, out in ((folder, "folder.h5ad"), (tmp_path / "cells.zarr", "zarr.h5ad")):
        done = zoo("embed", AR, str(source), "-o", out, "--chunk-size", "30", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        got, got_names = embedding(tmp_path / out, "X_autoregressive")
        np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)
        assert (got_names == names).all()
        chunks = anndata.read_h5ad(tmp_path / out).uns["biozoo"]["X_autoregressive"]["chunking"]["chunks"]
        assert chunks == (6 if source == folder else 5)  # 50, 50, 40 cells in 30s; 140 in 30s


def test_shards_with_other_genes_are_refused_naming_the_shard(tmp_path: Path) -> None:
    folder = shards(tmp_path)
    from biozoo.singlecell.anndata_io import write_h5ad_atomic

    adata = anndata.read_h5ad(folder / "part1.h5ad")
    write_h5ad_atomic(adata[:, adata.var_names[:-10]].copy(), folder / "part1.h5ad")
    done = zoo("embed", AR, str(folder), "-o", "out.h5ad", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "error: shard part1.h5ad has other genes than part0.h5ad (755 vs 765" in done.stderr
    assert "hint: give shards with the same genes in the same order" in done.stderr
    assert not (tmp_path / "out.h5ad").exists() and not (tmp_path / "out.h5ad.parts").exists()


def test_an_unreadable_shard_is_named_and_the_others_results_are_kept(tmp_path: Path) -> None:
    folder = shards(tmp_path)
    good = (folder / "part1.h5ad").read_bytes()
    (folder / "part1.h5ad").write_bytes(b"not an HDF5 file at all")
    args = ["embed", AR, str(folder), "-o", "out.h5ad", "--chunk-size", "25"]
    done = zoo(*args, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "could not read 1 shard(s): part1.h5ad" in done.stderr and "--resume" in done.stderr
    kept = sorted(p.name for p in (tmp_path / "out.h5ad.parts" / "chunks").iterdir())
    assert kept == ["s00000-c000000.npz", "s00000-c000001.npz", "s00002-c000000.npz", "s00002-c000001.npz"]
    (folder / "part1.h5ad").write_bytes(good)  # fixed: the resume computes only the missing shard
    resumed = zoo(*args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    base = zoo("embed", AR, str(CELLS), "-o", "file.h5ad", cwd=tmp_path)
    assert base.returncode == 0
    got = embedding(tmp_path / "out.h5ad", "X_autoregressive")[0]
    np.testing.assert_allclose(got, embedding(tmp_path / "file.h5ad", "X_autoregressive")[0], atol=TOL, rtol=0)


def test_bad_chunked_options_are_refused_before_loading(tmp_path: Path) -> None:
    for args, message in (
        (["--resume"], "--resume, --per-shard, --address, --actors, --num-gpus-per-actor and --num-cpus-per-actor"),
        (["--chunk-size", "10", "--actors", "2"], "--num-gpus-per-actor and --num-cpus-per-actor are for --engine ray"),
        (["--chunk-size", "0"], "Invalid value for '--chunk-size'"),
        (["--engine", "ray", "--num-cpus-per-actor", "0"], "0.0 is not a positive number"),
    ):
        done = zoo("embed", AR, str(CELLS), "-o", "out.h5ad", *args, cwd=tmp_path)
        assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not list(tmp_path.iterdir())
    folder = shards(tmp_path)
    done = zoo("annotate", SCGPT, str(folder), "-o", str(folder / "out.h5ad"), cwd=tmp_path)
    assert done.returncode == 1 and "is inside the input folder" in done.stderr
    assert "hint: write the output outside SOURCE with -o" in done.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["part0.h5ad", "part1.h5ad", "part2.h5ad"]


def test_the_ray_engine_gives_the_local_engine_s_file_and_survives_a_killed_worker(tmp_path: Path) -> None:
    """A local Ray cluster with 2 actors: the same embeddings in the same cell order as the local engine, with one
    actor killed mid-run (it is restarted and its chunk retried: nothing lost, nothing duplicated)."""
    pytest.importorskip("ray")
    args = ["embed", SCGPT, str(shards(tmp_path)), "--chunk-size", "20"]
    local = zoo(*args, "-o", "local.h5ad", cwd=tmp_path)
    assert local.returncode == 0, local.stderr[-2000:]
    marker = tmp_path / "killed-once"
    ray = zoo(*args, "-o", "ray.h5ad", "--engine", "ray", "--actors", "2", cwd=tmp_path,
              env={"BIOZOO_FAIL_ONCE_AT_CHUNK": f"s00001-c000001:{marker}"})  # fmt: skip
    assert ray.returncode == 0, ray.stderr[-3000:]
    assert marker.exists()  # an actor did die at that chunk
    a, names_a = embedding(tmp_path / "local.h5ad", "X_scGPT")
    b, names_b = embedding(tmp_path / "ray.h5ad", "X_scGPT")
    assert (names_a == names_b).all() and len(set(names_b)) == 140
    np.testing.assert_allclose(b, a, atol=SAME, rtol=0)  # same chunks, same seeds: the engine does not matter
    assert anndata.read_h5ad(tmp_path / "ray.h5ad").uns["biozoo"]["X_scGPT"]["chunking"]["engine"] == "ray"


def annotations(path: Path, key: str = "scgpt_cls") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    obs = anndata.read_h5ad(path).obs
    return np.asarray(obs[f"{key}_label"], dtype=str), np.asarray(obs[f"{key}_confidence"]), np.asarray(obs.index)


def test_chunked_annotate_labels_each_chunk_as_an_unchunked_run_of_its_cells(tmp_path: Path) -> None:
    """Each chunk's labels and confidences are the unchunked annotation of its cells with the chunk's seed; the
    output holds the input's obs plus the two columns, and the provenance names the classes."""
    import biozoo
    from biozoo.singlecell.stream import Chunk, chunk_seed
    from biozoo_scgpt.tasks import class_probabilities

    done = zoo("annotate", SCGPT, str(CELLS), "-o", "out.h5ad", "--chunk-size", "50", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    labels, confidence, names = annotations(tmp_path / "out.h5ad")
    cells = anndata.read_h5ad(CELLS)
    model = biozoo.load(SCGPT)
    want_labels, want_confidence = [], []
    for number, start in enumerate(range(0, cells.n_obs, 50)):
        seed = chunk_seed(0, Chunk(0, number, start, min(start + 50, cells.n_obs)))
        probs, classes = class_probabilities(model, cells[start : start + 50].copy(), seed=seed, progress=False)
        want_labels += [classes[i] for i in probs.argmax(1)]
        want_confidence += list(probs.max(1))
    assert list(labels) == want_labels and (names == np.asarray(cells.obs_names)).all()
    np.testing.assert_allclose(confidence, want_confidence, atol=SAME, rtol=0)
    out = anndata.read_h5ad(tmp_path / "out.h5ad")
    assert out.n_vars == 0 and list(out.obs["bulk_labels"]) == list(cells.obs["bulk_labels"])
    assert list(out.obs["scgpt_cls_label"].cat.categories) == classes
    assert out.uns["biozoo"]["scgpt_cls_label"]["classes"].tolist() == classes
    assert out.uns["biozoo"]["scgpt_cls_label"]["chunking"]["chunks"] == 3
    assert "annotated 140 cells" in done.stdout and not (tmp_path / "out.h5ad.parts").exists()


def test_a_killed_annotate_resumes_to_the_same_file_and_an_embed_run_s_parts_are_refused(tmp_path: Path) -> None:
    args = ["annotate", SCGPT, str(CELLS), "--chunk-size", "40", "--key", "celltype"]
    clean = zoo(*args, "-o", "clean.h5ad", cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr[-2000:]
    marker = tmp_path / "killed-once"
    killed = zoo(*args, "-o", "out.h5ad", cwd=tmp_path,
                 env={"BIOZOO_FAIL_ONCE_AT_CHUNK": f"s00000-c000001:{marker}"})  # fmt: skip
    assert killed.returncode == 17 and not (tmp_path / "out.h5ad").exists()
    embed = zoo("embed", SCGPT, str(CELLS), "--chunk-size", "40", "-o", "out.h5ad", "--resume", "--key", "celltype",
                cwd=tmp_path)  # fmt: skip
    assert embed.returncode == 1 and "settings.task: 'annotate' then, 'embed' now" in embed.stderr
    resumed = zoo(*args, "-o", "out.h5ad", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = annotations(tmp_path / "clean.h5ad", "celltype"), annotations(tmp_path / "out.h5ad", "celltype")
    assert (a[0] == b[0]).all() and (a[2] == b[2]).all()
    np.testing.assert_allclose(b[1], a[1], atol=SAME, rtol=0)


def test_annotating_in_chunks_with_a_model_without_a_head_is_refused_before_any_chunk(tmp_path: Path) -> None:
    import biozoo
    from biozoo.errors import BiozooError
    from biozoo_scgpt import tasks

    model = biozoo.load(SCGPT)
    model.cls_decoder = None  # what a pretrained (not fine-tuned) scGPT model is
    with pytest.raises(BiozooError, match="scgpt/cls has no classification head") as caught:
        tasks.annotate(model, CELLS, tmp_path / "out.h5ad", chunk_size=50, progress=False)
    assert "zoo finetune" in caught.value.hint
    assert not list(tmp_path.iterdir())


def test_ray_actors_annotate_with_the_driver_s_processor_and_autocast(tmp_path: Path) -> None:
    """--processor and --autocast reach the actors: a Ray run under bfloat16 autocast with the eager processor gives
    the local engine's file, and differs from a float32 run (so the setting did take effect)."""
    pytest.importorskip("ray")
    args = ["annotate", SCGPT, str(CELLS), "--chunk-size", "35", "--processor", "eager", "--autocast"]
    local = zoo(*args, "-o", "local.h5ad", cwd=tmp_path)
    assert local.returncode == 0, local.stderr[-2000:]
    ray = zoo(*args, "-o", "ray.h5ad", "--engine", "ray", "--actors", "2", cwd=tmp_path)
    assert ray.returncode == 0, ray.stderr[-3000:]
    plain = zoo("annotate", SCGPT, str(CELLS), "--chunk-size", "35", "-o", "fp32.h5ad", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-2000:]
    a, b, c = (annotations(tmp_path / name) for name in ("local.h5ad", "ray.h5ad", "fp32.h5ad"))
    assert (a[0] == b[0]).all() and (a[2] == b[2]).all()
    np.testing.assert_allclose(b[1], a[1], atol=SAME, rtol=0)
    assert np.abs(c[1] - a[1]).max() > 1e-3  # bfloat16 runs differ from float32 ones
    uns = anndata.read_h5ad(tmp_path / "ray.h5ad").uns["biozoo"]["scgpt_cls_label"]
    assert uns["precision"]["autocast"] == "bfloat16" and uns["chunking"]["engine"] == "ray"


def test_workers_load_the_model_from_a_portable_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ray actor may run in another folder or on another node: it gets a registry id as it is, and a local
    folder as an absolute path, never the driver's relative path."""
    import shutil

    import biozoo
    from biozoo.singlecell.chunked import model_source

    assert model_source(biozoo.load(AR)) == AR
    shutil.copytree(Path(__file__).resolve().parents[1] / "registry" / "autoregressive" / "pbmc-small",
                    tmp_path / "mine")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert model_source(biozoo.load("./mine")) == str(tmp_path.resolve() / "mine")


def test_a_ray_pool_the_local_cluster_cannot_hold_is_refused_instead_of_waiting(tmp_path: Path) -> None:
    """Ray waits forever for resources no node has: asking for GPU actors on a machine without a GPU is an error
    that names the flags, before any actor starts."""
    pytest.importorskip("ray")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = zoo("embed", AR, str(CELLS), "-o", "out.h5ad", "--engine", "ray", "--num-gpus-per-actor", "1",
               cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "error: 1 actor(s) x --num-gpus-per-actor 1 need 1 GPU(s); the Ray cluster has 0" in done.stderr
    assert "hint: lower --actors or --num-gpus-per-actor" in done.stderr
    assert not list(tmp_path.iterdir())  # no output, and no parts folder that a rerun would trip over


def test_the_local_engine_never_imports_ray(tmp_path: Path) -> None:
    """Ray is optional: a chunked local run (and the CLI's checks) works with `import ray` made to fail."""
    code = (
        "import sys, runpy; sys.modules['ray'] = None\n"
        f"sys.argv = ['zoo', 'embed', {AR!r}, {str(CELLS)!r}, '-o', 'out.h5ad', '--chunk-size', '70']\n"
        "runpy.run_module('biozoo.cli.app', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out.h5ad").exists()


def test_an_empty_input_is_refused_and_an_empty_shard_is_passed_over(tmp_path: Path) -> None:
    from biozoo.singlecell.anndata_io import write_h5ad_atomic

    cells = anndata.read_h5ad(CELLS)
    write_h5ad_atomic(cells[:0].copy(), tmp_path / "empty.h5ad")
    done = zoo("annotate", SCGPT, "empty.h5ad", "-o", "out.h5ad", "--chunk-size", "10", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "error: the input empty.h5ad has 0 cells; nothing to annotate" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.h5ad"]
    folder = shards(tmp_path, (70, 0, 70))
    done = zoo("embed", AR, str(folder), "-o", "out.h5ad", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (embedding(tmp_path / "out.h5ad", "X_autoregressive")[1] == np.asarray(cells.obs_names)).all()


def test_bad_data_in_a_shard_is_named_by_both_engines_without_a_traceback(tmp_path: Path) -> None:
    """A data error in one chunk of an atlas names the shard and the cells, with the data check's hint; on Ray it
    arrives as the same error/hint lines, not as a remote traceback."""
    from biozoo.singlecell.anndata_io import write_h5ad_atomic

    folder = shards(tmp_path)  # 50, 50, 40 cells
    good = (folder / "part1.h5ad").read_bytes()
    bad = anndata.read_h5ad(folder / "part1.h5ad")
    X = bad.X.toarray() if hasattr(bad.X, "toarray") else np.array(bad.X)
    X[40, 5] = np.nan
    bad.X = X
    write_h5ad_atomic(bad, folder / "part1.h5ad")
    engines = [[]] + ([["--engine", "ray", "--actors", "1"]] if _has_ray() else [])
    for i, engine in enumerate(engines):
        done = zoo("embed", AR, str(folder), "-o", f"out{i}.h5ad", "--chunk-size", "25", *engine, cwd=tmp_path)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert "error: part1.h5ad, cells 25-50: adata.X holds 1 NaN or infinite values" in done.stderr
        assert "hint: recompute the matrix from raw counts" in done.stderr
        kept = {p.name for p in (tmp_path / f"out{i}.h5ad.parts" / "chunks").iterdir()}
        assert "s00001-c000001.npz" not in kept  # the bad chunk; the shards after it were still done:
        assert {"s00000-c000000.npz", "s00000-c000001.npz", "s00002-c000000.npz", "s00002-c000001.npz"} <= kept
    # fixed: --resume computes the changed shard's chunks again (its finished one is stale) and keeps the others'
    (folder / "part1.h5ad").write_bytes(good)
    resumed = zoo("embed", AR, str(folder), "-o", "out0.h5ad", "--chunk-size", "25", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "warning: part1.h5ad changed since the run started: its 1 finished chunk(s) are computed again" in (
        resumed.stderr
    )
    clean = zoo("embed", AR, str(folder), "-o", "clean.h5ad", "--chunk-size", "25", cwd=tmp_path)
    assert clean.returncode == 0
    a, names_a = embedding(tmp_path / "clean.h5ad", "X_autoregressive")
    b, names_b = embedding(tmp_path / "out0.h5ad", "X_autoregressive")
    assert (names_a == names_b).all()
    # the autoregressive model's float32 noise between processes (4e-5 seen on the recomputed shard in the
    # newest-releases pass): the rows must agree to TOL, and a wrong or missing chunk would be off by far more
    np.testing.assert_allclose(b, a, atol=TOL, rtol=0)


def _has_ray() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def test_per_shard_output_is_a_folder_of_the_merged_file_s_rows_with_an_index(tmp_path: Path) -> None:
    """--per-shard: one .h5ad per input shard (nothing merged, for outputs too large to merge) and index.json;
    together they hold the merged output's rows, in order."""
    import json

    folder = shards(tmp_path)
    args = ["embed", AR, str(folder), "--chunk-size", "30"]
    merged = zoo(*args, "-o", "merged.h5ad", cwd=tmp_path)
    split = zoo(*args, "-o", "split", "--per-shard", cwd=tmp_path)
    assert merged.returncode == 0 and split.returncode == 0, split.stderr[-2000:]
    index = json.loads((tmp_path / "split" / "index.json").read_text())
    assert [f["file"] for f in index["files"]] == ["part0.h5ad", "part1.h5ad", "part2.h5ad"]
    assert [f["cells"] for f in index["files"]] == [50, 50, 40] and index["cells"] == 140
    assert index["obsm"] == "X_autoregressive" and index["biozoo"]["X_autoregressive"]["model"] == AR
    parts = [embedding(tmp_path / "split" / f["file"], "X_autoregressive") for f in index["files"]]
    want, names = embedding(tmp_path / "merged.h5ad", "X_autoregressive")
    # two processes of the autoregressive model: its cross-process float32 noise (TOL); rows out of order or from
    # another shard would be off by far more
    np.testing.assert_allclose(np.concatenate([p[0] for p in parts]), want, atol=TOL, rtol=0)
    assert (np.concatenate([p[1] for p in parts]) == names).all()
    again = zoo(*args, "-o", "split", "--per-shard", "--overwrite", cwd=tmp_path)  # a folder this command wrote
    assert again.returncode == 0, again.stderr[-2000:]
    for extra, message in (
        (["-o", "x.h5ad", "--per-shard"], "with --per-shard, -o names a folder"),
        (["-o", "x"], "the output x must end in .h5ad"),
    ):
        done = zoo(*args, *extra, cwd=tmp_path)
        assert done.returncode == 1 and message in done.stderr and "hint:" in done.stderr, done.stderr
    done = zoo("annotate", SCGPT, str(CELLS), "-o", "x", "--per-shard", cwd=tmp_path)
    assert done.returncode == 1 and "--per-shard" in done.stderr and "are for chunked runs" in done.stderr
