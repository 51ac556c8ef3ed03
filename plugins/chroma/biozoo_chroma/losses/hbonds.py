"""Backbone hydrogen bonds (DSSP's electrostatic model) and how many of the true ones a prediction recovers.

A virtual H is put on every backbone N (1.015 A along the bisector of C(i-1)->N and CA->N), and an N-H(i) ... O=C(j)
pair on a graph edge is a bond when E = 0.42 * 0.2 * 332 * (1/r_NO - 1/r_NC + 1/r_HC - 1/r_HO) < -0.5 kcal/mol,
N-O is shorter than 3.6 A and, within a chain, |i - j| >= 3. Bonds are 0/1, so these scores are metrics, not
gradients. As in the reference, every present residue donates: it means to skip each chain's first residue (whose H
is ambiguous), but its shifted chain map is C itself, so nothing is skipped; the numbers here are its numbers.
The reference's ``BackboneHBonds`` and ``LossBackboneHBonds`` (``hbonds.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from biozoo_chroma.graph.geometry import normed_vec
from biozoo_chroma.graph.ops import collect_neighbors

_COULOMB = 0.42 * 0.2 * 332  # partial charges (e) times 332 kcal A / (mol e^2)
_LENGTH_NH = 1.015  # A (Yao et al., JACS 2008)
_EPS = 1e-3


def _sequence_separation(C: torch.Tensor, edge_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """|j - i| ``[B, L, K]`` (tensor positions) and whether i and j carry the same chain id."""
    positions = torch.arange(C.shape[1], device=C.device)[None, :, None].expand(C.shape[0], -1, -1)
    separation = (collect_neighbors(positions, edge_idx)[..., 0] - positions).abs()
    same_chain = C[..., None] == collect_neighbors(C[..., None], edge_idx)[..., 0]
    return separation, same_chain


def locality_mask(C: torch.Tensor, edge_idx: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Edges ``[B, L, K]`` within one chain id and closer than ``cutoff`` positions in sequence."""
    separation, same_chain = _sequence_separation(C, edge_idx)
    return (separation < cutoff) & same_chain


def contact_order(contacts: torch.Tensor, C: torch.Tensor, edge_idx: torch.Tensor) -> torch.Tensor:
    """Mean sequence separation ``[B]`` of the same-chain contacts (the reference adds 1e-3 per edge slot)."""
    separation, same_chain = _sequence_separation(C, edge_idx)
    weights = same_chain.to(contacts.dtype) * contacts
    return (weights * separation).sum([1, 2]) / (weights + _EPS).sum([1, 2])


def backbone_hbonds(
    X: torch.Tensor,
    C: torch.Tensor,
    edge_idx: torch.Tensor,
    mask_ij: torch.Tensor,
    cutoff_energy: float = -0.5,
    cutoff_distance: float = 3.6,
    cutoff_gap: float = 3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """H-bonds ``[B, L, K]`` (1 where N-H of i bonds O=C of edge j) and the mask of edges that could bond."""
    B, L = X.shape[:2]
    X_j = collect_neighbors(X.reshape(B, L, -1), edge_idx).reshape(B, L, -1, 4, 3)
    C_prev = F.pad(X, [0, 0, 0, 0, 1, 0], mode="replicate")[:, :-1, 2]
    N, CA = X[:, :, 0], X[:, :, 1]
    H = N + _LENGTH_NH * normed_vec(normed_vec(N - C_prev) + normed_vec(N - CA))
    N, H = N[:, :, None], H[:, :, None]
    O_j, C_j = X_j[:, :, :, 3], X_j[:, :, :, 2]

    def inverse_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).square().sum(-1).add(_EPS).sqrt().reciprocal()

    energy = _COULOMB * (
        inverse_distance(N, O_j) - inverse_distance(N, C_j) + inverse_distance(H, C_j) - inverse_distance(H, O_j)
    )
    close = (N - O_j).square().sum(-1).add(_EPS).sqrt() < cutoff_distance
    nonlocal_ = ~locality_mask(C, edge_idx, cutoff_gap)
    donor = C > 0  # the reference's intended "and not a chain's first residue" is a no-op there (see above)
    acceptor = collect_neighbors(C[..., None], edge_idx)[..., 0] > 0
    possible = mask_ij * (close & nonlocal_ & donor[..., None] & acceptor).to(mask_ij.dtype)
    return possible * (energy < cutoff_energy).to(possible.dtype), possible


def hbond_recovery(
    X: torch.Tensor,
    X_target: torch.Tensor,
    C: torch.Tensor,
    edge_idx: torch.Tensor,
    mask_ij: torch.Tensor,
    cutoff_local: float = 8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fractions ``[B]`` of the target's local (|i-j| < 8 in a chain) and non-local H-bonds that X also forms,
    and the absolute difference of their H-bond contact orders. ``edge_idx`` is the target's graph."""
    hb_target, _ = backbone_hbonds(X_target, C, edge_idx, mask_ij)
    hb_current, _ = backbone_hbonds(X, C, edge_idx, mask_ij)
    local = locality_mask(C, edge_idx, cutoff_local).to(hb_target.dtype)
    target_local, target_nonlocal = local * hb_target, (1 - local) * hb_target
    recovery_local = (hb_current * target_local).sum([1, 2]) / (target_local.sum([1, 2]) + _EPS)
    recovery_nonlocal = (hb_current * target_nonlocal).sum([1, 2]) / (target_nonlocal.sum([1, 2]) + _EPS)
    error_co = (contact_order(hb_target, C, edge_idx) - contact_order(hb_current, C, edge_idx)).abs()
    return recovery_local, recovery_nonlocal, error_co
