"""Plugin machinery: hook specifications, static declarations, discovery."""

from biozoo.plugins.declarations import (
    ComponentDecl,
    ComponentKind,
    ConverterDecl,
    FolderFormatDecl,
    PluginSpec,
    ProcessorDecl,
    TaskDecl,
    resolve_target,
)
from biozoo.plugins.hookspecs import hookimpl

__all__ = [
    "ComponentDecl",
    "ComponentKind",
    "ConverterDecl",
    "FolderFormatDecl",
    "PluginSpec",
    "ProcessorDecl",
    "TaskDecl",
    "hookimpl",
    "resolve_target",
]
