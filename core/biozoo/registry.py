"""The registry: every name the installed plugins declare, and who declared it.

Built once per process from plugin declarations (no model code imported).
Conflicts are recorded, not fatal: two plugins claiming one name makes *that*
name unusable, with an error naming both, while everything else keeps working
(``BIOZOO_STRICT=1`` makes unresolved conflicts fatal at build time, and imports
every declared target so that broken model code fails there too). One exception:
a name declared by a first-party plugin (the core and the plugins this project
ships, recognised by their distribution's metadata name) stays theirs. A third
party that also declares ``sdpa``, ``sliced`` or ``scgpt/cls``, or calls itself
``scgpt``, must not change which kernel or model every user gets, or disable it.
Every conflict is shown: ``zoo plugins`` and ``zoo list --kind ...`` name each
claimant, and ``zoo explain`` says when one touched the choice. Models shipped in
the core's ``registry/`` are attributed to the plugin whose architecture they use.
"""

from __future__ import annotations

import contextlib
import difflib
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from biozoo.errors import (
    BiozooDeprecationWarning,
    BiozooError,
    DuplicateNameError,
    ManifestError,
    PluginError,
    UnknownNameError,
)
from biozoo.manifest.io import MANIFEST_NAME, LocatedManifest, read_manifest, read_raw
from biozoo.plugins.declarations import (
    ComponentDecl,
    ComponentKind,
    ConverterDecl,
    FolderFormatDecl,
    ProcessorDecl,
    TaskDecl,
    resolve_target,
)
from biozoo.plugins.hookspecs import HOOKS
from biozoo.plugins.loader import (
    BROKEN,
    DISABLED,
    INCOMPATIBLE,
    PluginStatus,
    discover,
    strict_mode,
)
from biozoo.plugins.loader import first_party as _first_party
from biozoo.tasks import check_task

T = TypeVar("T")
CORE = "core"


@dataclass
class Claim(Generic[T]):
    value: T
    plugin: str


@dataclass
class ModelEntry:
    """A named model as listed: enough to show it without validating or importing anything."""

    id: str
    path: Path
    plugin: str  # who shipped the manifest ("core" for registry/)
    raw: dict[str, Any]

    @property
    def description(self) -> str:
        return str(self.raw.get("description", "")).strip().splitlines()[0] if self.raw.get("description") else ""

    @property
    def needs_plugins(self) -> set[str]:
        names = []
        for key in ("architecture", "preprocessing"):
            ref = self.raw.get(key)
            if isinstance(ref, dict) and isinstance(ref.get("name"), str):
                names.append(ref["name"])
        comps = self.raw.get("components")
        if isinstance(comps, dict):
            names += [c["name"] for c in comps.values() if isinstance(c, dict) and isinstance(c.get("name"), str)]
        return {n.split(".", 1)[0] for n in names}

    @property
    def needs_conversion(self) -> bool:
        return "weights" not in self.raw and "conversion" in self.raw


