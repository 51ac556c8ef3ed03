"""A drop-in for ``diffusers.models.attention_processor.Attention`` whose math runs through biozoo processors.

Same constructor arguments, same submodule names (hence the same ``state_dict``
keys) and the same call as diffusers 0.42, so ``attn.load_state_dict(
diffusers_attn.state_dict())`` works unchanged. The layer logic (norms,
projections, head split, residual) lives here once; the kernel is whatever
:func:`biozoo.attention.attend` resolves (``eager``, ``sdpa``, a plugin's), so
``biozoo.set_processor`` / ``use_processor`` / ``explain`` work on this module and
a kernel that cannot honour a call raises instead of silently dropping a flag.

Three layer families, chosen by the constructor exactly as diffusers' own
modules pair them with processors:

* **plain** (``AttnProcessor``/``AttnProcessor2_0``): self or cross attention,
  3-D ``[B, S, C]`` or 4-D ``[B, C, H, W]`` input (spatial_norm, group_norm,
  residual_connection, rescale_output_factor);
* **added-KV** (``added_kv_proj_dim`` without ``context_pre_only``;
  ``AttnAddedKVProcessor``, UnCLIP/Kandinsky): channels-first input, context
  keys/values come *before* the module's own, the residual is always added;
* **joint** (``added_kv_proj_dim`` with ``context_pre_only``;
  ``JointAttnProcessor2_0``, SD3/MMDiT): image and context tokens attend
  jointly; returns ``(hidden_states, encoder_hidden_states)`` when given context.

Where diffusers' processors are wrong or silent, this module does what the flags say:

* qk_norm is applied in every family (diffusers' eager and added-KV paths skip it);
* ``attn.scale``, ``scale_qk=False`` and the call's ``scale`` reach every kernel
  (AttnProcessor2_0 ignores them); the call's ``scale`` is the *softmax* scale,
  not diffusers' deprecated (and ignored) LoRA scale;
* ``is_causal`` (constructor or call) is honoured, bottom-right aligned;
* ``kv_heads`` is real GQA/MQA (query head h uses key/value head h // (heads/kv_heads));
* masks are normalised once (:func:`normalize_attention_mask`); a query row
  with nothing to attend to gives zeros, not NaN;
* the mask JointAttnProcessor2_0 silently drops is applied (over [own, context] keys);
* ``upcast_attention``/``upcast_softmax`` run the whole kernel in fp32 for
  half inputs, on every kernel (diffusers: eager path only);
* unknown call keywords raise ``TypeError`` (diffusers warns and drops them),
  and constructor arguments a family cannot honour raise ``NotImplementedError``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from biozoo.attention.contract import AttentionCall, AttentionMask
from biozoo.attention.selection import AUTO, AttentionSettable, attend

__all__ = ["Attention", "normalize_attention_mask"]

_HALF = (torch.float16, torch.bfloat16)
_QK_NORMS = (
    "layer_norm",
    "fp32_layer_norm",
    "layer_norm_across_heads",
    "rms_norm",
    "rms_norm_across_heads",
    "l2",
)
# diffusers' stateless processors -> (biozoo kernel, layer family they implement). Anything else owns
# layer logic or weights (IP-Adapter, custom diffusion, ...) that this module does not reproduce.
_DIFFUSERS_PROCESSORS = {
    "AttnProcessor": ("eager", "plain"),
    "AttnProcessor2_0": ("sdpa", "plain"),
    "AttnAddedKVProcessor": ("eager", "added_kv"),
    "AttnAddedKVProcessor2_0": ("sdpa", "added_kv"),
    "JointAttnProcessor2_0": ("sdpa", "joint"),
}
_DEPRECATED_KEYS = {"query.": "to_q.", "key.": "to_k.", "value.": "to_v.", "proj_attn.": "to_out.0."}


class RMSNorm(nn.Module):
    """RMS norm with diffusers' parameter layout (``weight`` only when affine), computed in at least fp32."""

    def __init__(self, dim: int, eps: float, elementwise_affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if elementwise_affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float() if x.dtype in _HALF else x
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.to(y.dtype)
        return y.to(x.dtype)


class FP32LayerNorm(nn.Module):
    """Parameter-free layer norm in at least fp32 (diffusers' ``fp32_layer_norm`` qk norm has no weights)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float() if x.dtype in _HALF else x, (self.dim,), eps=self.eps).to(x.dtype)


class L2Norm(nn.Module):
    """Unit L2 norm over the last axis (``qk_norm="l2"``); no parameters."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2.0, dim=-1, eps=self.eps)


class SpatialNorm(nn.Module):
    """MoVQ's spatially conditioned group norm: ``norm(f) * conv_y(zq) + conv_b(zq)``, ``zq`` resized to ``f``."""

    def __init__(self, f_channels: int, zq_channels: int) -> None:
        super().__init__()
        self.norm_layer = nn.GroupNorm(num_channels=f_channels, num_groups=32, eps=1e-6, affine=True)
        self.conv_y = nn.Conv2d(zq_channels, f_channels, kernel_size=1)
        self.conv_b = nn.Conv2d(zq_channels, f_channels, kernel_size=1)

    def forward(self, f: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        zq = F.interpolate(zq, size=f.shape[-2:], mode="nearest")
        return self.norm_layer(f) * self.conv_y(zq) + self.conv_b(zq)


def _qk_norm(kind: str, dim: int, eps: float, affine: bool) -> nn.Module:
    if kind in ("layer_norm", "layer_norm_across_heads"):
        return nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
    if kind == "fp32_layer_norm":
        return FP32LayerNorm(dim, eps)
    if kind in ("rms_norm", "rms_norm_across_heads"):
        return RMSNorm(dim, eps, affine)
    return L2Norm(eps)


def _rename_deprecated_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load pre-0.14 ``AttentionBlock`` checkpoints (``query``/``key``/``value``/``proj_attn``) as diffusers does."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix) :]
        for old, new in _DEPRECATED_KEYS.items():
            if rest.startswith(old):
                state_dict[prefix + new + rest[len(old) :]] = state_dict.pop(key)
                break


def normalize_attention_mask(
    mask: torch.Tensor | None, *, batch: int, heads: int, sq: int, skv: int, dtype: torch.dtype
) -> AttentionMask | None:
    """Turn any diffusers-style mask into one typed biozoo mask (True = attend), or raise if it is ambiguous.

    Accepted: bool (True = keep, as SDPA) or float (added to the scores, e.g.
    0 / -10000), shaped ``[B, Skv]``, ``[B, 1|Sq, Skv]``, ``[B*heads, 1|Sq, Skv]``
    (diffusers' prepared layout) or ``[B|1, heads|1, 1|Sq, Skv]``. A mask
    shorter than the keys describes the *leading* keys; the trailing keys it does
    not mention are attended. That is what diffusers' ``prepare_attention_mask``
    means by padding with 0 (its TODO, #11063; it pads by the wrong amount), and it
    is exactly right for added-KV attention, where a text mask covers the context
    keys that precede the module's own. Integer masks are refused: 1/0 added to
    scores would silently mean nothing.
    """
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        is_bool = True
    elif mask.is_floating_point():
        is_bool = False
    else:
        raise TypeError(
            f"attention_mask has dtype {mask.dtype}; pass bool (True = attend) or a float additive mask (0 / -inf)"
        )
    shape = tuple(mask.shape)
    if mask.ndim == 2:
        m = mask[:, None, None, :]
    elif mask.ndim == 3:
        per_head = heads > 1 and mask.shape[0] == batch * heads  # diffusers' prepared [B*heads, Sq|1, Skv]
        m = mask.unflatten(0, (batch, heads)) if per_head else mask[:, None]
    elif mask.ndim == 4:
        m = mask
    else:
        raise ValueError(f"attention_mask must be 2-D, 3-D or 4-D, got shape {shape}")
    b, h, q, length = m.shape
    if b not in (1, batch) or h not in (1, heads) or q not in (1, sq) or length > skv:
        raise ValueError(
            f"attention_mask of shape {shape} does not fit [B={batch}, heads={heads}, Sq={sq}, Skv={skv}]; "
            "use [B, Skv], [B, 1|Sq, Skv], [B*heads, 1|Sq, Skv] or [B, heads|1, 1|Sq, Skv]"
        )
    if length < skv:
        pad = (torch.ones if is_bool else torch.zeros)((b, h, q, skv - length), dtype=m.dtype, device=m.device)
        m = torch.cat([m, pad], dim=-1)
    if not is_bool:
        return AttentionMask("additive", m.to(dtype))
    if h == 1 and q == 1:  # a per-key mask: the kind every kernel (even varlen ones) can take
        return AttentionMask("key_padding", m[:, 0, 0].expand(batch, skv))
    return AttentionMask("bool", m)


class Attention(AttentionSettable, nn.Module):
    """diffusers' ``Attention`` (0.42): same arguments, state-dict keys and call; math via biozoo processors.

    ``processor`` is a biozoo processor name (``"eager"``, ``"sdpa"``, a plugin's,
    ``"auto"``) or one of diffusers' stateless processors, mapped to its biozoo
    equivalent (``AttnProcessor`` -> eager, ``AttnProcessor2_0`` -> sdpa, ...). It
    is recorded as this module's *default*, so ``biozoo.set_processor`` and
    ``use_processor`` still override it.
    """

    def __init__(
        self,
        query_dim: int,
        cross_attention_dim: int | None = None,
        heads: int = 8,
        kv_heads: int | None = None,
        dim_head: int = 64,
        dropout: float = 0.0,
        bias: bool = False,
        upcast_attention: bool = False,
        upcast_softmax: bool = False,
        cross_attention_norm: str | None = None,
        cross_attention_norm_num_groups: int = 32,
        qk_norm: str | None = None,
        added_kv_proj_dim: int | None = None,
        added_proj_bias: bool | None = True,
        norm_num_groups: int | None = None,
        spatial_norm_dim: int | None = None,
        out_bias: bool = True,
        scale_qk: bool = True,
        only_cross_attention: bool = False,
        eps: float = 1e-5,
        rescale_output_factor: float = 1.0,
        residual_connection: bool = False,
        _from_deprecated_attn_block: bool = False,
        processor: Any = None,
        out_dim: int | None = None,
        out_context_dim: int | None = None,
        context_pre_only: bool | None = None,
        pre_only: bool = False,
        elementwise_affine: bool = True,
        is_causal: bool = False,
    ) -> None:
        super().__init__()
        if out_dim is not None and out_dim % dim_head:
            raise ValueError(f"out_dim {out_dim} is not a multiple of dim_head {dim_head}")
        self.heads = out_dim // dim_head if out_dim is not None else heads
        self.kv_heads = kv_heads if kv_heads is not None else self.heads
        if self.kv_heads < 1 or self.heads % self.kv_heads:
            raise ValueError(f"heads {self.heads} must be a positive multiple of kv_heads {self.kv_heads}")
        if added_kv_proj_dim is None and only_cross_attention:
            raise ValueError("only_cross_attention=True needs added_kv_proj_dim (there would be no keys at all)")
        if qk_norm is not None and qk_norm not in _QK_NORMS:
            raise ValueError(f"unknown qk_norm {qk_norm!r}; use None or one of {', '.join(_QK_NORMS)}")
        if cross_attention_norm not in (None, "layer_norm", "group_norm"):
            raise ValueError(
                f"unknown cross_attention_norm {cross_attention_norm!r}; use None, 'layer_norm' or 'group_norm'"
            )
        if added_kv_proj_dim is None:
            if context_pre_only is not None:
                raise NotImplementedError(
                    "context_pre_only: only meaningful for joint attention, which needs added_kv_proj_dim"
                )
            self.family = "plain"
        else:
            self.family = "added_kv" if context_pre_only is None else "joint"
        self._check_family(
            cross_attention_dim=cross_attention_dim,
            query_dim=query_dim,
            cross_attention_norm=cross_attention_norm,
            norm_num_groups=norm_num_groups,
            spatial_norm_dim=spatial_norm_dim,
            only_cross_attention=only_cross_attention,
            rescale_output_factor=rescale_output_factor,
            residual_connection=residual_connection,
        )
        kernel = self._kernel_name(processor)

        # diffusers' attribute names, so code reading them keeps working
        self.dim_head = dim_head
        self.inner_dim = out_dim if out_dim is not None else dim_head * heads
        self.inner_kv_dim = self.inner_dim if kv_heads is None else dim_head * kv_heads
        self.query_dim = query_dim
        self.use_bias = bias
        self.is_cross_attention = cross_attention_dim is not None
        self.cross_attention_dim = cross_attention_dim if cross_attention_dim is not None else query_dim
        self.upcast_attention = upcast_attention
        self.upcast_softmax = upcast_softmax
        self.rescale_output_factor = rescale_output_factor
        self.residual_connection = residual_connection
        self.dropout = dropout
        self.fused_projections = False
        self.out_dim = out_dim if out_dim is not None else query_dim
        self.out_context_dim = out_context_dim if out_context_dim is not None else query_dim
        self.context_pre_only = context_pre_only
        self.pre_only = pre_only
        self.is_causal = is_causal
        self._from_deprecated_attn_block = _from_deprecated_attn_block
        self.scale_qk = scale_qk
        self.scale = dim_head**-0.5 if scale_qk else 1.0
        self.sliceable_head_dim = heads
        self.added_kv_proj_dim = added_kv_proj_dim
        self.only_cross_attention = only_cross_attention
        self.added_proj_bias = added_proj_bias
        self.qk_norm = qk_norm
        self._across_heads = qk_norm is not None and qk_norm.endswith("_across_heads")

        # submodules in diffusers' registration order (state-dict keys and their order match)
        self.group_norm = (
            nn.GroupNorm(num_channels=query_dim, num_groups=norm_num_groups, eps=eps, affine=True)
            if norm_num_groups is not None
            else None
        )
        self.spatial_norm = SpatialNorm(query_dim, spatial_norm_dim) if spatial_norm_dim is not None else None
        if qk_norm is None:
            self.norm_q = self.norm_k = None
        elif self._across_heads:
            self.norm_q = _qk_norm(qk_norm, dim_head * heads, eps, True)
            self.norm_k = _qk_norm(qk_norm, dim_head * (kv_heads or heads), eps, True)
        else:
            self.norm_q = _qk_norm(qk_norm, dim_head, eps, elementwise_affine)
            self.norm_k = _qk_norm(qk_norm, dim_head, eps, elementwise_affine)
        if cross_attention_norm == "layer_norm":
            self.norm_cross = nn.LayerNorm(self.cross_attention_dim)
        elif cross_attention_norm == "group_norm":
            channels = added_kv_proj_dim if added_kv_proj_dim is not None else self.cross_attention_dim
            self.norm_cross = nn.GroupNorm(
                num_channels=channels, num_groups=cross_attention_norm_num_groups, eps=1e-5, affine=True
            )
        else:
            self.norm_cross = None

        self.to_q = nn.Linear(query_dim, self.inner_dim, bias=bias)
        if only_cross_attention:
            self.to_k = self.to_v = None
        else:
            self.to_k = nn.Linear(self.cross_attention_dim, self.inner_kv_dim, bias=bias)
            self.to_v = nn.Linear(self.cross_attention_dim, self.inner_kv_dim, bias=bias)
        self.add_q_proj = self.add_k_proj = self.add_v_proj = None
        if added_kv_proj_dim is not None:
            added_bias = bool(added_proj_bias)
            self.add_k_proj = nn.Linear(added_kv_proj_dim, self.inner_kv_dim, bias=added_bias)
            self.add_v_proj = nn.Linear(added_kv_proj_dim, self.inner_kv_dim, bias=added_bias)
            if context_pre_only is not None:
                self.add_q_proj = nn.Linear(added_kv_proj_dim, self.inner_dim, bias=added_bias)
        self.to_out = (
            None
            if pre_only
            else nn.ModuleList([nn.Linear(self.inner_dim, self.out_dim, bias=out_bias), nn.Dropout(dropout)])
        )
        self.to_add_out = (
            nn.Linear(self.inner_dim, self.out_context_dim, bias=out_bias) if context_pre_only is False else None
        )
        self.norm_added_q = self.norm_added_k = None
        if qk_norm is not None and added_kv_proj_dim is not None:
            self._added_norms(qk_norm, dim_head, kv_heads, eps, elementwise_affine)

        if _from_deprecated_attn_block:
            self.register_load_state_dict_pre_hook(_rename_deprecated_keys)
        self.default_processor_name = kernel

    def _check_family(
        self,
        *,
        cross_attention_dim: int | None,
        query_dim: int,
        cross_attention_norm: str | None,
        norm_num_groups: int | None,
        spatial_norm_dim: int | None,
        only_cross_attention: bool,
        rescale_output_factor: float,
        residual_connection: bool,
    ) -> None:
        """Refuse arguments the chosen family (like diffusers' processor for it) would silently ignore."""
        if self.family == "added_kv":
            if spatial_norm_dim is not None:
                raise NotImplementedError("spatial_norm_dim: not supported with added_kv_proj_dim (added-KV attention)")
            if rescale_output_factor != 1.0:
                raise NotImplementedError(
                    "rescale_output_factor: not supported with added_kv_proj_dim (added-KV attention)"
                )
        elif self.family == "joint":
            refused = {
                "cross_attention_norm": cross_attention_norm is not None,
                "norm_num_groups": norm_num_groups is not None,
                "spatial_norm_dim": spatial_norm_dim is not None,
                "only_cross_attention": only_cross_attention,
                "rescale_output_factor": rescale_output_factor != 1.0,
                "residual_connection": residual_connection,
                "cross_attention_dim": cross_attention_dim not in (None, query_dim),
            }
            for name, bad in refused.items():
                if bad:
                    raise NotImplementedError(
                        f"{name}: not supported for joint attention (added_kv_proj_dim with context_pre_only)"
                    )

    def _added_norms(self, qk_norm: str, dim_head: int, kv_heads: int | None, eps: float, affine: bool) -> None:
        """``norm_added_q``/``norm_added_k`` with diffusers' exact shapes (rms_norm is always affine there)."""
        if qk_norm == "layer_norm":
            self.norm_added_q = nn.LayerNorm(dim_head, eps=eps, elementwise_affine=affine)
            self.norm_added_k = nn.LayerNorm(dim_head, eps=eps, elementwise_affine=affine)
        elif qk_norm == "fp32_layer_norm":
            self.norm_added_q = FP32LayerNorm(dim_head, eps)
            self.norm_added_k = FP32LayerNorm(dim_head, eps)
        elif qk_norm == "rms_norm":
            self.norm_added_q = RMSNorm(dim_head, eps)
            self.norm_added_k = RMSNorm(dim_head, eps)
        elif qk_norm == "rms_norm_across_heads":  # Wan: no added-q norm, the added-k norm spans all heads
            self.norm_added_k = RMSNorm(dim_head * (kv_heads or self.heads), eps)
        else:
            raise ValueError(
                f"qk_norm {qk_norm!r} has no added-projection norm; with added_kv_proj_dim use "
                "'layer_norm', 'fp32_layer_norm', 'rms_norm' or 'rms_norm_across_heads'"
            )

    def _kernel_name(self, processor: Any) -> str | None:
        """Map the ``processor`` argument to a biozoo processor name (None = auto)."""
        if processor is None:
            return None
        if isinstance(processor, str):
            if processor != AUTO:
                from biozoo.registry import get_registry

                get_registry().processor(processor)  # unknown names fail here, not at the first call
            return None if processor == AUTO else processor
        cls = type(processor).__name__
        if cls not in _DIFFUSERS_PROCESSORS:
            raise NotImplementedError(
                f"processor: diffusers' {cls} is not supported; pass a biozoo processor name or one of "
                f"{', '.join(_DIFFUSERS_PROCESSORS)} (the layer logic is this module's, the kernel is biozoo's)"
            )
        kernel, family = _DIFFUSERS_PROCESSORS[cls]
        if family != self.family:
            raise ValueError(f"processor: {cls} implements {family} attention but this module is {self.family}")
        return kernel

    def set_processor(self, processor: Any) -> None:
        """Pin this module's kernel (diffusers' method; same as ``biozoo.set_processor(model, name, where=path)``)."""
        self.processor_name = self._kernel_name(processor)

    def get_processor(self) -> str:
        """The biozoo processor name this module asks for (``"auto"`` when nothing is set)."""
        from biozoo.attention.selection import requested_name

        return requested_name(self)[0]

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *,
        is_causal: bool | None = None,
        scale: float | None = None,
        **kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """diffusers' call. ``is_causal``/``scale`` (softmax scale) override the module's ``is_causal``/``scale``.

        ``temb`` only feeds ``spatial_norm``. ``scale`` here is the *softmax*
        scale, not diffusers' long-deprecated LoRA scale (which it ignores).
        """
        if kwargs:
            raise TypeError(
                f"Attention got unexpected keyword argument(s) {', '.join(sorted(kwargs))}; it accepts "
                "encoder_hidden_states, attention_mask, temb, is_causal and scale (diffusers drops unknown ones "
                "with a warning; refusing them keeps a feature from being silently ignored)"
            )
        causal = self.is_causal if is_causal is None else bool(is_causal)
        softmax_scale = float(self.scale if scale is None else scale)
        if self.family == "joint":
            return self._joint(hidden_states, encoder_hidden_states, attention_mask, causal, softmax_scale)
        if self.family == "added_kv":
            return self._added_kv(hidden_states, encoder_hidden_states, attention_mask, causal, softmax_scale)
        return self._plain(hidden_states, encoder_hidden_states, attention_mask, temb, causal, softmax_scale)

    def _plain(
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor | None,
        mask: torch.Tensor | None,
        temb: torch.Tensor | None,
        causal: bool,
        scale: float,
    ) -> torch.Tensor:
        residual = hidden_states
        if self.spatial_norm is not None:
            if temb is None or hidden_states.ndim != 4:
                raise ValueError("spatial_norm needs 4-D hidden_states [B, C, H, W] and temb")
            hidden_states = self.spatial_norm(hidden_states, temb)
        spatial_shape = hidden_states.shape if hidden_states.ndim == 4 else None
        if spatial_shape is not None:
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        elif hidden_states.ndim != 3:
            raise ValueError(f"hidden_states must be [B, S, C] or [B, C, H, W], got {tuple(hidden_states.shape)}")
        if self.group_norm is not None:
            hidden_states = self.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if context is None else self._norm_context(context)
        q = self._split(self.to_q(hidden_states), self.heads, self.norm_q)
        k = self._split(self.to_k(context), self.kv_heads, self.norm_k)
        v = self._split(self.to_v(context), self.kv_heads, None)
        out = self._project_out(self._attention(q, k, v, mask, causal, scale))
        if spatial_shape is not None:
            out = out.transpose(1, 2).reshape(spatial_shape[0], -1, *spatial_shape[2:])
        if self.residual_connection:
            out = out + residual
        return out / self.rescale_output_factor

    def _added_kv(
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor | None,
        mask: torch.Tensor | None,
        causal: bool,
        scale: float,
    ) -> torch.Tensor:
        """UnCLIP-style: channels-first input; keys are [context, own]; residual always added (as diffusers)."""
        if hidden_states.ndim < 3:
            raise ValueError(f"added-KV attention takes channels-first [B, C, ...], got {tuple(hidden_states.shape)}")
        residual = hidden_states
        hidden_states = hidden_states.flatten(2).transpose(1, 2)
        context = hidden_states if context is None else self._norm_context(context)
        if self.group_norm is not None:
            hidden_states = self.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        q = self._split(self.to_q(hidden_states), self.heads, self.norm_q)  # no context queries: norm_added_q unused
        k = self._split(self.add_k_proj(context), self.kv_heads, self.norm_added_k)
        v = self._split(self.add_v_proj(context), self.kv_heads, None)
        if self.to_k is not None:
            k = torch.cat([k, self._split(self.to_k(hidden_states), self.kv_heads, self.norm_k)], dim=2)
            v = torch.cat([v, self._split(self.to_v(hidden_states), self.kv_heads, None)], dim=2)
        out = self._project_out(self._attention(q, k, v, mask, causal, scale))
        return out.transpose(1, 2).reshape(residual.shape) + residual

    def _joint(
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor | None,
        mask: torch.Tensor | None,
        causal: bool,
        scale: float,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """SD3-style: [own, context] tokens attend jointly; the mask (if any) spans that joint sequence."""
        if hidden_states.ndim != 3:
            raise ValueError(f"joint attention takes [B, S, C], got {tuple(hidden_states.shape)}")
        q = self._split(self.to_q(hidden_states), self.heads, self.norm_q)
        k = self._split(self.to_k(hidden_states), self.kv_heads, self.norm_k)
        v = self._split(self.to_v(hidden_states), self.kv_heads, None)
        if context is not None:
            q = torch.cat([q, self._split(self.add_q_proj(context), self.heads, self.norm_added_q)], dim=2)
            k = torch.cat([k, self._split(self.add_k_proj(context), self.kv_heads, self.norm_added_k)], dim=2)
            v = torch.cat([v, self._split(self.add_v_proj(context), self.kv_heads, None)], dim=2)
        out = self._attention(q, k, v, mask, causal, scale)
        if context is None:
            return self._project_out(out)
        own, ctx = out[:, : hidden_states.shape[1]], out[:, hidden_states.shape[1] :]
        if self.to_add_out is not None:
            ctx = self.to_add_out(ctx)
        return self._project_out(own), ctx

    def _norm_context(self, context: torch.Tensor) -> torch.Tensor:
        if isinstance(self.norm_cross, nn.GroupNorm):  # over channels: [B, S, C] -> [B, C, S] and back
            return self.norm_cross(context.transpose(1, 2)).transpose(1, 2)
        if self.norm_cross is not None:
            return self.norm_cross(context)
        return context

    def _split(self, x: torch.Tensor, heads: int, norm: nn.Module | None) -> torch.Tensor:
        """[B, S, heads*D] -> [B, heads, S, D], with the qk norm before (across heads) or after (per head)."""
        if norm is not None and self._across_heads:
            x = norm(x)
        x = x.unflatten(-1, (heads, self.dim_head)).transpose(1, 2)
        if norm is not None and not self._across_heads:
            x = norm(x)
        return x

    def _project_out(self, out: torch.Tensor) -> torch.Tensor:
        if self.to_out is None:  # pre_only: the caller projects (Flux single-stream style)
            return out
        return self.to_out[1](self.to_out[0](out))

    def _attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        causal: bool,
        scale: float,
    ) -> torch.Tensor:
        """[B,H,Sq,D] x [B,Hkv,Skv,D] -> [B, Sq, H*D] through the biozoo processor resolved for this module."""
        dtype = q.dtype
        if (self.upcast_attention or self.upcast_softmax) and dtype in _HALF:
            # diffusers upcasts QK^T and/or the softmax on its eager path only; run the whole kernel in fp32 instead
            q, k, v = q.float(), k.float(), v.float()
        b, h, sq, d = q.shape
        call = AttentionCall(
            mask=normalize_attention_mask(mask, batch=b, heads=h, sq=sq, skv=k.shape[2], dtype=q.dtype),
            causal=causal,
            scale=None if math.isclose(scale, d**-0.5, rel_tol=1e-12) else scale,
        )
        out = attend(self, q, k, v, call).output.to(dtype)
        return out.transpose(1, 2).reshape(b, sq, h * d)

    def extra_repr(self) -> str:
        return f"{self.family}, heads={self.heads}, kv_heads={self.kv_heads}, dim_head={self.dim_head}"
