"""biozoo_chroma.diffusion against the reference (generate-chroma 1.0.0) and against its own maths.

Parity (issue 10, chroma.md 6.3 rungs 1 and 5) uses golden/chroma_diffusion.safetensors, made by
scripts/make_chroma_diffusion_golden.py: three complexes with several chains, gaps and padding; the schedule, the
covariance factors, the drifts at several t with a fixed Z and a fixed stand-in denoiser, and whole 20-step
trajectories with one pre-generated Z per step, compared at every step. ``python
plugins/chroma/tests/test_chroma_diffusion.py`` prints the table of worst differences that docs/chroma.md quotes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from biozoo.errors import BiozooError
from biozoo_chroma.diffusion import (
    Conditioner,
    DiffusionProcess,
    IdentityConditioner,
    NoiseSchedule,
    PolymerCovariance,
    align_backbone,
    center_X,
    euler_maruyama,
    impute_masked_X,
    linear_recurrence,
)

GOLDEN = Path(__file__).parent / "golden" / "chroma_diffusion.safetensors"
# Worst |ours - reference| relative to max(1, max |reference|), fp32. Trajectories may drift a little further: over
# 20 steps the rounding of both implementations (each ~5e-6 from a float64 run) compounds.
RTOL = {"1 schedule": 1e-5, "1 covariance": 1e-5, "1 helpers": 1e-5, "5 drifts": 1e-5, "5 trajectories": 5e-5}


def x0_func(X: torch.Tensor, C: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The stand-in denoiser of the golden script (must stay identical to it)."""
    t = torch.as_tensor(t, dtype=X.dtype).reshape(-1, 1, 1, 1)
    return X + t * (0.5 * torch.tanh(X.roll(1, dims=1) / 4.0) - 0.2 * X)


class Restraint(nn.Module):
    """The golden script's energy-only conditioner (must stay identical to it)."""

    def forward(self, X, C, O, U, t):  # noqa: E741
        mask = (C > 0).to(X.dtype)[..., None]
        centre = (mask * X[:, :, 1]).sum(1) / mask.sum(1)
        target = torch.tensor([1.0, -2.0, 0.5], dtype=X.dtype)
        return X, C, O, U + 0.05 * ((centre - target) ** 2).sum(-1) + 0.01 * (X**2).sum([1, 2, 3]), t


def _golden() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(GOLDEN), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 - safe_open has no iterator


