"""Chroma's backbone diffusion: noising, the score of a denoiser, the reverse-time drifts, and sampling.

The forward process is X_t = alpha_t X_0 + sigma_t R Z with Z standard normal and R R^T the polymer covariance.
Given a prediction X0 = X0_func(X_t, C, t), the energy is U = |R^-1 (X_t - alpha_t X0) / sigma_t|^2 / 2 (X0
aligned onto X_t and held fixed), and the score is -dU/dX_t, plus whatever energy a conditioner adds. The drifts:

- ``reverse_sde``: f = -beta/2 X - g^2 (lambda_t + lambda_L lf/2) Sigma score, gZ = g sqrt(1 + lf) R Z
- ``ode`` (probability flow): f = -beta/2 X - lambda_L g^2/2 Sigma score, gZ = 0
- ``langevin``: f = -g^2 lambda_L lf/2 Sigma score, gZ = g sqrt(lf) R Z

with lf the Langevin factor, lambda_t = T^-1 (sigma^2 + alpha^2) / (T^-1 sigma^2 + alpha^2) for inverse temperature
T^-1, and lambda_L = T^-1 (isothermal) or lambda_t. This is the reference's ``DiffusionChainCov``; its state (the
schedule and covariance settings) has no weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from biozoo.errors import InvalidArgumentError
from biozoo_chroma.diffusion.align import align_backbone
from biozoo_chroma.diffusion.chains import (
    ATOMS,
    center_X,
    impute_masked_X,
    scale_around_mean,
)
from biozoo_chroma.diffusion.conditioners import Conditioner
from biozoo_chroma.diffusion.covariance import PolymerCovariance
from biozoo_chroma.diffusion.integrators import INTEGRATORS, StepCallback
from biozoo_chroma.diffusion.schedule import NoiseSchedule, Time, as_time
from biozoo_chroma.graph.geometry import compute_dtype

X0Func = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

SDE_FUNCS = ("reverse_sde", "ode", "langevin")
MAX_STEPS = 100_000  # every state is kept (as in the reference): 100k steps of a 500-residue batch is ~2 GB already
NUM_ALPHABET = 20


@dataclass(frozen=True)
class Coefficients:
    """Schedule and temperature coefficients at one time, each shaped ``[T, 1, 1, 1]`` to broadcast over X."""

    alpha: torch.Tensor
    sigma: torch.Tensor
    beta: torch.Tensor
    g: torch.Tensor
    lambda_t: torch.Tensor
    lambda_langevin: torch.Tensor | float


@dataclass
class SampleOutput:
    """What ``sample`` returns, with the reference's keys.

    ``X_sample`` is the state at the last denoiser call (as in the reference); ``Xunc_trajectory`` holds the
    integrated states, the initial one first; ``X_trajectory`` the states seen by the denoiser (its last one
    repeated first); ``Xhat_trajectory`` the denoiser's predictions.
    """

    C: torch.Tensor
    X_sample: torch.Tensor
    X_trajectory: list[torch.Tensor]
    Xhat_trajectory: list[torch.Tensor]
    Xunc_trajectory: list[torch.Tensor]


def check_backbone(X: torch.Tensor, C: torch.Tensor) -> None:
    """Refuse tensors that are not a backbone X ``[B, L, 4, 3]`` with its chain map C ``[B, L]``."""
    if not isinstance(X, torch.Tensor) or X.dim() != 4 or X.shape[2:] != (ATOMS, 3) or not X.is_floating_point():
        shape = tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__
        raise InvalidArgumentError(
            f"X must be a float backbone tensor [B, L, 4, 3], got {shape}",
            "pass N, CA, C, O coordinates (Protein.to_XCS() gives them; take X[:, :, :4] of an all-atom X)",
        )
    if not isinstance(C, torch.Tensor) or C.dim() != 2 or C.is_floating_point() or C.shape != X.shape[:2]:
        shape = tuple(C.shape) if isinstance(C, torch.Tensor) else type(C).__name__
        raise InvalidArgumentError(
            f"C must be an integer chain map [B, L] = {tuple(X.shape[:2])}, got {shape}",
            "chain k is k, -k marks a residue without structure, 0 is padding",
        )


def _check_choice(value: str, choices: Sequence[str], what: str) -> None:
    if value not in choices:
        raise InvalidArgumentError(f"unknown {what} {value!r}", f"use one of: {', '.join(choices)}")


def check_steps_and_tspan(steps: int, tspan: tuple[float, float]) -> tuple[float, float]:
    """Refuse a step count that is not a positive int, or a time span that does not run from noise to data."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise InvalidArgumentError(
            f"steps must be an integer from 1 to {MAX_STEPS}, not {steps!r}", "e.g. steps=500 (the reference's default)"
        )
    try:
        start, end = (float(v) for v in tspan)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"tspan must be a pair of numbers (start, end), not {tspan!r}", "e.g. tspan=(1.0, 0.001)"
        ) from None
    if not (math.isfinite(start) and math.isfinite(end) and 0.0 <= end < start <= 1.0):
        raise InvalidArgumentError(
            f"tspan {tspan!r} must run backwards in time from noise to data: 0 <= end < start <= 1",
            "e.g. tspan=(1.0, 0.001)",
        )
    return start, end


