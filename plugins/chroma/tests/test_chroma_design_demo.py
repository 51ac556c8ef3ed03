"""The shipped ``chroma/demo-design`` network: it is listed, loads (also as the design folder of ``chroma/demo``),
re-runs its test vectors, and a short design of a held-out chain recovers more native residues than random
sequences do (``scripts/train_chroma_design_demo.py``; evaluation in docs/chroma.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_chroma_sidechains import TS50, needs_data  # the TS50 chains, found as that file finds them

import biozoo
from biozoo_chroma import Protein
from biozoo_chroma.convert import design_folder
from biozoo_chroma.design import ChromaDesign
from biozoo_chroma.design.autoregressive import design_autoregressive

MODEL = "chroma/demo-design"
FOLDER = Path(__file__).resolve().parents[3] / "registry" / "chroma" / "demo"
HELD_OUT_CHAIN = "3nbkA"  # 158 residues; one of the 8 chains the training script never trains on (its HELD_OUT)
SEED = 0


def zoo(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "biozoo.cli.app", *args], capture_output=True, text=True, timeout=600, env=env
    )


@pytest.fixture(scope="module")
def model() -> ChromaDesign:
    return biozoo.load(MODEL).eval()


def test_design_demo_is_listed_and_loads(model: ChromaDesign) -> None:
    listed = zoo("list", "chroma")
    assert listed.returncode == 0, listed.stderr
    assert MODEL in listed.stdout
    assert isinstance(model, ChromaDesign)
    assert model.zoo.manifest.id == MODEL
    assert model.zoo.manifest.license == "MIT"
    assert model.predict_S_potts and model.predict_S_marginals and model.predict_S_autoregressive and model.packing
    # the converter's layout: the backbone demo's folder holds the design network in design/
    assert design_folder(FOLDER) == FOLDER / "design"
    assert sum(p.stat().st_size for p in (FOLDER / "design").iterdir()) < 2_000_000


def test_design_demo_verifies() -> None:
    checks = biozoo.verify(MODEL)
    assert all(check.ok for check in checks)
    assert {"h", "logp_S_potts", "logp_S_marginals", "logp_S", "logp_chi"} <= {check.name for check in checks}
    result = zoo("verify", MODEL)
    assert result.returncode == 0, result.stderr


@needs_data
def test_design_of_a_held_out_chain_beats_random_sequences(model: ChromaDesign) -> None:
    path = next(p for p in TS50 if p.name.startswith(HELD_OUT_CHAIN))
    X, C, S = Protein(path).to_XCS()
    present = C > 0
    with torch.no_grad():
        designed = design_autoregressive(
            model, model.encode(X, C), X, C, temperature=0.1, generator=torch.Generator().manual_seed(SEED)
        ).S
    recovery = float((designed == S)[present].float().mean())
    random = torch.randint(0, 20, S.shape, generator=torch.Generator().manual_seed(SEED))
    random_recovery = float((random == S)[present].float().mean())
    # uniform random sequences recover 1/20 = 5% in expectation (0.076 for this seeded draw; at most 0.084 over
    # the evaluation's 24 draws); the bound is twice that expectation. Measured here: 0.209 (seeds 0-2: 0.177-0.209;
    # 0.112 is the lowest of all 24 held-out designs at this setting; the same architecture at random
    # weights: 0.070; docs/chroma.md)
    assert recovery > 0.10 > random_recovery, (recovery, random_recovery)
