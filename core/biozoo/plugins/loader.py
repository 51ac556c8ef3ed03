"""Discover plugins through entry points, check them, and quarantine the broken.

The rules, learned from llm and pytest where one bad plugin bricks the host:

* a plugin whose declared core range excludes this core is reported as
  ``incompatible`` *before* its module is imported;
* a plugin that fails to import, fails hook validation (pluggy's
  ``check_pending``: a misspelt hook such as ``biozoo_component`` is an error,
  not a plugin that silently declares nothing) or raises inside a
  hook is reported as ``broken`` with the reason, and everything else works,
  whatever it raises: ``SystemExit`` and ``KeyboardInterrupt`` from a plugin's
  import are its failure, not a request to end the command;
* ``BIOZOO_STRICT=1`` turns both into errors (for plugin developers and CI),
  and the registry then also imports every declared target
  (:func:`biozoo.plugins.check.target_checks`);
* ``BIOZOO_PLUGINS=a,b`` loads only those plugins, ``BIOZOO_DISABLE_PLUGINS=c``
  skips some; neither touches the built-in ``core`` plugin.
"""

from __future__ import annotations

import difflib
import os
import re
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from biozoo._version import __version__ as CORE_VERSION
from biozoo.errors import PluginError
from biozoo.plugins import hookspecs
from biozoo.plugins.declarations import (
    PluginSpec,
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

    @property
    def label(self) -> str:
        """The plugin and the distribution it comes from (read from its metadata), for messages."""
        return f"plugin {self.name!r} ({self.distribution} {self.version})"

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
    """Call one plugin's hook implementations and collect its declarations (one PluginSpec field per hook)."""
    from biozoo.plugins.hookspecs import HOOKS

    collected: dict[str, tuple[Any, ...]] = {}
    for hook in HOOKS:
        values: list[Any] = []
        for impl in getattr(pm.hook, hook.name).get_hookimpls():
            if impl.plugin is plugin:
                values.extend(impl.function() or [])
        for item in values:
            if not isinstance(item, hook.item) and not (hook.item is Path and isinstance(item, str)):
                raise PluginError(
                    f"{hook.name}() returned {type(item).__name__} where a {hook.item.__name__} was expected"
                )
        collected[hook.field] = tuple(Path(v) if hook.item is Path else v for v in values)
    spec = PluginSpec(name=name, **collected)
    _validate_spec(spec)
    return spec


def _validate_spec(spec: PluginSpec) -> None:
    if spec.components and not NAMESPACE_RE.match(spec.name):
        suggestion = namespace_for(spec.name)
        raise PluginError(
            f"the plugin name {spec.name!r} (its entry-point name) cannot prefix component names: a namespace is "
            "lower-case letters, digits and '_'",
            f"rename the entry point to {suggestion!r} in pyproject.toml's [project.entry-points.\"biozoo.plugins\"] "
            f"and name its components '{suggestion}.NAME'",
        )
    for comp in spec.components:
        for name in (comp.name, *comp.aliases):
            if not name.startswith(spec.name + "."):
                raise PluginError(
                    f"component {name!r} is outside the plugin's namespace {spec.name!r}",
                    f"rename it to '{spec.name}.{name.split('.', 1)[-1]}'",
                )


NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9_]*$")  # the part of a component name before the dot


def namespace_for(name: str) -> str:
    """The namespace nearest to a plugin name that the component-name check accepts (``gene-mini`` -> ``gene_mini``)."""
    cleaned = re.sub(r"[^a-z0-9_]", "_", name.lower()).lstrip("_0123456789")
    return cleaned or "plugin"


def _check_hooks(pm: pluggy.PluginManager, plugin: object) -> None:
    """Every hook the plugin implements must be a biozoo hook, and every hook it defines must be marked.

    pluggy registers any ``@hookimpl`` function, whatever its name, so ``biozoo_component`` (no s)
    would declare nothing, silently; ``check_pending`` rejects it. An unmarked ``biozoo_components``
    is not registered at all, so it is looked for by name.
    """
    known = sorted(name for name in vars(pm.hook) if not name.startswith("_") and getattr(pm.hook, name).has_spec())
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        unknown = [
            name
            for name in vars(pm.hook)
            if name not in known
            and not name.startswith("_")
            and any(impl.plugin is plugin for impl in getattr(pm.hook, name).get_hookimpls())
        ]
        name = unknown[0] if unknown else "?"
        close = difflib.get_close_matches(name, known, n=1)
        raise PluginError(
            f"unknown hook {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
            f"a biozoo plugin implements only these hooks: {', '.join(known)} (docs/plugins.md#hooks)",
        ) from exc
    unmarked = [
        name
        for name in known
        if callable(getattr(plugin, name, None))
        and not any(impl.plugin is plugin for impl in getattr(pm.hook, name).get_hookimpls())
    ]
    if unmarked:
        raise PluginError(
            f"{', '.join(unmarked)} {'is' if len(unmarked) == 1 else 'are'} not marked as a hook, so never called",
            "decorate each hook function with @biozoo.plugins.hookimpl",
        )


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def load_module_plugin(pm: pluggy.PluginManager, module: ModuleType | object, status: PluginStatus) -> PluginStatus:
    """Register an already-imported plugin object and collect its declarations."""
    try:
        pm.register(module, name=status.name)
        _check_hooks(pm, module)
        status.spec = _call_hooks(pm, module, status.name)
    except BaseException as exc:  # quarantine whatever it raises, see the module docstring
        if pm.is_registered(module):
            pm.unregister(module)
        status.status, status.reason = BROKEN, describe_failure(exc)
        status.spec = None
        if strict_mode():
            raise PluginError(f"{status.label} is broken: {status.reason}") from exc
    return status


def describe_failure(exc: BaseException, skip: str = "") -> str:
    """``Type: message (at file:line)``: the exception and the line of plugin code that raised it.

    The import machinery's frames (and those of ``skip``, the caller's own file) are left out: the
    line to show is the plugin's, or none when the plugin never ran.
    """
    importlib_dir = f"{os.sep}importlib{os.sep}"
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith("<frozen") and importlib_dir not in f.filename and f.filename != skip
    ]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


#: distributions of this project: the plugins they provide own their names (see biozoo.registry)
FIRST_PARTY_DISTRIBUTIONS = frozenset(
    {"biozoo", "biozoo-attention", "biozoo-scgpt", "biozoo-autoregressive", "biozoo-chroma"}
)


def first_party(status: PluginStatus) -> bool:
    """A plugin from this project's own distributions (their metadata name, never the plugin's own claim)."""
    return _first_party_distribution(status.distribution)


def _first_party_distribution(name: str) -> bool:
    return name.lower().replace("_", "-").replace(".", "-") in FIRST_PARTY_DISTRIBUTIONS


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
    def order(ep: metadata.EntryPoint) -> tuple[bool, str]:  # first-party first: an impostor of its name loses
        return not _first_party_distribution(ep.dist.name if ep.dist else ""), ep.name

    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=order):
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
                raise PluginError(f"{status.label} is incompatible: {status.reason}", "see `zoo plugins`")
            continue
        try:
            module = ep.load()
        except BaseException as exc:  # quarantine whatever it raises, see the module docstring
            status.status, status.reason = BROKEN, describe_failure(exc)
            if strict_mode():
                raise PluginError(f"{status.label} failed to import: {status.reason}") from exc
            continue
        load_module_plugin(pm, module, status)
    return statuses


def _supports(core_range: str) -> bool:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    return Version(CORE_VERSION) in SpecifierSet(core_range, prereleases=True)
