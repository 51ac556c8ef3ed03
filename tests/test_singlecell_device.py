"""Batch limits per device, host-to-device copies and result collection (core/biozoo/singlecell/device.py)."""

from __future__ import annotations

import os
import threading

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


# -- several devices --------------------------------------------------------------------------------------------


def _host_batches(n_batches: int) -> list:
    rng = np.random.default_rng(1)
    return [
        (np.arange(4 * b, 4 * b + 4), {"x": rng.standard_normal((4, 8)).astype(np.float32)}) for b in range(n_batches)
    ]


def test_several_devices_give_the_one_device_results_with_autocast_and_context_carried() -> None:
    from biozoo.attention.selection import use_processor
    from biozoo.singlecell.device import run_batches

    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)
    seen: list[tuple[str, bool, str]] = []

    def step(m: torch.nn.Module, inputs: dict) -> torch.Tensor:
        from biozoo.attention.selection import _scoped  # the processor choice in this thread's context

        seen.append((threading.current_thread().name, torch.is_autocast_enabled("cpu"), str(_scoped.get())))
        assert torch.is_inference_mode_enabled()
        return m(inputs["x"])

    one = run_batches(model, _host_batches(7), step, 28)
    with use_processor("eager"), torch.autocast("cpu", dtype=torch.bfloat16):
        seen.clear()
        two = run_batches(model, _host_batches(7), step, 28, devices=[torch.device("cpu")] * 2)
        ref = run_batches(model, _host_batches(7), step, 28)
    assert len({name for name, _, _ in seen[:7]}) == 2  # two worker threads took the batches
    assert all(amp and "eager" in proc for _, amp, proc in seen)
    assert np.array_equal(two, ref) and two.shape == one.shape == (28, 3)
    assert np.abs(two - one).max() < 5e-2  # bf16 autocast against float32


def test_a_failing_device_stops_the_run_with_its_error() -> None:
    from biozoo.singlecell.device import run_batches

    def step(m: torch.nn.Module, inputs: dict) -> torch.Tensor:
        if threading.current_thread() is not threading.main_thread() and inputs["x"][0, 0] > -10:
            raise RuntimeError("device lost")
        return m(inputs["x"])

    with pytest.raises(RuntimeError, match="device lost"):
        run_batches(torch.nn.Linear(8, 3), _host_batches(40), step, 160, devices=[torch.device("cpu")] * 3)


def test_zoo_embed_devices_gives_the_same_embeddings(tmp_path) -> None:
    pytest.importorskip("biozoo_scgpt")
    import subprocess
    import sys
    from pathlib import Path

    import anndata

    cells = Path(__file__).resolve().parents[1] / "examples" / "pbmc68k_test.h5ad"
    for name, extra in (("one", []), ("two", ["--devices", "cpu"])):
        subprocess.run(
            [sys.executable, "-m", "biozoo.cli.app", "embed", "scgpt/cls", str(cells),
             "-o", str(tmp_path / f"{name}.h5ad"), "--batch-size", "16", *extra],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    one, two = (anndata.read_h5ad(tmp_path / f"{n}.h5ad").obsm["X_scGPT"] for n in ("one", "two"))
    assert np.array_equal(one, two)
