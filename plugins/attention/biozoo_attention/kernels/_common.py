"""Small tensor helpers shared by the kernels (mask layouts, grouped heads, compute dtypes)."""

from __future__ import annotations

import math

import torch

from biozoo.attention.contract import AttentionCall, ProcessorCaps, unsupported

HALF = (torch.float16, torch.bfloat16)


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it. A module already in ``sys.modules`` without a
    spec (a stand-in some code put there) makes ``find_spec`` raise instead of answering: it is not installed."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def scale_of(call: AttentionCall, head_dim: int) -> float:
    """The score scale the call asks for (``1/sqrt(D)`` unless given)."""
    return call.scale if call.scale is not None else 1.0 / math.sqrt(head_dim)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulate half-precision inputs in float32, as the core's eager reference does."""
    return torch.float32 if dtype in HALF else dtype


def as_4d(t: torch.Tensor) -> torch.Tensor:
    """Prepend singleton dims so a mask broadcastable to ``[B, H, Sq, Skv]`` has exactly 4 dims."""
    while t.dim() < 4:
        t = t.unsqueeze(0)
    return t


def grouped(t: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """``[b, h, sq, skv]`` (h in {1, H}) -> ``[b, Hkv, rep|1, sq, skv]`` to line up with grouped query heads.

    Grouping query heads per key/value head avoids copying K/V ``H/Hkv`` times for GQA.
    """
    t = as_4d(t)
    b, h, sq, skv = t.shape
    if h == 1:
        return t.unsqueeze(1)
    return t.reshape(b, kv_heads, h // kv_heads, sq, skv)


def refuse_unsupported(name: str, caps: ProcessorCaps, call: AttentionCall, q: torch.Tensor, k: torch.Tensor) -> None:
    """Raise for anything the caps do not claim, so a *direct* call never silently drops a feature either.

    ``attend()`` already rejects such calls; this is for callers that bypass it.
    """
    missing = unsupported(caps, call, q, k)
    if missing:
        raise ValueError(f"attention kernel {name!r} cannot run this call: it lacks {', '.join(missing)}")
