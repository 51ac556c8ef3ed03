"""Static declarations a plugin hands to the registry.

They are plain data: a name, a kind and a ``"module:attr"`` target string.
Nothing here imports the target, so listing what a plugin offers never
imports torch or the plugin's model code. The target is imported on first
use by :func:`resolve_target`.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from biozoo.errors import PluginError

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z0-9][a-z0-9_\-]*$")
_TARGET_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class ComponentKind(StrEnum):
    """What role a component plays; assembly checks a slot gets the right kind."""

    ARCHITECTURE = "architecture"
    ENCODER = "encoder"
    DECODER = "decoder"
    HEAD = "head"
    POSITIONAL_ENCODING = "positional_encoding"
    ATTENTION_PROCESSOR = "attention_processor"


def _check_name(name: str, what: str) -> None:
    if not _NAME_RE.match(name):
        namespace, dot, rest = name.partition(".")
        fixed = re.sub(r"[^a-z0-9_]", "_", namespace.lower()).lstrip("_0123456789")
        if dot and fixed and fixed != namespace and _NAME_RE.match(f"{fixed}.{rest}"):
            hint = (  # a hyphenated plugin name: the namespace is the entry-point name, so that is what to rename
                f"a namespace is lower-case letters, digits and '_': name the component '{fixed}.{rest}' and the "
                f"plugin's entry point {fixed!r}"
            )
        else:
            hint = "use lower-case 'plugin.component_name', e.g. 'scgpt.gene_encoder'"
        raise PluginError(f"{what} name {name!r} is not of the form 'namespace.name'", hint)


def _check_target(target: str, what: str) -> None:
    if not _TARGET_RE.match(target):
        raise PluginError(
            f"{what} target {target!r} is not of the form 'package.module:attribute'",
            "point at the object lazily, e.g. 'biozoo_scgpt.model:GeneEncoder'",
        )


def _aliases(aliases: Any, name: str, what: str) -> tuple[str, ...]:
    """Aliases as a tuple of strings, none equal to the name itself."""
    if isinstance(aliases, str) or not isinstance(aliases, list | tuple):
        raise PluginError(f"{what} {name!r}: aliases must be a list of former names, got {aliases!r}")
    if name in aliases:
        raise PluginError(f"{what} {name!r} lists itself among its aliases")
    return tuple(aliases)


@dataclass(frozen=True)
class ComponentDecl:
    """A component class (encoder, head, ...) a plugin provides, imported lazily."""

    name: str
    kind: ComponentKind
    target: str
    description: str = ""
    #: former names that still resolve, with a deprecation warning (rename without breaking published manifests)
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_name(self.name, "component")
        _check_target(self.target, f"component {self.name!r}")
        object.__setattr__(self, "kind", ComponentKind(self.kind))
        object.__setattr__(self, "aliases", _aliases(self.aliases, self.name, "component"))
        for alias in self.aliases:
            _check_name(alias, f"component {self.name!r}: alias")


@dataclass(frozen=True)
class ProcessorDecl:
    """An attention processor (a kernel ``(q, k, v, call) -> out``), imported lazily.

    Processor names are short (``eager``, ``sdpa``, ``flash``) because users type
    them; ``priority`` orders the candidates ``auto`` considers. ``auto=True`` is
    the plugin's attestation that the kernel passes the conformance suite
    (``biozoo_attention.conformance.check_kernel``) in its CI; without it the
    kernel runs only when named, so unverified third-party code never replaces
    ``sdpa`` silently.
    """

    name: str
    target: str
    description: str = ""
    priority: int = 0
    auto: bool = False
    aliases: tuple[str, ...] = ()  #: former names that still resolve, with a deprecation warning

    def __post_init__(self) -> None:
        for name in (self.name, *_aliases(self.aliases, self.name, "processor")):
            if not isinstance(name, str) or not re.match(r"^[a-z][a-z0-9_\-]*$", name):
                raise PluginError(f"processor name {name!r} must be lower-case letters, digits, '_' or '-'")
        object.__setattr__(self, "aliases", _aliases(self.aliases, self.name, "processor"))
        _check_target(self.target, f"processor {self.name!r}")


@dataclass(frozen=True)
class ConverterDecl:
    """A converter from a reference checkpoint format (``zoo convert NAME``)."""

    name: str
    target: str
    description: str = ""

    def __post_init__(self) -> None:
        _check_target(self.target, f"converter {self.name!r}")


@dataclass(frozen=True)
class TaskDecl:
    """A task implementation (``embed``, ``annotate``, ...) for an architecture."""

    task: str
    architecture: str
    target: str
    description: str = ""

    def __post_init__(self) -> None:
        _check_target(self.target, f"task {self.task!r}")


@dataclass(frozen=True)
class FolderFormatDecl:
    """A foreign model-folder layout a plugin loads as it is, with no conversion step.

    Recognising a folder is data, so it imports nothing: ``marker`` is a JSON file the
    folder must hold and ``match`` the top-level ``key: value`` pairs it must contain
    (``None`` = the key only has to be present). Only a folder that matched is handed to
    ``target(folder) -> LocatedManifest``, which describes it as an ordinary manifest.
    """

    name: str
    marker: str
    match: tuple[tuple[str, Any], ...]
    target: str
    description: str = ""

    def __post_init__(self) -> None:
        if not re.match(r"^[a-z][a-z0-9_\-]*$", self.name):
            raise PluginError(f"folder format name {self.name!r} must be lower-case letters, digits, '_' or '-'")
        if "/" in self.marker or "\\" in self.marker or not self.marker.endswith(".json"):
            raise PluginError(f"folder format {self.name!r}: marker {self.marker!r} must be a JSON file name")
        if isinstance(self.match, dict):
            object.__setattr__(self, "match", tuple(self.match.items()))
        if not self.match:
            raise PluginError(f"folder format {self.name!r} needs at least one 'match' key to recognise folders")
        _check_target(self.target, f"folder format {self.name!r}")

    def matches(self, data: Any) -> bool:
        """Whether parsed marker JSON has every ``match`` key (and value, unless None)."""
        if not isinstance(data, dict):
            return False
        return all(key in data and (value is None or data[key] == value) for key, value in self.match)

    def describe(self) -> str:
        wants = ", ".join(f"{k}={v!r}" if v is not None else k for k, v in self.match)
        return f"{self.name} ({self.marker} with {wants})"


@dataclass(frozen=True)
class PluginSpec:
    """Everything one plugin declares; built from its hook implementations."""

    name: str
    components: tuple[ComponentDecl, ...] = ()
    processors: tuple[ProcessorDecl, ...] = ()
    converters: tuple[ConverterDecl, ...] = ()
    tasks: tuple[TaskDecl, ...] = ()
    manifests: tuple[Path, ...] = field(default=())
    folder_formats: tuple[FolderFormatDecl, ...] = ()


def resolve_target(target: str) -> Any:
    """Import ``"package.module:attr"`` and return the attribute."""
    module_name, _, attr_path = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr_path.split("."):
            obj = getattr(obj, part)
    except BaseException as exc:  # a plugin's SystemExit at import is its failure, not a request to exit
        from biozoo.plugins.loader import describe_failure

        raise PluginError(
            f"cannot import {target!r}: {describe_failure(exc, skip=__file__)}",
            "the plugin that declares it is broken or out of date; `zoo plugins --check` imports every target",
        ) from exc
    return obj
