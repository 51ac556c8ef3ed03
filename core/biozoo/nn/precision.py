"""Running a model in any floating dtype: where inputs are cast, where fp32 is kept, how autocast is chosen.

Two ways to compute in half precision, both supported by every single-cell task:

* **half weights** (``biozoo.load(..., dtype="bfloat16")``, ``--dtype bfloat16``): every floating
  parameter is cast once. Inputs built outside the model (expression values, masks, biases) are
  float32, so they are cast where they enter the model (:func:`cast_to`, :func:`param_dtype`);
  the few reductions whose rounding matters (pooling, normalisation, softmax of class scores,
  losses) are computed in float32 (:func:`upcast`) and cast back where the result feeds more layers.
* **autocast** (``--autocast``): weights keep their dtype and :func:`autocast` runs matmuls in the
  device's half type (:func:`half_dtype`). Fine-tuning always works this way (float32 master
  weights, float32 optimizer state; a gradient scaler for float16), see :func:`training_precision`.

Nothing here syncs with the device: dtypes are read from parameters, never from values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from biozoo.errors import InvalidArgumentError

HALF_DTYPES = (torch.float16, torch.bfloat16)
#: the names ``--dtype`` and ``dtype=`` accept
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float64": torch.float64,
}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A dtype name (``bfloat16``, ``bf16``, ...) or dtype -> the dtype; a clear error naming ``--dtype`` otherwise."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype is not None and not dtype.is_floating_point:
            raise InvalidArgumentError(f"dtype {dtype} is not a floating-point type", _DTYPE_HINT)
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise InvalidArgumentError(f"unknown dtype {dtype!r}", _DTYPE_HINT) from None


_DTYPE_HINT = "use --dtype float32, bfloat16 or float16 (also fp32, bf16, fp16, float64; dtype= in Python)"


def param_dtype(module: nn.Module, default: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype of ``module``'s first floating-point parameter (``default`` when it has none)."""
    for param in module.parameters():
        if param.is_floating_point():
            return param.dtype
    return default


def cast_to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in ``dtype`` when it is floating point (ids, masks and labels pass through untouched)."""
    return x.to(dtype) if x.is_floating_point() and x.dtype != dtype else x


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is half precision (float32 and float64 are kept as they are)."""
    return x.float() if x.dtype in HALF_DTYPES else x


def half_dtype(device: torch.device | str) -> torch.dtype:
    """The half type a device computes fastest and safely in: bfloat16 where it has it, else float16."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "mps":
        return torch.float16
    return torch.bfloat16


def autocast_dtype(
    device: torch.device | str, dtype: torch.dtype | None, enabled: bool
) -> torch.dtype | None:
    """What ``--autocast`` runs in: the ``--dtype`` when it is a half type, else the device's half type.

    ``None`` when autocast is off.
    """
    if not enabled:
        return None
    return dtype if dtype in HALF_DTYPES else half_dtype(device)


@contextlib.contextmanager
def autocast(device: torch.device | str, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` to ``dtype`` on ``device``'s type; nothing when ``dtype`` is None or not half."""
    if dtype not in HALF_DTYPES:
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        yield


def current_autocast(device: torch.device | str) -> torch.dtype | None:
    """The dtype autocast is running in on ``device``'s type right now, or None (for provenance)."""
    kind = torch.device(device).type
    if not torch.is_autocast_enabled(kind):
        return None
    return torch.get_autocast_dtype(kind)


def dtype_name(dtype: torch.dtype | None) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``; None -> ``"off"``."""
    return "off" if dtype is None else str(dtype).removeprefix("torch.")


def describe(model: nn.Module) -> dict[str, str]:
    """The precision a model ran in, for provenance: its weights' dtype and the autocast dtype (or "off")."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return {"dtype": dtype_name(param_dtype(model)), "autocast": dtype_name(current_autocast(device))}


def training_precision(
    weights: torch.dtype, requested: torch.dtype | str | None
) -> torch.dtype | None:
    """The autocast dtype of a training run on float32 master weights, or None for plain float32.

    ``requested`` (a name or dtype) wins; otherwise a model loaded in a half type trains under
    autocast to that type (its weights are upcast to float32 for the optimizer). float64 is refused:
    training keeps float32 master weights.
    """
    requested = parse_dtype(requested)
    chosen = requested if requested is not None else (weights if weights in HALF_DTYPES else None)
    if chosen is not None and chosen not in (*HALF_DTYPES, torch.float32):
        raise InvalidArgumentError(
            f"training in {dtype_name(chosen)} is not supported: weights and optimizer state are kept in float32",
            "use --dtype float32, bfloat16 or float16 (mixed precision on float32 weights)",
        )
    return chosen if chosen in HALF_DTYPES else None


def grad_scaler(device: torch.device | str, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A loss scaler, enabled for float16 only (bfloat16 has float32's range and needs none)."""
    kind = torch.device(device).type
    return torch.amp.GradScaler(kind, enabled=dtype == torch.float16)


class OptimizerStep:
    """One optimizer step of a (possibly mixed-precision) training loop: scale, backward, unscale, clip, step.

    Shared by every trainer so that float16 always gets its gradient scaler and clipping always
    sees the true (unscaled) gradients. ``forward()`` is the autocast context for the forward pass
    and the loss; the backward pass runs outside it, as PyTorch recommends.
    """

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, dtype: torch.dtype | None, max_norm: float = 1.0
    ) -> None:
        self.model, self.optimizer, self.dtype, self.max_norm = model, optimizer, dtype, max_norm
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.scaler = grad_scaler(self.device, dtype)

    def forward(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.dtype)

    def __call__(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # a no-op unless float16
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
