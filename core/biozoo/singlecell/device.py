"""Feeding a model on a CPU or a GPU: batch limits per device, host-to-device copies, results back without stalls.

A CPU wants small batches (the attention matrices and activations stay in cache); a GPU wants large ones (each
kernel launch costs microseconds whatever its size) and must never wait for the host. So on CUDA batches are capped
by padded tokens rather than cells, inputs travel from pinned memory without blocking, and results stay on the
device until a later batch is under way; the host waits for them only every few batches.
"""

from __future__ import annotations

import contextvars
import copy
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

HostBatch = tuple[np.ndarray, dict[str, np.ndarray]]  # (cell indices, model inputs as host arrays)

CPU_BATCH_CELLS = 64
# Padded tokens (cells x longest cell): long cells come in smaller batches, whose activations stay in cache
# (bench/scgpt_embed.py: 2.14x / 2.85x the reference, against 1.37x / 1.94x uncapped at 64 cells).
CPU_BATCH_TOKENS = 4096
GPU_BATCH_CELLS = 1024
GPU_BATCH_TOKENS = 65536  # e.g. 90 cells of 700 tokens: ~70 MB per 512-wide bf16 activation, well inside a GPU
GPU_COLLECT_EVERY = 16  # batches between host waits for results on a GPU


def batch_limits(device: torch.device, batch_size: int | None, max_tokens: int | None) -> tuple[int, int | None]:
    """``(cells, padded tokens)`` per batch for ``device``: what was given, else the device's default."""
    gpu = device.type == "cuda"
    cells = batch_size if batch_size is not None else GPU_BATCH_CELLS if gpu else CPU_BATCH_CELLS
    tokens = max_tokens if max_tokens is not None else GPU_BATCH_TOKENS if gpu else CPU_BATCH_TOKENS
    return cells, tokens


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on ``device``; to a GPU from pinned memory without blocking (the copy overlaps compute)."""
    import torch

    tensor = torch.from_numpy(array)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


class _Output:
    """The float32 ``[cells, ...]`` result array, allocated at the first batch (its width is known only then)."""

    def __init__(self, n_cells: int) -> None:
        self.n_cells, self.array, self.lock = n_cells, None, threading.Lock()

    def write(self, idx: np.ndarray, values: np.ndarray) -> None:
        with self.lock:
            if self.array is None:
                self.array = np.empty((self.n_cells, *values.shape[1:]), dtype=np.float32)
        self.array[idx] = values  # disjoint rows per batch: no lock needed


class ResultCollector:
    """Per-batch outputs ``[batch, ...]`` gathered into one float32 array in cell order.

    On a GPU each batch's output is copied to pinned host memory without blocking and written into the array
    only after ``GPU_COLLECT_EVERY`` more batches (or at the end), so the host never waits for the batch it
    just launched. ``check`` (e.g. a NaN refusal) sees each batch's values once they are on the host. Several
    collectors (one per device) can share one ``output``.
    """

    def __init__(self, n_cells: int, device: torch.device, check=None, output: _Output | None = None) -> None:  # type: ignore[no-untyped-def]
        self.device, self.check = device, check
        self.output = output if output is not None else _Output(n_cells)
        self.pending: list[tuple[np.ndarray, torch.Tensor, object]] = []

    def add(self, idx: np.ndarray, values: torch.Tensor) -> None:
        import torch

        values = values.detach().float()
        if self.device.type != "cuda":
            self._write(idx, values.cpu().numpy())
            return
        host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
        host.copy_(values, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.pending.append((idx, host, event))
        if len(self.pending) > GPU_COLLECT_EVERY:
            self._drain(keep=GPU_COLLECT_EVERY // 2)

    def result(self) -> np.ndarray:
        self._drain(keep=0)
        assert self.output.array is not None, "no batch was added"
        return self.output.array

    def _drain(self, keep: int) -> None:
        while len(self.pending) > keep:
            idx, host, event = self.pending.pop(0)
            event.synchronize()  # type: ignore[attr-defined]
            self._write(idx, host.numpy())

    def _write(self, idx: np.ndarray, values: np.ndarray) -> None:
        if self.check is not None:
            self.check(values)
        self.output.write(idx, values)


Step = Callable[["torch.nn.Module", dict[str, "torch.Tensor"]], "torch.Tensor"]


def run_batches(
    model: torch.nn.Module,
    host_batches: Iterable[HostBatch],
    step: Step,
    n_cells: int,
    *,
    devices: Sequence[torch.device] | None = None,
    check: Callable[[np.ndarray], None] | None = None,
) -> np.ndarray:
    """``step(model, inputs) -> [batch, ...]`` over every batch, results in cell order (float32, inference mode).

    With one device (the model's, or ``devices`` of length 1) the batches run in this thread. With several,
    the model is copied to each device and one thread per device takes batches round-robin from this thread,
    which keeps preparing them (in order, so seeded choices are those of a one-device run) while the devices
    compute; autocast, inference mode and context variables (processor choices) are carried into the threads.
    """
    import torch

    own = next(model.parameters()).device
    devices = [own] if not devices else [torch.device(d) for d in devices]
    if len(devices) == 1:
        model = model.to(devices[0])
        results = ResultCollector(n_cells, devices[0], check)
        with torch.inference_mode():
            for idx, arrays in host_batches:
                results.add(idx, step(model, {k: to_device(v, devices[0]) for k, v in arrays.items()}))
        return results.result()
    return _run_on_devices(model, host_batches, step, n_cells, devices, check)


def _run_on_devices(
    model: torch.nn.Module,
    host_batches: Iterable[HostBatch],
    step: Step,
    n_cells: int,
    devices: Sequence[torch.device],
    check: Callable[[np.ndarray], None] | None,
) -> np.ndarray:
    import torch

    kind = devices[0].type
    amp = (torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))
    output = _Output(n_cells)
    replicas = [model.to(devices[0])] + [copy.deepcopy(model).to(d) for d in devices[1:]]
    inboxes: list[queue.Queue] = [queue.Queue(maxsize=2) for _ in devices]
    errors: list[BaseException] = []

    def work(replica: torch.nn.Module, device: torch.device, inbox: queue.Queue) -> None:
        try:
            results = ResultCollector(n_cells, device, check, output)
            with torch.inference_mode(), torch.autocast(kind, dtype=amp[1], enabled=amp[0]):
                while (item := inbox.get()) is not None:
                    idx, arrays = item
                    results.add(idx, step(replica, {k: to_device(v, device) for k, v in arrays.items()}))
            results.result()
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)
            while inbox.get() is not None:  # let the producer finish
                pass

    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(work, r, d, q), daemon=True)
        for r, d, q in zip(replicas, devices, inboxes, strict=True)
    ]
    for t in threads:
        t.start()
    try:
        for i, item in enumerate(host_batches):
            if errors:
                break
            inboxes[i % len(devices)].put(item)
    finally:
        for inbox in inboxes:
            inbox.put(None)
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    if output.array is None:
        raise ValueError("no batch to run")
    return output.array


def parse_devices(spec: str) -> list[torch.device]:
    """``"cuda:0,cuda:1"`` or ``"all"`` (every visible GPU) -> devices, each checked as ``--device`` is."""
    import torch

    from biozoo.api import parse_device
    from biozoo.errors import InvalidArgumentError

    if spec.strip() == "all":
        if not torch.cuda.is_available():
            raise InvalidArgumentError("--devices all: no CUDA GPU is visible", "list devices, e.g. --devices cpu")
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise InvalidArgumentError(f"--devices {spec!r} names no device", "e.g. --devices cuda:0,cuda:1 or all")
    devices = [parse_device(name) for name in names]
    if len(set(devices)) != len(devices):
        raise InvalidArgumentError(f"--devices {spec!r} names a device twice", "name each device once")
    return devices  # type: ignore[return-value]


__all__ = [
    "CPU_BATCH_CELLS", "CPU_BATCH_TOKENS", "GPU_BATCH_CELLS", "GPU_BATCH_TOKENS", "GPU_COLLECT_EVERY",
    "HostBatch", "ResultCollector", "batch_limits", "parse_devices", "run_batches", "to_device",
]  # fmt: skip
