"""``zoo plugins --check``: everything a plugin declares, imported, checked and run.

Listing never imports a plugin's model code (that keeps ``zoo list`` fast), so an
import error in a model module stays invisible until someone loads a model. This
module makes the opposite trade: it imports every declared target and checks its
kind, assembles every manifest the plugin answers for on the meta device (the
kinds, configs and ports ``zoo load`` checks), and runs the test vectors whose
weights are on this machine (``zoo verify``). ``BIOZOO_STRICT=1`` runs the first
part, :func:`target_checks`, whenever the registry is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from biozoo.errors import BiozooError, PluginError, UnknownNameError
from biozoo.plugins.declarations import ComponentDecl, ComponentKind, ProcessorDecl, TaskDecl
from biozoo.plugins.loader import DISABLED, describe_failure

if TYPE_CHECKING:
    from biozoo.registry import ModelEntry, Registry

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass(frozen=True)
class Check:
    """One row of the report: what was checked, on what, and the cause when it failed or was skipped."""

    subject: str  # "component good.head", "model good/tiny", "plugin"
    check: str  # "import, kind", "assemble (meta)", "test vectors", ...
    status: str
    cause: str = ""


@dataclass
class PluginReport:
    """Every check of one plugin; ``ok`` when none failed (skipped checks do not fail it)."""

    plugin: str
    label: str  # the plugin and its distribution, as messages name them
    status: str  # what the loader made of it (ok, broken, incompatible, disabled)
    checks: list[Check] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAILED]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {
            "plugin": self.plugin,
            "label": self.label,
            "status": self.status,
            "ok": self.ok,
            "checks": [asdict(c) for c in self.checks],
        }


class _Skip(Exception):
    """Raised by a check that cannot run here (no weights on this machine); its message is the cause."""


def _attempt(subject: str, check: str, action: Callable[[], str | None], *, hint: bool = True) -> Check:
    """Run one check; whatever plugin code raises is its cause, never the end of the report."""
    try:
        note = action()
    except _Skip as skip:
        return Check(subject, check, SKIPPED, str(skip))
    except BiozooError as exc:
        cause = exc.message + (f" (hint: {exc.hint})" if hint and exc.hint else "")
        return Check(subject, check, FAILED, cause)
    except (Exception, SystemExit) as exc:  # plugin code: a bug in it is a failed check, with its file:line
        return Check(subject, check, FAILED, describe_failure(exc))
    return Check(subject, check, OK, note or "")


# -- declared targets (what BIOZOO_STRICT=1 checks) --------------------------------------------------------------


def target_checks(registry: Registry, plugin: str) -> list[Check]:
    """Import every target ``plugin`` declares and check it is what its declaration says; no model is built."""
    from biozoo.plugins.hookspecs import HOOKS

    spec = registry.plugins[plugin].spec
    if spec is None:
        return []
    return [
        _attempt(
            f"{hook.what} {hook.key(decl) if hook.key else decl}",
            _TARGET_CHECKS[hook.field][0],
            lambda decl=decl, run=_TARGET_CHECKS[hook.field][1]: run(registry, decl, plugin),
            hint=_TARGET_CHECKS[hook.field][2],
        )
        for hook in HOOKS
        for decl in getattr(spec, hook.field)
    ]


def _component(registry: Registry, decl: ComponentDecl, plugin: str) -> str:
    from biozoo.assembly import _accepted
    from biozoo.components.base import Architecture, Component, Slot
    from biozoo.registry import check_kind

    cls = registry.import_target(decl.target, plugin)
    if not (isinstance(cls, type) and issubclass(cls, Component)):
        raise PluginError(f"{decl.target} is not a subclass of biozoo.components.base.Component")
    if getattr(cls, "kind", None) is None:
        raise PluginError(f"{decl.target} has no 'kind'; give the class kind = ComponentKind.{decl.kind.name}")
    check_kind(decl, cls)
    accepted, _, var_kw = _accepted(cls, set())
    if decl.kind != ComponentKind.ARCHITECTURE:
        return ""
    if not issubclass(cls, Architecture):
        raise PluginError(f"{decl.target} is declared an architecture but is not a biozoo Architecture subclass")
    slots = getattr(cls, "slots", {})
    bad = [name for name, slot in slots.items() if not isinstance(slot, Slot)]
    if bad:
        raise PluginError(f"{decl.target}.slots: {', '.join(bad)} must be Slot(kind, ...)")
    unplaced = [name for name in slots if name not in accepted and not var_kw]
    if unplaced:
        raise PluginError(
            f"{decl.target}.__init__ takes no argument for slot(s) {', '.join(unplaced)}, which assembly passes"
        )
    return f"{len(slots)} slot(s)"


def _processor(registry: Registry, decl: ProcessorDecl, plugin: str) -> str:
    instance = registry.processor_instance(decl, plugin)
    missing = [attr for attr in ("caps", "available") if not hasattr(instance, attr)]
    if missing or not callable(instance):
        raise PluginError(
            f"{decl.target} is not an attention processor: it lacks {', '.join(missing) or '__call__'}",
            "see biozoo.attention.contract.AttentionProcessor",
        )
    usable = instance.available()
    if not (isinstance(usable, tuple) and len(usable) == 2 and isinstance(usable[0], bool)):
        raise PluginError(f"{decl.target}.available() returned {usable!r}, not (usable: bool, why_not: str)")
    return "" if usable[0] else f"not usable here: {usable[1]}"


def _callable(registry: Registry, target: str, plugin: str) -> str:
    if not callable(registry.import_target(target, plugin)):
        raise PluginError(f"{target} is not callable")
    return ""


def _task(registry: Registry, decl: TaskDecl, plugin: str) -> str:
    from biozoo.tasks import check_task

    check_task(decl.task, registry.import_target(decl.target, plugin), registry.task_label(decl, plugin))
    _callable(registry, decl.target, plugin)
    claims = registry.components.claims.get(decl.architecture, [])
    if not any(c.value.kind == ComponentKind.ARCHITECTURE for c in claims):
        raise PluginError(
            f"task {decl.task!r} is for {decl.architecture!r}, which no plugin declares as an architecture"
        )
    return ""


def _manifest_path(path: Path) -> str:
    from biozoo.manifest.io import MANIFEST_NAME

    if not path.is_absolute():
        raise PluginError(f"{path} is relative, so it depends on the working directory", "return an absolute path")
    if not path.exists():
        raise PluginError(f"{path} does not exist, so its models are never listed")
    if path.is_dir() and not any(path.rglob(MANIFEST_NAME)):
        raise PluginError(f"{path} holds no {MANIFEST_NAME}")
    return ""


#: per hook (its PluginSpec field): what ``target_checks`` checks, how, and whether a failure shows its hint
_TARGET_CHECKS: dict[str, tuple[str, Callable[[Registry, Any, str], str], bool]] = {
    "components": ("import, kind", _component, False),
    "processors": ("import, contract", _processor, False),
    "converters": ("import", lambda registry, decl, plugin: _callable(registry, decl.target, plugin), False),
    "tasks": ("import, contract", _task, True),
    "folder_formats": ("import", lambda registry, decl, plugin: _callable(registry, decl.target, plugin), False),
    "manifests": ("exists", lambda registry, path, plugin: _manifest_path(Path(path)), True),
}


# -- the plugin's models --------------------------------------------------------------------------------------


def models_of(registry: Registry, plugin: str) -> list[ModelEntry]:
    """The manifests a plugin answers for: those it ships, and those of the core's ``registry/`` that use it.

    First-party plugins' manifests ship in the core's ``registry/``; they are checked with the
    plugin whose components they use, and the core answers for the rest.
    """
    from biozoo.registry import CORE

    entries = []
    for claims in registry.models.claims.values():
        for claim in claims:
            uses = claim.value.needs_plugins - {CORE}
            owners = uses if claim.plugin == CORE and uses else {claim.plugin}
            if plugin in owners:
                entries.append(claim.value)
    return entries


def model_checks(registry: Registry, entry: ModelEntry, *, vectors: bool = True) -> list[Check]:
    """Assemble one manifest on the meta device, then run its test vectors if its weights are here."""
    from biozoo.assembly import assemble
    from biozoo.manifest.io import read_manifest

    subject = f"model {entry.id}"
    located = []

    def build() -> str:
        located.append(read_manifest(entry.path))
        model = assemble(located[0].manifest, registry, device="meta")
        return f"{sum(p.numel() for p in model.parameters()):,} parameters"

    checks = [_attempt(subject, "assemble (meta)", build)]
    if vectors and checks[0].status == OK:
        checks.append(_attempt(subject, "test vectors", lambda: _vectors(located[0], entry.path)))
    return checks


def _vectors(located: Any, path: Path) -> str:
    from biozoo import api

    manifest = located.manifest
    if manifest.test_vectors is None:
        raise _Skip("the manifest has no test_vectors")
    if manifest.weights is None:
        raise _Skip("its weights must be converted first (`zoo convert`)")
    if manifest.weights.source.startswith("hf://"):
        raise _Skip(f"its weights are on the Hub: `zoo verify {manifest.id}` downloads and runs them")
    folder, _ = api._weights_root(located)
    absent = [f.path for f in manifest.weights.files if not (folder / f.path).exists()]
    if absent:
        raise _Skip(f"weights not on this machine: {', '.join(absent)}")
    checks = api.verify(path)
    return f"{len(checks)} output(s) within tolerance, max |diff| {max(c.max_abs_diff for c in checks):.3g}"


# -- reports --------------------------------------------------------------------------------------------------


def check_plugin(name: str, registry: Registry | None = None, *, vectors: bool = True) -> PluginReport:
    """Every check of one installed plugin (``name`` as ``zoo plugins`` shows it)."""
    from biozoo.registry import get_registry

    registry = registry or get_registry()
    status = registry.plugins.get(name) or registry.plugin_status(name)
    if status is None:
        raise UnknownNameError(
            f"no plugin named {name!r} is installed", f"installed: {', '.join(registry.plugins)} (`zoo plugins`)"
        )
    key = name if name in registry.plugins else status.name
    return _report(registry, key, vectors=vectors, named=True)


def check_plugins(names: Iterable[str] | None = None, *, vectors: bool = True) -> list[PluginReport]:
    """:func:`check_plugin` for ``names``, or for every installed plugin (a disabled one is skipped, not failed)."""
    from biozoo.registry import get_registry

    registry = get_registry()
    if names is not None:
        return [check_plugin(name, registry, vectors=vectors) for name in names]
    return [_report(registry, key, vectors=vectors, named=False) for key in registry.plugins]


def _report(registry: Registry, key: str, *, vectors: bool, named: bool) -> PluginReport:
    status = registry.plugins[key]
    report = PluginReport(key, status.label, status.status)
    if not status.healthy:
        skip = status.status == DISABLED and not named  # checking everything: a plugin turned off is not a failure
        report.checks.append(Check("plugin", "load", SKIPPED if skip else FAILED, f"{status.status}: {status.reason}"))
        return report
    spec = status.spec
    assert spec is not None
    models = models_of(registry, key)
    declared = [spec.components, spec.processors, spec.converters, spec.tasks, spec.folder_formats, models]
    if not any(declared) and not spec.manifests:
        report.checks.append(
            Check("plugin", "load", FAILED, "it declares nothing: no hook returned a declaration or a manifest")
        )
        return report
    counts = ", ".join(
        f"{len(items)} {what}"
        for what, items in zip(
            ("components", "processors", "converters", "tasks", "folder formats", "models"), declared, strict=True
        )
        if items
    )
    report.checks.append(Check("plugin", "load", OK, counts))
    clashes = registry.plugin_warnings(key)
    report.checks.append(Check("plugin", "names", FAILED if clashes else OK, "; ".join(clashes)))
    report.checks += target_checks(registry, key)
    for entry in models:
        report.checks += model_checks(registry, entry, vectors=vectors)
    return report


def failure(reports: list[PluginReport]) -> PluginError | None:
    """The error ``zoo plugins --check`` ends with when any check failed (None when all passed)."""
    failed = [r for r in reports if not r.ok]
    if not failed:
        return None
    count = sum(len(r.failures) for r in failed)
    return PluginError(
        f"{count} check(s) failed: " + ", ".join(f"{r.label}" for r in failed),
        "each cause is in the table (`--json` gives it whole); fix the plugin, or reinstall its distribution",
    )
