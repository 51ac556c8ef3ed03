"""Build modules on the meta device without running (or importing) weight initialisers, within a budget.

On meta tensors, torch routes ``nn.init`` calls through its reference
decompositions, whose first use imports about a second of machinery; the
values are thrown away anyway, since the weights are assigned afterwards.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn import init
from torch.nn.modules.module import register_module_parameter_registration_hook


def _skip(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return tensor


@contextlib.contextmanager
def empty_init(device: str | torch.device = "meta") -> Iterator[None]:
    """Inside: modules are created on ``device``; on meta, ``torch.nn.init`` functions do nothing."""
    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_") and callable(getattr(init, n))]
    if torch.device(device).type != "meta":
        names = []
    saved = {n: getattr(init, n) for n in names}
    try:
        for n in names:
            setattr(init, n, _skip)
        with torch.device(device), torch.no_grad():
            yield
    finally:
        for n, fn in saved.items():
            setattr(init, n, fn)


@contextlib.contextmanager
def parameter_limit(limit: int | None, on_exceed: Callable[[int], BaseException]) -> Iterator[None]:
    """Abort building modules once the parameters created on this thread hold more than ``limit`` values.

    Counting happens as each parameter is registered on a module, so a manifest asking
    for 100,000 layers stops after the first few beyond what its weights can fill,
    instead of building them all (minutes and gigabytes even on meta). Only this
    thread's parameters count, so concurrent assemblies do not disturb each other.
    ``on_exceed(count)`` makes the error to raise.
    """
    if limit is None:
        yield
        return
    owner, seen, total = threading.get_ident(), {}, [0]  # seen holds the parameters, so ids stay unique

    def count(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is None or threading.get_ident() != owner or id(param) in seen:
            return
        seen[id(param)] = param
        total[0] += param.numel()
        if total[0] > limit:
            raise on_exceed(total[0])

    handle = register_module_parameter_registration_hook(count)
    try:
        yield
    finally:
        handle.remove()
