"""Import scGPT 0.2.4's model modules (the reference) without its broken package ``__init__``.

``import scgpt`` fails on this torch (torchtext's ABI, and undeclared IPython),
so the modules we compare against are loaded through stand-in package objects:
only ``scgpt/model/{model,dsbn,grad_reverse,generation_model}.py`` run, as shipped.
``flash_attn`` is absent on CPU; :func:`flash_stub` provides a stand-in ``FlashMHA``
with the same parameters and plain softmax attention, used only to exercise the
reference's flash-path *layer* logic (its "pre" normalisation scheme).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn


def _package(name: str, path: Path) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module
    return module


class FlashMHA(nn.Module):
    """Stand-in for flash-attn 1.x ``FlashMHA``: ``Wqkv`` + ``out_proj``; key_padding_mask True = keep."""

    def __init__(
        self, embed_dim: int, num_heads: int, batch_first: bool = True, attention_dropout: float = 0.0, **_: object
    ) -> None:
        super().__init__()
        self.num_heads, self.batch_first = num_heads, batch_first
        self.Wqkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None, **_: object):
        b, t, d = x.shape
        q, k, v = self.Wqkv(x).view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d)), None


def flash_stub() -> None:
    """Install the stand-in ``flash_attn.flash_attention`` before the reference model module is imported."""
    pkg = types.ModuleType("flash_attn")
    pkg.__path__ = []
    sub = types.ModuleType("flash_attn.flash_attention")
    sub.FlashMHA = FlashMHA
    sys.modules["flash_attn"], sys.modules["flash_attn.flash_attention"] = pkg, sub


def load_reference_models() -> types.SimpleNamespace:
    """``model``, ``generation_model``, ``dsbn`` and ``grad_reverse`` modules of scGPT 0.2.4 (or skip)."""
    if "scgpt.model.model" not in sys.modules:
        existing = sys.modules.get("scgpt")
        spec = existing.__spec__ if existing is not None else importlib.util.find_spec("scgpt")
        origin = (spec.origin if spec else None) or (existing.__path__[0] + "/__init__.py" if existing else None)
        if origin is None:
            pytest.skip("the reference (pip install --no-deps scgpt==0.2.4) is not installed")
        root = Path(origin).parent
        flash_stub()
        pkg = sys.modules.get("scgpt") or _package("scgpt", root)
        pkg.logger = getattr(pkg, "logger", logging.getLogger("scGPT"))
        _package("scgpt.model", root / "model")
        if "scgpt.utils" not in sys.modules:
            utils = _package("scgpt.utils", root / "utils")
            utils.map_raw_id_to_vocab_id = None  # only used by pred_perturb (GEARS), never by forward
    names = ("model", "generation_model", "dsbn", "grad_reverse")
    return types.SimpleNamespace(**{n: importlib.import_module(f"scgpt.model.{n}") for n in names})
