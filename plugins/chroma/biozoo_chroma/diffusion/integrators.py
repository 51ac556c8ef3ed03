"""Fixed-grid integrators of an Ito SDE dy = f dt + g dW, driven by noise tensors the caller supplies.

A drift function ``drift(t, y, Z) -> (f, gZ)`` returns the drift and the diffusion term for the noise Z (the
diffusion process's ``reverse_sde``, ``ode`` or ``langevin`` at that time). With the same grid and the same list of
Z, two runs are step-for-step comparable. Loops carry tensors only: no ``.item()``, no host sync per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Drift = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
NoiseSource = Sequence[torch.Tensor] | Callable[[int], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor], None]


def _noise_at(noise: NoiseSource, step: int) -> torch.Tensor:
    return noise(step) if callable(noise) else noise[step]


def euler_maruyama(
    drift: Drift, y0: torch.Tensor, grid: torch.Tensor, noise: NoiseSource, on_step: StepCallback | None = None
) -> list[torch.Tensor]:
    """y <- y + dt f(t, y) + sqrt(|dt|) gZ over consecutive grid points; returns the states, y0 first."""
    y, trajectory = y0, [y0]
    for step in range(grid.shape[0] - 1):
        t, dt = grid[step], grid[step + 1] - grid[step]
        f, gz = drift(t, y, _noise_at(noise, step))
        y = y + dt * f + dt.abs().sqrt() * gz
        trajectory.append(y)
        if on_step is not None:
            on_step(step, y)
    return trajectory


def heun(
    drift: Drift, y0: torch.Tensor, grid: torch.Tensor, noise: NoiseSource, on_step: StepCallback | None = None
) -> list[torch.Tensor]:
    """Heun's predictor-corrector: the mean of an Euler step and a step with the predicted point's drift.

    As in the reference, the corrector's drift is evaluated at the step's start time and reuses the predictor's
    diffusion term (one Z per step).
    """
    y, trajectory = y0, [y0]
    for step in range(grid.shape[0] - 1):
        t, dt = grid[step], grid[step + 1] - grid[step]
        z = _noise_at(noise, step)
        f, gz = drift(t, y, z)
        y_pred = y + dt * f + dt.abs().sqrt() * gz
        f_pred, _ = drift(t, y_pred, z)
        y = (y_pred + (y + dt * f_pred + dt.abs().sqrt() * gz)) / 2.0
        trajectory.append(y)
        if on_step is not None:
            on_step(step, y)
    return trajectory


INTEGRATORS: dict[str, Callable[..., list[torch.Tensor]]] = {"euler_maruyama": euler_maruyama, "heun": heun}