class DiffusionProcess:
    """The reference's ``DiffusionChainCov``: schedule + polymer covariance, drifts and the sampler."""

    def __init__(
        self,
        log_snr_range: tuple[float, float] = (-7.0, 13.5),
        noise_schedule: str = "log_snr",
        sigma_translation: float = 1.0,
        covariance_model: str = "brownian",
        complex_scaling: bool = False,
        align_dither: bool = True,
    ) -> None:
        self.schedule = NoiseSchedule(log_snr_range, noise_schedule)
        self.covariance = PolymerCovariance(covariance_model, complex_scaling, sigma_translation)
        self.align_dither = align_dither  # the reference's Kabsch dither; False for deterministic scores

    # -- schedule --------------------------------------------------------------------------------------------------

    def coefficients(
        self, t: Time, inverse_temperature: float = 1.0, langevin_isothermal: bool = True
    ) -> Coefficients:
        """alpha, sigma, beta, g and the temperature factors at time t (the reference's _schedule_coefficients)."""
        t = as_time(t)

        def col(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(-1, 1, 1, 1)

        alpha, sigma = col(self.schedule.alpha(t)), col(self.schedule.sigma(t))
        beta, g = col(self.schedule.beta(t)), col(self.schedule.g(t))
        lambda_t = inverse_temperature * (sigma**2 + alpha**2) / (inverse_temperature * sigma**2 + alpha**2)
        lambda_langevin = inverse_temperature if langevin_isothermal else lambda_t
        return Coefficients(alpha, sigma, beta, g, lambda_t, lambda_langevin)

    # -- forward process -------------------------------------------------------------------------------------------

    def noise(self, X: torch.Tensor, C: torch.Tensor, t: Time, Z: torch.Tensor) -> torch.Tensor:
        """X_t = alpha_t X + sigma_t R Z, with the noise's net translation removed (the reference's ``forward``)."""
        check_backbone(X, C)
        t = as_time(t, X)
        prior = self.covariance.sample(C, Z.reshape(X.shape))
        alpha = self.schedule.alpha(t).reshape(-1, 1, 1, 1).to(X.dtype)
        sigma = self.schedule.sigma(t).reshape(-1, 1, 1, 1).to(X.dtype)
        noised = alpha * X + sigma * prior
        return center_X(noised - X, C) + X

    def X_to_Z(
        self, X_t: torch.Tensor, X0: torch.Tensor, C: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
    ) -> torch.Tensor:
        """The standardised noise that takes X0 to X_t: R^-1 (X_t - mean_alpha(X0)) / sigma (gaps imputed)."""
        X0, X_t = impute_masked_X(X0, C), impute_masked_X(X_t, C)
        mean = impute_masked_X(scale_around_mean(X0, C, alpha.reshape(-1)), C)
        return self.covariance.multiply_R_inverse((X_t - mean) / sigma.reshape(-1, 1, 1, 1), C)

    # -- energy and score ------------------------------------------------------------------------------------------

    def energy(
        self,
        X: torch.Tensor,
        X0_func: X0Func,
        C: torch.Tensor,
        t: Time,
        detach_X0: bool = True,
        align_X0: bool = True,
    ) -> torch.Tensor:
        """U = |Z(X, X0)|^2 / 2 per batch element, with X0 = X0_func(X, C, t) aligned onto X."""
        X = impute_masked_X(X, C)
        t = as_time(t, X)
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        if detach_X0:
            with torch.no_grad():
                X0 = X0_func(X, C, t)
        else:
            X0 = X0_func(X, C, t)
        X0 = X0.to(X.dtype)
        if align_X0:
            X0 = align_backbone(X0, X, C, dither=self.align_dither)
        if detach_X0:
            X0 = X0.detach()
        Z = self.X_to_Z(X, X0, C, alpha.to(X.dtype), sigma.to(X.dtype))
        return 0.5 * Z.pow(2).sum([1, 2, 3])

    def score(
        self,
        X: torch.Tensor,
        X0_func: X0Func,
        C: torch.Tensor,
        t: Time,
        conditioner: Conditioner | None = None,
        detach_X0: bool = True,
        align_X0: bool = True,
    ) -> torch.Tensor:
        """-dU/dX of the diffusion energy plus the conditioner's energy; 0 where C <= 0."""
        X = impute_masked_X(X.to(compute_dtype(X.dtype)), C)
        t = as_time(t, X)
        with torch.enable_grad():
            X = X.detach().clone().requires_grad_(True)
            Xt, Ct, U_conditioner = X, C, torch.zeros(X.shape[0], dtype=X.dtype, device=X.device)
            if conditioner is not None:
                O = F.one_hot(torch.zeros_like(C), NUM_ALPHABET).to(X.dtype)  # noqa: E741
                Xt, Ct, _, U_conditioner, _ = conditioner(X, C, O, U_conditioner, t)
            U_diffusion = self.energy(Xt, X0_func, Ct, t, detach_X0=detach_X0, align_X0=align_X0)
            U_total = U_diffusion.sum() + torch.as_tensor(U_conditioner).sum()
            (grad,) = torch.autograd.grad(U_total, X)
        return (-grad).masked_fill((C <= 0)[..., None, None], 0.0)

    # -- drifts ----------------------------------------------------------------------------------------------------

    def _noise_term(self, Z: torch.Tensor | None, X: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        Z = torch.randn_like(X) if Z is None else Z
        return self.covariance.multiply_R(Z.reshape(X.shape), C)

    def reverse_sde(
        self,
        X: torch.Tensor,
        X0_func: X0Func,
        C: torch.Tensor,
        t: Time,
        conditioner: Conditioner | None = None,
        Z: torch.Tensor | None = None,
        inverse_temperature: float = 1.0,
        langevin_factor: float = 0.0,
        langevin_isothermal: bool = True,
        align_X0: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(f, gZ) of the reverse-time SDE, optionally with extra Langevin noise and a temperature."""
        k = self.coefficients(t, inverse_temperature, langevin_isothermal)
        score_scale = k.lambda_t + k.lambda_langevin * langevin_factor / 2.0
        score = self.score(X, X0_func, C, t, conditioner, align_X0=align_X0)
        sigma_score = self.covariance.multiply_covariance(score, C)
        f = k.beta * (-0.5) * center_X(X.to(score.dtype), C) - k.g.pow(2) * score_scale * sigma_score
        gz = k.g * math.sqrt(1.0 + langevin_factor) * self._noise_term(Z, score, C)
        return f.to(X.dtype), gz.to(X.dtype)

    def ode(
        self,
        X: torch.Tensor,
        X0_func: X0Func,
        C: torch.Tensor,
        t: Time,
        conditioner: Conditioner | None = None,
        Z: torch.Tensor | None = None,
        inverse_temperature: float = 1.0,
        langevin_factor: float = 0.0,
        langevin_isothermal: bool = True,
        align_X0: bool = True,
        detach_X0: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(f, 0) of the probability-flow ODE (evaluated at the centred X)."""
        k = self.coefficients(t, inverse_temperature, langevin_isothermal)
        X_c = center_X(X.to(compute_dtype(X.dtype)), C)
        score = self.score(X_c, X0_func, C, t, conditioner, detach_X0=detach_X0, align_X0=align_X0)
        sigma_score = self.covariance.multiply_covariance(score, C)
        f = -0.5 * k.beta * X_c - 0.5 * k.lambda_langevin * k.g.pow(2) * sigma_score
        return f.to(X.dtype), torch.zeros_like(X)

    def langevin(
        self,
        X: torch.Tensor,
        X0_func: X0Func,
        C: torch.Tensor,
        t: Time,
        conditioner: Conditioner | None = None,
        Z: torch.Tensor | None = None,
        inverse_temperature: float = 1.0,
        langevin_factor: float = 0.0,
        langevin_isothermal: bool = True,
        align_X0: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(f, gZ) of Langevin dynamics at fixed time t (equilibrates, does not move t)."""
        k = self.coefficients(t, inverse_temperature, langevin_isothermal)
        score = self.score(X, X0_func, C, t, conditioner, align_X0=align_X0)
        sigma_score = self.covariance.multiply_covariance(score, C)
        f = -k.g.pow(2) * k.lambda_langevin * langevin_factor / 2.0 * sigma_score
        gz = k.g * math.sqrt(langevin_factor) * self._noise_term(Z, score, C)
        return f.to(X.dtype), gz.to(X.dtype)

    def drift(self, name: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        """The drift function called ``name`` (one of SDE_FUNCS)."""
        _check_choice(name, SDE_FUNCS, "sde_func")
        return getattr(self, name)

    # -- sampling --------------------------------------------------------------------------------------------------

    def time_grid(self, steps: int, tspan: tuple[float, float], remap_time: bool = False) -> torch.Tensor:
        """``steps + 1`` times from tspan[0] to tspan[1]: uniform, or uniform in the log-SNR schedule's SSNR."""
        start, end = check_steps_and_tspan(steps, tspan)
        if remap_time:
            return self.schedule.linear_logsnr_grid(steps, (start, end))
        return torch.linspace(start, end, steps + 1)

    @torch.no_grad()
    def sample(
        self,
        X0_func: X0Func,
        C: torch.Tensor,
        X_init: torch.Tensor | None = None,
        *,
        steps: int = 100,
        tspan: tuple[float, float] = (1.0, 0.001),
        noise_init: torch.Tensor | None = None,
        noise: Sequence[torch.Tensor] | None = None,
        conditioner: Conditioner | None = None,
        inverse_temperature: float = 1.0,
        langevin_factor: float = 0.0,
        langevin_isothermal: bool = True,
        sde_func: str = "reverse_sde",
        integrate_func: str = "euler_maruyama",
        initialize_noise: bool = True,
        remap_time: bool = False,
        remove_drift_translate: bool = False,
        remove_noise_translate: bool = False,
        align_X0: bool = True,
        generator: torch.Generator | None = None,
        on_step: StepCallback | None = None,
    ) -> SampleOutput:
        """Integrate ``sde_func`` with ``integrate_func`` from noise at tspan[0] to tspan[1] (the reference's
        ``sample_sde``). ``noise_init`` and ``noise`` (one tensor per step) fix the randomness; otherwise it is
        drawn from ``generator``. Without X_init the process starts from pure noise around the origin.
        """
        drift_function = self.drift(sde_func)
        _check_choice(integrate_func, tuple(INTEGRATORS), "integrate_func")
        grid = self.time_grid(steps, tspan, remap_time).to(C.device)
        dtype = X_init.dtype if X_init is not None else torch.get_default_dtype()
        shape = (*C.shape, ATOMS, 3)
        if X_init is not None:
            check_backbone(X_init, C)
        if noise is not None and (len(noise) != steps or any(tuple(z.shape) != shape for z in noise)):
            raise InvalidArgumentError(
                f"noise must be {steps} tensors of shape {list(shape)}, one per step",
                "leave noise=None to draw it, or pass a list of torch.randn tensors",
            )

        def draw(_: int = 0) -> torch.Tensor:
            return torch.randn(shape, dtype=dtype, device=C.device, generator=generator)

        init = noise_init if noise_init is not None else draw()
        if X_init is None:
            X_init = self.noise(torch.zeros(shape, dtype=dtype, device=C.device), C, tspan[0], init)
        elif initialize_noise:
            X_init = self.noise(X_init, C, tspan[0], init)

        C_out = C
        if conditioner is not None:  # the conditioner decides the output's chain map
            with torch.enable_grad():
                probe = X_init.clone().requires_grad_(True)
                O = F.one_hot(torch.zeros_like(C), NUM_ALPHABET).to(probe.dtype)  # noqa: E741
                zero_t = torch.zeros(1, device=C.device)
                _, C_out, _, _, _ = conditioner(probe, C, O, torch.zeros(C.shape[0], device=C.device), zero_t)

        seen: list[torch.Tensor] = []
        predicted: list[torch.Tensor] = []

        def recorded_X0_func(X: torch.Tensor, C_: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            X0 = X0_func(X, C_, t)
            seen.append(X.detach())
            predicted.append(X0.detach())
            return X0

        def step_drift(t: torch.Tensor, X: torch.Tensor, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f, gz = drift_function(
                X,
                recorded_X0_func,
                C,
                t,
                conditioner=conditioner,
                Z=Z,
                inverse_temperature=inverse_temperature,
                langevin_factor=langevin_factor,
                langevin_isothermal=langevin_isothermal,
                align_X0=align_X0,
            )
            if remove_drift_translate:
                f = center_X(f, C)
            if remove_noise_translate:
                gz = center_X(gz, C)
            return f, gz

        states = INTEGRATORS[integrate_func](step_drift, X_init, grid, noise if noise is not None else draw, on_step)
        return SampleOutput(
            C=C_out,
            X_sample=seen[-1],
            X_trajectory=[seen[-1], *seen],
            Xhat_trajectory=predicted,
            Xunc_trajectory=states,
        )