@dataclass
class _Table(Generic[T]):
    what: str
    claims: dict[str, list[Claim[T]]] = field(default_factory=dict)
    aliases: dict[str, list[Claim[str]]] = field(default_factory=dict)  # former name -> current name
    first_party: set[str] = field(default_factory=lambda: {CORE})  # shared with the registry

    def owner(self, name: str) -> Claim[T] | None:
        """The first-party claim on a name that others claim too (``None``: none, or no single one)."""
        ours = [c for c in self.claims.get(name, []) if c.plugin in self.first_party]
        return ours[0] if len(ours) == 1 else None

    def resolved(self, name: str) -> bool:
        """At most one claim, or exactly one first-party claim among several."""
        claims = self.claims.get(name, [])
        return len(claims) < 2 or self.owner(name) is not None

    def add(self, name: str, value: T, plugin: str) -> None:
        self.claims.setdefault(name, []).append(Claim(value, plugin))

    def add_alias(self, alias: str, name: str, plugin: str) -> None:
        """``alias`` (a former name) resolves to ``name``, with a deprecation warning; a real name always wins."""
        self.aliases.setdefault(alias, []).append(Claim(name, plugin))

    def _via_alias(self, alias: str) -> Claim[T] | None:
        claims = self.aliases.get(alias)
        if not claims:
            return None
        targets = {(c.value, c.plugin) for c in claims}
        if len(targets) > 1:
            ours = [c for c in claims if c.plugin in self.first_party]
            if len({(c.value, c.plugin) for c in ours}) != 1:
                raise DuplicateNameError(
                    f"{self.what} {alias!r} is a former name of "
                    + " and of ".join(f"{c.value!r} ({c.plugin})" for c in claims),
                    "use the current name; `zoo plugins` shows which plugins clash",
                )
            claims = ours
        claim = claims[0]
        warnings.warn(
            f"{self.what} {alias!r} is now called {claim.value!r} (plugin {claim.plugin}); the old name still works "
            f"but will go away: use {claim.value!r}",
            BiozooDeprecationWarning,
            stacklevel=4,
        )
        return self.get(claim.value)

    def conflicts(self) -> dict[str, list[str]]:
        return {n: [c.plugin for c in cs] for n, cs in self.claims.items() if len(cs) > 1}

    def get(self, name: str) -> Claim[T] | None:
        claims = self.claims.get(name)
        if not claims:
            return self._via_alias(name)
        if len(claims) > 1:
            owner = self.owner(name)
            if owner is not None:  # a first-party name stays first-party
                return owner
            owners = " and ".join(repr(c.plugin) for c in claims)
            raise DuplicateNameError(
                f"{self.what} {name!r} is claimed by both plugins {owners}",
                "uninstall or disable one of them (BIOZOO_DISABLE_PLUGINS=name)",
            )
        return claims[0]

    def names(self) -> list[str]:
        return sorted(self.claims)


