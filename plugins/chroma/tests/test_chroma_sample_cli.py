"""``zoo sample`` end to end on a converted random-weight backbone (no trained Chroma model exists here yet).

With random weights the sampler diverges within a few steps (coordinates grow ~100x per step), so these runs
are short: what they check is the plumbing (files, headers, seeds, progress, the output policy), not structure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_chroma_convert import reference_checkpoint

import biozoo
from biozoo.cli import app as cli
from biozoo.errors import InvalidArgumentError, ModelOutputError
from biozoo_chroma import Protein
from biozoo_chroma.backbone.sampling import MAX_RESIDUES
from biozoo_chroma.convert import convert_checkpoint
from biozoo_chroma.diffusion import INTEGRATORS, SDE_FUNCS
from biozoo_chroma.tasks import read_header, sample


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chroma")
    torch.save(reference_checkpoint("knn"), root / "backbone.pt")
    return convert_checkpoint(root / "backbone.pt", root / "model", model_id="lab/chroma-random")


def zoo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "biozoo.cli.app", *args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd
    )


def test_zoo_sample_writes_one_readable_pdb_per_sample_with_its_settings(folder: Path, tmp_path: Path) -> None:
    args = ["sample", str(folder), "--chains", "20,12", "-n", "3", "--batch-size", "2", "--steps", "2", "--seed", "5"]
    proc = zoo(*args, "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sampling" in proc.stderr  # the progress bar over SDE steps
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    sha = biozoo.load(folder).zoo.manifest.weights.files[0].sha256
    assert names == ["sample_000.pdb", "sample_001.pdb", "sample_002.pdb", "samples.json"]
    for i in range(3):
        path = tmp_path / "out" / f"sample_{i:03d}.pdb"
        X, C, _ = Protein(path).to_XCS()
        assert X.shape == (1, 32, 4, 3) and C.tolist() == [[1] * 20 + [2] * 12]
        header = read_header(path)
        assert header["seed"] == "5" and header["sample"] == str(i) and header["batch_seed"] == str(5 + i // 2)
        assert header["model"] == "lab/chroma-random" and header["chain_lengths"] == "20,12"
        assert header["steps"] == "2" and header["integrator"] == "euler_maruyama" and header["sde"] == "reverse_sde"
        assert header["weights_sha256"] == sha  # the long hash survives PDB's 80 columns
        assert all(len(line) <= 80 for line in path.read_text().splitlines())
    index = json.loads((tmp_path / "out" / "samples.json").read_text())
    assert index["files"] == names[:3] and index["provenance"]["seed"] == "5"

    assert zoo(*args, "-o", "again", cwd=tmp_path).returncode == 0
    for i in range(3):  # same seed, same files, byte for byte
        name = f"sample_{i:03d}.pdb"
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "out" / name).read_bytes()

    proc = zoo(*args[:-1], "6", "-o", "out", "--overwrite", cwd=tmp_path)  # a folder zoo sample wrote: replaced
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_header(tmp_path / "out" / "sample_000.pdb")["seed"] == "6"
    assert (tmp_path / "out" / "sample_000.pdb").read_bytes() != (tmp_path / "again" / "sample_000.pdb").read_bytes()


def test_zoo_sample_mmcif_carries_the_settings_as_a_category(folder: Path, tmp_path: Path) -> None:
    args = ["sample", str(folder), "--length", "24", "--steps", "3", "--sde", "ode", "--format", "cif"]
    proc = zoo(*args, "--seed", "11", "--inverse-temperature", "5", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = tmp_path / "out" / "sample_000.cif"
    X, C, _ = Protein(path).to_XCS()
    assert X.shape == (1, 24, 4, 3) and bool((C == 1).all())
    header = read_header(path)
    assert header["seed"] == "11" and header["sde"] == "ode" and header["inverse_temperature"] == "5.0"


def test_a_diverged_sample_is_an_error_and_nothing_is_left(folder: Path, tmp_path: Path) -> None:
    """Random weights blow the coordinates past what PDB can hold in 10 steps: a clear error, no folder."""
    proc = zoo("sample", str(folder), "--length", "16", "--steps", "10", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "does not fit PDB's columns" in proc.stderr and "hint: write mmCIF with --format cif" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_task_checks_its_own_options(folder: Path, tmp_path: Path) -> None:
    model = biozoo.load(folder)
    with pytest.raises(InvalidArgumentError, match="--format"):
        sample(model, tmp_path / "o", chain_lengths=[10], fmt="xyz")
    with pytest.raises(InvalidArgumentError, match="chain_lengths"):
        sample(model, tmp_path / "o", chain_lengths=[MAX_RESIDUES, 1])
    with pytest.raises(ModelOutputError, match="does not fit"):
        sample(model, tmp_path / "o", chain_lengths=[10], steps=10, progress=False)


def test_the_cli_knows_the_samplers_names() -> None:
    """The CLI checks integrator/SDE names before loading anything: they must be the plugin's."""
    assert [i.value for i in cli.Integrator] == list(INTEGRATORS)
    assert [s.value for s in cli.Sde] == list(SDE_FUNCS)
    assert cli.MAX_SAMPLE_RESIDUES == MAX_RESIDUES
