"""biozoo_chroma.losses against the reference (generate-chroma 1.0.0) and against its own maths.

Parity (issue 10, chroma.md 6.3 rung 7: ``estimate_metrics`` with a fixed t grid and fixed noise) uses
golden/chroma_losses.safetensors, made by scripts/make_chroma_losses_golden.py: real backbones (1ahsA, 2xdgA, 4E43)
as three complexes with gaps, up to three chains and padding; a fixed stand-in denoiser; every noise tensor stored.
``python plugins/chroma/tests/test_chroma_losses.py`` prints the table of worst differences that docs/chroma.md
quotes.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from biozoo.errors import BiozooError
from biozoo_chroma.diffusion import DiffusionProcess, impute_masked_X
from biozoo_chroma.losses import (
    LOSS_TERMS,
    METRICS,
    ReconstructionLosses,
    backbone_hbonds,
    paired_superpose,
    top_eigenvector,
)

GOLDEN = Path(__file__).parent / "golden" / "chroma_losses.safetensors"
RTOL = 1e-5  # worst |ours - reference| relative to max(1, max |reference|), fp32


def x0_func(X: torch.Tensor, C: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The stand-in denoiser of the golden scripts (must stay identical to make_chroma_diffusion_golden.x0_func)."""
    t = torch.as_tensor(t, dtype=X.dtype).reshape(-1, 1, 1, 1)
    return X + t * (0.5 * torch.tanh(X.roll(1, dims=1) / 4.0) - 0.2 * X)


def _golden() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(GOLDEN), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 - safe_open has no iterator


def _losses(process_kw: dict, **kw) -> ReconstructionLosses:
    return ReconstructionLosses(DiffusionProcess(**process_kw, align_dither=False), **kw)


