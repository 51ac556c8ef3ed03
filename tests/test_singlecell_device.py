"""Batch limits per device, host-to-device copies and result collection (core/biozoo/singlecell/device.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from biozoo.singlecell.device import (
    CPU_BATCH_CELLS,
    CPU_BATCH_TOKENS,
    GPU_BATCH_CELLS,
    GPU_BATCH_TOKENS,
    GPU_COLLECT_EVERY,
    ResultCollector,
    batch_limits,
    to_device,
)

CUDA_DEVICE = os.environ.get("BIOZOO_CUDA_TESTS_DEVICE", "cuda")


def test_batch_limits_default_per_device_and_keep_what_is_given() -> None:
    assert batch_limits(torch.device("cpu"), None, None) == (CPU_BATCH_CELLS, CPU_BATCH_TOKENS)
    assert batch_limits(torch.device("cuda"), None, None) == (GPU_BATCH_CELLS, GPU_BATCH_TOKENS)
    assert batch_limits(torch.device("cuda"), 8, None) == (8, GPU_BATCH_TOKENS)
    assert batch_limits(torch.device("cpu"), None, 100) == (CPU_BATCH_CELLS, 100)


def _collect(device: torch.device, n_batches: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(0)
    order = rng.permutation(n_batches * 3)
    seen: list[int] = []
    collector = ResultCollector(len(order), device, check=lambda values: seen.append(len(values)))
    for b in range(n_batches):
        idx = order[3 * b : 3 * b + 3]
        collector.add(idx, torch.as_tensor(idx, dtype=torch.float64, device=device)[:, None].repeat(1, 2))
    return collector.result(), seen


def test_results_land_in_cell_order_as_float32_and_every_batch_is_checked() -> None:
    out, seen = _collect(torch.device("cpu"), 5)
    assert out.dtype == np.float32 and out.shape == (15, 2)
    assert np.array_equal(out[:, 0], np.arange(15)) and seen == [3] * 5


def test_to_device_keeps_the_values() -> None:
    array = np.arange(6, dtype=np.int64).reshape(2, 3)
    assert torch.equal(to_device(array, torch.device("cpu")), torch.from_numpy(array))


@pytest.mark.skipif(CUDA_DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_results_are_collected_late_but_complete() -> None:
    device = torch.device(CUDA_DEVICE)
    out, seen = _collect(device, 2 * GPU_COLLECT_EVERY + 3)
    assert np.array_equal(out[:, 0], np.arange(len(out))) and sum(seen) == len(out)
    array = np.arange(6, dtype=np.int64).reshape(2, 3)
    assert torch.equal(to_device(array, device).cpu(), torch.from_numpy(array))
