"""Which processor runs for a given attention module and call, and why.

Resolution order, first that is set wins:

1. the module's own setting (``set_processor(model, name, where="layers.0.*")``);
2. the model-wide setting (``set_processor(model, name)``);
3. the scoped context (``with use_processor("eager"):``; a contextvar, so it
   never leaks across threads or asyncio tasks and is restored on exit);
4. the environment default ``BIOZOO_ATTENTION``;
5. the model's manifest (``attention.processor`` and its per-module ``overrides``);
6. ``auto``: the highest-priority available processor whose declared
   capabilities cover this call, among those declared ``auto=True`` (attested
   conformant) and not ``approximate``. A name two plugins claim is left out
   (unless the core declares it: then the core's kernel runs), and the
   decision's reason says so: a plugin never changes what a model runs unseen.

A *named* processor that cannot honour a call raises :class:`AttentionError`
naming what it lacks and which processors can; ``auto`` never picks one that
cannot. Each module remembers what last ran and why, for :func:`explain`.
"""

from __future__ import annotations

import contextlib
import contextvars
import fnmatch
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from biozoo.attention.contract import AttentionCall, AttentionResult, unsupported
from biozoo.errors import AttentionError

AUTO = "auto"
_scoped: contextvars.ContextVar[str | None] = contextvars.ContextVar("biozoo_attention_processor", default=None)


@dataclass
class Decision:
    """What one attention module last ran, and why."""

    requested: str
    ran: str
    reason: str


class AttentionSettable:
    """Mixin for modules that route attention through a processor."""

    processor_name: str | None = None  # this module's own setting
    model_processor_name: str | None = None  # the whole model's setting
    default_processor_name: str | None = None  # from the manifest; below context and environment
    last_decision: Decision | None = None


def _registry() -> Any:
    from biozoo.registry import get_registry

    return get_registry()


def requested_name(module: AttentionSettable) -> tuple[str, str]:
    if module.processor_name:
        return module.processor_name, "set on this module"
    if module.model_processor_name:
        return module.model_processor_name, "set on the model"
    scoped = _scoped.get()
    if scoped:
        return scoped, "use_processor() context"
    env = os.environ.get("BIOZOO_ATTENTION")
    if env:
        return env, "BIOZOO_ATTENTION"
    if module.default_processor_name:
        return module.default_processor_name, "the model's manifest"
    return AUTO, "default"


def _choose_auto(q: Any, k: Any, call: AttentionCall) -> tuple[Any, str]:
    registry = _registry()
    rejected = []
    for processor in registry.processors_by_priority():
        if processor.caps.approximate:
            continue  # a different function than softmax attention: only when asked for by name
        if not getattr(processor, "auto_eligible", False):
            rejected.append(f"{processor.name}: not attested as conformant (named use only)")
            continue
        ok, why = processor.available()
        if not ok:
            rejected.append(f"{processor.name}: {why}")
            continue
        missing = unsupported(processor.caps, call, q, k)
        if not missing:
            skipped = f"; skipped {'; '.join(rejected)}" if rejected else ""
            return processor, f"auto: highest-priority kernel that fits this call{skipped}{_clashes(registry)}"
        rejected.append(f"{processor.name}: lacks {', '.join(missing)}")
    raise AttentionError(f"no attention processor can run this call: {'; '.join(rejected)}")


def _clashes(registry: Any, name: str | None = None) -> str:
    """Processor names claimed twice (all of them, or just ``name``), for a decision's reason."""
    notes = [f"'{n}' {note}" for n, note in registry.processor_clashes.items() if name is None or n == name]
    return f"; name clash: {'; '.join(notes)}" if notes else ""