def _worst(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    diff = float((ours.detach().double().reshape(ref.shape) - ref.double()).abs().max())
    return diff, diff / max(1.0, float(ref.abs().max()))


@functools.cache
def parity_rows() -> list[tuple[str, str, torch.Tensor, torch.Tensor]]:
    """(group, what, ours, reference) for every golden comparison."""
    g, meta = _golden()
    X, C = g["X"], g["C"]
    rows = []
    for tag, run in json.loads(meta["runs"]).items():
        losses = _losses(run["process"])
        n, noise = run["num_samples"], g[f"{tag}.noise"]
        rows.append((f"{tag}: grid", "t", losses.time_grid(n), g[f"{tag}.t"]))
        metrics, samples = losses.estimate_metrics(
            x0_func, X, C, num_samples=n, use_noise=run["use_noise"], noise=noise, return_samples=True
        )
        for key in (*METRICS, "X0_pred"):
            rows.append((f"{tag}: estimate_metrics", f"{key} (mean)", metrics[key], g[f"{tag}.metrics.{key}"]))
            rows.append((f"{tag}: estimate_metrics", f"{key} (every t)", samples[key], g[f"{tag}.samples.{key}"]))
        # The losses alone, given the reference's own predictions (so noising plays no part in X0_pred).
        X_imputed = impute_masked_X(X, C)
        for i in range(n):
            t = g[f"{tag}.t"][i]
            ours = losses(g[f"{tag}.samples.X0_pred"][i], X_imputed, C, t, noise[i, 1])
            for key in METRICS:
                rows.append((f"{tag}: losses of its X0_pred", key, ours[key], g[f"{tag}.samples.{key}"][i]))
    losses = _losses(json.loads(meta["runs"])["globular_cs"]["process"])
    ours = losses(g["forward.X0_pred"], X, C, g["forward.t"], g["forward.Z"])
    for key, value in ours.items():
        if key not in ("t", "X", "X0_pred"):
            rows.append(("forward at per-element t", key, value, g[f"forward.{key}"]))
    return rows


def test_metrics_equal_the_reference() -> None:
    bad = []
    for group, what, ours, ref in parity_rows():
        assert ours.dtype == torch.float32, what
        if _worst(ours, ref)[1] > RTOL:
            bad.append((group, what, _worst(ours, ref)))
    assert not bad


def test_every_reference_metric_is_compared() -> None:
    g, _ = _golden()
    compared = {what.split(" ")[0] for group, what, _, _ in parity_rows() if group.startswith("forward")}
    reference = {k.removeprefix("forward.") for k in g if k.startswith("forward.")}
    assert reference - {"t", "Z", "Z_input", "X0_pred"} == compared


def test_a_perfect_denoiser_scores_zero_error_and_full_hbond_recovery() -> None:
    g, _ = _golden()
    X, C = impute_masked_X(g["X"], g["C"]), g["C"]
    losses = _losses({"covariance_model": "globular", "complex_scaling": True})
    t = torch.tensor([0.3, 0.3, 0.3])
    out = losses(X, X, C, t, torch.randn(X.shape, generator=torch.Generator().manual_seed(1)))
    w = losses.importance_weights(t)
    for key in ("global_mse", "fragment_mse", "pair_mse", "neighborhood_mse", "distance_mse"):
        assert float(out[key].abs().max()) < 1e-3, key
    torch.testing.assert_close(out["hb_local"], w, rtol=1e-3, atol=0)
    torch.testing.assert_close(out["hb_nonlocal"], w, rtol=1e-3, atol=0)
    hb, possible = backbone_hbonds(X, C, *losses.graph(X, C))
    assert bool((hb <= possible).all())
    assert float(hb[0].sum()) > 40  # 1ahsA (126 residues, helical) has many backbone H-bonds


def test_losses_are_differentiable_with_finite_gradients() -> None:
    g, _ = _golden()
    X, C = g["X"], g["C"]
    losses = _losses({"covariance_model": "globular", "complex_scaling": True})
    X0 = x0_func(X, C, torch.tensor(0.4)).requires_grad_(True)
    Z = torch.randn(X.shape, generator=torch.Generator().manual_seed(2))
    out = losses(X0, X, C, torch.tensor([0.2, 0.5, 0.8]), Z)
    total = sum(v for k, v in out.items() if k.startswith("batch_") and "hb_" not in k)
    (grad,) = torch.autograd.grad(total, X0)
    assert bool(torch.isfinite(grad).all())
    assert float(grad[C > 0].abs().sum()) > 0
    assert float(grad[C == 0].abs().max()) == 0  # padding takes no part


def test_top_eigenvector_gradient_is_eighs_where_that_exists_and_finite_where_it_is_nan() -> None:
    gen = torch.Generator().manual_seed(3)
    A = torch.randn(5, 4, 4, dtype=torch.float64, generator=gen)
    F = (A + A.transpose(-1, -2)).requires_grad_(True)
    probe = torch.randn(5, 4, dtype=torch.float64, generator=gen)

    def align_sign(v: torch.Tensor) -> torch.Tensor:  # eigenvectors are defined up to sign
        return v * torch.sign(v[..., :1]).detach()

    ours = torch.autograd.grad((align_sign(top_eigenvector(F)) * probe).sum(), F)[0]
    eigh = torch.autograd.grad((align_sign(torch.linalg.eigh(F)[1][..., 3]) * probe).sum(), F)[0]
    sym = lambda G: G + G.transpose(-1, -2)  # noqa: E731 - only the symmetric part acts on a symmetric F
    torch.testing.assert_close(sym(ours), sym(eigh))
    # An all-masked set (padding) has F = 0: eigh's gradient is NaN there, ours is 0.
    X = torch.zeros(2, 8, 3, requires_grad=True)
    mask = torch.tensor([[1.0] * 8, [0.0] * 8])
    target = torch.randn(2, 8, 3, generator=torch.Generator().manual_seed(4))
    rmsd, _ = paired_superpose(X + target.roll(1, 1), target, mask)
    (grad,) = torch.autograd.grad(rmsd.sum(), X)
    assert bool(torch.isfinite(grad).all())
    F_zero = torch.zeros(1, 4, 4, requires_grad=True)
    assert not bool(torch.isfinite(torch.autograd.grad(torch.linalg.eigh(F_zero)[1][..., 3].sum(), F_zero)[0]).all())


def test_per_complex_losses_do_not_depend_on_the_rest_of_the_batch() -> None:
    g, _ = _golden()
    X, C = impute_masked_X(g["X"], g["C"]), g["C"]
    losses = _losses({"covariance_model": "brownian"})
    X0 = x0_func(X, C, torch.tensor(0.5))
    Z = torch.randn(X.shape, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([0.1, 0.5, 0.9])
    batch = losses(X0, X, C, t, Z)
    for b in range(3):
        one = losses(X0[b : b + 1], X[b : b + 1], C[b : b + 1], t[b : b + 1], Z[b : b + 1])
        # The ELBO is left out: its log|det R| counts every chain id up to the batch's largest (as the reference).
        for key in ("global_mse", "elbo_X", "fragment_mse", "pair_mse", "neighborhood_mse", "distance_mse"):
            torch.testing.assert_close(one[key][0], batch[key][b], rtol=1e-5, atol=1e-6)


# Rounding the coordinates themselves is what costs: bf16 keeps 8 bits, 0.125-0.25 A at 30-60 A. Measured worst
# relative differences from fp32 on the unrounded inputs: bf16 0.12 (ELBO), 0.075 (fragment MSE); fp16 0.0022.
LOW_PRECISION_RTOL = {torch.bfloat16: 0.2, torch.float16: 0.005}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_give_finite_values_close_to_fp32(dtype: torch.dtype) -> None:
    g, _ = _golden()
    X, C = impute_masked_X(g["X"], g["C"]), g["C"]
    losses = _losses({"covariance_model": "globular", "complex_scaling": True})
    X0 = x0_func(X, C, torch.tensor(0.5))
    Z = torch.randn(X.shape, generator=torch.Generator().manual_seed(6))
    t = torch.tensor([0.2, 0.5, 0.8])
    full = losses(X0, X, C, t, Z)
    rounded = losses(X0.to(dtype).float(), X.to(dtype).float(), C, t, Z.to(dtype).float())
    X0_low = X0.to(dtype).requires_grad_(True)
    low = losses(X0_low, X.to(dtype), C, t, Z.to(dtype))
    for key in (*METRICS, "rmsd_ratio", "batch_hb_contact_order"):
        value = low[key].detach()
        assert value.dtype == torch.float32 and bool(torch.isfinite(value).all()), key
        assert _worst(value, rounded[key])[1] < 1e-5, key  # computed in float32 whatever the input dtype
        assert _worst(value, full[key])[1] < LOW_PRECISION_RTOL[dtype], key
    (grad,) = torch.autograd.grad(low["batch_global_mse"] + low["batch_fragment_mse"] + low["batch_elbo"], X0_low)
    assert grad.dtype == dtype and bool(torch.isfinite(grad).all()) and float(grad.abs().max()) > 0


def test_scores_are_seeded_and_leave_the_global_generator_alone() -> None:
    g, _ = _golden()
    X, C = g["X"][:1], g["C"][:1]
    losses = ReconstructionLosses(DiffusionProcess())  # the reference's default: with the Kabsch dither
    state = torch.random.get_rng_state()
    a = losses.estimate_metrics(x0_func, X, C, num_samples=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = losses.estimate_metrics(x0_func, X, C, num_samples=2)
    c = losses.estimate_metrics(x0_func, X, C, num_samples=2, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["elbo"], c["elbo"])
    assert set(a) == {*METRICS, "X", "X0_pred"}


def test_tspan_sets_the_time_grid() -> None:
    losses = ReconstructionLosses(DiffusionProcess())
    torch.testing.assert_close(losses.time_grid(3, (0.2, 0.6)), torch.tensor([0.2, 0.4, 0.6]))
    seen = []
    g, _ = _golden()

    def recording(X, C, t):
        seen.append(float(t))
        return X

    losses.estimate_metrics(recording, g["X"][:1], g["C"][:1], num_samples=2, tspan=(0.25, 0.75))
    assert seen == [0.25, 0.75]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda L, X, C: L.estimate_metrics(x0_func, X[:, :0], C[:, :0]), "empty"),
        (lambda L, X, C: L.estimate_metrics(x0_func, X, -C.abs()), "no residue with coordinates"),
        (lambda L, X, C: L.estimate_metrics(x0_func, X * float("nan"), C), "NaN"),
        (lambda L, X, C: L.estimate_metrics(x0_func, X, C, num_samples=0), "num_samples"),
        (lambda L, X, C: L.estimate_metrics(x0_func, X, C, num_samples=-3), "num_samples"),
        (lambda L, X, C: L.estimate_metrics(x0_func, X, C, num_samples=True), "num_samples"),
        (lambda L, X, C: L.estimate_metrics(x0_func, X, C, num_samples=10**6), "num_samples"),
        (lambda L, X, C: L.estimate_metrics(x0_func, X, C, tspan=(1.0, 1e-4)), "run forward"),
        (lambda L, X, C: L.estimate_metrics(x0_func, X, C, tspan=(0.5, 0.5)), "run forward"),
        (lambda L, X, C: L.estimate_metrics(x0_func, X, C, tspan=(-0.1, 1.0)), "run forward"),
        (lambda L, X, C: L.estimate_metrics(x0_func, X, C, tspan=(0.0, float("nan"))), "run forward"),
        (lambda L, X, C: L.estimate_metrics(x0_func, X, C, tspan="early"), "pair of numbers"),
        (lambda L, X, C: L.estimate_metrics(x0_func, X, C, num_samples=2, noise=torch.zeros(3, 2)), "noise"),
        (lambda L, X, C: L.estimate_metrics(x0_func, X[..., :2], C), "backbone"),
        (lambda L, X, C: L(X, X, C, 0.5, terms=("elbo", "rmsdd")), "unknown loss terms"),
        (lambda L, X, C: L(X[:, :5], X, C, 0.5), "X0_pred"),
        (lambda L, X, C: ReconstructionLosses(DiffusionProcess(), loss_scale=0.0), "loss_scale"),
    ],
)
def test_bad_inputs_are_refused_with_a_hint(call, message: str) -> None:
    g, _ = _golden()
    with pytest.raises(BiozooError, match=message) as info:
        call(ReconstructionLosses(DiffusionProcess()), g["X"][:1], g["C"][:1])
    assert info.value.hint


