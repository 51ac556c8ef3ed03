"""Rigid transforms ``(R, t)`` of residue frames: composing them and averaging many into one.

The denoiser predicts, on every edge j -> i, where residue i's frame sits relative to neighbour j's; each
neighbour thus proposes a frame for i, and :func:`average_transforms` fuses the proposals with learned weights
(softmax over neighbours) and projects the weighted mean rotation back onto SO(3) by SVD. The reference adds a
small Gaussian dither (``dither_eps``, 1e-4) to the mean rotation before the SVD, which breaks ties between
degenerate singular values; it is an explicit argument here, and ``dither_eps=0`` draws nothing.

Everything runs in the dtype it is given; callers pass at least float32 (SVD has no half-precision kernel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from biozoo_chroma.graph.ops import collect_neighbors

DITHER_EPS = 1e-4  # the reference's frame-averaging dither


def compose_transforms(
    R_a: torch.Tensor, t_a: torch.Tensor, R_b: torch.Tensor, t_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``T_a * T_b`` (broadcasting)."""
    return R_a @ R_b, compose_translation(R_a, t_a, t_b)


def compose_translation(R_a: torch.Tensor, t_a: torch.Tensor, t_b: torch.Tensor) -> torch.Tensor:
    """The translation of ``T_a * T_b``: ``t_a + R_a t_b``."""
    return t_a + (R_a @ t_b.unsqueeze(-1)).squeeze(-1)


