"""Causal decoding over the design network's graph, shared by the sequence decoder and the chi decoder.

Both decode residues in an order (``permute_idx``): in that order each residue sees the encoder's embeddings plus
a *context* embedding of every earlier neighbour (its type; for chi also its angles), added to the edges under a
causal mask. :func:`teacher_forced` runs that in parallel with the true context; :func:`decoding_state` and
:func:`add_context` set up the graph network's step mode (``GraphNN.sequential``), where each decoder's own
post-step chooses residue t and writes its context to ``ts["context_p"][:, t]``.
"""

from __future__ import annotations

from typing import Any

import torch

from biozoo_chroma.graph.gnn import GraphNN
from biozoo_chroma.graph.ops import collect_neighbors, edge_mask_causal, permute_graph_embeddings, permute_tensor


def unpermute(x: torch.Tensor, permute_idx: torch.Tensor) -> torch.Tensor:
    """``x [B, L, ...]`` from decoding order back to residue order."""
    return permute_tensor(x, 1, torch.argsort(permute_idx, dim=-1))


def teacher_forced(
    gnn: GraphNN,
    context_p: torch.Tensor,
    node_h: torch.Tensor,
    edge_h: torch.Tensor,
    edge_idx: torch.Tensor,
    mask_i: torch.Tensor,
    mask_ij: torch.Tensor,
    permute_idx: torch.Tensor,
) -> torch.Tensor:
    """Node embeddings ``[B, L, dim_nodes]`` (residue order) of ``gnn`` run causally in decoding order, each
    earlier neighbour's ``context_p [B, L, dim_edges]`` (decoding order) added to its edges."""
    node_p, edge_p, edge_idx_p, mask_i_p, mask_ij_p = permute_graph_embeddings(
        node_h, edge_h, edge_idx, mask_i, mask_ij, permute_idx
    )
    causal = edge_mask_causal(edge_idx_p, mask_ij_p)
    edge_p = edge_p + causal.unsqueeze(-1) * collect_neighbors(context_p, edge_idx_p).to(edge_p.dtype)
    node_p, _ = gnn(node_p, edge_p, edge_idx_p, mask_i_p, causal)
    return unpermute(node_p, permute_idx)


def decoding_state(
    node_h: torch.Tensor,
    edge_h: torch.Tensor,
    edge_idx: torch.Tensor,
    mask_i: torch.Tensor,
    mask_ij: torch.Tensor,
    permute_idx: torch.Tensor,
) -> dict[str, Any]:
    """The permuted graph with its causal edge mask and an empty ``context_p``: the start of step mode."""
    node_p, edge_p, edge_idx_p, mask_i_p, mask_ij_p = permute_graph_embeddings(
        node_h, edge_h, edge_idx, mask_i, mask_ij, permute_idx
    )
    B, L = mask_i.shape
    return {
        "node_h": node_p, "edge_h": edge_p, "edge_idx": edge_idx_p, "mask_i": mask_i_p,
        "mask_ij": edge_mask_causal(edge_idx_p, mask_ij_p),
        "context_p": torch.zeros(B, L, edge_p.shape[-1], device=edge_p.device, dtype=edge_p.dtype),
    }  # fmt: skip


def add_context(t: int, ts: dict[str, Any]) -> dict[str, Any]:
    """The pre-step: add the context of the residues decoded so far to node t's edges (the layer-0 edge cache)."""
    h_ij = collect_neighbors(ts["context_p"], ts["edge_idx"][:, t : t + 1])
    ts["edge_h_cache"][0][:, t : t + 1] += ts["mask_ij"][:, t : t + 1].unsqueeze(-1) * h_ij
    return ts