class Registry:
    """Names -> declarations, with plugin health; see module docstring."""

    def __init__(self, statuses: Iterable[PluginStatus]) -> None:
        self.plugins: dict[str, PluginStatus] = {}
        self.components: _Table[ComponentDecl] = _Table("component")
        self.processors: _Table[ProcessorDecl] = _Table("attention processor")
        self.converters: _Table[ConverterDecl] = _Table("converter")
        self.tasks: _Table[TaskDecl] = _Table("task")
        self.folder_formats: _Table[FolderFormatDecl] = _Table("folder format")
        self.models: _Table[ModelEntry] = _Table("model")
        self._classes: dict[str, Any] = {}
        self._processors: dict[str, Any] = {}
        self.first_party: set[str] = {CORE}
        for table in self._tables():
            table.first_party = self.first_party
        for status in statuses:
            if status.name in self.plugins and _first_party(self.plugins[status.name]) != _first_party(status):
                ours, theirs = (
                    (self.plugins[status.name], status) if _first_party(self.plugins[status.name]) else
                    (status, self.plugins[status.name])
                )  # fmt: skip
                theirs.status, theirs.spec = "broken", None
                theirs.reason = (
                    f"plugin name {status.name!r} belongs to {ours.distribution} (shipped with biozoo); "
                    f"{theirs.distribution} cannot take it"
                )
                if theirs is self.plugins[status.name]:
                    self._drop(theirs.name)
                    self.plugins[status.name] = ours
                    self._register(ours)
                self.plugins[f"{status.name} ({theirs.distribution})"] = theirs
                continue
            if status.name in self.plugins:
                first = self.plugins[status.name]
                reason = (
                    f"plugin name {status.name!r} is claimed by distributions "
                    f"{first.distribution!r} and {status.distribution!r}"
                )
                status.status, status.reason, status.spec = "broken", reason, None
                first.status, first.reason, first.spec = "broken", reason, None
                self._drop(first.name)
                self.plugins[f"{status.name} ({status.distribution})"] = status
                if strict_mode():
                    raise PluginError(reason, "uninstall one of the two distributions")
                continue
            self.plugins[status.name] = status
            self._register(status)
        self.processor_clashes = {  # what `zoo explain` reports with every attention decision
            name: "claimed by " + " and ".join(c.plugin for c in claims) + self._used_note(self.processors, name)
            for name, claims in self.processors.claims.items()
            if len(claims) > 1
        }
        if strict_mode():
            for table in self._tables():
                for name, owners in table.conflicts().items():
                    if not table.resolved(name):
                        raise DuplicateNameError(f"{table.what} {name!r} is claimed by plugins {' and '.join(owners)}")
            self._check_targets()

    def _check_targets(self) -> None:
        """Strict mode: import every target the healthy plugins declare, so broken model code fails now.

        This imports torch and every plugin's model code (seconds, not the listing budget); assembling
        the plugins' manifests and running their test vectors is left to ``zoo plugins --check``.
        """
        from biozoo.plugins.check import FAILED, target_checks

        failed = [
            (name, check)
            for name, status in self.plugins.items()
            if status.healthy
            for check in target_checks(self, name)
            if check.status == FAILED
        ]
        if failed:
            names = sorted({name for name, _ in failed})
            command = "zoo plugins --check" + (f" {names[0]}" if len(names) == 1 else "")
            raise PluginError(
                f"{len(failed)} declared target(s) are broken: "
                + "; ".join(_failed_target(self.plugins[name], check) for name, check in failed),
                f"`{command}` lists every check with its cause; fix or reinstall the plugin",
            )

    def _register(self, status: PluginStatus) -> None:
        if _first_party(status):
            self.first_party.add(status.name)
        if status.spec is not None:
            self._add(status)

    def _used_note(self, table: _Table[Any], name: str) -> str:
        owner = table.owner(name)
        if owner is None:
            return ": not used"
        return ": the core's kernel is used" if owner.plugin == CORE else f": the first-party {owner.plugin}'s is used"

    def _tables(self) -> tuple[_Table[Any], ...]:
        return (self.components, self.processors, self.converters, self.tasks, self.folder_formats, self.models)

    def table(self, field: str) -> _Table[Any]:
        """The table holding a hook's declarations, by its PluginSpec field (``HOOKS``)."""
        return getattr(self, field)

    def _drop(self, plugin: str) -> None:
        for table in self._tables():
            for claims in (table.claims, table.aliases):
                for name in list(claims):
                    claims[name] = [c for c in claims[name] if c.plugin != plugin]  # type: ignore[misc]
                    if not claims[name]:
                        del claims[name]

    def _add(self, status: PluginStatus) -> None:
        spec = status.spec
        assert spec is not None
        for hook in HOOKS:  # each declaration into its table, by its name
            if hook.key is not None:
                table = self.table(hook.field)
                for decl in getattr(spec, hook.field):
                    table.add(hook.key(decl), decl, spec.name)
                    for alias in getattr(decl, "aliases", ()):
                        table.add_alias(alias, hook.key(decl), spec.name)
        for path in spec.manifests:
            for manifest_path in _manifest_files(Path(path)):
                raw = read_raw(manifest_path)
                model_id = raw.get("id")
                if not isinstance(model_id, str):
                    model_id = f"(invalid)/{manifest_path.parent.name}"
                owner = _architecture_plugin(raw) if spec.name == CORE else spec.name
                self.models.add(model_id, ModelEntry(model_id, manifest_path, owner, raw), owner)
                aliases = raw.get("aliases")
                for alias in aliases if isinstance(aliases, list) else []:
                    if isinstance(alias, str):
                        self.models.add_alias(alias, model_id, owner)

    # -- conflicts -------------------------------------------------------------

    def conflict_note(self, table: _Table[Any], name: str, plugin: str) -> str:
        """What ``plugin`` should know about its claim on ``name`` ("" when it is the only claimant)."""
        owners = [c.plugin for c in table.claims.get(name, [])]
        if plugin not in owners or len(owners) < 2:
            return ""
        others = list(owners)
        others.remove(plugin)
        note = f"{table.what} {name!r} also claimed by {' and '.join(others)}"
        owner = table.owner(name)
        if owner is not None:
            whose = "the core's" if owner.plugin == CORE else f"the first-party {owner.plugin}'s"
            used = f"; {whose} is used"
            return note + (used if plugin == owner.plugin else used + ", this one never runs")
        return note + "; unusable until one is removed"

    def listing(self, table: _Table[T], fields: Callable[[T], dict[str, Any]]) -> list[dict[str, Any]]:
        """One row per claim, so a name claimed twice is listed twice, each with its ``conflict`` note."""
        return [
            {"name": name, "plugin": c.plugin, **fields(c.value), "conflict": self.conflict_note(table, name, c.plugin)}
            for name, claims in table.claims.items()
            for c in claims
        ]

    def plugin_warnings(self, plugin: str) -> list[str]:
        """Every name ``plugin`` claims that another plugin claims too."""
        return [
            self.conflict_note(table, name, plugin)
            for table in self._tables()
            for name, claims in table.claims.items()
            if len(claims) > 1 and any(c.plugin == plugin for c in claims)
        ]

    # -- plugins ---------------------------------------------------------------

    def plugin_status(self, plugin: str) -> PluginStatus | None:
        """The installed plugin a namespace refers to: its own, or one whose name differs only by '-'/'_'/case.

        A plugin whose entry point is ``gene-mini`` is what ``gene_mini.encoder`` means: calling it
        "not installed" (and "install it") would send its author after the wrong fix.
        """
        if plugin in self.plugins:
            return self.plugins[plugin]
        near = [s for s in self.plugins.values() if _normal(s.name) == _normal(plugin)]
        return near[0] if len(near) == 1 else None

    def plugin_problem(self, plugin: str) -> str | None:
        """Why a plugin's names cannot be used, or None when it is healthy."""
        status = self.plugin_status(plugin)
        if status is None:
            return f"plugin {plugin!r} is not installed"
        if not status.healthy:
            return f"{status.label} is {status.status}: {status.reason}"
        return None

    def plugin_fix(self, plugin: str) -> str:
        """What to do about :meth:`plugin_problem`: installing helps only a plugin that is not installed."""
        status = self.plugin_status(plugin)
        if status is None:
            return f"install it (the convention is `pip install biozoo-{plugin}`), then check `zoo plugins`"
        plugin = status.name
        if status.status == DISABLED:
            return (
                f"it is turned off by the environment: add {plugin} to BIOZOO_PLUGINS or remove it from "
                "BIOZOO_DISABLE_PLUGINS (or unset both)"
            )
        if status.status == INCOMPATIBLE:
            return f"upgrade {status.distribution} or install a biozoo in its range ({status.core_range})"
        return f"`zoo plugins --check {plugin}` shows why; reinstall {status.distribution} or report it to its authors"

    def import_target(self, target: str, plugin: str) -> Any:
        """Import a target ``plugin`` declared; a failure names the plugin and its distribution."""
        try:
            return resolve_target(target)
        except PluginError as exc:
            status = self.plugin_status(plugin)
            raise PluginError(
                f"{status.label if status else repr(plugin)}: {exc.message}",
                f"`zoo plugins --check {plugin}` imports and checks everything it declares; reinstall "
                f"{status.distribution if status else 'it'} or report it to its authors",
            ) from exc.__cause__

    def environment_warnings(self) -> list[str]:
        """Settings that silently change what loads: a BIOZOO_PLUGINS / BIOZOO_DISABLE_PLUGINS name nobody has."""
        import os

        installed = set(self.plugins)
        warnings = []
        for variable in ("BIOZOO_PLUGINS", "BIOZOO_DISABLE_PLUGINS"):
            names = {n.strip() for n in os.environ.get(variable, "").split(",") if n.strip()}
            unknown = sorted(names - installed)
            if unknown:
                warnings.append(
                    f"{variable} names {', '.join(map(repr, unknown))}, which "
                    f"{'is' if len(unknown) == 1 else 'are'} not installed (installed: {', '.join(sorted(installed))})"
                )
        return warnings

    # -- models ----------------------------------------------------------------

    def model_entry(self, model_id: str) -> ModelEntry:
        claim = self.models.get(model_id)
        if claim is None:
            close = difflib.get_close_matches(model_id, self.models.names(), n=3)
            unloaded = self.unloaded_plugins()
            if unloaded:  # its manifest may ship in a plugin that did not load: say which and why
                named = [s for s in unloaded if _normal(model_id.split("/", 1)[0]) in _spellings(s)]
                if named:
                    status = named[0]
                    raise UnknownNameError(
                        f"no model named {model_id!r}: {status.label}, which would list it, is {status.status}"
                        f" ({status.reason}), so none of its models are listed",
                        self.plugin_fix(status.name),
                    )
                raise UnknownNameError(
                    f"no model named {model_id!r}; the models of "
                    + ", ".join(f"{s.label} ({s.status})" for s in unloaded)
                    + " are not listed because the plugin did not load",
                    (f"did you mean {', '.join(close)}? " if close else "")
                    + "`zoo plugins` says why each plugin did not load",
                )
            raise UnknownNameError(
                f"no model named {model_id!r}",
                f"did you mean {', '.join(close)}?"
                if close
                else "`zoo list` shows every model; a path or hf://ORG/NAME@REV also works",
            )
        return claim.value

    def unloaded_plugins(self) -> list[PluginStatus]:
        """Installed plugins whose manifests are missing from the listing because they did not load."""
        return [s for s in self.plugins.values() if s.status in (BROKEN, INCOMPATIBLE, DISABLED)]

    def available(self, entry: ModelEntry) -> tuple[bool, str]:
        if "_error" in entry.raw or entry.id.startswith("(invalid)"):
            return False, f"unreadable manifest {entry.path}: {entry.raw.get('_error', 'no id')}"
        for plugin in sorted(entry.needs_plugins):
            problem = self.plugin_problem(plugin)
            if problem:
                return False, problem
        if entry.needs_conversion:
            return False, "needs `zoo convert` (see `zoo info`)"
        return True, ""

    def manifest(self, model_id: str) -> LocatedManifest:
        return read_manifest(self.model_entry(model_id).path)

    # -- components ------------------------------------------------------------

    def component_decl(self, name: str) -> ComponentDecl:
        claim = self.components.get(name)
        if claim is None:
            plugin = name.split(".", 1)[0]
            problem = self.plugin_problem(plugin)
            if problem:
                raise UnknownNameError(f"component {name!r} is not available: {problem}", self.plugin_fix(plugin))
            close = difflib.get_close_matches(name, self.components.names(), n=3)
            raise UnknownNameError(
                f"plugin {plugin!r} has no component {name!r}",
                f"did you mean {', '.join(close)}?" if close else f"`zoo list --kind components {plugin}.*` lists them",
            )
        return claim.value

    def component_class(self, name: str, expected: ComponentKind | None = None) -> Any:
        decl = self.component_decl(name)
        if expected is not None and decl.kind != expected:
            raise PluginError(f"component {name!r} is a {decl.kind.value}, not a {expected.value}")
        if decl.name not in self._classes:  # an alias resolved to decl.name: warned once, in component_decl
            claim = self.components.get(decl.name)
            assert claim is not None  # component_decl found it
            cls = self.import_target(decl.target, claim.plugin)
            check_kind(decl, cls)
            self._classes[decl.name] = cls
        return self._classes[decl.name]

    # -- attention processors -------------------------------------------------

    def processor(self, name: str) -> Any:
        if name not in self._processors:
            claim = self.processors.get(name)  # a first-party name stays first-party
            if claim is None:
                close = difflib.get_close_matches(name, self.processors.names(), n=3)
                raise UnknownNameError(
                    f"no attention processor named {name!r}",
                    f"available: {', '.join(self.processors.names())}"
                    + (f"; did you mean {', '.join(close)}?" if close else ""),
                )
            self._processors[name] = self.processor_instance(claim.value, claim.plugin)
        return self._processors[name]

    def processor_instance(self, decl: ProcessorDecl, plugin: str) -> Any:
        """The kernel a declaration names: the target itself, or an instance of it when it is a class."""
        factory = self.import_target(decl.target, plugin)
        instance = factory() if isinstance(factory, type) else factory
        instance.priority = decl.priority
        instance.auto_eligible = decl.auto
        return instance

    @contextlib.contextmanager
    def processor_override(self, instance: Any) -> Iterator[None]:
        """Resolve ``instance.name`` to ``instance`` inside the block (conformance, tests); ``auto`` unaffected."""
        self.processors_by_priority()
        missing = object()
        previous = self._processors.get(instance.name, missing)
        self._processors[instance.name] = instance
        try:
            yield
        finally:
            if previous is missing:
                del self._processors[instance.name]
            else:
                self._processors[instance.name] = previous

    def processors_by_priority(self) -> list[Any]:
        """Processors ``auto`` may choose from, best first; ones that fail to import are left out (and noted)."""
        if not hasattr(self, "_by_priority"):
            usable, self.processor_problems = [], {}
            for name in self.processors.claims:
                if not self.processors.resolved(name):
                    self.processor_problems[name] = self.processor_clashes[name]
                    continue
                try:
                    usable.append(self.processor(name))
                except BiozooError as exc:
                    self.processor_problems[name] = exc.message
            self._by_priority = sorted(usable, key=lambda p: -p.priority)
        return self._by_priority

    # -- converters and tasks --------------------------------------------------

    def converter(self, name: str) -> Any:
        claim = self.converters.get(name)
        if claim is None:
            # converters are named after their plugin by convention: an installed but unusable one says why
            problem = self.plugin_problem(name) if name in self.plugins else None
            raise UnknownNameError(
                f"no converter named {name!r}" + (f" ({problem})" if problem else ""),
                self.plugin_fix(name)
                if problem
                else f"available: {', '.join(self.converters.names()) or 'none'} (`zoo list --kind converters`)",
            )
        return self.import_target(claim.value.target, claim.plugin)

    def task(self, task: str, architecture: str) -> Any:
        claim = self.tasks.get(f"{task}:{architecture}")
        if claim is None:
            able = [n.split(":")[1] for n in self.tasks.names() if n.startswith(task + ":")]
            raise UnknownNameError(
                f"architecture {architecture!r} does not support the task {task!r}",
                f"models with architectures {', '.join(able)} do" if able else f"no installed plugin provides {task!r}",
            )
        fn = self.import_target(claim.value.target, claim.plugin)
        check_task(task, fn, self.task_label(claim.value, claim.plugin))
        return fn

    def task_label(self, decl: TaskDecl, plugin: str) -> str:
        """How errors name a task: its declaration, its target and the plugin with its distribution."""
        status = self.plugin_status(plugin)
        return f"the {decl.task} task of {decl.architecture} ({decl.target}, {status.label if status else plugin})"

    # -- foreign folders -------------------------------------------------------

    def read_foreign_folder(self, folder: Path) -> LocatedManifest:
        """A folder without ``manifest.yaml`` that an installed plugin's folder format recognises."""
        import json

        markers: dict[str, Any] = {}
        for name in self.folder_formats.names():
            claim = self.folder_formats.get(name)
            assert claim is not None
            fmt = claim.value
            if fmt.marker not in markers:
                try:
                    markers[fmt.marker] = json.loads((folder / fmt.marker).read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    markers[fmt.marker] = None
            if fmt.matches(markers[fmt.marker]):
                return self.import_target(fmt.target, claim.plugin)(folder)
        known = "; ".join(c[0].value.describe() for c in self.folder_formats.claims.values()) or "none installed"
        raise ManifestError(
            f"{folder} has no {MANIFEST_NAME}, and no installed plugin recognises it as another model format",
            f"formats loadable as they are: {known}. Otherwise convert it (`zoo convert`) or write a manifest",
        )


def check_kind(decl: ComponentDecl, cls: Any) -> None:
    """A component class's own ``kind`` (when it has one) must be the kind its declaration gives."""
    declared_kind = getattr(cls, "kind", None)
    if declared_kind is not None and declared_kind != decl.kind:
        raise PluginError(
            f"component {decl.name!r} is declared as {decl.kind.value} but its class says {declared_kind}",
            "fix the plugin's biozoo_components() declaration",
        )


def _failed_target(status: PluginStatus, check: Any) -> str:
    """One failed check for strict mode's error, naming the plugin once."""
    where = "" if check.cause.startswith(status.label) else f"{status.label}: "
    return f"{where}{check.subject}: {check.cause}"


def _normal(name: str) -> str:
    """A name as pip compares names: case, '-', '_' and '.' do not matter."""
    return name.lower().replace("-", "_").replace(".", "_")


def _spellings(status: PluginStatus) -> set[str]:
    """How a plugin's models may be prefixed: its name, or its distribution's name (with or without biozoo-)."""
    dist = _normal(status.distribution)
    return {_normal(status.name), dist, dist.removeprefix("biozoo_")}


def _manifest_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob(MANIFEST_NAME) if p.is_file())
    return []


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry(discover())
    return _REGISTRY


def reset_registry() -> None:
    """Forget the registry (tests, or after installing a plugin in-process)."""
    global _REGISTRY
    _REGISTRY = None


def _architecture_plugin(raw: dict[str, Any]) -> str:
    """The plugin a manifest's architecture belongs to (``scgpt.transformer_model`` -> ``scgpt``); else the core."""
    arch = raw.get("architecture")
    name = arch.get("name") if isinstance(arch, dict) else None
    return name.split(".", 1)[0] if isinstance(name, str) and "." in name else CORE
