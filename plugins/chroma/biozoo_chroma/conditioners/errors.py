"""Errors a user can cause when building or using a conditioner."""

from __future__ import annotations

from biozoo.errors import InvalidArgumentError


class ConditionerError(InvalidArgumentError):
    """A conditioner's settings do not fit the system being sampled (group, chain count, motif residues)."""
