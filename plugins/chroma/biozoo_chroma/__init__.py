"""Chroma for biozoo. Part 1: protein structures (:class:`Protein`) and Chroma's XCS tensors.

Importing this package is cheap (the plugin loader imports it for ``zoo list``): numpy, biotite and torch
load only when :class:`Protein` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from biozoo_chroma.structures import Protein, StructureError

__all__ = ["Protein", "StructureError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from biozoo_chroma import structures

        return getattr(structures, name)
    raise AttributeError(f"module 'biozoo_chroma' has no attribute {name!r}")
