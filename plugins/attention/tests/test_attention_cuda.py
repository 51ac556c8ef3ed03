"""The conformance suite on a CUDA GPU, for every attention processor that claims CUDA, in float32 and bfloat16.

Skipped without CUDA (CI has none); ``bench/gpu_checks.sh`` runs it on a GPU machine. ``BIOZOO_CUDA_TESTS_DEVICE=cpu``
runs the same checks on the CPU (for the processors that also claim it), to rehearse them where there is no GPU.
TF32 is off: float32 is held to the suite's float32 tolerance.
"""

from __future__ import annotations

import os

import pytest
import torch
from test_attention_kernels import PLUGIN_KERNELS, _linear_reference, _zero_padded_queries_reference

from biozoo.registry import get_registry, reset_registry
from biozoo_attention.conformance import check_kernel

DEVICE = os.environ.get("BIOZOO_CUDA_TESTS_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _claiming_the_device() -> list[str]:
    reset_registry()
    registry = get_registry()
    kind = torch.device(DEVICE).type
    return [n for n in registry.processors.names() if kind in registry.processor(n).caps.devices]


@pytest.fixture(autouse=True)
def _strict_fp32(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("BIOZOO_ATTENTION", raising=False)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("name", _claiming_the_device())
def test_every_kernel_claiming_the_device_passes_conformance_there(name: str) -> None:
    kernel = get_registry().processor(name)
    ok, why = kernel.available()
    if not ok:
        pytest.skip(why)
    own_reference = {"linear": _linear_reference, "varlen-self": _zero_padded_queries_reference}.get(name)
    dtypes = [d for d in ("float32", "bfloat16", "float16") if d in kernel.caps.dtypes]
    report = check_kernel(kernel, reference=own_reference, device=DEVICE, dtypes=dtypes)
    assert report.passed, report.to_markdown()
    if name in PLUGIN_KERNELS:
        assert report.counts()["warn"] == 0, report.to_markdown()
