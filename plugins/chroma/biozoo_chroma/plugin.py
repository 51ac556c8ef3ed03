"""What the chroma plugin offers, as data (no torch, no model code imported here).

Part 1 of issue 10 builds only the structure layer (``biozoo_chroma.Protein``), which is a Python API and
not a registry component; the model components, tasks and converter are declared here when they exist.
"""

from __future__ import annotations

from biozoo.plugins import ComponentDecl, hookimpl


@hookimpl
def biozoo_components() -> list[ComponentDecl]:
    return []
