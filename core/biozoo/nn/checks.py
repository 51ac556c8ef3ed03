"""Range checks for the sizes a component is built with, naming the argument that is wrong.

A manifest passes its config straight to a constructor, so a size of 0, -4 or
NaN must be refused there, by name: torch itself either builds something
absurd (``num_heads=-4`` divides evenly) or fails deep inside with a message
that names no field. :class:`ConfigError` carries the argument's name, so
assembly reports ``components.encoder.config.num_heads must be >= 1``.
"""

from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """A constructor argument out of its range; ``field`` is the argument's name."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem


def check_int(field: str, value: Any, minimum: int = 1) -> int:
    """An integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, f"must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(field, f"must be >= {minimum}, got {value}")
    return value


def check_probability(field: str, value: Any) -> float:
    """A finite number in [0, 1] (dropout rates)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise ConfigError(field, f"must be a number between 0 and 1, got {value!r}")
    return float(value)


def check_positive(field: str, value: Any) -> float:
    """A finite number > 0 (epsilons, scales)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(field, f"must be a finite number > 0, got {value!r}")
    return float(value)


def check_index(field: str, value: Any, size: int, size_field: str) -> int | None:
    """``None``, or an index into ``size`` entries (negative counts from the end, as in ``nn.Embedding``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not -size <= value < size:
        raise ConfigError(field, f"must be an index into {size_field} ({size}): in [{-size}, {size}), got {value!r}")
    return value
