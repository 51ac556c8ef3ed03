"""The attention processor contract: a normalised call and declared capabilities.

A processor is a pure kernel ``(q, k, v, call) -> AttentionResult`` over
``[B, H, S, D]`` tensors. Layer logic (projections, norms, rotary, residuals)
stays in the module, so swapping processors never touches weights.

Everything a processor must honour is in :class:`AttentionCall`; what it can
honour is :class:`ProcessorCaps`, declared as data. :func:`unsupported` compares
the two, so a processor that cannot run a call raises instead of silently
dropping a mask, the causal flag or a custom scale (diffusers' failure mode).

Conventions, fixed once here:

* masks say **True = attend** (PyTorch's ``key_padding_mask`` says the
  opposite; modules convert at their boundary);
* ``causal`` is aligned bottom-right: query ``i`` of ``Sq`` sees keys
  ``<= i + Skv - Sq`` (what a KV cache needs; identical to top-left when
  ``Sq == Skv``);
* GQA/MQA: ``k`` and ``v`` may have fewer heads than ``q``, dividing it;
* a query row with no key to attend to outputs zeros, never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

MaskKind = Literal["key_padding", "bool", "additive"]


@dataclass(frozen=True)
class AttentionMask:
    """A typed mask. ``key_padding``: bool ``[B, Skv]``; ``bool``/``additive``: broadcastable to ``[B, H, Sq, Skv]``."""

    kind: MaskKind
    tensor: Any

    def __post_init__(self) -> None:
        if self.kind not in ("key_padding", "bool", "additive"):
            raise ValueError(f"unknown mask kind {self.kind!r}")


@dataclass(frozen=True)
class AttentionCall:
    """Everything about one attention call that a processor must honour."""

    mask: AttentionMask | None = None
    causal: bool = False
    scale: float | None = None
    dropout_p: float = 0.0
    need_weights: bool = False
    # bool [B, Sq], True = a real query. Rows marked False are padding whose outputs nobody reads: a kernel
    # may skip them (varlen) and must then return zeros there. None = every row is wanted.
    query_keep: Any | None = None


@dataclass(frozen=True)
class ProcessorCaps:
    """What a processor can honour, declared as data (feeds ``auto`` and the docs' matrix)."""

    masks: frozenset[str] = frozenset()
    causal: bool = False
    causal_with_mask: bool = False
    custom_scale: bool = False
    gqa: bool = False
    dropout: bool = False
    need_weights: bool = False
    dtypes: frozenset[str] = frozenset({"float32", "float64", "bfloat16", "float16"})
    devices: frozenset[str] = frozenset({"cpu", "cuda", "mps"})
    exact: bool = False  # reference math, checkable against float64
    approximate: bool = False  # computes a different function (e.g. linear attention): never chosen by `auto`

    def as_row(self) -> dict[str, str]:
        return {
            "masks": ", ".join(sorted(self.masks)) or "none",
            "causal": _yes(self.causal),
            "causal+mask": _yes(self.causal_with_mask),
            "custom scale": _yes(self.custom_scale),
            "GQA/MQA": _yes(self.gqa),
            "dropout": _yes(self.dropout),
            "weights": _yes(self.need_weights),
            "dtypes": ", ".join(sorted(self.dtypes)),
            "devices": ", ".join(sorted(self.devices)),
            "exact": _yes(self.exact),
            "approximate": _yes(self.approximate),
        }


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@dataclass
class AttentionResult:
    output: Any
    weights: Any | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class AttentionProcessor(Protocol):
    """A kernel: ``name``, ``caps``, ``available()`` and ``__call__(q, k, v, call)``."""

    name: str
    caps: ProcessorCaps

    def available(self) -> tuple[bool, str]:
        """(usable here?, reason if not). Cheap and side-effect free."""
        ...

    def __call__(self, q: Any, k: Any, v: Any, call: AttentionCall) -> AttentionResult: ...


def unsupported(caps: ProcessorCaps, call: AttentionCall, q: Any, k: Any) -> list[str]:
    """Every feature of ``call`` (on these tensors) that ``caps`` does not cover."""
    missing = []
    if call.mask is not None and call.mask.kind not in caps.masks:
        missing.append(f"mask of kind {call.mask.kind!r}")
    if call.causal and not caps.causal:
        missing.append("causal")
    if call.causal and call.mask is not None and not caps.causal_with_mask:
        missing.append("causal together with a mask")
    if call.scale is not None and not caps.custom_scale:
        missing.append(f"custom scale {call.scale}")
    if call.dropout_p > 0 and not caps.dropout:
        missing.append("dropout")
    if call.need_weights and not caps.need_weights:
        missing.append("returning attention weights")
    if q.shape[1] != k.shape[1] and not caps.gqa:
        missing.append(f"grouped-query attention ({q.shape[1]} query heads, {k.shape[1]} key heads)")
    dtype = str(q.dtype).removeprefix("torch.")
    if dtype not in caps.dtypes:
        missing.append(f"dtype {dtype}")
    if q.device.type not in caps.devices:
        missing.append(f"device {q.device.type}")
    return missing
