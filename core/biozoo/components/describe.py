"""What a plugin author needs to know about a registered component (``zoo info core.bert_embedding``).

Its declaration, its constructor's config arguments (names, types, defaults), an architecture's
slots, and the parameter names and shapes it gets in a model that uses it: the names a converter
maps a foreign checkpoint's keys to. Built on the meta device, so nothing is allocated.
"""

from __future__ import annotations

import inspect
from typing import Any

from biozoo.registry import Registry, get_registry


def component_info(name: str, registry: Registry | None = None, *, max_parameters: int = 200) -> dict[str, Any]:
    """The declaration, config arguments, slots and (from the first installed model using it) parameters of
    a component; ``max_parameters`` bounds the parameter list (the count is always given)."""
    from biozoo.components.base import Architecture

    registry = registry or get_registry()
    decl = registry.component_decl(name)  # a former name resolves, with a deprecation warning
    claim = registry.components.get(decl.name)
    assert claim is not None
    cls = registry.component_class(decl.name)
    slots = getattr(cls, "slots", {}) if isinstance(cls, type) and issubclass(cls, Architecture) else {}
    status = registry.plugin_status(claim.plugin)
    info: dict[str, Any] = {
        "name": decl.name,
        "kind": decl.kind.value,
        "plugin": claim.plugin,
        "distribution": f"{status.distribution} {status.version}" if status else claim.plugin,
        "target": decl.target,
        "aliases": list(decl.aliases),
        "description": decl.description,
        "doc": inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0],
        "config": _config(cls, set(slots)),
        "slots": {slot: {"kind": s.kind.value, "required": s.required} for slot, s in slots.items()},
    }
    info["example"] = _example(registry, decl.name, max_parameters)
    return info


def _config(cls: type, slots: set[str]) -> list[dict[str, str]]:
    """Constructor arguments a manifest's ``config`` may set (slots are filled by assembly, not config)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    rows = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in slots:
            continue
        annotation = p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)
        rows.append({
            "name": p.name,
            "type": "" if p.annotation is p.empty else annotation,
            "default": "(required)" if p.default is p.empty else repr(p.default),
        })  # fmt: skip
    return rows


def _example(registry: Registry, name: str, max_parameters: int) -> dict[str, Any] | None:
    """Parameters and buffers (state-dict names, shapes) the component has in the first model that uses it."""
    from biozoo.assembly import assemble
    from biozoo.errors import BiozooError

    for model_id in registry.models.names():
        entry = registry.models.get(model_id)
        if entry is None:
            continue
        raw = entry.value.raw
        uses = _slot_using(raw, name)
        if uses is None:
            continue
        try:
            model = assemble(registry.manifest(model_id).manifest, registry)
        except BiozooError:
            continue  # a model this machine cannot build (a missing plugin): try the next
        prefix = "" if uses == "" else f"{uses}."
        state = {k[len(prefix) :]: list(v.shape) for k, v in model.state_dict().items() if k.startswith(prefix)}
        return {
            "model": model_id,
            "slot": uses or None,
            "count": len(state),
            "parameters": dict(list(state.items())[:max_parameters]),
        }
    return None


def _slot_using(raw: dict[str, Any], name: str) -> str | None:
    """"" when ``name`` is the manifest's architecture, the slot name when a slot uses it, else None."""
    arch = raw.get("architecture")
    if isinstance(arch, dict) and arch.get("name") == name:
        return ""
    components = raw.get("components")
    for slot, ref in (components.items() if isinstance(components, dict) else []):
        if isinstance(ref, dict) and ref.get("name") == name:
            return str(slot)
    return None
