"""biozoo: a plugin-based PyTorch model zoo for biological foundation models.

``import biozoo`` is cheap (no torch); the API below is imported on first use.

>>> import biozoo
>>> biozoo.list_models()            # no torch, no plugin model code
>>> model = biozoo.load("scgpt/cls")  # registry id, local folder or hf://ORG/NAME@REV
"""

from __future__ import annotations

from typing import Any

from biozoo._version import __version__
from biozoo.plugins.hookspecs import hookimpl

_LAZY = {
    "list_models": "biozoo.api",
    "info": "biozoo.api",
    "load": "biozoo.api",
    "verify": "biozoo.api",
    "resolve": "biozoo.api",
    "publish": "biozoo.hub",
    "get_registry": "biozoo.registry",
    "set_processor": "biozoo.attention",
    "use_processor": "biozoo.attention",
    "explain": "biozoo.attention",
}

__all__ = ["__version__", "hookimpl", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'biozoo' has no attribute {name!r}")
