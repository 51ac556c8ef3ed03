"""Transformer encoder and decoder layers, pre-norm or post-norm.

Attribute names follow ``torch.nn.TransformerEncoderLayer`` /
``TransformerDecoderLayer`` (``self_attn``, ``linear1``, ``norm1``...), so
checkpoints of models built on PyTorch's layers load as they are with
``packed_qkv=True`` (``in_proj_weight``), or map onto ``q_proj``/``k_proj``/``v_proj``
by splitting that one matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from biozoo.components.base import Component
from biozoo.components.ports import Port, Ports
from biozoo.nn.attention import KVCache, MultiHeadAttention, make_norm
from biozoo.nn.checks import check_int, check_positive, check_probability
from biozoo.plugins.declarations import ComponentKind

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "leaky_relu": F.leaky_relu,
}


def activation_fn(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}") from None


class _FeedForward(nn.Module):
    """``linear2(dropout(act(linear1(x))))``, attributes on the layer itself as in PyTorch."""

    def _init_ff(self, d_model: int, dim_feedforward: int, dropout: float, activation: str, bias: bool) -> None:
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        self.activation_name = activation
        self.activation = activation_fn(activation)

    def ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


NORM_SCHEMES = ("post", "pre", "residual")


def _check_layer_sizes(
    d_model: int, heads: int, dim_feedforward: int | None, dropout: float, eps: float, heads_name: str
) -> None:
    """The sizes every transformer layer shares, checked by the names of the caller's arguments."""
    check_int("d_model", d_model)
    check_int(heads_name, heads)
    if dim_feedforward is not None:
        check_int("dim_feedforward", dim_feedforward, minimum=0)  # 0: the default, 4 * d_model
    check_probability("dropout", dropout)
    check_positive("layer_norm_eps", eps)


def _scheme(norm_first: bool, norm_scheme: str | None) -> str:
    scheme = norm_scheme or ("pre" if norm_first else "post")
    if scheme not in NORM_SCHEMES:
        raise ValueError(f"unknown norm_scheme {scheme!r}; choose from {', '.join(NORM_SCHEMES)}")
    return scheme


class TransformerEncoderLayer(_FeedForward):
    """Self-attention + feed-forward, in one of three normalisation schemes.

    ``post`` (PyTorch's default): ``x = norm1(x + sa(x)); x = norm2(x + ff(x))``.
    ``pre`` (``norm_first=True``): ``x = x + sa(norm1(x)); x = x + ff(norm2(x))``.
    ``residual`` (scGPT's flash-attention "pre" scheme, where the residual stream
    itself is normalised): ``x = norm1(x); x = x + sa(x); x = norm2(x); x = x + ff(x)``.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        norm_first: bool = False,
        bias: bool = True,
        norm: str = "layer_norm",
        num_kv_heads: int | None = None,
        qk_norm: str | None = None,
        attention_dropout: float | None = None,
        norm_scheme: str | None = None,
        packed_qkv: bool = False,
    ) -> None:
        super().__init__()
        _check_layer_sizes(d_model, nhead, dim_feedforward, dropout, layer_norm_eps, "nhead")
        self.norm_scheme = _scheme(norm_first, norm_scheme)
        self.self_attn = MultiHeadAttention(
            d_model,
            nhead,
            num_kv_heads=num_kv_heads,
            bias=bias,
            dropout=dropout if attention_dropout is None else attention_dropout,
            qk_norm=qk_norm,
            packed_projections=packed_qkv,
        )
        self._init_ff(d_model, dim_feedforward, dropout, activation, bias)
        self.norm1 = make_norm(norm, d_model, layer_norm_eps)
        self.norm2 = make_norm(norm, d_model, layer_norm_eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _sa(self, x: torch.Tensor, attn: dict[str, Any]) -> torch.Tensor:
        return self.dropout1(self.self_attn(x, **attn)[0])

    def forward(
        self,
        src: torch.Tensor,
        src_key_padding_mask: torch.Tensor | None = None,
        src_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        rotary: Any | None = None,
        position_offset: int = 0,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        attn = dict(
            key_padding_mask=src_key_padding_mask,
            attn_mask=src_mask,
            is_causal=is_causal,
            rotary=rotary,
            position_offset=position_offset,
            cache=cache,
        )
        x = src
        if self.norm_scheme == "pre":
            x = x + self._sa(self.norm1(x), attn)
            x = x + self.dropout2(self.ff(self.norm2(x)))
        elif self.norm_scheme == "post":
            x = self.norm1(x + self._sa(x, attn))
            x = self.norm2(x + self.dropout2(self.ff(x)))
        else:
            x = self.norm1(x)
            x = x + self._sa(x, attn)
            x = self.norm2(x)
            x = x + self.dropout2(self.ff(x))
        return x


class TransformerDecoderLayer(_FeedForward):
    """Causal self-attention, cross-attention to ``memory``, feed-forward; pre- or post-norm."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        norm_first: bool = False,
        bias: bool = True,
        norm: str = "layer_norm",
        num_kv_heads: int | None = None,
        qk_norm: str | None = None,
        memory_dim: int | None = None,
    ) -> None:
        super().__init__()
        _check_layer_sizes(d_model, nhead, dim_feedforward, dropout, layer_norm_eps, "nhead")
        self.self_attn = MultiHeadAttention(
            d_model, nhead, num_kv_heads=num_kv_heads, bias=bias, dropout=dropout, qk_norm=qk_norm
        )
        self.multihead_attn = MultiHeadAttention(
            d_model,
            nhead,
            num_kv_heads=num_kv_heads,
            bias=bias,
            dropout=dropout,
            qk_norm=qk_norm,
            kdim=memory_dim,
            vdim=memory_dim,
        )
        self._init_ff(d_model, dim_feedforward, dropout, activation, bias)
        self.norm1 = make_norm(norm, d_model, layer_norm_eps)
        self.norm2 = make_norm(norm, d_model, layer_norm_eps)
        self.norm3 = make_norm(norm, d_model, layer_norm_eps)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        tgt_key_padding_mask: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
        tgt_is_causal: bool = False,
        rotary: Any | None = None,
    ) -> torch.Tensor:
        def sa(x: torch.Tensor) -> torch.Tensor:
            out = self.self_attn(
                x, key_padding_mask=tgt_key_padding_mask, attn_mask=tgt_mask, is_causal=tgt_is_causal, rotary=rotary
            )[0]
            return self.dropout1(out)

        def ca(x: torch.Tensor) -> torch.Tensor:
            out = self.multihead_attn(x, memory, key_padding_mask=memory_key_padding_mask, attn_mask=memory_mask)[0]
            return self.dropout2(out)

        x = tgt
        if self.norm_first:
            x = x + sa(self.norm1(x))
            x = x + ca(self.norm2(x))
            x = x + self.dropout3(self.ff(self.norm3(x)))
        else:
            x = self.norm1(x + sa(x))
            x = self.norm2(x + ca(x))
            x = self.norm3(x + self.dropout3(self.ff(x)))
        return x


