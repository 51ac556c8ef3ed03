"""The design network's autoregressive sequence decoder (the reference's ``SidechainDecoderGNN`` for S only).

Residues are decoded in a given order (``permute_idx``). In that order, each residue sees the encoder's
embeddings and the types of the residues decoded before it: the type embeddings of earlier neighbours are added
to the edges under a causal mask, a graph network runs over the permuted graph, and a sequence head reads each
residue's embedding. ``forward`` does this in parallel with the true sequence given (teacher forcing);
:meth:`SequenceDecoder.decode` steps through the residues one at a time with the graph network's step mode and
samples each type.

Chi angles are not decoded here: the design network's second stage (side chains) re-encodes with the sequence
and has its own decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from biozoo.components.base import Component
from biozoo.components.ports import Port, Ports
from biozoo.plugins.declarations import ComponentKind
from biozoo_chroma.design.causal import add_context, decoding_state, teacher_forced, unpermute
from biozoo_chroma.design.heads import SequenceHead
from biozoo_chroma.design.potts import sample_categorical
from biozoo_chroma.design.traversal import DECODING_ORDER
from biozoo_chroma.graph.feature_graph import EDGE_H, EDGE_IDX, EDGE_MASK, NODE_H, NODE_MASK
from biozoo_chroma.graph.gnn import GraphNN
from biozoo_chroma.graph.keys import split_encoder_kwargs
from biozoo_chroma.graph.ops import permute_tensor
from biozoo_chroma.sidechains.head import SEQUENCE

#: ``bias(t, S_p, C_p, idx_p, edge_idx_t, mask_ij_t) -> [B, 1, Q]``, added to the log-probabilities at step t.
BiasFunction = Callable[..., torch.Tensor]
LOGP_S, LOG_PROBS_S = "sequence-log-likelihood", "sequence-log-probabilities"


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the most likely states up to cumulative probability ``p`` (always the top one)."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
    filtered = sorted_logits.masked_fill(cumulative > p, -float("inf"))
    filtered[..., 0] = sorted_logits[..., 0]
    return filtered.gather(-1, order.argsort(-1))


class SequenceDecoder(Component):
    """``log p(S_i | S_<i, X)`` in a decoding order; children named as the reference's (``W_S``, ``gnn``,
    ``decoder_S``)."""

    kind = ComponentKind.DECODER

    def __init__(
        self, design_kwargs: Mapping[str, Any], num_alphabet: int, decoder_num_hidden: int, label_smoothing: float
    ) -> None:
        """``design_kwargs``: the design network's GNN options (its ``num_layers`` is the decoder's)."""
        super().__init__()
        _, gnn_kwargs = split_encoder_kwargs(design_kwargs)
        self.W_S = nn.Embedding(num_alphabet, gnn_kwargs["dim_edges"])
        self.gnn = GraphNN(**gnn_kwargs)
        self.decoder_S = SequenceHead(num_alphabet, gnn_kwargs["dim_nodes"], decoder_num_hidden, label_smoothing)
        self.dim_nodes, self.dim_edges = gnn_kwargs["dim_nodes"], gnn_kwargs["dim_edges"]
        self.num_alphabet = num_alphabet

    def ports(self) -> Ports:
        dn, de, Q = self.dim_nodes, self.dim_edges, self.num_alphabet
        return Ports(
            inputs=(
                Port("S", SEQUENCE, ("B", "L"), "residue types, indices into ACDEFGHIKLMNPQRSTVWY"),
                Port("node_h", NODE_H, ("B", "L", dn)),
                Port("edge_h", EDGE_H, ("B", "L", "K", de)),
                Port("edge_idx", EDGE_IDX, ("B", "L", "K")),
                Port("mask_i", NODE_MASK, ("B", "L")),
                Port("mask_ij", EDGE_MASK, ("B", "L", "K")),
                Port("permute_idx", DECODING_ORDER, ("B", "L"), "the order residues are decoded in"),
            ),
            outputs=(Port("logp_S", LOGP_S, ("B", "L")), Port("log_probs_S", LOG_PROBS_S, ("B", "L", Q))),
        )

    def forward(
        self,
        S: torch.Tensor,
        node_h: torch.Tensor,
        edge_h: torch.Tensor,
        edge_idx: torch.Tensor,
        mask_i: torch.Tensor,
        mask_ij: torch.Tensor,
        permute_idx: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced ``(logp_S [B, L], log_probs [B, L, Q])`` in the original residue order."""
        context_p = self.W_S(permute_tensor(S, 1, permute_idx))
        node_h = teacher_forced(self.gnn, context_p, node_h, edge_h, edge_idx, mask_i, mask_ij, permute_idx)
        return self.decoder_S(S, node_h, mask_i)

    @torch.no_grad()
    def decode(
        self,
        C: torch.Tensor,
        S: torch.Tensor,
        node_h: torch.Tensor,
        edge_h: torch.Tensor,
        edge_idx: torch.Tensor,
        mask_i: torch.Tensor,
        mask_ij: torch.Tensor,
        permute_idx: torch.Tensor,
        temperature: float = 0.1,
        sample: bool = True,
        allowed: torch.Tensor | None = None,
        top_p: float | None = None,
        bias: BiasFunction | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(S, logp_S)`` decoded one residue at a time in the order ``permute_idx``.

        With ``sample`` each type is drawn from the head at ``temperature`` (restricted to ``allowed [B, L, Q]``,
        nucleus-filtered with ``top_p``, shifted by ``bias``); without it ``S`` is scored as given (clamped), which
        equals :meth:`forward`.
        """
        tensors = decoding_state(node_h, edge_h, edge_idx, mask_i, mask_ij, permute_idx)
        B, L = C.shape
        idx = torch.arange(L, device=C.device).expand(B, L)
        S_given = permute_tensor(S, 1, permute_idx)
        allowed_p = None if allowed is None else permute_tensor(allowed, 1, permute_idx)
        tensors |= {
            "C_p": permute_tensor(C, 1, permute_idx), "idx_p": permute_tensor(idx, 1, permute_idx),
            "S_p": torch.zeros_like(S), "logp_S_p": torch.zeros(B, L, device=C.device, dtype=node_h.dtype),
        }  # fmt: skip

        def post(t: int, ts: dict[str, Any]) -> dict[str, Any]:
            """Choose residue t's type, score it and embed it for the residues after it."""
            node_t, mask_t = ts["node_h_cache"][-1][:, t : t + 1], ts["mask_i"][:, t : t + 1]
            S_t = S_given[:, t : t + 1]
            if sample:
                logits = self.decoder_S.log_probs(node_t, mask_t).float()
                if bias is not None:
                    bias_t = bias(t, ts["S_p"], ts["C_p"], ts["idx_p"], ts["edge_idx"][:, t : t + 1],
                                  ts["mask_ij"][:, t : t + 1])  # fmt: skip
                    logits = logits + bias_t
                if allowed_p is not None:
                    logits = logits.masked_fill(allowed_p[:, t : t + 1] <= 0, -float("inf"))
                if top_p is not None:
                    logits = filter_top_p(logits, top_p)
                S_t = sample_categorical(logits / temperature, generator)
            ts["S_p"][:, t : t + 1] = S_t
            ts["logp_S_p"][:, t : t + 1] = self.decoder_S(S_t, node_t, mask_t)[0]
            ts["context_p"][:, t : t + 1] = self.W_S(S_t).to(ts["context_p"].dtype)
            return ts

        tensors = self.gnn.sequential(tensors, pre_step_function=add_context, post_step_function=post)
        return unpermute(tensors["S_p"], permute_idx), unpermute(tensors["logp_S_p"], permute_idx)
