"""Component protocols and base classes (torch side).

Every registered component is an ``nn.Module`` subclass of :class:`Component`
with a ``kind`` and a :meth:`Component.ports` method that reports what it
consumes and produces for *this* configuration. An :class:`Architecture` is the
top-level component: it declares its slots in data-flow order and receives the
built sub-components as keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from biozoo.components.ports import Port, Ports
from biozoo.plugins.declarations import ComponentKind


class Component(nn.Module):
    """Base class of every registered component."""

    kind: ClassVar[ComponentKind]

    def ports(self) -> Ports:
        """The ports of this instance (sizes resolved from its config)."""
        return Ports()


@dataclass(frozen=True)
class Slot:
    """A place in an architecture that a manifest fills with a component of ``kind``."""

    kind: ComponentKind
    required: bool = True
    description: str = ""


class Architecture(Component):
    """A whole model: slots in data-flow order, model inputs, a forward returning named outputs."""

    kind = ComponentKind.ARCHITECTURE
    slots: ClassVar[dict[str, Slot]] = {}

    def model_inputs(self) -> tuple[Port, ...]:
        """The ports the caller feeds; the first components consume these."""
        return ()

    def derived_ports(self) -> tuple[Port, ...]:
        """Ports the architecture computes itself between components (e.g. a pooled cell embedding)."""
        return ()

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


# Structural protocols: what callers may rely on for each kind.


@runtime_checkable
class Encoder(Protocol):
    """Maps token ids, values or hidden states to hidden states ``[B, T, D]``."""

    kind: ClassVar[ComponentKind]

    def ports(self) -> Ports: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class Decoder(Protocol):
    """Maps hidden states back to the input space (expression values, tokens, coordinates)."""

    kind: ClassVar[ComponentKind]

    def ports(self) -> Ports: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class Head(Protocol):
    """Maps a (pooled) representation to a task output (class logits, a score)."""

    kind: ClassVar[ComponentKind]

    def ports(self) -> Ports: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class PositionalEncoding(Protocol):
    """Adds position information: ``mode`` is ``"none"``, ``"additive"`` or ``"rotary"``."""

    kind: ClassVar[ComponentKind]
    mode: str

    def ports(self) -> Ports: ...
