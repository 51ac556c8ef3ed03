"""Aligned and alignment-free errors between a predicted and a true backbone, at several scales.

Each measures how far ``X_mobile`` is from ``X_target`` ``[B, L, 4, 3]`` after a superposition that forgives a rigid
motion at that scale: the whole complex, each residue's 7-residue fragment, each pair of fragments joined by a
graph edge, each residue's graph neighbourhood; and, without any superposition, the error of residue-centroid
distances. They are the reference's ``BackboneRMSD``, ``LossFragmentRMSD``, ``LossFragmentPairRMSD``,
``LossNeighborhoodRMSD`` (``rmsd.py``) and ``LossBackboneResidueDistance`` (``backbone.py``). Graphs are built on
the target (true) structure by the caller, so they are shared between a prediction and its noise baseline.
"""

from __future__ import annotations

import torch

from biozoo_chroma.graph.geometry import pairwise_distances
from biozoo_chroma.graph.ops import collect_neighbors
from biozoo_chroma.losses.superpose import paired_superpose

FRAGMENT_K = 7  # residues per fragment, centred on its residue
_DIST_EPS = 1e-3


def backbone_rmsd(
    X_mobile: torch.Tensor,
    X_target: torch.Tensor,
    C: torch.Tensor,
    dither: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-complex RMSD ``[B]`` over present residues (C > 0) after superposition, and the aligned X_mobile."""
    mask = (C > 0).repeat_interleave(X_mobile.shape[2], dim=1)
    flat = (X_mobile.reshape(X_mobile.shape[0], -1, 3), X_target.reshape(X_target.shape[0], -1, 3))
    rmsd, aligned = paired_superpose(*flat, mask, dither, generator)
    return rmsd, aligned.reshape(X_mobile.shape)


def _kmer_index(length: int, k: int, device: torch.device) -> torch.Tensor:
    """``[L, k]`` positions of each residue's fragment, i+3 ... i-3 (the reference's order), clamped at the ends."""
    offsets = torch.arange(k, device=device) - (k - 1) // 2
    return (torch.arange(length, device=device)[:, None] - offsets[None, :]).clamp(0, length - 1)


def collect_fragments(X: torch.Tensor, C: torch.Tensor, k: int = FRAGMENT_K) -> tuple[torch.Tensor, torch.Tensor]:
    """Each residue's fragment: atoms ``[B, L, k*A, 3]`` and their chain ids ``[B, L, k*A]``.

    A fragment member that is not in the centre residue's chain (or is without structure) gets a negative id,
    so that ``> 0`` masks it out.
    """
    B, L, A, _ = X.shape
    index = _kmer_index(L, k, X.device).reshape(1, L * k).expand(B, -1)
    X_k = X.reshape(B, L, A * 3).gather(1, index[..., None].expand(-1, -1, A * 3)).reshape(B, L, k * A, 3)
    C_k = C.gather(1, index).reshape(B, L, k, 1).expand(-1, -1, -1, A).reshape(B, L, k * A)
    C_k = torch.where(C[..., None] == C_k, C_k, -C_k.abs())
    return X_k, C_k


def fragment_rmsd(
    X_mobile: torch.Tensor,
    X_target: torch.Tensor,
    C: torch.Tensor,
    dither: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RMSD ``[B, L]`` of each residue's 7-residue fragment after superposing that fragment alone."""
    X_m, C_m = collect_fragments(X_mobile, C)
    X_t, _ = collect_fragments(X_target, C)
    return paired_superpose(X_m, X_t, C_m > 0, dither, generator)[0]


def fragment_pair_rmsd(
    X_mobile: torch.Tensor,
    X_target: torch.Tensor,
    C: torch.Tensor,
    edge_idx: torch.Tensor,
    dither: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RMSD ``[B, L, K]`` of each edge's two fragments (j's, then i's) superposed together."""

    def stack(h: torch.Tensor) -> torch.Tensor:
        return torch.cat([collect_neighbors(h, edge_idx), h[:, :, None].expand(-1, -1, edge_idx.shape[2], -1)], -1)

    def pairs(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        X_k, C_k = collect_fragments(X, C)
        B, L, N, _ = X_k.shape
        X_pair = stack(X_k.reshape(B, L, N * 3))
        return X_pair.reshape(*X_pair.shape[:3], 2 * N, 3), stack(C_k)

    X_m, C_m = pairs(X_mobile)
    X_t, _ = pairs(X_target)
    return paired_superpose(X_m, X_t, C_m > 0, dither, generator)[0]


def neighborhood_rmsd(
    X_mobile: torch.Tensor,
    X_target: torch.Tensor,
    C: torch.Tensor,
    edge_idx: torch.Tensor,
    dither: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMSD ``[B, L]`` of each residue's graph neighbourhood (all its neighbours' atoms) superposed alone, and
    the mask ``[B, L]`` of neighbourhoods with any present atom."""
    B, L, A, _ = X_mobile.shape
    K = edge_idx.shape[2]
    C_n = collect_neighbors(C[..., None].expand(-1, -1, A), edge_idx).reshape(B, L, K * A)

    def gather(X: torch.Tensor) -> torch.Tensor:
        return collect_neighbors(X.reshape(B, L, A * 3), edge_idx).reshape(B, L, K * A, 3)

    mask = C_n > 0
    rmsd = paired_superpose(gather(X_mobile), gather(X_target), mask, dither, generator)[0]
    return rmsd, mask.any(-1).to(rmsd.dtype)


def residue_distance_error(X_mobile: torch.Tensor, X_target: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Mean squared error ``[B, L]`` of residue i's centroid distances to every present residue j."""
    mask = (C > 0).to(X_target.dtype)
    mask_2D = mask[:, :, None] * mask[:, None, :]
    error = (pairwise_distances(X_mobile.mean(2), _DIST_EPS) - pairwise_distances(X_target.mean(2), _DIST_EPS)).square()
    return (mask_2D * error).sum(-1) / (mask_2D.sum(-1) + _DIST_EPS)