def test_terms_select_what_is_computed() -> None:
    g, _ = _golden()
    X, C = g["X"][:1], g["C"][:1]
    losses = ReconstructionLosses(DiffusionProcess(align_dither=False))
    out = losses(X, X, C, 0.5, terms=("elbo", "pseudoelbo"))
    assert set(out) == {"t", "X", "X0_pred", "elbo", "batch_elbo", "elbo_X", "batch_pseudoelbo_X"}
    assert set(losses(X, X, C, 0.5, torch.zeros_like(X))) >= {f"batch_{k}" for k in ("elbo", "global_mse")}
    assert len(LOSS_TERMS) == 8


def parity_table() -> list[tuple[str, str, float, float]]:
    """The worst difference per group (what docs/chroma.md quotes)."""
    worst: dict[str, tuple[str, float, float]] = {}
    for group, what, ours, ref in parity_rows():
        diff, rel = _worst(ours, ref)
        if group not in worst or rel > worst[group][2]:
            worst[group] = (what, diff, rel)
    return [(group, what, diff, rel) for group, (what, diff, rel) in worst.items()]


if __name__ == "__main__":
    for group, what, diff, rel in parity_table():
        print(f"{group:45s} worst: {what:28s} abs {diff:.2e}  relative {rel:.2e}")
