"""Positional encodings: none, additive (sinusoidal, learned) and rotary (RoPE, with context-extension scaling).

Every encoding has a ``mode`` so a transformer knows where it plugs in: ``"additive"`` encodings
are added to the hidden states before the first layer, ``"rotary"`` encodings rotate queries and
keys inside every attention layer (:meth:`RotaryPositionalEncoding.rotate`), ``"none"`` does nothing.

Fixed tables (sinusoidal, rotary cos/sin) are never buffers: they are computed lazily on the
device and dtype of the input and cached in plain attributes. So a model built under
``torch.device("meta")`` works once its weights are loaded onto a real device, and state dicts
hold only learned weights, as the reference checkpoints do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from biozoo.components.base import Component
from biozoo.components.ports import Port, Ports
from biozoo.plugins.declarations import ComponentKind

__all__ = [
    "ROPE_SCALING_TYPES",
    "LearnedPositionalEncoding",
    "NoPositionalEncoding",
    "RotaryPositionalEncoding",
    "SinusoidalPositionalEncoding",
]

# "default" means no scaling; it is accepted because Hugging Face configs spell it that way.
ROPE_SCALING_TYPES = ("default", "linear", "ntk", "dynamic", "yarn")

_SCALING_KEYS: dict[str, frozenset[str]] = {
    "default": frozenset(),
    "linear": frozenset({"factor"}),
    "ntk": frozenset({"factor"}),
    "dynamic": frozenset({"factor", "original_max_len"}),
    "yarn": frozenset({"factor", "original_max_len", "beta_fast", "beta_slow", "attention_factor", "truncate"}),
}
# Hugging Face spellings, so a converted config can be passed through unchanged.
_SCALING_ALIASES = {"rope_type": "type", "original_max_position_embeddings": "original_max_len"}


def _hidden_ports(d_model: int) -> Ports:
    """Additive encodings keep the hidden shape; width 0 means "any width" (symbolic ``D``)."""
    port = Port("hidden", "hidden", ("B", "T", d_model if d_model > 0 else "D"))
    return Ports(inputs=(port,), outputs=(port,))


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Tables are computed in float32 (float64 for float64 inputs), then cast, so bf16 models keep precision."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_positive_int(value: Any, name: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{who}: {name} must be a positive int, got {value!r}")
    return value


def _as_positions(positions: Any, batch: int, length: int, device: torch.device, who: str, arg: str) -> torch.Tensor:
    """Validate a ``[S]`` or ``[B, S]`` integer position tensor and move it next to the data."""
    if not isinstance(positions, torch.Tensor):
        raise ValueError(
            f"{who}: {arg} must be an integer tensor of shape [S] or [B, S], got {type(positions).__name__}"
        )
    if positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool:
        raise ValueError(f"{who}: {arg} must be an integer (long) tensor, got dtype {positions.dtype}")
    shape = tuple(positions.shape)
    ok = (len(shape) == 1 and shape[0] == length) or (len(shape) == 2 and shape[1] == length and shape[0] in (1, batch))
    if not ok:
        raise ValueError(
            f"{who}: {arg} has shape {shape}; expected [{length}] or [{batch}, {length}] to match the input"
        )
    return positions.to(device=device, dtype=torch.long)


def _largest_position(positions: torch.Tensor, who: str, arg: str) -> int:
    """Largest position (one host sync); -1 when empty. Negative positions are rejected."""
    if positions.numel() == 0:
        return -1
    low, high = torch.aminmax(positions)
    if int(low) < 0:
        raise ValueError(f"{who}: {arg} must be >= 0, got {int(low)}")
    return int(high)


class NoPositionalEncoding(Component):
    """For models that get order from elsewhere (or have none, like gene sets): the identity."""

    kind = ComponentKind.POSITIONAL_ENCODING
    mode: ClassVar[str] = "none"

    def __init__(self, d_model: int = 0) -> None:
        super().__init__()
        self.d_model = d_model

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        return x

    def ports(self) -> Ports:
        return _hidden_ports(self.d_model)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}"


class SinusoidalPositionalEncoding(Component):
    """The fixed Vaswani et al. table (sin on even dims, cos on odd dims) added to ``x``.

    Values match the PyTorch tutorial / scGPT ``PositionalEncoding`` bit for bit in float32
    (same formula and operation order) so converted checkpoints reproduce reference outputs.
    Dropout is left to the caller: scGPT applies it, others do not.
    """

    kind = ComponentKind.POSITIONAL_ENCODING
    mode: ClassVar[str] = "additive"

    def __init__(self, d_model: int, max_len: int = 5000, base: float = 10000.0) -> None:
        super().__init__()
        who = type(self).__name__
        self.d_model = _check_positive_int(d_model, "d_model", who)
        self.max_len = _check_positive_int(max_len, "max_len", who)
        if not base > 0:
            raise ValueError(f"{who}: base must be > 0, got {base!r}")
        self.base = float(base)
        # Plain attribute, not a buffer: never in state_dict, built on whatever device the input lives on.
        self._tables: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def _table(self, rows: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (device, dtype)
        table = self._tables.get(key)
        if table is None or table.shape[0] < rows:
            have = 0 if table is None else table.shape[0]
            # Grow geometrically so growing sequence lengths do not rebuild the table every call.
            table = self._compute(min(self.max_len, max(rows, 2 * have)), device, dtype)
            self._tables[key] = table
        return table

    def _compute(self, rows: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        work = _work_dtype(dtype)
        # inference_mode(False): a table cached under inference_mode could not be used later with autograd.
        with torch.inference_mode(False):
            position = torch.arange(rows, device=device, dtype=work).unsqueeze(1)
            dims = torch.arange(0, self.d_model, 2, device=device, dtype=work)
            freq = torch.exp(dims * (-math.log(self.base) / self.d_model))
            angle = position * freq
            table = torch.empty(rows, self.d_model, device=device, dtype=work)
            table[:, 0::2] = torch.sin(angle)
            table[:, 1::2] = torch.cos(angle[:, : self.d_model // 2])  # odd d_model: one cos column fewer
            return table.to(dtype)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, T, D]`` plus the table rows for ``positions`` (``[B, T]`` or ``[T]``; default ``0..T-1``)."""
        who = type(self).__name__
        if x.dim() != 3 or x.shape[-1] != self.d_model or not x.is_floating_point():
            raise ValueError(
                f"{who}: expected floating hidden states [B, T, {self.d_model}], got {tuple(x.shape)} {x.dtype}"
            )
        length = x.shape[1]
        if positions is None:
            if length > self.max_len:
                raise ValueError(
                    f"{who}: sequence length {length} exceeds max_len={self.max_len}; "
                    "truncate the input or build the encoding with a larger max_len"
                )
            return x + self._table(length, x.device, x.dtype)[:length]
        positions = _as_positions(positions, x.shape[0], length, x.device, who, "positions")
        largest = _largest_position(positions, who, "positions")
        if largest >= self.max_len:
            raise ValueError(f"{who}: position {largest} is out of range for max_len={self.max_len}")
        return x + self._table(largest + 1, x.device, x.dtype)[positions]

    def ports(self) -> Ports:
        return _hidden_ports(self.d_model)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}, base={self.base}"


