"""The hooks a biozoo plugin implements.

Every hook returns *declarations* (plain data, see
:mod:`biozoo.plugins.declarations`), never live objects, so the registry can be
built without importing torch or any model code. A plugin module implements
the hooks it needs with ``@biozoo.hookimpl`` and is exposed through the
``biozoo.plugins`` entry-point group::

    [project.entry-points."biozoo.plugins"]
    scgpt = "biozoo_scgpt.plugin"

The entry-point name is the plugin's namespace: every component it declares
must be called ``<namespace>.<something>``.

:data:`HOOKS` is the one table that ties each hook to what it returns, the
:class:`~biozoo.plugins.declarations.PluginSpec` field that holds it and the
registry table that names it; the loader, the registry and ``zoo plugins
--check`` are driven by it, so a new hook is this function, its declaration
class and one row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from biozoo.plugins.declarations import ComponentDecl, ConverterDecl, FolderFormatDecl, ProcessorDecl, TaskDecl

PROJECT = "biozoo"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def biozoo_components() -> list[ComponentDecl]:
    """Components (architectures, encoders, decoders, heads, positional encodings)."""


@hookspec
def biozoo_attention_processors() -> list[ProcessorDecl]:
    """Attention processors (kernels) that every model in the zoo can switch to."""


@hookspec
def biozoo_converters() -> list[ConverterDecl]:
    """Converters from reference checkpoint formats, run by ``zoo convert NAME``."""


@hookspec
def biozoo_tasks() -> list[TaskDecl]:
    """Task implementations (``embed``, ``annotate``, ``generate``) per architecture."""


@hookspec
def biozoo_manifests() -> list[Path]:
    """Manifest files (or folders holding ``manifest.yaml``) of named models."""


@hookspec
def biozoo_folder_formats() -> list[FolderFormatDecl]:
    """Foreign model-folder layouts (another library's ``save_pretrained``) loadable as they are."""


@dataclass(frozen=True)
class Hook:
    """One hook: what its items are, where the loader puts them and how the registry names them."""

    name: str  #: the hook function, e.g. ``biozoo_components``
    field: str  #: the PluginSpec field (and the Registry table attribute) holding its items
    item: type  #: what each returned item must be
    what: str  #: what one item is called in messages and listings
    key: Callable[[Any], str] | None  #: an item's registry name; None: the registry reads the items itself


#: every hook, in the order plugins' declarations are registered
HOOKS: tuple[Hook, ...] = (
    Hook("biozoo_components", "components", ComponentDecl, "component", lambda d: d.name),
    Hook("biozoo_attention_processors", "processors", ProcessorDecl, "processor", lambda d: d.name),
    Hook("biozoo_converters", "converters", ConverterDecl, "converter", lambda d: d.name),
    Hook("biozoo_tasks", "tasks", TaskDecl, "task", lambda d: f"{d.task}:{d.architecture}"),
    Hook("biozoo_folder_formats", "folder_formats", FolderFormatDecl, "folder format", lambda d: d.name),
    Hook("biozoo_manifests", "manifests", Path, "manifests", None),  # files read into the models table
)
