"""The design network's chi decoder: side-chain angles residue by residue (the reference's ``SidechainDecoderGNN``
with ``predict_chi`` only, the second stage of two-stage packing).

In a decoding order (``permute_idx``), each residue sees the sequence-aware embeddings of the design network and
the types *and chi angles* of the residues decoded before it: both are embedded per residue (``W_S`` and the smooth
chi binning ``embed_chi``), added to the edges from earlier neighbours under a causal mask, and a graph network runs
over the permuted graph; the chi head (:class:`~biozoo_chroma.sidechains.NodePredictorChi`) reads each residue's
embedding. :meth:`ChiDecoder.forward` is the teacher-forced parallel pass; :meth:`ChiDecoder.decode` steps through
the residues with the graph network's step mode, sampling each residue's chi (or scoring the given ones).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from biozoo_chroma.design.causal import add_context, decoding_state, teacher_forced, unpermute
from biozoo_chroma.graph.geometry import compute_dtype
from biozoo_chroma.graph.gnn import GraphNN
from biozoo_chroma.graph.keys import split_encoder_kwargs
from biozoo_chroma.graph.ops import permute_tensor
from biozoo_chroma.sidechains.chi import bin_edges
from biozoo_chroma.sidechains.head import NodeChiRBF, NodePredictorChi
from biozoo_chroma.sidechains.tables import NUM_CHI

#: The reference's chi embeddings of decoded neighbours; only the smooth binning is implemented.
CHI_EMBEDDINGS = ("chi_rbf",)


class ChiDecoder(nn.Module):
    """``log p(chi_i | chi_<i, S, X)`` in a decoding order; children named as the reference's (``W_S``,
    ``embed_chi``, ``gnn``, ``decoder_chi``)."""

    def __init__(
        self,
        design_kwargs: Mapping[str, Any],
        num_alphabet: int,
        num_chi_bins: int,
        decoder_num_hidden: int,
        label_smoothing: float,
    ) -> None:
        """``design_kwargs``: the design network's GNN options (its ``num_layers`` is the decoder's)."""
        super().__init__()
        _, gnn_kwargs = split_encoder_kwargs(design_kwargs)
        dim_nodes, dim_edges = gnn_kwargs["dim_nodes"], gnn_kwargs["dim_edges"]
        self.W_S = nn.Embedding(num_alphabet, dim_edges)
        self.embed_chi = NodeChiRBF(dim_edges, NUM_CHI, num_chi_bins)
        self.gnn = GraphNN(**gnn_kwargs)
        self.decoder_chi = NodePredictorChi(
            num_alphabet, num_chi_bins, dim_nodes, decoder_num_hidden, label_smoothing=label_smoothing
        )

    def reset_non_persistent_buffers(self, device: torch.device) -> None:
        """The chi head's bin edges are a constant outside the state dict: rebuild them after a meta-device load."""
        self.decoder_chi.edges = bin_edges(self.decoder_chi.num_chi_bins, device=device)

    def context(self, S: torch.Tensor, chi: torch.Tensor) -> torch.Tensor:
        """What a decoded residue tells later ones: its type and chi angles embedded, ``[B, L, dim_edges]``."""
        return self.W_S(S) + self.embed_chi(chi)

    def forward(
        self,
        S: torch.Tensor,
        chi: torch.Tensor,
        mask_chi: torch.Tensor,
        node_h: torch.Tensor,
        edge_h: torch.Tensor,
        edge_idx: torch.Tensor,
        mask_i: torch.Tensor,
        mask_ij: torch.Tensor,
        permute_idx: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced ``(logp_chi [B, L, 4], log_probs_chi [B, L, 4, bins])`` in the original residue order."""
        context_p = self.context(permute_tensor(S, 1, permute_idx), permute_tensor(chi, 1, permute_idx))
        node_h = teacher_forced(self.gnn, context_p, node_h, edge_h, edge_idx, mask_i, mask_ij, permute_idx)
        return self.decoder_chi(S, chi, mask_chi, node_h, mask_i)

    @torch.no_grad()
    def decode(
        self,
        S: torch.Tensor,
        chi: torch.Tensor,
        mask_chi: torch.Tensor,
        node_h: torch.Tensor,
        edge_h: torch.Tensor,
        edge_idx: torch.Tensor,
        mask_i: torch.Tensor,
        mask_ij: torch.Tensor,
        permute_idx: torch.Tensor,
        temperature: float = 1e-3,
        sample: bool = True,
        keep: torch.Tensor | None = None,
        uniforms: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(chi [B, L, 4], logp_chi [B, L, 4])`` decoded one residue at a time in the order ``permute_idx``.

        With ``sample`` each residue's chi are drawn from the head at ``temperature`` with ``uniforms
        [B, L, 4]`` (one per residue and chi, in residue order), except where ``keep [B, L]`` is true: there the
        given ``chi`` stay. Without ``sample`` the given chi are scored (clamped), which equals :meth:`forward`.
        """
        tensors = decoding_state(node_h, edge_h, edge_idx, mask_i, mask_ij, permute_idx)
        S_p = permute_tensor(S, 1, permute_idx)
        # chi stay in at least float32 (the head samples them so): bf16 would round them by up to 0.01 rad
        chi_given = permute_tensor(chi, 1, permute_idx).to(compute_dtype(node_h.dtype))
        mask_chi_p = permute_tensor(mask_chi, 1, permute_idx)
        keep_p = None if keep is None else permute_tensor(keep, 1, permute_idx).unsqueeze(-1)
        u_p = None if uniforms is None else permute_tensor(uniforms, 1, permute_idx)
        B, L = S.shape
        tensors |= {
            "chi_p": torch.zeros_like(chi_given),
            "logp_chi_p": torch.zeros(B, L, NUM_CHI, device=S.device, dtype=node_h.dtype),
        }

        def post(t: int, ts: dict[str, Any]) -> dict[str, Any]:
            """Choose residue t's chi, score them and embed them for the residues after it."""
            node_t, mask_t = ts["node_h_cache"][-1][:, t : t + 1], ts["mask_i"][:, t : t + 1]
            S_t, mask_chi_t, chi_t = S_p[:, t : t + 1], mask_chi_p[:, t : t + 1], chi_given[:, t : t + 1]
            if sample:
                drawn = self.decoder_chi.sample(
                    S_t, mask_chi_t, node_t, mask_t, temperature, uniforms=u_p[:, t : t + 1]
                ).to(chi_t.dtype)
                chi_t = drawn if keep_p is None else torch.where(keep_p[:, t : t + 1], chi_t, drawn)
            ts["chi_p"][:, t : t + 1] = chi_t
            ts["logp_chi_p"][:, t : t + 1] = self.decoder_chi(S_t, chi_t, mask_chi_t, node_t, mask_t)[0]
            ts["context_p"][:, t : t + 1] = self.context(S_t, chi_t).to(ts["context_p"].dtype)
            return ts

        tensors = self.gnn.sequential(tensors, pre_step_function=add_context, post_step_function=post)
        return unpermute(tensors["chi_p"], permute_idx), unpermute(tensors["logp_chi_p"], permute_idx)
