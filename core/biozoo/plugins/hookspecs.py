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
"""

from __future__ import annotations

from pathlib import Path

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
