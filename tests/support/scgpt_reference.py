"""Load scGPT 0.2.4 (the reference) as a test oracle, without ``scgpt/__init__.py``.

``load_reference()`` gives its preprocessing and tokenizer, ``load_reference_models()`` its
model modules (``model``, ``generation_model``, ``dsbn``, ``grad_reverse``).

``import scgpt`` fails here (torchtext's compiled library does not match torch 2.13), so we
register a bare ``scgpt`` package pointing at the installed folder and import only the modules the
tests need. ``gene_tokenizer`` imports torchtext at module level for its ``GeneVocab`` class; when
the real torchtext cannot be imported we install a tiny stand-in for ``torchtext.vocab`` that only
has to exist: the functions we test (``tokenize_batch``, ``pad_batch``, ``random_mask_value``)
never touch it, and ``pad_batch`` only needs ``vocab[pad_token]``, which a dict provides.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch


def _root() -> Path | None:
    """The installed scgpt folder (without importing it), or None."""
    existing = sys.modules.get("scgpt")
    if existing is not None:
        return Path(next(iter(existing.__path__)))
    spec = importlib.util.find_spec("scgpt")
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def _package(name: str, path: Path) -> types.ModuleType:
    if name not in sys.modules:  # reuse whatever is there: the real package, or an earlier stub
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
    return sys.modules[name]


def reference_available() -> bool:
    """True when scgpt (the wheel) and scanpy are installed."""
    return _root() is not None and importlib.util.find_spec("scanpy") is not None


def _stub_torchtext() -> None:
    try:
        import torchtext.vocab  # noqa: F401
    except Exception:  # the real one raises OSError (ABI) or ImportError
        for name in [m for m in sys.modules if m == "torchtext" or m.startswith("torchtext.")]:
            del sys.modules[name]
        root = types.ModuleType("torchtext")
        root.__path__ = []
        vocab_mod = types.ModuleType("torchtext.vocab")

        class Vocab:  # only a base class for scgpt's GeneVocab, never instantiated by the tests
            def __init__(self, vocab: Any = None) -> None:
                self.vocab = vocab

        def vocab(ordered_dict: Any, min_freq: int = 1) -> Vocab:
            raise NotImplementedError("torchtext stand-in: building vocabularies is not supported in tests")

        vocab_mod.Vocab = Vocab
        vocab_mod.vocab = vocab
        root.vocab = vocab_mod
        sys.modules["torchtext"] = root
        sys.modules["torchtext.vocab"] = vocab_mod


def load_reference() -> types.SimpleNamespace:
    """``preprocess`` (Preprocessor, binning, _digitize) and ``gene_tokenizer`` (tokenize_batch, pad_batch).

    Skips the calling test when the reference is not installed
    (``pip install --no-deps scgpt==0.2.4 && pip install scanpy``).
    """
    if not reference_available():
        pytest.skip("scGPT reference not installed: pip install --no-deps scgpt==0.2.4 && pip install scanpy")
    root = _root()
    assert root is not None
    package = _package("scgpt", root)
    if not hasattr(package, "logger"):  # scgpt.preprocess does `from scgpt import logger`
        package.logger = logging.getLogger("scGPT")
    _package("scgpt.tokenizer", root / "tokenizer")
    _stub_torchtext()
    preprocess = importlib.import_module("scgpt.preprocess")
    gene_tokenizer = importlib.import_module("scgpt.tokenizer.gene_tokenizer")
    return types.SimpleNamespace(preprocess=preprocess, gene_tokenizer=gene_tokenizer, root=root)


class FlashMHA(torch.nn.Module):
    """Stand-in for flash-attn 1.x ``FlashMHA`` (CUDA-only): same parameters, plain softmax attention.

    Used only to run the reference's flash-path *layer* code (its "pre" normalisation scheme) on CPU.
    ``key_padding_mask`` is True = keep, as in flash-attn.
    """

    def __init__(
        self, embed_dim: int, num_heads: int, batch_first: bool = True, attention_dropout: float = 0.0, **_: object
    ) -> None:
        super().__init__()
        self.num_heads, self.batch_first = num_heads, batch_first
        self.Wqkv = torch.nn.Linear(embed_dim, 3 * embed_dim)
        self.out_proj = torch.nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None, **_: object):
        b, t, d = x.shape
        q, k, v = self.Wqkv(x).view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d)), None


def load_reference_models() -> types.SimpleNamespace:
    """scGPT 0.2.4's ``model``, ``generation_model``, ``dsbn`` and ``grad_reverse`` modules (or skip the test).

    ``flash_attn`` is absent on CPU, so a stand-in ``flash_attn.flash_attention.FlashMHA`` is
    registered first; models built with ``use_fast_transformer=False`` never touch it.
    """
    root = _root()
    if root is None:
        pytest.skip("the reference (pip install --no-deps scgpt==0.2.4) is not installed")
    if "scgpt.model.model" not in sys.modules:
        flash = types.ModuleType("flash_attn")
        flash.__path__ = []
        kernel = types.ModuleType("flash_attn.flash_attention")
        kernel.FlashMHA = FlashMHA
        sys.modules.setdefault("flash_attn", flash)
        sys.modules.setdefault("flash_attn.flash_attention", kernel)
        package = _package("scgpt", root)
        if not hasattr(package, "logger"):
            package.logger = logging.getLogger("scGPT")
        _package("scgpt.model", root / "model")
        utils = _package("scgpt.utils", root / "utils")
        if not hasattr(utils, "map_raw_id_to_vocab_id"):
            utils.map_raw_id_to_vocab_id = None  # only used by pred_perturb (GEARS), never by forward
    names = ("model", "generation_model", "dsbn", "grad_reverse")
    return types.SimpleNamespace(**{n: importlib.import_module(f"scgpt.model.{n}") for n in names})