def _worst(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(worst absolute difference, the same relative to max(1, max |ref|))."""
    diff = float((ours.double() - ref.double()).abs().max())
    return diff, diff / max(1.0, float(ref.abs().max()))


def parity_rows() -> list[tuple[str, str, torch.Tensor, torch.Tensor]]:
    """(rung, what, ours, reference) for every golden comparison."""
    g, meta = _golden()
    X, C, Z = g["X"], g["C"], g["Z"]
    rows = []
    t = g["schedule.t"]
    for kind in ("log_snr", "ot_linear", "ve_log_snr"):
        s = NoiseSchedule(kind=kind)
        for name in ("alpha", "sigma", "beta", "g", "SNR", "SSNR", "alpha_deriv", "sigma_deriv", "log_SNR"):
            if f"schedule.{kind}.{name}" in g:
                rows.append(("1 schedule", f"{kind}.{name}", getattr(s, name)(t), g[f"schedule.{kind}.{name}"]))
        if kind != "ve_log_snr":
            key = f"schedule.{kind}"
            rows.append(("1 schedule", f"{kind}.SNR_derivative", s.SNR_derivative(t), g[f"{key}.SNR_derivative"]))
            rows.append(("1 schedule", f"{kind}.grid", s.linear_logsnr_grid(10, (1.0, 0.001)), g[f"{key}.grid"]))
    for tag, kw in json.loads(meta["covariances"]).items():
        cov = PolymerCovariance(**kw)
        for op, fn, arg in [
            ("R", cov.multiply_R, Z),
            ("Rt", cov.multiply_R_transpose, Z),
            ("Ri", cov.multiply_R_inverse, X),
            ("Rit", cov.multiply_R_inverse_transpose, X),
            ("cov", cov.multiply_covariance, Z),
            ("icov", cov.multiply_inverse_covariance, X),
        ]:
            rows.append(("1 covariance", f"{tag}.{op}", fn(arg, C), g[f"cov.{tag}.{op}"]))
        rows.append(("1 covariance", f"{tag}.logdet", cov.log_determinant(C), g[f"cov.{tag}.logdet"]))
        rows.append(("1 covariance", f"{tag}.sample", cov.sample(C, g["Z_init"]), g[f"cov.{tag}.sample"]))
    rows.append(("1 helpers", "impute_masked_X", impute_masked_X(X, C), g["helpers.impute"]))
    rows.append(("1 helpers", "center_X", center_X(X, C), g["helpers.center"]))
    x0 = x0_func(X, C, torch.tensor(0.3))
    rows.append(("1 helpers", "x0_func (same stand-in)", x0, g["helpers.x0"]))
    aligned = align_backbone(x0, impute_masked_X(X, C), C, dither=False)
    rows.append(("1 helpers", "align (Kabsch)", aligned, g["helpers.align"]))

    sample_kw = json.loads(meta["sample_kw"])
    covariances = json.loads(meta["covariances"])
    for tag in ("brownian", "globular_cs"):
        d = DiffusionProcess(**covariances[tag], align_dither=False)
        for t_value in json.loads(meta["drift_times"]):
            t = torch.tensor(t_value)
            key = f"drift.{tag}.{t_value}"
            rows.append(("5 drifts", f"{key}.energy", d.energy(X, x0_func, C, t), g[f"{key}.energy"]))
            rows.append(("5 drifts", f"{key}.score", d.score(X, x0_func, C, t), g[f"{key}.score"]))
            for name, fn, kw in [
                ("reverse_sde", d.reverse_sde, sample_kw),
                ("reverse_sde_plain", d.reverse_sde, {}),
                ("langevin", d.langevin, sample_kw),
                ("reverse_sde_restraint", d.reverse_sde, {**sample_kw, "conditioner": Restraint()}),
            ]:
                f, gz = fn(X, x0_func, C, t, Z=Z, **kw)
                rows.append(("5 drifts", f"{key}.{name}.f", f, g[f"{key}.{name}.f"]))
                rows.append(("5 drifts", f"{key}.{name}.gZ", gz, g[f"{key}.{name}.gZ"]))
            rows.append(("5 drifts", f"{key}.ode.f", d.ode(X, x0_func, C, t, Z=Z, **sample_kw)[0], g[f"{key}.ode.f"]))
        rows.append(("5 drifts", f"noise.{tag}", d.noise(X, C, 0.7, g["Z_init"]), g[f"noise.{tag}"]))

    steps, tspan = int(meta["steps"]), tuple(json.loads(meta["tspan"]))
    for name, settings in json.loads(meta["trajectories"]).items():
        settings = dict(settings)
        from_x = settings.pop("from_X", False)
        d = DiffusionProcess(**covariances["globular_cs"], align_dither=False)
        out = d.sample(
            x0_func, C, X if from_x else None, steps=steps, tspan=tspan,
            noise_init=g["Z_init"], noise=list(g["Z_steps"]), **settings,
        )  # fmt: skip
        ref = g[f"traj.{name}.states"]
        for step, state in enumerate(out.Xunc_trajectory):
            rows.append(("5 trajectories", f"{name}.step{step:02d}", state, ref[step]))
        rows.append(("5 trajectories", f"{name}.X_sample", out.X_sample, g[f"traj.{name}.X_sample"]))
        rows.append(("5 trajectories", f"{name}.Xhat_last", out.Xhat_trajectory[-1], g[f"traj.{name}.Xhat_last"]))
    return rows


@pytest.fixture(scope="module")
def rows() -> list[tuple[str, str, torch.Tensor, torch.Tensor]]:
    return parity_rows()


@pytest.mark.parametrize("rung", ["1 schedule", "1 covariance", "1 helpers", "5 drifts", "5 trajectories"])
def test_matches_the_reference(rows, rung: str) -> None:
    """Every golden value of this rung is reproduced within RTOL[rung] (shapes equal, all finite)."""
    selected = [r for r in rows if r[0] == rung]
    assert selected
    bad = []
    for _, what, ours, ref in selected:
        assert ours.shape == ref.shape, what
        assert torch.isfinite(ours).all(), what
        if _worst(ours, ref)[1] > RTOL[rung]:
            bad.append((what, _worst(ours, ref)))
    assert not bad, bad


def test_trajectories_compare_every_step(rows) -> None:
    """Each trajectory is compared at all steps + 1 states (the initial noise included), not just its end."""
    _, meta = _golden()
    steps = int(meta["steps"])
    for name in json.loads(meta["trajectories"]):
        assert sum(r[1].startswith(f"{name}.step") for r in rows) == steps + 1


# -- the maths, independently of the reference ---------------------------------------------------------------------

LAYOUT = torch.tensor([[-1, 1, 1, 1, -1, 1, 1, 2, 2, -2, 2, 2, 3, 0, 0], [4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0]])
MODELS = [
    {"covariance_model": "brownian"},
    {"covariance_model": "brownian", "sigma_translation": 2.0},
    {"covariance_model": "globular"},
    {"covariance_model": "globular", "complex_scaling": True},
]


def _dense(fn, C: torch.Tensor) -> torch.Tensor:
    """The matrix of a linear map on the chain atoms' coordinates of batch element 0 (float64)."""
    chain = (C[:1].abs() > 0).repeat_interleave(4, 1)[0]
    index = chain.nonzero()[:, 0]
    cols = []
    for atom in index:
        for axis in range(3):
            e = torch.zeros(1, C.shape[1] * 4, 3, dtype=torch.float64)
            e[0, atom, axis] = 1.0
            cols.append(fn(e, C[:1]).reshape(-1, 3)[index].reshape(-1))
    return torch.stack(cols, 1)


@pytest.mark.parametrize("kw", MODELS)
def test_factors_are_inverses_and_transposes(kw) -> None:
    """R^-1 R = I, R^T = (R)^T, R^-T = (R^-1)^T and Sigma = R R^T on the chain atoms, gaps included.

    Inverses hold to ~1e-5 only: like the reference, chain means divide by (count + 1e-5).
    """
    cov = PolymerCovariance(**kw)
    R = _dense(cov.multiply_R, LAYOUT)
    Ri = _dense(cov.multiply_R_inverse, LAYOUT)
    assert torch.allclose(Ri @ R, torch.eye(R.shape[0], dtype=torch.float64), atol=2e-5)
    assert torch.allclose(_dense(cov.multiply_R_transpose, LAYOUT), R.T, atol=1e-12)
    assert torch.allclose(_dense(cov.multiply_R_inverse_transpose, LAYOUT), Ri.T, atol=1e-12)
    assert torch.allclose(_dense(cov.multiply_covariance, LAYOUT), R @ R.T, atol=1e-10)
    assert torch.allclose(_dense(cov.multiply_inverse_covariance, LAYOUT), Ri.T @ Ri, atol=1e-10)


@pytest.mark.parametrize("kw", [MODELS[0], MODELS[2], MODELS[3]])
def test_log_determinant_is_log_det_R(kw) -> None:
    """log_determinant = log|det R| (the ELBO's change of variables) when every chain slot is present."""
    C = torch.tensor([[-1, 1, 1, 1, -1, 1, 1, 2, 2, -2, 2, 2, 0]])
    cov = PolymerCovariance(**kw)
    _, logabsdet = torch.linalg.slogdet(_dense(cov.multiply_R, C))
    assert float(cov.log_determinant(C)[0]) == pytest.approx(float(logabsdet), abs=1e-3)


def test_padding_and_other_chains_do_not_leak() -> None:
    """Noise on padding changes nothing; noise on one chain moves only that chain (globular, no complex scaling)."""
    cov = PolymerCovariance("globular")
    Z = torch.randn(2, LAYOUT.shape[1], 4, 3)
    Z2 = Z.clone()
    Z2[LAYOUT == 0] += 5.0
    assert torch.equal(cov.multiply_R(Z, LAYOUT), cov.multiply_R(Z2, LAYOUT))
    assert (cov.multiply_R(Z, LAYOUT)[LAYOUT == 0] == 0).all()
    Z3 = Z.clone()
    Z3[0, 7:12] += 1.0  # chain 2 of element 0
    moved = (cov.multiply_R(Z3, LAYOUT) - cov.multiply_R(Z, LAYOUT)).abs().amax((-1, -2)) > 0
    assert moved[0].tolist() == [False] * 7 + [True] * 5 + [False] * 3
    assert not moved[1].any()


@pytest.mark.parametrize("kw", MODELS)
def test_one_residue_chains_are_finite(kw) -> None:
    """A chain of one residue: the reference's globular formula takes the square root of a negative number (NaN for
    the whole complex); here every output stays finite and the round trip holds."""
    C = torch.tensor([[1, 2, 2, 2, 3, -4, 4]])
    cov = PolymerCovariance(**kw)
    Z = torch.randn(1, 7, 4, 3, dtype=torch.float64)
    assert torch.isfinite(cov.multiply_R(Z, C)).all() and torch.isfinite(cov.log_determinant(C)).all()
    assert torch.allclose(cov.multiply_R_inverse(cov.multiply_R(Z, C), C), Z, atol=1e-4)


@pytest.mark.parametrize("n", [1, 5, 31, 32, 33, 100, 1025, 2100])
def test_linear_recurrence_equals_the_sequential_loop(n: int) -> None:
    """The blocked scan equals x_i = z_i + b_i x_(i-1) computed one step at a time, across block levels."""
    gen = torch.Generator().manual_seed(n)
    z = torch.randn(3, n, 2, generator=gen, dtype=torch.float64)
    reset = torch.rand(3, n, generator=gen) < 0.02
    reset[:, 0] = True
    runs = torch.cumsum(reset.long(), 1)
    decay = torch.rand(3, int(runs.max()) + 1, generator=gen, dtype=torch.float64) * 0.2 + 0.8
    decay[2] = 1.0  # a plain per-chain cumsum (brownian)
    coeff = decay.gather(1, runs)
    x = torch.empty_like(z)
    for i in range(n):
        x[:, i] = z[:, i] + (0 if i == 0 else 1) * torch.where(reset[:, i, None], 0.0, coeff[:, i, None] * x[:, i - 1])
    assert torch.allclose(linear_recurrence(z, coeff, reset), x, atol=1e-10)


def test_long_chains_round_trip() -> None:
    """20,000 atoms per complex in O(L): R^-1 R Z = Z (one long chain; and 40 chains of 125 residues)."""
    C = torch.cat([torch.ones(1, 5000, dtype=torch.long), torch.arange(1, 41).repeat_interleave(125)[None]])
    cov = PolymerCovariance("globular", complex_scaling=True)
    Z = torch.randn(2, 5000, 4, 3, dtype=torch.float64)
    assert torch.allclose(cov.multiply_R_inverse(cov.multiply_R(Z, C), C), Z, atol=1e-7)


# Measured: bf16 3.5e-3 (covariance) and 6.8e-3 (drift); fp16 4.4e-4 and 9.6e-4 (docs/chroma.md).
LOW_PRECISION_RTOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kw", MODELS)
def test_low_precision_covariance_is_close_to_fp32(dtype: torch.dtype, kw) -> None:
    """bf16/fp16 inputs: outputs keep their dtype, are finite, and are within LOW_PRECISION_RTOL of fp32."""
    cov = PolymerCovariance(**kw)
    gen = torch.Generator().manual_seed(1)
    C = torch.tensor([[1] * 40 + [-1] * 3 + [1] * 20 + [2] * 50 + [0] * 7] * 2)
    Z = torch.randn(2, 120, 4, 3, generator=gen).to(dtype)
    for fn in (cov.multiply_R, cov.multiply_R_transpose, cov.multiply_R_inverse, cov.multiply_covariance):
        low, full = fn(Z, C), fn(Z.float(), C)
        assert low.dtype == dtype and torch.isfinite(low).all()
        assert _worst(low, full)[1] < LOW_PRECISION_RTOL[dtype], fn.__name__


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_drift_is_finite(dtype: torch.dtype) -> None:
    """A reverse-SDE drift from bf16/fp16 X and Z keeps the dtype, is finite and is close to the fp32 drift."""
    g, _ = _golden()
    d = DiffusionProcess(covariance_model="globular", complex_scaling=True, align_dither=False)
    X = g["X"].to(dtype)
    f, gz = d.reverse_sde(X, x0_func, g["C"], torch.tensor(0.5), Z=g["Z"].to(dtype), langevin_factor=2.0)
    f32, gz32 = d.reverse_sde(g["X"], x0_func, g["C"], torch.tensor(0.5), Z=g["Z"], langevin_factor=2.0)
    assert f.dtype == gz.dtype == dtype and torch.isfinite(f).all() and torch.isfinite(gz).all()
    tol = 2 * LOW_PRECISION_RTOL[dtype]
    assert _worst(f, f32)[1] < tol and _worst(gz, gz32)[1] < tol


def test_identity_conditioner_changes_nothing() -> None:
    g, _ = _golden()
    assert isinstance(IdentityConditioner(), Conditioner)
    d = DiffusionProcess(covariance_model="globular", align_dither=False)
    kw = {"steps": 3, "noise_init": g["Z_init"], "noise": list(g["Z_steps"][:3])}
    plain = d.sample(x0_func, g["C"], **kw)
    identity = d.sample(x0_func, g["C"], conditioner=IdentityConditioner(), **kw)
    assert torch.equal(plain.X_sample, identity.X_sample) and torch.equal(identity.C, g["C"])


def test_sampling_with_a_generator_is_reproducible_and_reports_steps() -> None:
    """Noise from ``generator``, the Kabsch dither from torch's global generator: seeding both repeats a run."""
    d = DiffusionProcess(covariance_model="globular")
    C = torch.tensor([[1] * 10 + [2] * 6])
    seen: list[int] = []
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(7)
        runs.append(d.sample(x0_func, C, steps=4, generator=gen, on_step=lambda i, _: seen.append(i)))
    assert seen == [0, 1, 2, 3] * 2
    assert len(runs[0].Xunc_trajectory) == 5 and len(runs[0].Xhat_trajectory) == 4
    assert torch.equal(runs[0].Xunc_trajectory[-1], runs[1].Xunc_trajectory[-1])


def test_integrator_with_a_known_solution() -> None:
    """Euler-Maruyama on dy = -y dt (no noise) matches (1 - dt)^n."""
    grid = torch.linspace(0.0, 1.0, 11)
    out = euler_maruyama(lambda t, y, z: (-y, torch.zeros_like(y)), torch.ones(1), grid, lambda i: torch.zeros(1))
    assert float(out[-1]) == pytest.approx(0.9**10, rel=1e-6)


# -- errors users can cause ----------------------------------------------------------------------------------------


def _sample(**kw):
    d = DiffusionProcess()
    return d.sample(x0_func, torch.tensor([[1] * 6]), **kw)


@pytest.mark.parametrize(
    ("kw", "names"),
    [
        ({"sde_func": "reverse"}, ["reverse_sde", "ode", "langevin"]),
        ({"integrate_func": "rk4"}, ["euler_maruyama", "heun"]),
        ({"steps": 0}, ["steps", "1"]),
        ({"steps": -3}, ["steps"]),
        ({"steps": 2.5}, ["steps"]),
        ({"steps": True}, ["steps"]),
        ({"steps": 10**9}, ["steps", "100000"]),
        ({"tspan": (0.001, 1.0)}, ["tspan", "end < start"]),
        ({"tspan": (1.0, 1.0)}, ["tspan"]),
        ({"tspan": (1.5, 0.0)}, ["tspan"]),
        ({"tspan": (math.nan, 0.0)}, ["tspan"]),
        ({"tspan": "soon"}, ["tspan"]),
        ({"steps": 2, "noise": [torch.zeros(1, 6, 4, 3)]}, ["2 tensors"]),
        ({"X_init": torch.zeros(1, 6, 14, 3)}, ["[B, L, 4, 3]"]),
    ],
)
def test_bad_sampling_arguments_are_clear_errors(kw, names) -> None:
    with pytest.raises(BiozooError) as info:
        _sample(**kw)
    assert info.value.hint
    for name in names:
        assert name in str(info.value)


X3 = torch.zeros(1, 3, 4, 3)


@pytest.mark.parametrize(
    ("make", "names"),
    [
        (lambda: NoiseSchedule(kind="cosine"), ["log_snr", "ot_linear", "ve_log_snr"]),
        (lambda: NoiseSchedule(log_snr_range=(5.0, -5.0)), ["l_min < l_max"]),
        (lambda: PolymerCovariance("residue_gas"), ["brownian", "globular"]),
        (lambda: PolymerCovariance(sigma_translation=0.0), ["sigma_translation"]),
        (lambda: DiffusionProcess().drift("sde"), ["reverse_sde", "ode", "langevin"]),
        (lambda: DiffusionProcess().noise(X3, torch.ones(1, 3), 0.5, X3), ["C"]),  # a float chain map
    ],
)
def test_bad_settings_are_clear_errors(make, names) -> None:
    with pytest.raises(BiozooError) as info:
        make()
    for name in names:
        assert name in str(info.value)


if __name__ == "__main__":  # the parity table of docs/chroma.md
    worst: dict[str, tuple[float, float, str]] = {}
    for rung, what, ours, ref in parity_rows():
        a, r = _worst(ours, ref)
        if rung not in worst or r > worst[rung][1]:
            worst[rung] = (a, r, what)
    print("| rung | worst abs | worst rel | where |\n|---|---|---|---|")
    for rung, (a, r, what) in worst.items():
        print(f"| {rung} | {a:.2e} | {r:.2e} | {what} |")
