"""Load scGPT 0.2.4's preprocessing and tokenizer as a test oracle, without ``scgpt/__init__.py``.

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


def reference_available() -> bool:
    """True when scgpt (the wheel) and scanpy are installed."""
    return importlib.util.find_spec("scgpt") is not None and importlib.util.find_spec("scanpy") is not None


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
    spec = importlib.util.find_spec("scgpt")
    assert spec is not None and spec.origin is not None
    root = Path(spec.origin).parent
    if "scgpt" not in sys.modules:  # reuse whatever is there: the real package, or another test's stub
        package = types.ModuleType("scgpt")
        package.__path__ = [str(root)]
        sys.modules["scgpt"] = package
    if not hasattr(sys.modules["scgpt"], "logger"):  # scgpt.preprocess does `from scgpt import logger`
        sys.modules["scgpt"].logger = logging.getLogger("scGPT")
    if "scgpt.tokenizer" not in sys.modules:
        tokenizer_pkg = types.ModuleType("scgpt.tokenizer")
        tokenizer_pkg.__path__ = [str(root / "tokenizer")]
        sys.modules["scgpt.tokenizer"] = tokenizer_pkg
    _stub_torchtext()
    preprocess = importlib.import_module("scgpt.preprocess")
    gene_tokenizer = importlib.import_module("scgpt.tokenizer.gene_tokenizer")
    return types.SimpleNamespace(preprocess=preprocess, gene_tokenizer=gene_tokenizer, root=root)
