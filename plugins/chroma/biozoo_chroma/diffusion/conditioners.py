"""The conditioner contract of Chroma's sampler: ``(X, C, O, U, t) -> (X, C, O, U, t)``.

A conditioner maps the sampler's unconstrained state (coordinates X, chain map C, one-hot sequence O, energy U) at
time t to a constrained state and an updated energy: hard constraints change X (and C), restraints add to U. The
score is minus the gradient of the total energy with respect to the unconstrained X, so any differentiable
conditioner steers sampling. Conditioners compose by chaining; part 2 of the plugin adds real ones.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@runtime_checkable
class Conditioner(Protocol):
    """Anything called as ``conditioner(X, C, O, U, t)`` returning the five updated values."""

    def __call__(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        O: torch.Tensor,  # noqa: E741
        U: torch.Tensor,
        t: torch.Tensor,
    ) -> State: ...


class IdentityConditioner(nn.Module):
    """The unconditioned sampler: returns its inputs unchanged."""

    def forward(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        O: torch.Tensor,  # noqa: E741
        U: torch.Tensor,
        t: torch.Tensor,
    ) -> State:
        return X, C, O, U, t
