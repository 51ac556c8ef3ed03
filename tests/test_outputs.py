"""Outputs: plain file modes, no replacement unless asked, checks before computing, leftovers swept, full disks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from biozoo.utils.atomic import (
    OutputError,
    atomic_directory,
    atomic_write_text,
    check_output,
    ensure_room,
    staged_output,
    sweep_stale_partials,
)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_files_get_the_mode_open_would_give(tmp_path: Path, umask_027: None) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what a plain open() gives under this umask
    assert mode(atomic_write_text(tmp_path / "atomic.txt", "x")) == mode(plain) == 0o640


def test_replacing_a_file_keeps_its_mode(tmp_path: Path, umask_027: None) -> None:
    target = tmp_path / "shared.txt"
    target.write_text("old")
    target.chmod(0o664)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and mode(target) == 0o664


def test_model_folders_and_their_files_get_plain_modes(tmp_path: Path, umask_027: None) -> None:
    import torch
    from safetensors.torch import save_file

    with atomic_directory(tmp_path / "model") as staging:
        atomic_write_text(staging / "manifest.yaml", "id: x\n")
        save_file({"w": torch.zeros(2)}, staging / "model.safetensors")  # safetensors writes 0o600 files
    assert mode(tmp_path / "model") == 0o750
    assert mode(tmp_path / "model" / "manifest.yaml") == 0o640
    assert mode(tmp_path / "model" / "model.safetensors") == 0o640
    with staged_output(tmp_path / "cli-model", overwrite=False, folder=True) as stage:
        stage.mkdir(mode=0o700)
        save_file({"w": torch.zeros(2)}, stage / "model.safetensors")
    assert mode(tmp_path / "cli-model") == 0o750
    assert mode(tmp_path / "cli-model" / "model.safetensors") == 0o640


def test_an_existing_output_is_refused_unless_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "out.h5ad"
    target.write_text("precious")
    with pytest.raises(OutputError, match="already exists") as info:
        check_output(target, overwrite=False)
    assert "--overwrite" in (info.value.hint or "")
    with staged_output(target, overwrite=True) as stage:
        assert stage != target and stage.parent == target.parent and stage.suffix == ".h5ad"
        stage.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5ad"]


def test_an_output_that_appears_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "out.h5ad"
    with pytest.raises(OutputError, match="appeared while"), staged_output(target, overwrite=False) as stage:
        stage.write_text("mine")
        target.write_text("someone else's")
    assert target.read_text() == "someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5ad"]


def test_a_failed_command_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "out.h5ad"
    target.write_text("old")
    with pytest.raises(RuntimeError), staged_output(target, overwrite=True) as stage:
        stage.write_text("half")
        raise RuntimeError("inference failed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5ad"]


def test_overwrite_replaces_model_folders_but_never_other_folders(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "manifest.yaml").write_text("old")
    with staged_output(model, overwrite=True, folder=True) as stage:
        stage.mkdir()
        (stage / "manifest.yaml").write_text("new")
    assert (model / "manifest.yaml").read_text() == "new"
    data = tmp_path / "data"
    data.mkdir()
    (data / "cells.h5ad").write_text("precious")
    with pytest.raises(OutputError, match="not a model folder"):
        check_output(data, overwrite=True, folder=True)
    assert (data / "cells.h5ad").read_text() == "precious"


@pytest.mark.parametrize(
    ("make", "folder", "words"),
    [
        (lambda p: p.mkdir(), False, "is a folder"),
        (lambda p: p.write_text("x"), True, "is a file"),
    ],
)
def test_file_and_folder_outputs_are_not_confused(tmp_path: Path, make, folder: bool, words: str) -> None:
    target = tmp_path / "out"
    make(target)
    with pytest.raises(OutputError, match=words):
        check_output(target, overwrite=True, folder=folder)


def test_an_unwritable_place_is_refused_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        check_output(tmp_path / "file" / "out.h5ad", overwrite=False)
    if Path("/proc/self").is_dir():  # unwritable even for root
        with pytest.raises(OutputError, match="cannot write into /proc"):
            check_output(Path("/proc/biozoo-test.h5ad"), overwrite=False)


def test_stale_partials_of_dead_processes_are_swept_live_ones_kept(tmp_path: Path) -> None:
    import subprocess
    import sys

    from biozoo.utils.atomic import _tag

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = _tag().split("-")[0]
    target = tmp_path / "out.h5ad"
    stale = tmp_path / f".out.h5ad.{host}-{dead.stdout.strip()}-abcd.partial"
    nested = tmp_path / f"..out.h5ad.{host}-{dead.stdout.strip()}-ef01.partial.h5ad.{host}-1-x.partial"
    live = tmp_path / f".out.h5ad.{_tag()}-beef.partial"
    other = tmp_path / ".other.h5ad.x.partial"
    for path in (stale, nested, live, other):
        path.write_bytes(b"x" * 100)
    assert sorted(sweep_stale_partials(target)) == sorted([stale, nested])
    assert live.exists() and other.exists()


def test_a_full_disk_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="MiB free; nothing was written"):
        ensure_room(tmp_path / "out.h5ad", 1 << 62)


def test_a_file_size_limit_is_refused_before_writing(tmp_path: Path) -> None:
    """With ``ulimit -f`` HDF5 used to crash the interpreter (rc 139) and leave a .partial behind."""
    pytest.importorskip("anndata")
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import resource, sys
        import anndata, numpy as np
        from biozoo.errors import BiozooError
        from biozoo.singlecell.anndata_io import write_h5ad_atomic
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
        try:
            write_h5ad_atomic(anndata.AnnData(np.ones((2000, 200), dtype="float32")), {str(tmp_path / "x.h5ad")!r})
        except BiozooError as exc:
            print(exc.message)
            sys.exit(1)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "file size limit" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_pandas_string_columns_are_written_readably(tmp_path: Path) -> None:
    """pandas 3 makes strings its default dtype; anndata refuses to write those unless told to."""
    anndata = pytest.importorskip("anndata")
    import numpy as np
    import pandas as pd

    from biozoo.singlecell.anndata_io import read_h5ad, write_h5ad_atomic

    obs = pd.DataFrame(
        {"label": pd.array(["a", "b"], dtype="string"), "kind": pd.Categorical(["x", "y"])},
        index=pd.Index(["c1", "c2"], dtype="string"),
    )
    var = pd.DataFrame(index=pd.Index(["g1", "g2", "g3"], dtype="string"))
    adata = anndata.AnnData(np.ones((2, 3), dtype=np.float32), obs=obs, var=var)
    write_h5ad_atomic(adata, tmp_path / "s.h5ad")
    back = read_h5ad(tmp_path / "s.h5ad")
    assert list(back.obs_names) == ["c1", "c2"] and list(back.obs["label"]) == ["a", "b"]
    assert list(back.var_names) == ["g1", "g2", "g3"]
    assert isinstance(adata.obs["label"].dtype, pd.StringDtype)  # the caller's object is left as it was