def attend(module: AttentionSettable, q: Any, k: Any, v: Any, call: AttentionCall) -> AttentionResult:
    """Run attention for ``module`` through the resolved processor."""
    name, source = requested_name(module)
    if name == AUTO:
        processor, reason = _choose_auto(q, k, call)
    else:
        processor = _registry().processor(name)
        ok, why = processor.available()
        if not ok:
            raise AttentionError(f"attention processor {name!r} is not available here: {why}")
        missing = unsupported(processor.caps, call, q, k)
        if missing:
            able = [
                p.name
                for p in _registry().processors_by_priority()
                if p.available()[0] and not unsupported(p.caps, call, q, k)
            ]
            raise AttentionError(
                f"attention processor {name!r} (from {source}) cannot run this call: it lacks {', '.join(missing)}",
                f"processors that can: {', '.join(able) or 'none'}; or use 'auto'",
            )
        reason = f"named ({source}){_clashes(_registry(), name)}"
    module.last_decision = Decision(requested=name, ran=processor.name, reason=reason)
    return processor(q, k, v, call)


@contextlib.contextmanager
def use_processor(name: str) -> Iterator[None]:
    """Scope a processor choice to a ``with`` block (per thread / task)."""
    if name != AUTO:
        _registry().processor(name)  # fail early on unknown names
    token = _scoped.set(name)
    try:
        yield
    finally:
        _scoped.reset(token)


Where = str | Callable[[str, Any], bool] | None


def attention_modules(model: Any) -> Iterator[tuple[str, AttentionSettable]]:
    for path, module in model.named_modules():
        if isinstance(module, AttentionSettable):
            yield path, module


def set_processor(model: Any, name: str | None, where: Where = None, *, level: str = "user") -> list[str]:
    """Set (``None``/``"auto"`` clears) the processor of the model or of matching attention modules.

    ``where`` is a glob over module paths (``"encoder.layers.1*"``) or a predicate
    ``(path, module) -> bool``; without it the setting is model-wide, and
    module-level settings still win. Modules it does not match keep their
    setting. ``level="manifest"`` records a default below the context and the
    environment (what a manifest asks for). Returns the matched paths; matching
    none is an error (a typo must not pass silently).
    """
    if name is not None and name != AUTO:
        _registry().processor(name)
    value = None if name == AUTO else name
    if level == "manifest":
        attr = "default_processor_name"
    else:
        attr = "model_processor_name" if where is None else "processor_name"
    matched = []
    for path, module in attention_modules(model):
        if where is None or (fnmatch.fnmatchcase(path, where) if isinstance(where, str) else bool(where(path, module))):
            setattr(module, attr, value)
            if where is None and level != "manifest" and value is None:
                module.processor_name = None  # "auto" for the whole model clears module settings too
            matched.append(path)
    if not matched:
        paths = [p for p, _ in attention_modules(model)]
        raise AttentionError(
            f"no attention module matches {where!r}",
            f"attention modules are: {', '.join(paths[:8])}{' ...' if len(paths) > 8 else ''}"
            if paths
            else "this model has no attention modules",
        )
    return matched


def processor_settings(model: Any) -> list[tuple[str, str | None, str | None]]:
    """Each attention module's user settings ``(path, module setting, model-wide setting)``: what a copy of the
    model loaded elsewhere (a Ray actor) needs to run the same processors (:func:`apply_processor_settings`)."""
    return [(path, m.processor_name, m.model_processor_name) for path, m in attention_modules(model)]


def apply_processor_settings(model: Any, settings: list[tuple[str, str | None, str | None]]) -> None:
    """Set what :func:`processor_settings` read from another copy of the same model."""
    modules = dict(attention_modules(model))
    for path, own, model_wide in settings:
        for name in (own, model_wide):
            if name is not None:
                _registry().processor(name)  # a processor this process lacks fails here, by name
        modules[path].processor_name, modules[path].model_processor_name = own, model_wide


def explain(model: Any) -> list[dict[str, str]]:
    """Per attention module: what was requested, what actually ran last, and why."""
    rows = []
    for path, module in attention_modules(model):
        requested, source = requested_name(module)
        decision = module.last_decision
        rows.append(
            {
                "module": path,
                "requested": f"{requested} ({source})",
                "ran": decision.ran if decision else "(not run yet)",
                "reason": decision.reason if decision else "",
            }
        )
    return rows