class LearnedPositionalEncoding(Component):
    """A trained table of ``max_len`` position vectors (BERT/GPT-2 style) added to ``x``."""

    kind = ComponentKind.POSITIONAL_ENCODING
    mode: ClassVar[str] = "additive"

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        who = type(self).__name__
        self.d_model = _check_positive_int(d_model, "d_model", who)
        self.max_len = _check_positive_int(max_len, "max_len", who)
        self.embedding = nn.Embedding(max_len, d_model)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, T, D]`` plus the learned vectors for ``positions`` (``[B, T]`` or ``[T]``; default ``0..T-1``)."""
        who = type(self).__name__
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"{who}: expected hidden states [B, T, {self.d_model}], got {tuple(x.shape)}")
        length = x.shape[1]
        if positions is None:
            if length > self.max_len:
                raise ValueError(
                    f"{who}: sequence length {length} exceeds max_len={self.max_len}; a learned table cannot "
                    "extrapolate, so truncate the input"
                )
            positions = torch.arange(length, device=x.device)
        else:
            positions = _as_positions(positions, x.shape[0], length, x.device, who, "positions")
            largest = _largest_position(positions, who, "positions")
            if largest >= self.max_len:
                raise ValueError(f"{who}: position {largest} is out of range for max_len={self.max_len}")
        # Cast so a float32 table does not silently promote bf16/fp16 activations.
        return x + self.embedding(positions).to(x.dtype)

    def ports(self) -> Ports:
        return _hidden_ports(self.d_model)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}"


@dataclass
class _RopeTable:
    """Cached cos/sin rows ``[length, head_dim]``; ``scale_len`` is the dynamic-NTK length they were built for."""

    length: int
    scale_len: int | None
    cos: torch.Tensor
    sin: torch.Tensor


class RotaryPositionalEncoding(Component):
    """Rotary position embedding (RoPE, Su et al. 2021) applied to queries and keys inside attention.

    The score between a query at position ``m`` and a key at ``n`` then depends only on ``m - n``.
    Pairing: half-split (``rotate_half``, GPT-NeoX / Llama) by default; ``interleaved=True``
    pairs dims ``(0, 1), (2, 3), ...`` as GPT-J does. Checkpoints differ, so pick the one the
    reference model was trained with.

    ``scaling`` extends the context of a model trained on ``original_max_len`` positions:

    * ``{"type": "linear", "factor": f}`` - position interpolation, positions / f.
    * ``{"type": "ntk", "factor": f}`` - NTK-aware, base * f ** (d / (d - 2)).
    * ``{"type": "dynamic", "factor": f, "original_max_len": L}`` - dynamic NTK: for a sequence of
      ``s > L`` positions the base becomes base * (f * s / L - (f - 1)) ** (d / (d - 2)), with ``s``
      the largest position in the call + 1 (as in ``transformers``; it is recomputed every call
      rather than only on growth).
    * ``{"type": "yarn", "factor": f, "original_max_len": L, "beta_fast": 32, "beta_slow": 1,
      "attention_factor": None, "truncate": True}`` - YaRN: per-dimension blend of interpolated and
      original frequencies with a linear ramp between the beta correction dims, and cos/sin scaled by
      ``0.1 * ln(f) + 1`` unless ``attention_factor`` is given.

    ``original_max_len`` defaults to ``max_len``. ``max_len`` is not a hard limit (RoPE is defined
    for any position); it sizes the first cache and is that default.
    """

    kind = ComponentKind.POSITIONAL_ENCODING
    mode: ClassVar[str] = "rotary"

    def __init__(
        self,
        head_dim: int,
        max_len: int = 2048,
        base: float = 10000.0,
        scaling: dict[str, Any] | None = None,
        interleaved: bool = False,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        self.head_dim = _check_positive_int(head_dim, "head_dim", who)
        if head_dim % 2:
            raise ValueError(f"{who}: head_dim must be even (dims are rotated in pairs), got {head_dim}")
        self.max_len = _check_positive_int(max_len, "max_len", who)
        if not base > 1:
            raise ValueError(f"{who}: base must be > 1, got {base!r}")
        self.base = float(base)
        self.interleaved = bool(interleaved)
        self.scaling = dict(scaling) if scaling else None
        self._parse_scaling(self.scaling)
        self._cache: dict[tuple[torch.device, torch.dtype], _RopeTable] = {}

    def _parse_scaling(self, scaling: dict[str, Any] | None) -> None:
        who = type(self).__name__
        options = {_SCALING_ALIASES.get(key, key): value for key, value in (scaling or {}).items()}
        kind = options.pop("type", "default")
        if kind not in _SCALING_KEYS:
            raise ValueError(f"{who}: unknown scaling type {kind!r}; valid types are {', '.join(ROPE_SCALING_TYPES)}")
        unknown = set(options) - _SCALING_KEYS[kind]
        if unknown:
            allowed = ", ".join(sorted(_SCALING_KEYS[kind])) or "none"
            raise ValueError(f"{who}: scaling {kind!r} got unknown keys {sorted(unknown)}; allowed keys: {allowed}")
        self.scaling_type: str = kind
        self.factor = 1.0
        if kind != "default":
            factor = options.get("factor")
            if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor > 0:
                raise ValueError(f"{who}: scaling {kind!r} needs a positive number 'factor', got {factor!r}")
            self.factor = float(factor)
        if kind in ("ntk", "dynamic") and self.head_dim <= 2:
            raise ValueError(f"{who}: {kind!r} scaling needs head_dim > 2 (exponent d / (d - 2)), got {self.head_dim}")
        self.original_max_len = _check_positive_int(
            options.get("original_max_len", self.max_len), "scaling['original_max_len']", who
        )
        self.beta_fast = float(options.get("beta_fast", 32.0))
        self.beta_slow = float(options.get("beta_slow", 1.0))
        self.truncate = bool(options.get("truncate", True))
        attention_factor = options.get("attention_factor")
        if kind != "yarn":
            attention_factor = 1.0
        elif attention_factor is None:
            attention_factor = 0.1 * math.log(self.factor) + 1.0 if self.factor > 1 else 1.0
        self.attention_factor = float(attention_factor)

    def _base_for(self, scale_len: int | None) -> float:
        """The rotation base after NTK-style rescaling (unchanged for the other types)."""
        exponent = self.head_dim / (self.head_dim - 2) if self.head_dim > 2 else 0.0
        if self.scaling_type == "ntk":
            return self.base * self.factor**exponent
        if self.scaling_type == "dynamic" and scale_len is not None:
            stretch = self.factor * scale_len / self.original_max_len - (self.factor - 1)
            return self.base * stretch**exponent
        return self.base

    def _scale_len(self, needed: int) -> int | None:
        """Dynamic NTK only: the sequence length the base depends on (None while within the original context)."""
        if self.scaling_type == "dynamic" and needed > self.original_max_len:
            return needed
        return None

    def inverse_frequencies(
        self,
        seq_len: int | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """The ``head_dim // 2`` rotation frequencies; ``seq_len`` matters only for dynamic scaling."""
        scale_len = self._scale_len(seq_len) if seq_len is not None else None
        dims = torch.arange(0, self.head_dim, 2, device=device, dtype=dtype)
        wavelength_scale = self._base_for(scale_len) ** (dims / self.head_dim)
        inv_freq = 1.0 / wavelength_scale
        if self.scaling_type == "linear":
            return inv_freq / self.factor  # same angles as dividing positions by the factor
        if self.scaling_type == "yarn":
            interpolated = self._yarn_ramp(device, dtype)
            return inv_freq * (1.0 - interpolated) + 1.0 / (self.factor * wavelength_scale) * interpolated
        return inv_freq

    def _yarn_ramp(self, device: torch.device | str | None, dtype: torch.dtype) -> torch.Tensor:
        """0 for fast dims that keep their original frequency, 1 for slow dims that are fully interpolated."""

        def dim_for(rotations: float) -> float:
            # The pair index whose wavelength completes `rotations` turns over the original context.
            wavelengths = self.original_max_len / (rotations * 2 * math.pi)
            return self.head_dim * math.log(wavelengths) / (2 * math.log(self.base))

        low, high = dim_for(self.beta_fast), dim_for(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, self.head_dim - 1)
        if low == high:
            high += 0.001  # avoid a zero-width ramp
        index = torch.arange(self.head_dim // 2, device=device, dtype=dtype)
        return ((index - low) / (high - low)).clamp(0.0, 1.0)

    def _tables(self, needed: int, device: torch.device, dtype: torch.dtype) -> _RopeTable:
        """Cos/sin rows for positions ``0..needed-1``, cached per (device, dtype)."""
        scale_len = self._scale_len(needed)
        key = (device, dtype)
        table = self._cache.get(key)
        if table is not None and table.scale_len == scale_len and table.length >= needed:
            return table
        if scale_len is not None:
            length = needed  # the base depends on the length, so a longer table would be wrong
        else:
            have = 0 if table is None or table.scale_len is not None else table.length
            length = max(needed, self.max_len, 2 * have)
        work = _work_dtype(dtype)
        with torch.inference_mode(False):
            inv_freq = self.inverse_frequencies(scale_len, device=device, dtype=work)
            angle = torch.arange(length, device=device, dtype=work)[:, None] * inv_freq[None, :]
            # Lay the angles out like the pairs _turn rotates: (0,1),(2,3).. or (i, i + head_dim/2).
            angle = angle.repeat_interleave(2, dim=-1) if self.interleaved else torch.cat((angle, angle), dim=-1)
            cos = (angle.cos() * self.attention_factor).to(dtype)
            sin = (angle.sin() * self.attention_factor).to(dtype)
        table = _RopeTable(length, scale_len, cos, sin)
        self._cache[key] = table
        return table

    def _turn(self, x: torch.Tensor) -> torch.Tensor:
        """Each (a, b) pair -> (-b, a): the 90-degree rotation that, with cos and sin, rotates by any angle."""
        if self.interleaved:
            pairs = x.unflatten(-1, (-1, 2))
            return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        first, second = x.chunk(2, dim=-1)
        return torch.cat((-second, first), dim=-1)

    def _rotate_one(self, x: torch.Tensor, start: int, positions: torch.Tensor | None, needed: int) -> torch.Tensor:
        table = self._tables(needed, x.device, x.dtype)
        if positions is None:
            cos = table.cos[start : start + x.shape[-2]]
            sin = table.sin[start : start + x.shape[-2]]
        else:
            cos, sin = table.cos[positions], table.sin[positions]
            if positions.dim() == 2:  # [B, S, D] -> [B, 1, S, D] to broadcast over heads
                cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        return x * cos + self._turn(x) * sin

    def rotate(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        positions: torch.Tensor | None = None,
        offset: int = 0,
        k_positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate ``q [B, Hq, Sq, head_dim]`` and ``k [B, Hk, Sk, head_dim]`` by their positions.

        Convention: without explicit positions each tensor gets ``offset + arange(S)`` of its own
        length. During cached generation rotate the *new* queries and keys before appending keys to
        the cache and pass ``offset=`` the number of cached tokens (as ``biozoo.nn.attention`` does).
        For any other layout (left padding, packed sequences, a ``k`` that holds the whole un-rotated
        history) pass ``positions`` (``[Sq]`` or ``[B, Sq]``) and, when ``k`` has a different length,
        ``k_positions``; ``positions`` is reused for ``k`` when the lengths match.
        """
        who = type(self).__name__
        for name, t in (("q", q), ("k", k)):
            if t.dim() != 4 or t.shape[-1] != self.head_dim or not t.is_floating_point():
                raise ValueError(
                    f"{who}.rotate: {name} must be a floating tensor [B, H, S, {self.head_dim}], "
                    f"got {tuple(t.shape)} {t.dtype}"
                )
        sq, sk = q.shape[-2], k.shape[-2]
        if positions is None and k_positions is None:
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
                raise ValueError(f"{who}.rotate: offset must be a non-negative int, got {offset!r}")
            needed = offset + max(sq, sk)
            return self._rotate_one(q, offset, None, needed), self._rotate_one(k, offset, None, needed)
        if offset:
            raise ValueError(f"{who}.rotate: pass either offset or explicit positions, not both")
        if positions is None:
            raise ValueError(f"{who}.rotate: k_positions needs positions for q as well")
        q_pos = _as_positions(positions, q.shape[0], sq, q.device, who, "positions")
        if k_positions is None:
            if sk != sq:
                raise ValueError(f"{who}.rotate: q has {sq} positions but k has {sk}; pass k_positions for the keys")
            k_pos = q_pos.to(k.device)
        else:
            k_pos = _as_positions(k_positions, k.shape[0], sk, k.device, who, "k_positions")
        # One length for both, so dynamic scaling rotates q and k with the same frequencies.
        needed = max(_largest_position(q_pos, who, "positions"), _largest_position(k_pos, who, "k_positions")) + 1
        return self._rotate_one(q, 0, q_pos, needed), self._rotate_one(k, 0, k_pos, needed)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise RuntimeError(
            "RotaryPositionalEncoding is not added to hidden states: it rotates queries and keys inside "
            "attention. Pass it to the attention layer (rotary=...), which calls .rotate(q, k, offset=...)."
        )

    def ports(self) -> Ports:
        return Ports()

    def extra_repr(self) -> str:
        extra = f", scaling={self.scaling}" if self.scaling else ""
        return (
            f"head_dim={self.head_dim}, max_len={self.max_len}, base={self.base}, interleaved={self.interleaved}{extra}"
        )
