"""Assemble a model from a manifest: registered components, checked configs, checked ports.

Everything is built on the meta device (no memory, no random init); weights are
assigned afterwards by :mod:`biozoo.weights`. Any misfit (unknown component,
wrong kind, unknown config key, ports that do not connect) fails here, before
a byte of weights is read, with the manifest field that caused it.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from biozoo.attention.selection import set_processor
from biozoo.components.base import Architecture
from biozoo.components.ports import Port, match_inputs
from biozoo.errors import AssemblyError, BiozooError, WeightsError
from biozoo.manifest.schema import ComponentRef, Manifest
from biozoo.nn.checks import ConfigError
from biozoo.plugins.declarations import ComponentKind
from biozoo.registry import Registry, get_registry
from biozoo.ties import tie_parameters
from biozoo.utils.meta import empty_init, parameter_limit

# What a constructor raises for a config it cannot build: torch says "negative dimension" with a
# RuntimeError, nn.Embedding asserts, a modulo by a zero head count divides by zero.
_SLACK_PARAMETERS = 1_000_000  # above twice the weights' values: assembly stops (a few layers of a big model)
_CONSTRUCTOR_ERRORS = (TypeError, ValueError, RuntimeError, AssertionError, ArithmeticError, IndexError, KeyError)


def _accepted(cls: type, reserved: set[str]) -> tuple[set[str], set[str], bool]:
    """(accepted keys, required keys, takes **kwargs) of a component constructor."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in reserved]
    return {p.name for p in named}, {p.name for p in named if p.default is p.empty}, var_kw


def build_component(
    registry: Registry,
    ref: ComponentRef,
    kind: ComponentKind,
    where: str,
    extra: dict[str, Any] | None = None,
) -> nn.Module:
    """Instantiate one component with its config, naming ``where`` (the manifest field) on any error."""
    try:
        cls = registry.component_class(ref.name)
    except BiozooError as exc:
        raise type(exc)(f"{where}: {exc.message}", exc.hint) from None
    declared = registry.component_decl(ref.name).kind
    if declared != kind:
        raise AssemblyError(
            f"{where}: {ref.name!r} is a {declared.value}, but this slot needs a {kind.value}",
            f"`zoo list --kind components` shows the registered {kind.value}s",
        )
    extra = extra or {}
    accepted, required, var_kw = _accepted(cls, set(extra))
    unknown = sorted(set(ref.config) - accepted)
    if unknown and not var_kw:
        raise AssemblyError(
            f"{where}.config: {ref.name} does not accept {', '.join(map(repr, unknown))}",
            f"it accepts: {', '.join(sorted(accepted)) or 'no options'}",
        )
    missing = sorted(required - set(ref.config))
    if missing:
        raise AssemblyError(f"{where}.config: {ref.name} needs {', '.join(map(repr, missing))}")
    try:
        return cls(**ref.config, **extra)
    except ConfigError as exc:
        raise AssemblyError(
            f"{where}.config.{exc.field} {exc.problem}", f"fix {exc.field} in the manifest's {where}.config"
        ) from None
    except BiozooError as exc:
        raise type(exc)(f"{where}: {exc.message}", exc.hint) from None
    except _CONSTRUCTOR_ERRORS as exc:  # a size torch cannot build (negative, zero heads...), however it says so
        raise AssemblyError(
            f"{where}.config: {ref.name} rejected its config: {type(exc).__name__}: {exc}",
            "check the sizes in this component's config (positive, and dividing each other where they must)",
        ) from None


def check_ports(model: Architecture, parts: dict[str, nn.Module]) -> None:
    """Walk slots in data-flow order; each component's inputs must be offered upstream."""
    available: dict[str, tuple[str, Port]] = {p.meaning: ("the model input", p) for p in model.model_inputs()}
    available.update({p.meaning: ("the architecture", p) for p in model.derived_ports()})
    problems: list[str] = []
    for slot, part in parts.items():
        ports = part.ports() if hasattr(part, "ports") else None
        if ports is None:
            continue
        problems += match_inputs(f"components.{slot}", ports.inputs, available)
        for port in ports.outputs:
            available[port.meaning] = (f"components.{slot}", port)
    if problems:
        raise AssemblyError(
            "the components do not fit together:\n" + "\n".join(f"  {p}" for p in problems),
            "make the sizes agree in the components' configs (e.g. the same d_model everywhere)",
        )


def assemble(
    manifest: Manifest,
    registry: Registry | None = None,
    device: str | torch.device = "meta",
    *,
    weights_hold: int | None = None,
) -> nn.Module:
    """Build the model a manifest describes (on ``device``, meta by default), without weights.

    ``weights_hold`` (the values in the weights' safetensors headers) stops the build
    once the model has far outgrown its weights, so a manifest's sizes (``num_layers:
    100000``) cannot make assembly run for minutes or fill memory. The margin leaves
    near misses to the weights' key-by-key diff, which says more.
    """
    registry = registry or get_registry()
    arch_ref = manifest.architecture
    limit = None if weights_hold is None else 2 * weights_hold + _SLACK_PARAMETERS

    def too_big(count: int) -> WeightsError:
        return WeightsError(
            f"the manifest describes a model with far more parameters than its weights hold "
            f"(over {count:,} built so far, the weights hold {weights_hold:,} values)",
            "check the sizes in the components' configs (num_layers, d_model, vocabulary...) against the checkpoint",
        )

    with empty_init(device), parameter_limit(limit, too_big):
        arch_cls = registry.component_class(arch_ref.name)
        if getattr(arch_cls, "kind", None) != ComponentKind.ARCHITECTURE:
            raise AssemblyError(f"architecture: {arch_ref.name!r} is not an architecture")
        slots = getattr(arch_cls, "slots", {})
        extra_slots = sorted(set(manifest.components) - set(slots))
        if extra_slots:
            raise AssemblyError(
                f"components: {arch_ref.name} has no slot(s) {', '.join(map(repr, extra_slots))}",
                f"its slots are: {', '.join(slots) or 'none'}",
            )
        parts: dict[str, nn.Module] = {}
        for slot_name, slot in slots.items():
            ref = manifest.components.get(slot_name)
            if ref is None:
                if slot.required:
                    raise AssemblyError(
                        f"components.{slot_name}: {arch_ref.name} needs a {slot.kind.value} here ({slot.description})"
                    )
                continue
            parts[slot_name] = build_component(registry, ref, slot.kind, f"components.{slot_name}")
        model = build_component(registry, arch_ref, ComponentKind.ARCHITECTURE, "architecture", extra=parts)
        tie_parameters(model, manifest.tie)
    check_ports(model, parts)
    apply_attention_settings(model, manifest)
    return model


def apply_attention_settings(model: nn.Module, manifest: Manifest) -> None:
    settings = manifest.attention
    try:
        if settings.processor != "auto":
            set_processor(model, settings.processor, level="manifest")
        for pattern, name in settings.overrides.items():
            set_processor(model, name, where=pattern, level="manifest")
    except BiozooError as exc:
        raise AssemblyError(f"attention: {exc.message}", exc.hint) from None