class TransformerEncoder(Component):
    """A stack of encoder layers (registered as ``core.transformer_encoder``): hidden -> hidden."""

    kind = ComponentKind.ENCODER

    def __init__(
        self,
        d_model: int,
        num_layers: int,
        num_heads: int,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        norm_first: bool = False,
        final_norm: bool = False,
        bias: bool = True,
        norm: str = "layer_norm",
        num_kv_heads: int | None = None,
        qk_norm: str | None = None,
        causal: bool = False,
        norm_scheme: str | None = None,
        zero_padding_outputs: bool = False,
        packed_qkv: bool = False,
    ) -> None:
        super().__init__()
        _check_layer_sizes(d_model, num_heads, dim_feedforward, dropout, layer_norm_eps, "num_heads")
        check_int("num_layers", num_layers, minimum=0)
        self.d_model, self.causal, self.zero_padding_outputs = d_model, causal, zero_padding_outputs
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(
                d_model,
                num_heads,
                dim_feedforward or 4 * d_model,
                dropout,
                activation,
                layer_norm_eps,
                norm_first,
                bias,
                norm,
                num_kv_heads,
                qk_norm,
                norm_scheme=norm_scheme,
                packed_qkv=packed_qkv,
            )
            for _ in range(num_layers)
        )
        self.norm = make_norm(norm, d_model, layer_norm_eps) if final_norm else None

    def ports(self) -> Ports:
        hidden = Port("hidden", "hidden", ("B", "T", self.d_model))
        mask = Port("padding_mask", "padding-mask", ("B", "T"), optional=True)
        return Ports(inputs=(hidden, mask), outputs=(hidden,))

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        rotary: Any | None = None,
        position_offset: int = 0,
        cache: KVCache | None = None,
        causal: bool | None = None,
    ) -> torch.Tensor:
        """``padding_mask``: bool ``[B, T]``, True = padding.

        ``causal`` overrides the stack's own setting for this call (a causal model's
        bidirectional ``encode``, say); ``cache`` + ``position_offset`` decode incrementally.

        With ``zero_padding_outputs`` the outputs at padded positions are set to
        zero, as PyTorch's own encoder does on its inference fast path (so pooled
        outputs that include padding match it in every mode).
        """
        for layer in self.layers:
            x = layer(
                x,
                src_key_padding_mask=padding_mask,
                is_causal=self.causal if causal is None else causal,
                rotary=rotary,
                position_offset=position_offset,
                cache=cache,
            )
        x = self.norm(x) if self.norm is not None else x
        if self.zero_padding_outputs and padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        return x

    def hidden_states(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, causal: bool | None = None
    ) -> list[torch.Tensor]:
        """``[x, layer 1 output, ..., last output]`` (Hugging Face's ``output_hidden_states``); the last entry is
        :meth:`forward`'s result (after the final norm, if any)."""
        states, is_causal = [x], self.causal if causal is None else causal
        for layer in self.layers:
            states.append(layer(states[-1], src_key_padding_mask=padding_mask, is_causal=is_causal))
        last = self.norm(states[-1]) if self.norm is not None else states[-1]
        if self.zero_padding_outputs and padding_mask is not None:
            last = last.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        states[-1] = last
        return states
