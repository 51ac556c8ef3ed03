"""The backbone model on a CUDA GPU: the reference's golden outputs on the device, and half precision there.

Skipped without CUDA (CI has none); run on a GPU machine with ``bench/gpu_checks.sh`` or directly. Expected values
are the reference's (the golden files of ``test_chroma_backbone.py``), on the kNN graph, whose edges do not
depend on a random generator (the random graphs draw from the CUDA generator on a GPU, not the CPU one the
golden files were made with). TF32 is off: these are strict float32 comparisons. ``BIOZOO_CUDA_TESTS_DEVICE=cpu``
runs them on the CPU instead, to rehearse them where there is no GPU.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from test_chroma_backbone import TOL, TRAJ_TOL, golden, model, relative, worst

DEVICE = os.environ.get("BIOZOO_CUDA_TESTS_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _strict_fp32():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_denoise_on_cuda_matches_reference() -> None:
    d, meta = golden("knn")
    m = model("knn").to(DEVICE)
    with torch.no_grad():
        for t in json.loads(meta["times"]):
            X0 = m.denoise(d[f"X_t.{t}"].to(DEVICE), d["C"].to(DEVICE), t)
            assert X0.device.type == torch.device(DEVICE).type
            assert worst(X0.cpu(), d[f"X0.{t}"]) < TOL, t


def test_trajectory_on_cuda_matches_reference() -> None:
    d, meta = golden("knn")
    m = model("knn").to(DEVICE)
    kw = json.loads(meta["sample_kw"])
    out = m.diffusion.sample(
        m.denoise, d["traj.C"].to(DEVICE), d["traj.X_init"].to(DEVICE), steps=int(meta["steps"]),
        tspan=tuple(kw.pop("tspan")), noise_init=d["traj.Z_init"].to(DEVICE),
        noise=[z.to(DEVICE) for z in d["traj.Z_steps"]], **kw,
    )  # fmt: skip
    for i, state in enumerate(out.Xunc_trajectory):
        assert relative(state.cpu(), d["traj.states"][i]) < TRAJ_TOL, i


@pytest.mark.parametrize(("dtype", "tol"), [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_half_precision_sampling_on_cuda(dtype: torch.dtype, tol: float) -> None:
    """Half-precision weights on the GPU: denoise close to float32 (median atom, as on CPU); a sample is finite."""
    d, _ = golden("knn")
    m = model("knn").to(DEVICE)
    X, C = d["X_t.0.5"].to(DEVICE), d["C"].to(DEVICE)
    with torch.no_grad():
        ref = m.denoise(X, C, 0.5)
        half = m.to(dtype).denoise(X, C, 0.5)
        assert half.dtype == torch.float32 and bool(torch.isfinite(half).all())
        assert float((half - ref).norm(dim=-1)[C > 0].median()) < tol
        proteins = m.sample(samples=2, steps=20, chain_lengths=[30, 20], seed=0)
    assert len(proteins) == 2
    for protein in proteins:
        X_out = protein.to_XCS()[0]
        assert bool(torch.isfinite(X_out).all())