def compose_inner_transforms(
    R_a: torch.Tensor, t_a: torch.Tensor, R_b: torch.Tensor, t_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``T_a^-1 * T_b``: frame b seen from frame a."""
    R_a_inv = R_a.transpose(-1, -2)
    return R_a_inv @ R_b, (R_a_inv @ (t_b - t_a).unsqueeze(-1)).squeeze(-1)


def collect_neighbor_transforms(
    R_i: torch.Tensor, t_i: torch.Tensor, edge_idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each node's neighbours' frames: ``[B, L, 3, 3], [B, L, 3] -> [B, L, K, 3, 3], [B, L, K, 3]``."""
    B, L, K = edge_idx.shape
    R_j = collect_neighbors(R_i.reshape(B, L, 9), edge_idx).reshape(B, L, K, 3, 3)
    return R_j, collect_neighbors(t_i, edge_idx)


def collect_neighbor_inner_transforms(
    R_i: torch.Tensor, t_i: torch.Tensor, edge_idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """On every edge j -> i, frame i seen from frame j (what the denoiser learns to predict)."""
    R_j, t_j = collect_neighbor_transforms(R_i, t_i, edge_idx)
    return compose_inner_transforms(R_j, t_j, R_i.unsqueeze(-3), t_i.unsqueeze(-2))


def fuse_gaussians_isometric_plus_radial(
    x: torch.Tensor, p_iso: torch.Tensor, p_rad: torch.Tensor, direction: torch.Tensor, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Product of Gaussians along ``dim`` whose precisions are ``p_iso I + p_rad u u^T / |u|^2``: (mean, precision)."""
    outer = direction.unsqueeze(-1) * direction.unsqueeze(-2)
    inner = direction.square().sum(-1).clamp(min=1e-10)
    P = torch.diag_embed(p_iso.unsqueeze(-1).expand(*p_iso.shape, 3)) + (p_rad / inner)[..., None, None] * outer
    P_fused = P.sum(dim)
    Px_fused = (P @ x.unsqueeze(-1)).squeeze(-1).sum(dim)
    return torch.linalg.solve(P_fused, Px_fused), P_fused


def average_transforms(
    R: torch.Tensor,
    t: torch.Tensor,
    w: torch.Tensor,
    mask: torch.Tensor,
    dim: int,
    t_edge: torch.Tensor | None = None,
    dither_eps: float = DITHER_EPS,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean of transforms along ``dim`` (counted from the left) under ``mask``.

    ``w`` holds logits, ``[..., 1]`` (one weight for R and t), ``[..., 2]`` (separate weights) or ``[..., 3]``
    (a weight for R and an isometric + radial precision for t along ``t_edge``). The rotation is the SVD
    projection of the weighted mean, with the reference's sign handling; ``dither_eps`` times a standard
    normal draw (global RNG or ``generator``) is added to the mean before projecting.
    """
    if dim < 0:
        raise ValueError("dim must count from the left")
    w = torch.where(mask.unsqueeze(-1).bool(), w, torch.full_like(w, torch.finfo(w.dtype).min))
    n = w.shape[-1]
    if n == 1:
        probs = w.softmax(dim)
        R_probs = probs.unsqueeze(-1)
        t_avg = (t * probs).sum(dim)
    elif n == 2:
        t_probs, R_probs = w.softmax(dim).unbind(-1)
        R_probs = R_probs[..., None, None]
        t_avg = (t * t_probs.unsqueeze(-1)).sum(dim)
    elif n == 3:
        R_probs = w[..., 2].softmax(dim)[..., None, None]
        w_t = w[..., :2]
        p_iso, p_rad = (w_t - w_t.logsumexp([dim, -1], True)).exp().unbind(-1)
        if t_edge is None:
            raise ValueError("three transform weights need t_edge (the edge displacements)")
        t_edge = t_edge * mask.to(t_edge.dtype).unsqueeze(-1)
        t_avg, _ = fuse_gaussians_isometric_plus_radial(t, p_iso, p_rad, t_edge, dim)
    else:
        raise ValueError(f"transforms are averaged with 1, 2 or 3 weights, got {n}")
    R_mean = (R * R_probs).sum(dim)
    if dither_eps:
        noise = torch.randn(R_mean.shape, dtype=R_mean.dtype, device=R_mean.device, generator=generator)
        R_mean = R_mean + dither_eps * noise
    U, _, Vh = torch.linalg.svd(R_mean, full_matrices=True)
    # The reference flips by det(U Vh) the last *column* of Vh (not the last row); kept as is for parity.
    d = torch.linalg.det(U @ Vh)
    Vh = Vh * F.pad(d[..., None, None], (2, 0), value=1.0)
    return U @ Vh, t_avg


def equilibrate_transforms(
    R_i: torch.Tensor,
    t_i: torch.Tensor,
    R_ji: torch.Tensor,
    t_ji: torch.Tensor,
    logit_ij: torch.Tensor,
    mask_ij: torch.Tensor,
    edge_idx: torch.Tensor,
    iterations: int = 1,
    R_global: torch.Tensor | None = None,
    t_global: torch.Tensor | None = None,
    R_global_i: torch.Tensor | None = None,
    t_global_i: torch.Tensor | None = None,
    logit_global_i: torch.Tensor | None = None,
    dither_eps: float = DITHER_EPS,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move every frame to the average of its neighbours' proposals ``T_j * T_ji``, ``iterations`` times.

    With the five ``*global*`` tensors a virtual neighbour (a global frame, proposing ``T_global * T_global_i``)
    joins every node's neighbourhood.
    """
    use_global = all(x is not None for x in (R_global, t_global, R_global_i, t_global_i, logit_global_i))
    if use_global:
        B = mask_ij.shape[0]
        R_global_i, t_global_i = R_global_i.unsqueeze(2), t_global_i.unsqueeze(2)
        R_ji, t_ji = torch.cat((R_ji, R_global_i), 2), torch.cat((t_ji, t_global_i), 2)
        logit_ij = torch.cat((logit_ij, logit_global_i.unsqueeze(2)), 2)
        R_global = R_global.reshape(B, 1, 1, 3, 3).expand(R_global_i.shape)
        t_global = t_global.reshape(B, 1, 1, 3).expand(t_global_i.shape)
        mask_ij = torch.cat((mask_ij, (mask_ij.sum(2, keepdim=True) > 0).to(mask_ij.dtype)), 2)
    for _ in range(iterations):
        R_j, t_j = collect_neighbor_transforms(R_i, t_i, edge_idx)
        if use_global:
            R_j, t_j = torch.cat((R_j, R_global), 2), torch.cat((t_j, t_global), 2)
        R_pred, t_pred = compose_transforms(R_j, t_j, R_ji, t_ji)
        t_edge = t_j - t_pred if logit_ij.shape[-1] == 3 else None
        R_i, t_i = average_transforms(
            R_pred, t_pred, logit_ij, mask_ij, dim=2, t_edge=t_edge, dither_eps=dither_eps, generator=generator
        )
    return R_i, t_i
