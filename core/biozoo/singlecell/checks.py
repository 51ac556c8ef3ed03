"""Checks every single-cell task runs around its model: manifest settings, training options, model outputs.

A model's ``preprocessing.config`` is data from a file anyone can edit, so each value is read with
its type and range checked before anything is allocated (``n_bins: 10**9`` would otherwise ask for
gigabytes); training options are checked before data is read, so ``--epochs 0`` fails in a second
rather than writing an untrained model; and NaN outputs (broken weights) are refused instead of
turning into confident-looking labels.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from numbers import Integral, Real
from typing import Any

import numpy as np

from biozoo.errors import InvalidArgumentError, ManifestError, ModelOutputError
from biozoo.singlecell.vocab import GeneVocabulary


class PreprocessingConfig:
    """A manifest's ``preprocessing.config`` read key by key, each value checked; errors name the model and key."""

    def __init__(self, config: Mapping[str, Any], model_id: str) -> None:
        self.config = config
        self.model_id = model_id

    def _fail(self, key: str, wanted: str, value: Any, hint: str | None = None) -> ManifestError:
        return ManifestError(
            f"{self.model_id}: preprocessing.config.{key} must be {wanted}, got {value!r}",
            hint or f"fix preprocessing.config.{key} in the model's manifest.yaml",
        )

    def integer(self, key: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        """An integer in ``minimum..maximum`` (floats with an integer value, like ``1200.0``, are accepted)."""
        value = self.config.get(key, default)
        if isinstance(value, Real) and not isinstance(value, bool) and float(value).is_integer():
            number = int(value)
            if number >= minimum and (maximum is None or number <= maximum):
                return number
        wanted = f"an integer >= {minimum}" if maximum is None else f"an integer in {minimum}..{maximum:,}"
        raise self._fail(key, wanted, value)

    def number(self, key: str, default: float, *, positive: bool = False) -> float:
        """A finite number (and > 0 when ``positive``)."""
        value = self.config.get(key, default)
        finite = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
        if finite and (not positive or value > 0):
            return float(value)
        raise self._fail(key, "a finite number > 0" if positive else "a finite number", value)

    def choice(self, key: str, default: str, choices: Collection[str]) -> str:
        """One of ``choices``."""
        return check_choice(self.config.get(key, default), choices, f"{self.model_id}: preprocessing.config.{key}")

    def token(self, key: str, default: str | None, vocabulary: GeneVocabulary) -> str | None:
        """A token of the vocabulary (or None when the default is None and the key is absent)."""
        value = self.config.get(key, default)
        if value is None and default is None:
            return None
        return vocabulary_token(vocabulary, value, f"{self.model_id}: preprocessing.config.{key}")

    def flag(self, key: str, default: bool) -> bool:
        value = self.config.get(key, default)
        if isinstance(value, bool):
            return value
        raise self._fail(key, "true or false", value)


def check_choice(value: Any, choices: Collection[str], what: str) -> str:
    """``value`` if it is one of ``choices``; otherwise a ``ManifestError`` listing them."""
    if isinstance(value, str) and value in choices:
        return value
    allowed = ", ".join(repr(c) for c in choices)
    raise ManifestError(f"{what} must be one of {allowed}, got {value!r}", f"use one of {allowed}")


def vocabulary_token(vocabulary: GeneVocabulary, token: Any, what: str) -> str:
    """``token`` if the vocabulary holds it; a model whose special tokens are missing cannot tokenize anything."""
    if isinstance(token, str) and token in vocabulary:
        return token
    specials = [t for t in vocabulary if t.startswith("<") and t.endswith(">")]
    raise ManifestError(
        f"{what} is {token!r}, which is not in the model's vocabulary ({len(vocabulary)} tokens)",
        f"name one of the vocabulary's special tokens: {', '.join(map(repr, specials)) or 'none found'}",
    )


def check_training(*, epochs: Any, lr: Any, batch_size: Any, patience: Any, val_fraction: Any | None = None) -> None:
    """Refuse training options that would train nothing or diverge, before any data is read.

    ``epochs=0`` would write an untrained model, a NaN or negative learning rate a broken one.
    """

    def integer(value: Any, minimum: int) -> bool:
        return isinstance(value, Integral) and not isinstance(value, bool) and value >= minimum

    if not integer(epochs, 1):
        raise InvalidArgumentError(
            f"epochs must be an integer >= 1, got {epochs!r} (0 epochs would write an untrained model)",
            "pass --epochs N with N >= 1 (epochs= in Python)",
        )
    if not (isinstance(lr, Real) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0):
        raise InvalidArgumentError(
            f"the learning rate must be a finite number > 0, got {lr!r}", "pass e.g. --lr 1e-4 (lr= in Python)"
        )
    if not integer(batch_size, 1):
        raise InvalidArgumentError(
            f"batch_size must be an integer >= 1, got {batch_size!r}",
            "pass e.g. --batch-size 32 (batch_size= in Python)",
        )
    if not integer(patience, 0):
        raise InvalidArgumentError(
            f"patience must be an integer >= 0, got {patience!r}",
            "pass e.g. --patience 5 (patience= in Python): epochs without a better validation loss before stopping",
        )
    if val_fraction is not None and not (
        isinstance(val_fraction, Real) and not isinstance(val_fraction, bool) and 0 < val_fraction < 1
    ):
        raise InvalidArgumentError(
            f"the validation fraction must be between 0 and 1 (exclusive), got {val_fraction!r}",
            "pass e.g. --val-fraction 0.15 (val_fraction= in Python)",
        )


def refuse_non_finite(values: Any, model: Any, what: str) -> None:
    """Refuse NaN or infinite model outputs (numpy array or torch tensor).

    Broken weights give NaN everywhere, and an argmax over NaN still picks a class: without this
    check every cell gets the same confident-looking label and the command succeeds.
    """
    finite = values.isfinite() if hasattr(values, "isfinite") else np.isfinite(values)
    if bool(finite.all()):
        return
    from biozoo.api import zoo_record

    record = zoo_record(model)
    model_id = record.manifest.id if record is not None else None
    name = model_id or "the model"
    if _runs_in_float16(model):  # float16 tops out at 65504: large activations overflow to inf
        raise ModelOutputError(
            f"{name} produced NaN or infinite {what} in float16; nothing was written",
            "float16 overflowed: use --dtype bfloat16 (same speed, float32's range) or --dtype float32",
        )
    raise ModelOutputError(
        f"{name} produced NaN or infinite {what}; nothing was written",
        f"its weights may be broken: check them with `zoo verify {model_id or 'MODEL'}`, "
        "and re-download or re-convert the model",
    )


def _runs_in_float16(model: Any) -> bool:
    """True when ``model``'s weights or the current autocast are float16 (no device sync: dtypes only)."""
    import torch

    from biozoo.nn.precision import current_autocast, param_dtype

    if not isinstance(model, torch.nn.Module):
        return False
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.float16 in (param_dtype(model), current_autocast(device))
