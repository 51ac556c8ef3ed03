"""Picking the next token from logits: temperature, top-k, top-p (nucleus), greedy.

Shared by every generative model (next gene, next residue), so the knobs mean the same
everywhere. Randomness comes only from the ``generator`` passed in, so a seed reproduces a run.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import torch

from biozoo.errors import InvalidArgumentError


def _integer(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_sampling(temperature: float, top_k: int | None, top_p: float | None, *, n: int | None = None) -> None:
    """Refuse settings that would silently mean something else (or fail deep inside a run).

    ``n`` is the number of samples asked for (cells, sequences), checked when given. Errors name
    the CLI flag and the Python keyword, since both reach here.
    """
    if n is not None and not (_integer(n) and n >= 1):
        raise InvalidArgumentError(
            f"the number to generate must be >= 1, got {n!r}", "pass -n N with N >= 1 (n_cells= in Python)"
        )
    if not (_number(temperature) and math.isfinite(temperature) and temperature >= 0):
        raise InvalidArgumentError(
            f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}",
            "pass --temperature 1 to sample from the model's distribution, 0 for greedy (temperature= in Python)",
        )
    if top_k is not None and not (_integer(top_k) and top_k >= 1):
        raise InvalidArgumentError(
            f"top_k must be an integer >= 1 (or None for no limit), got {top_k!r}",
            "pass --top-k K with K >= 1, or leave it out for no limit (top_k=None in Python)",
        )
    if top_p is not None and not (_number(top_p) and 0 < top_p <= 1):
        raise InvalidArgumentError(
            f"top_p must be in (0, 1] (or None for no limit), got {top_p!r}",
            "pass --top-p P with 0 < P <= 1, e.g. --top-p 0.9, or leave it out for no limit (top_p=None in Python)",
        )


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the smallest set with probability >= top_p.

    The most likely token always survives, so a row never ends up empty.
    """
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability mass strictly above each token
        drop_sorted = before >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_logits(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    sync_free: bool = False,
) -> torch.Tensor:
    """``[..., V]`` logits -> ``[...]`` token ids. ``temperature=0`` is greedy (argmax).

    ``sync_free`` draws by the exponential race (``argmax(p / E)`` with ``E ~ Exp(1)``: the same
    distribution as ``torch.multinomial``, other draws for a seed) because ``torch.multinomial``
    waits for the GPU on every call; the default keeps the draws that earlier runs made.
    """
    check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = logits.softmax(dim=-1)
    if sync_free:
        return (probs / torch.empty_like(probs).exponential_(generator=generator)).argmax(dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])
