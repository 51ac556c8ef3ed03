"""Named, typed ports: what a component consumes and produces.

A port has a *meaning* (a semantic type such as ``gene-token-ids`` or
``cell-embedding``) and a *shape* whose entries are symbolic batch/sequence
dims (``"B"``, ``"T"``) or concrete sizes resolved from the component's config
(``512``). Assembly walks the model's slots in data-flow order and checks each
component's inputs against what the model inputs and earlier components
produce, so a 256-wide head on a 512-wide encoder fails before any weights load,
with a message saying which port and which size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Dim = int | str


@dataclass(frozen=True)
class Port:
    """One named input or output: ``Port("hidden", "hidden", ("B", "T", 512))``."""

    name: str
    meaning: str
    shape: tuple[Dim, ...]
    description: str = ""
    optional: bool = False

    def __str__(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        return f"{self.meaning} [{dims}]"


@dataclass(frozen=True)
class Ports:
    inputs: tuple[Port, ...] = ()
    outputs: tuple[Port, ...] = ()


def shape_mismatch(wanted: Port, offered: Port) -> str | None:
    """Why ``offered`` cannot feed ``wanted`` (None if it can)."""
    if len(wanted.shape) != len(offered.shape):
        return f"rank {len(offered.shape)} offered, rank {len(wanted.shape)} wanted"
    for axis, (a, b) in enumerate(zip(wanted.shape, offered.shape, strict=True)):
        if isinstance(a, int) and isinstance(b, int) and a != b:
            return f"size {b} offered, size {a} wanted on axis {axis}"
    return None


def match_inputs(
    consumer: str,
    inputs: Iterable[Port],
    available: dict[str, tuple[str, Port]],
) -> list[str]:
    """Check every required input of ``consumer`` against ``available`` (meaning -> (producer, port)).

    Returns human-readable problems; empty when everything fits.
    """
    problems = []
    for port in inputs:
        found = available.get(port.meaning)
        if found is None:
            if not port.optional:
                offered = ", ".join(f"{p} from {who}" for who, p in available.values()) or "nothing"
                problems.append(f"{consumer} needs {port} on input {port.name!r}, but the model offers {offered}")
            continue
        producer, offered_port = found
        why = shape_mismatch(port, offered_port)
        if why:
            problems.append(
                f"{consumer} input {port.name!r} wants {port} but {producer} produces {offered_port} ({why})"
            )
    return problems
