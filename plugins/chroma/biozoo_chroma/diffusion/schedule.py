"""The noise schedule of Chroma's diffusion: alpha_t, sigma_t and the SDE coefficients derived from them.

Time t in [0, 1] runs from data (t=0) to noise (t=1). The schedule is parameterised by its log signal-to-noise
range (l_min, l_max): for the variance-preserving ``log_snr`` kind, log SNR(t) = (1-t) l_max + t l_min,
alpha^2 = sigmoid(log SNR) and sigma^2 = 1 - alpha^2. The forward SDE is dx = -beta/2 x dt + g dw.

Derivatives are closed forms. As in the reference, they are taken with respect to the *mapped* time
t~ = t_min + (t_max - t_min) t, which is t itself for ``log_snr`` and ``ve_log_snr``. Values are computed in at least
float32 whatever the caller's dtype.

Faithful to the reference's float32 arithmetic on purpose: for ``log_snr`` it gets d alpha / dt~ by autograd through
log alpha = (lambda - softplus(lambda)) / 2, whose backward computes 1 - sigmoid(lambda) by cancellation. At high SNR
(small t) that loses digits: beta and g at t = 0.1 are off by about 1e-3 relative from the exact values (more as
t -> 0), and a closed form would disagree with the reference by that much. So these two derivatives are taken by
autograd here too (a handful of scalars per step), and samplers agree with the reference to float precision.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from biozoo.errors import InvalidArgumentError

#: The schedule kinds of the reference's GaussianNoiseSchedule (the public model uses ``log_snr``).
SCHEDULE_KINDS = ("log_snr", "ot_linear", "ve_log_snr")

Time = float | torch.Tensor


def as_time(t: Time, like: torch.Tensor | None = None) -> torch.Tensor:
    """t as a 1-D float tensor (``[1]`` for a scalar, ``[B]`` per batch element), at least float32."""
    device = like.device if like is not None else None
    if not isinstance(t, torch.Tensor):
        return torch.tensor([float(t)], dtype=torch.float32, device=device)
    dtype = torch.promote_types(t.dtype, torch.float32) if t.is_floating_point() else torch.float32
    t = t.to(device=device if device is not None else t.device, dtype=dtype)
    return t.reshape(1) if t.dim() == 0 else t


class NoiseSchedule:
    """alpha, sigma, beta, g, SNR of one schedule kind over a log-SNR range (the reference's GaussianNoiseSchedule)."""

    def __init__(self, log_snr_range: tuple[float, float] = (-7.0, 13.5), kind: str = "log_snr") -> None:
        if kind not in SCHEDULE_KINDS:
            raise InvalidArgumentError(
                f"unknown noise schedule {kind!r}", f"use one of: {', '.join(SCHEDULE_KINDS)}"
            )
        l_min, l_max = (float(v) for v in log_snr_range)
        if not (math.isfinite(l_min) and math.isfinite(l_max) and l_min < l_max):
            raise InvalidArgumentError(
                f"log_snr_range {log_snr_range!r} is not an increasing pair of finite numbers",
                "pass (l_min, l_max) with l_min < l_max, e.g. (-7.0, 13.5)",
            )
        self.kind = kind
        self.log_snr_range = (l_min, l_max)
        # t in [0, 1] is mapped onto [t_min, t_max] so that log SNR spans exactly the range (in float32, as the
        # reference rounds them: t_max of log_snr is 1 - 6e-8, not 1).
        self.t_max = self._time_of_log_snr(l_min)
        self.t_min = self._time_of_log_snr(l_max)

    def _time_of_log_snr(self, log_snr: float) -> float:
        l_min, l_max = self.log_snr_range
        value = torch.tensor(log_snr, dtype=torch.float32, device="cpu")  # a number also when built on meta
        if self.kind == "ot_linear":
            return float(((0.5 * value).exp() + 1).reciprocal())
        return float((1 / torch.tensor(l_min - l_max, dtype=torch.float32, device="cpu")) * (value - l_max))

    @staticmethod
    def _autograd_deriv(fn: Callable[[torch.Tensor], torch.Tensor], t_tilde: torch.Tensor) -> torch.Tensor:
        """d fn / dt~ by autograd, as the reference computes it (see the module docstring); works under no_grad."""
        with torch.enable_grad():
            x = t_tilde.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(fn(x).sum(), x)
        return grad

    def _alpha_of_mapped(self, t_tilde: torch.Tensor) -> torch.Tensor:
        lam = self._lambda(t_tilde)
        return (0.5 * (lam - F.softplus(lam))).exp()

    def t_map(self, t: Time) -> torch.Tensor:
        """[0, 1] -> [t_min, t_max]."""
        t = as_time(t)
        return self.t_min + (self.t_max - self.t_min) * t

    def _lambda(self, t_tilde: torch.Tensor) -> torch.Tensor:
        l_min, l_max = self.log_snr_range
        return (1 - t_tilde) * l_max + t_tilde * l_min

    def alpha(self, t: Time) -> torch.Tensor:
        """Scale of the signal: 1 at t=0, small at t=1."""
        tt = self.t_map(t)
        if self.kind == "log_snr":
            return self._alpha_of_mapped(tt)
        if self.kind == "ve_log_snr":
            return 1 - torch.relu(-tt)
        return 1 - tt

    def sigma(self, t: Time) -> torch.Tensor:
        """Scale of the noise."""
        tt = self.t_map(t)
        if self.kind == "log_snr":
            return (1 - self.alpha(t).pow(2)).sqrt()
        if self.kind == "ve_log_snr":
            return torch.exp(-self._lambda(tt) / 2)
        return tt

    def alpha_deriv(self, t: Time) -> torch.Tensor:
        """d alpha / d t~."""
        tt = self.t_map(t)
        if self.kind == "log_snr":
            return self._autograd_deriv(self._alpha_of_mapped, tt)
        if self.kind == "ve_log_snr":
            return torch.where(tt < 0, torch.ones_like(tt), torch.zeros_like(tt))
        return -torch.ones_like(tt)

    def sigma_deriv(self, t: Time) -> torch.Tensor:
        """d sigma / d t~."""
        tt = self.t_map(t)
        if self.kind == "log_snr":
            return self._autograd_deriv(self.sigma, tt)  # sigma maps its argument once more, as in the reference
        if self.kind == "ve_log_snr":
            l_min, l_max = self.log_snr_range
            return -0.5 * (l_min - l_max) * self.sigma(t)
        return torch.ones_like(tt)

    def beta(self, t: Time) -> torch.Tensor:
        """Drift coefficient of the forward SDE: beta = -2 alpha' / alpha."""
        return -2.0 * self.alpha_deriv(t) / self.alpha(t)

    def g(self, t: Time) -> torch.Tensor:
        """Diffusion coefficient of the forward SDE (g^2 = beta for the variance-preserving kind)."""
        if self.kind == "log_snr":
            return self.beta(self.t_map(t)).sqrt()  # t mapped twice, as in the reference (a no-op up to rounding)
        sigma = self.sigma(t)
        g2 = 2 * (self.sigma_deriv(t) - self.alpha_deriv(t) / self.alpha(t) * sigma) * sigma
        return g2.sqrt()

    def log_SNR(self, t: Time) -> torch.Tensor:
        """log(alpha^2 / sigma^2)."""
        if self.kind == "log_snr":
            return self._lambda(as_time(t))
        return self.SNR(t).log()

    def SNR(self, t: Time) -> torch.Tensor:
        """alpha^2 / sigma^2."""
        if self.kind == "log_snr":
            return self.log_SNR(t).exp()
        return self.alpha(t).pow(2) / self.sigma(t).pow(2)

    def SNR_derivative(self, t: Time) -> torch.Tensor:
        """d SNR / d t (the ELBO's weight)."""
        l_min, l_max = self.log_snr_range
        if self.kind == "log_snr":
            return self.SNR(t) * (l_min - l_max)
        if self.kind == "ot_linear":
            tt = self.t_map(t)
            return -2 * (1 - tt) / tt.pow(3) * (self.t_max - self.t_min)
        return self.SNR(t) * (l_min - l_max) * (self.t_max - self.t_min)

    def SSNR(self, t: Time) -> torch.Tensor:
        """alpha^2 / (alpha^2 + sigma^2): goes from 1 to 0 as t goes from 0 to 1."""
        snr = self.SNR(t)
        return snr / (snr + 1)

    def SSNR_inv(self, ssnr: torch.Tensor) -> torch.Tensor:
        """The mapped time t~ at which SSNR takes the value ``ssnr``."""
        l_min, l_max = self.log_snr_range
        if self.kind == "ot_linear":
            eps = 1e-5  # the closed form is 0/0 at 0.5; the reference evaluates it just beside
            ssnr = torch.where((ssnr - 0.5).abs() < eps, torch.full_like(ssnr, 0.5 + eps), ssnr)
            return (ssnr + (-ssnr * (ssnr - 1)).sqrt() - 1) / (2 * ssnr - 1)
        return ((ssnr / (1 - ssnr)).log() - l_max) / (l_min - l_max)

    def linear_logsnr_grid(self, steps: int, tspan: tuple[float, float]) -> torch.Tensor:
        """A time grid of ``steps + 1`` points whose SSNR is that of a uniform grid under the log-SNR schedule."""
        uniform = torch.linspace(float(tspan[0]), float(tspan[1]), steps + 1)
        ssnr = NoiseSchedule(self.log_snr_range, "log_snr").SSNR(uniform)
        return (self.SSNR_inv(ssnr) - self.t_min) / (self.t_max - self.t_min)
