"""Sparse-graph tensor plumbing shared by the featurizer and the graph network.

A protein graph here is dense over nodes and sparse over edges: node tensors are ``[B, L, D]``, edge tensors
``[B, L, K, D]``, and ``edge_idx[b, i, k]`` names the node ``j`` at the other end of edge ``k`` of node ``i``.
Masks are floats (``1`` present, ``0`` absent) so they multiply straight into features of any dtype.
"""

from __future__ import annotations

import torch


def chain_map_to_mask(C: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Residues with structure (``C > 0``) as a float mask ``[B, L]``; gaps (``C < 0``) and padding are 0."""
    return (C > 0).to(dtype)


def collect_neighbors(node_h: torch.Tensor, edge_idx: torch.Tensor) -> torch.Tensor:
    """Node features ``[B, L, D]`` gathered at each edge's far end: ``[B, L, K, D]``."""
    B, L, K = edge_idx.shape
    idx = edge_idx.reshape(B, L * K, 1).expand(-1, -1, node_h.shape[-1])
    return torch.gather(node_h, 1, idx).reshape(B, L, K, node_h.shape[-1])


def collect_edges(dense_h: torch.Tensor, edge_idx: torch.Tensor) -> torch.Tensor:
    """Entries of a dense pairwise tensor ``[B, L, L, D]`` at the graph's edges: ``[B, L, K, D]``."""
    idx = edge_idx.unsqueeze(-1).expand(-1, -1, -1, dense_h.shape[-1])
    return torch.gather(dense_h, 2, idx)


def pack_edges(node_h: torch.Tensor, edge_h: torch.Tensor, edge_idx: torch.Tensor) -> torch.Tensor:
    """``[h_i, h_j, e_ij]`` on every edge, the input of the message and edge MLPs."""
    node_i = node_h.unsqueeze(2).expand(-1, -1, edge_h.shape[2], -1)
    return torch.cat([node_i, collect_neighbors(node_h, edge_idx), edge_h], -1)


def pack_edges_step(t: int, node_h: torch.Tensor, edge_h_t: torch.Tensor, edge_idx_t: torch.Tensor) -> torch.Tensor:
    """:func:`pack_edges` for the single node ``t`` (``edge_h_t``, ``edge_idx_t`` are ``[B, 1, K, ...]``)."""
    node_i = node_h[:, t : t + 1].unsqueeze(2).expand(-1, -1, edge_h_t.shape[2], -1)
    return torch.cat([node_i, collect_neighbors(node_h, edge_idx_t), edge_h_t], -1)


def edge_mask_causal(edge_idx: torch.Tensor, mask_ij: torch.Tensor) -> torch.Tensor:
    """Keep only edges to earlier nodes (``j < i``): the mask under which :meth:`GraphNN.step` equals ``forward``."""
    i = torch.arange(edge_idx.shape[1], device=edge_idx.device).view(1, -1, 1)
    return (edge_idx < i).to(mask_ij.dtype) * mask_ij


def permute_tensor(tensor: torch.Tensor, dim: int, permute_idx: torch.Tensor) -> torch.Tensor:
    """Reorder ``tensor`` along ``dim`` by ``permute_idx`` (``[batch dims..., length]``), per batch member."""
    dim = range(tensor.dim())[dim]
    flat = tensor.reshape(*tensor.shape[: dim + 1], -1)
    idx = permute_idx.unsqueeze(-1).expand(flat.shape)
    return torch.gather(flat, dim, idx).reshape(tensor.shape)


def permute_graph_embeddings(
    node_h: torch.Tensor,
    edge_h: torch.Tensor,
    edge_idx: torch.Tensor,
    mask_i: torch.Tensor,
    mask_ij: torch.Tensor,
    permute_idx: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Relabel a graph's nodes (decoding order): rows move by ``permute_idx``, edge targets by its inverse."""
    node_p, edge_p = permute_tensor(node_h, 1, permute_idx), permute_tensor(edge_h, 1, permute_idx)
    mask_i_p, mask_ij_p = permute_tensor(mask_i, 1, permute_idx), permute_tensor(mask_ij, 1, permute_idx)
    inverse = torch.argsort(permute_idx, dim=-1)
    rows = permute_tensor(edge_idx, 1, permute_idx).reshape(edge_idx.shape[0], -1)
    edge_idx_p = torch.gather(inverse, 1, rows).reshape(edge_idx.shape)
    return node_p, edge_p, edge_idx_p, mask_i_p, mask_ij_p
