"""Discover plugins through entry points, check them, and quarantine the broken.

The rules, learned from llm and pytest where one bad plugin bricks the host:

* a plugin whose declared core range excludes this core is reported as
  ``incompatible`` *before* its module is imported;
* a plugin that fails to import, fails hook validation or raises inside a
  hook is reported as ``broken`` with the reason, and everything else works,
  whatever it raises: ``SystemExit`` and ``KeyboardInterrupt`` from a plugin's
  import are its failure, not a request to end the command;
* ``BIOZOO_STRICT=1`` turns both into errors (for plugin developers and CI);
* ``BIOZOO_PLUGINS=a,b`` loads only those plugins, ``BIOZOO_DISABLE_PLUGINS=c``
  skips some; neither touches the built-in ``core`` plugin.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from biozoo._version import __version__ as CORE_VERSION
from biozoo.errors import PluginError
from biozoo.plugins import hookspecs
from biozoo.plugins.declarations import (
    ComponentDecl,
    ConverterDecl,
    FolderFormatDecl,
    PluginSpec,
    ProcessorDecl,
    TaskDecl,
)

ENTRY_POINT_GROUP = "biozoo.plugins"
CORE_DISTRIBUTION = "biozoo"

OK, BROKEN, INCOMPATIBLE, DISABLED = "ok", "broken", "incompatible", "disabled"


@dataclass
class PluginStatus:
    """What ``zoo plugins`` shows for one plugin."""

    name: str
    distribution: str
    version: str
    core_range: str
    status: str = OK
    reason: str = ""
    spec: PluginSpec | None = field(default=None, repr=False)

    @property
    def healthy(self) -> bool:
        return self.status == OK

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "core_range": self.core_range,
            "status": self.status,
            "reason": self.reason,
        }


def strict_mode() -> bool:
    return os.environ.get("BIOZOO_STRICT", "").lower() in {"1", "true", "yes"}


def core_range_of(dist: metadata.Distribution | None) -> str:
    """The range of core versions a plugin supports: its ``Requires-Dist: biozoo``."""
    if dist is None:
        return ""
    from packaging.requirements import InvalidRequirement, Requirement  # only when plugins exist: keeps listing fast

    for raw in dist.requires or ():
        try:
            req = Requirement(raw)
        except InvalidRequirement:
            continue
        if req.name.lower() == CORE_DISTRIBUTION and not req.marker:
            return str(req.specifier)
    return ""


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _call_hooks(pm: pluggy.PluginManager, plugin: object, name: str) -> PluginSpec:
    """Call one plugin's hook implementations and collect its declarations."""
    collected: dict[str, list[Any]] = {}
    for hook_name in ("components", "attention_processors", "converters", "tasks", "manifests", "folder_formats"):
        caller = getattr(pm.hook, f"biozoo_{hook_name}")
        values: list[Any] = []
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin:
                values.extend(impl.function() or [])
        collected[hook_name] = values
    spec = PluginSpec(
        name=name,
        components=tuple(collected["components"]),
        processors=tuple(collected["attention_processors"]),
        converters=tuple(collected["converters"]),
        tasks=tuple(collected["tasks"]),
        manifests=tuple(collected["manifests"]),
        folder_formats=tuple(collected["folder_formats"]),
    )
    _validate_spec(spec)
    return spec


def _validate_spec(spec: PluginSpec) -> None:
    expected = {
        "components": ComponentDecl,
        "processors": ProcessorDecl,
        "converters": ConverterDecl,
        "tasks": TaskDecl,
        "folder_formats": FolderFormatDecl,
    }
    for attr, cls in expected.items():
        for item in getattr(spec, attr):
            if not isinstance(item, cls):
                raise PluginError(f"hook returned {type(item).__name__} where a {cls.__name__} was expected")
    for comp in spec.components:
        if not comp.name.startswith(spec.name + "."):
            raise PluginError(
                f"component {comp.name!r} is outside the plugin's namespace {spec.name!r}",
                f"rename it to '{spec.name}.{comp.name.split('.', 1)[-1]}'",
            )


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def load_module_plugin(pm: pluggy.PluginManager, module: ModuleType | object, status: PluginStatus) -> PluginStatus:
    """Register an already-imported plugin object and collect its declarations."""
    try:
        pm.register(module, name=status.name)
        status.spec = _call_hooks(pm, module, status.name)
    except BaseException as exc:  # quarantine whatever it raises, see the module docstring
        if pm.is_registered(module):
            pm.unregister(module)
        status.status, status.reason = BROKEN, _describe(exc)
        status.spec = None
        if strict_mode():
            raise PluginError(f"plugin {status.name!r} is broken: {status.reason}") from exc
    return status


def _describe(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def discover() -> list[PluginStatus]:
    """Find, check and load every plugin; the built-in ``core`` plugin comes first."""
    from biozoo import _core_plugin

    pm = _new_manager()
    statuses = [
        load_module_plugin(
            pm,
            _core_plugin,
            PluginStatus(
                name="core", distribution=CORE_DISTRIBUTION, version=CORE_VERSION, core_range=f"=={CORE_VERSION}"
            ),
        )
    ]
    allow, deny = _env_list("BIOZOO_PLUGINS"), _env_list("BIOZOO_DISABLE_PLUGINS") or set()
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist
        status = PluginStatus(
            name=ep.name,
            distribution=dist.name if dist else "?",
            version=dist.version if dist else "?",
            core_range=core_range_of(dist),
        )
        statuses.append(status)
        if ep.name == "core":
            status.status, status.reason = BROKEN, "the name 'core' is reserved for biozoo itself"
            if strict_mode():
                raise PluginError(f"distribution {status.distribution!r}: {status.reason}", "rename its entry point")
            continue
        if (allow is not None and ep.name not in allow) or ep.name in deny:
            status.status, status.reason = DISABLED, "disabled by BIOZOO_PLUGINS / BIOZOO_DISABLE_PLUGINS"
            continue
        if status.core_range and not _supports(status.core_range):
            status.status = INCOMPATIBLE
            status.reason = (
                f"supports biozoo{status.core_range}, this is biozoo {CORE_VERSION}; "
                f"upgrade {status.distribution} or install a matching biozoo"
            )
            if strict_mode():
                raise PluginError(f"plugin {ep.name!r} is incompatible: {status.reason}", "see `zoo plugins`")
            continue
        try:
            module = ep.load()
        except BaseException as exc:  # quarantine whatever it raises, see the module docstring
            status.status, status.reason = BROKEN, _describe(exc)
            if strict_mode():
                raise PluginError(f"plugin {ep.name!r} failed to import: {status.reason}") from exc
            continue
        load_module_plugin(pm, module, status)
    return statuses


def _supports(core_range: str) -> bool:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    return Version(CORE_VERSION) in SpecifierSet(core_range, prereleases=True)
