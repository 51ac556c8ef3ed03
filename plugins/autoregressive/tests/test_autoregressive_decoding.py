"""The GPU-shaped decoder (static KV cache, on-device sampling, few host syncs) against recorded cells.

``golden/generation/cells.safetensors`` holds what the decoder sampled before it was rebuilt (see
``golden/generation/PROVENANCE.md``): for fixed seeds, on CPU, every setting must give exactly those
cells again, gene for gene and bin for bin.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

GOLDEN = Path(__file__).resolve().parent / "golden" / "generation"
sys.path.insert(0, str(GOLDEN))
from make_golden import CASES, models, run  # noqa: E402

sys.path.remove(str(GOLDEN))


@pytest.fixture(scope="module")
def built() -> dict[str, torch.nn.Module]:
    return models()


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(GOLDEN / "cells.safetensors")


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: the shared CPU runner makes multi-threaded small ops crawl (the numbers are the same)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _assert_same(got: dict[str, torch.Tensor], golden: dict[str, torch.Tensor], case: str) -> None:
    for key, value in got.items():
        want = golden[f"{case}.{key}"]
        assert torch.equal(value.cpu(), want), f"{case}: {key} differs from the recorded cells"


@pytest.mark.parametrize(("case", "model_name", "n", "options"), CASES, ids=[c[0] for c in CASES])
def test_same_cells_as_recorded(built, golden, case: str, model_name: str, n: int, options: dict) -> None:
    _assert_same(run(built[model_name], n, options), golden, case)
