"""``linear``: linear attention, as the ``fast_transformers`` "linear" backend scGPT can be trained with.

It replaces ``softmax(q.k)`` by ``phi(q).phi(k)`` with ``phi(x) = elu(x) + 1``
(Katharopoulos et al. 2020), so ``out_i = phi(q_i) S / (phi(q_i) . z + eps)``
with ``S = sum_j phi(k_j) v_j^T`` and ``z = sum_j phi(k_j)``: O(S) instead of
O(S^2). It is a *different function* from softmax attention, so it is
declared ``approximate`` and ``exact=False``: ``auto`` never picks it, it runs
only when named (e.g. for checkpoints trained with that backend), and its
conformance is checked against its own float64 reference.

As in ``fast_transformers``: no score scale (the feature map ignores it, so a
custom scale is rejected rather than dropped), ``eps = 1e-6``, key padding by
zeroing the padded keys' features, and no other mask kinds. The causal variant
uses prefix sums, aligned bottom-right like every biozoo kernel, computed a
chunk of queries at a time (state carried between chunks, quadratic only
inside a chunk) so memory stays ``O(chunk * Skv)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from biozoo.attention.contract import AttentionCall, AttentionResult, ProcessorCaps
from biozoo_attention.kernels._common import compute_dtype, refuse_unsupported

EPS = 1e-6


def feature_map(x: torch.Tensor) -> torch.Tensor:
    """``elu(x) + 1``: positive features, so the normaliser never vanishes for a valid key."""
    return F.elu(x) + 1.0


class LinearProcessor:
    """fast_transformers-style linear attention (non-causal and causal); approximate by design."""

    name = "linear"
    caps = ProcessorCaps(
        masks=frozenset({"key_padding"}),
        causal=True,
        causal_with_mask=True,
        custom_scale=False,
        gqa=True,
        dropout=False,
        need_weights=False,
        exact=False,
        approximate=True,
    )

    def __init__(self, chunk: int = 128, eps: float = EPS) -> None:
        self.chunk = chunk
        self.eps = eps

    def available(self) -> tuple[bool, str]:
        return True, ""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall) -> AttentionResult:
        refuse_unsupported(self.name, self.caps, call, q, k)  # incl. a custom scale: elu(x) + 1 has none
        b, h, sq, d = q.shape
        hkv, skv = k.shape[1], k.shape[2]
        ctype = compute_dtype(q.dtype)
        qf = feature_map(q.to(ctype)).reshape(b, hkv, h // hkv, sq, d)  # grouped query heads (GQA, no K/V copy)
        kf = feature_map(k.to(ctype)).unsqueeze(2)  # [B, Hkv, 1, Skv, D]
        vv = v.to(ctype).unsqueeze(2)
        if call.mask is not None:
            kf = kf * call.mask.tensor.to(ctype)[:, None, None, :, None]
        out = self._causal(qf, kf, vv, sq, skv) if call.causal else self._full(qf, kf, vv)
        return AttentionResult(out.reshape(b, h, sq, v.shape[-1]).to(q.dtype))

    def _full(self, qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        state = kf.transpose(-2, -1) @ v  # [B, Hkv, 1, D, Dv]
        norm = qf @ kf.sum(dim=-2).unsqueeze(-1)  # [B, Hkv, rep, Sq, 1]
        return (qf @ state) / (norm + self.eps)

    def _causal(self, qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor, sq: int, skv: int) -> torch.Tensor:
        """Query ``i`` sees keys ``j <= i + Skv - Sq``: prefix state for whole blocks, a masked product inside."""
        offset = skv - sq
        out = qf.new_zeros(*qf.shape[:-1], v.shape[-1])
        state = qf.new_zeros(*kf.shape[:-2], kf.shape[-1], v.shape[-1])  # sum of phi(k) v^T over absorbed keys
        zsum = qf.new_zeros(*kf.shape[:-2], kf.shape[-1])
        absorbed = 0  # keys [0, absorbed) are in state/zsum
        for start in range(0, sq, self.chunk):
            stop = min(sq, start + self.chunk)
            first_visible = max(0, min(skv, start + offset + 1))  # seen by every query of this chunk
            last_visible = max(0, min(skv, stop + offset))  # exclusive; seen by the chunk's last query
            if first_visible > absorbed:
                ks, vs = kf[..., absorbed:first_visible, :], v[..., absorbed:first_visible, :]
                state = state + ks.transpose(-2, -1) @ vs
                zsum = zsum + ks.sum(dim=-2)
                absorbed = first_visible
            qc = qf[..., start:stop, :]
            num = qc @ state
            den = qc @ zsum.unsqueeze(-1)
            if last_visible > absorbed:
                local = qc @ kf[..., absorbed:last_visible, :].transpose(-2, -1)  # [.., n, m]
                rows = torch.arange(start, stop, device=qf.device)[:, None]
                cols = torch.arange(absorbed, last_visible, device=qf.device)[None, :]
                local = local * (cols <= rows + offset).to(local.dtype)
                num = num + local @ v[..., absorbed:last_visible, :]
                den = den + local.sum(dim=-1, keepdim=True)
            out[..., start:stop, :] = num / (den + self.eps)
        return out
