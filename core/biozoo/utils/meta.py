"""Build modules on the meta device without running (or importing) weight initialisers.

On meta tensors, torch routes ``nn.init`` calls through its reference
decompositions, whose first use imports about a second of machinery; the
values are thrown away anyway, since the weights are assigned afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.nn import init


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
