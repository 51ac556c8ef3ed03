"""Batched optimal superposition of paired point sets, with masks, and the RMSD after it.

The reconstruction losses superpose a prediction onto the truth over many small sets at once (whole complexes,
7-residue fragments, fragment pairs, neighbourhoods), so this works over any leading batch shape. The rotation is
the top eigenvector of the 4x4 quaternion matrix (as in ``diffusion.align``, whose helpers it reuses). Unlike the
sampler's alignment, the losses are trained through, and ``torch.linalg.eigh``'s gradient is NaN wherever two
eigenvalues are equal (e.g. an all-masked set, whose matrix is 0), even where the upstream gradient is 0. So the
top eigenvector has its own backward, which needs only the gaps to the top eigenvalue and damps a zero gap to 0.
Values are those of the reference's ``CrossRMSD.pairedRMSD(..., compute_alignment=True)``.
"""

from __future__ import annotations

import torch

from biozoo_chroma.diffusion.align import _quaternion_matrix
from biozoo_chroma.diffusion.chains import compute_dtype
from biozoo_chroma.graph.geometry import rotations_from_quaternions

_EPS = 1e-5  # the reference's count epsilon
_MIN_SQ = 1e-8  # the reference's floor on a summed squared deviation (keeps sqrt differentiable at 0)
_GAP_EPS = 1e-12  # damping of 1/gap in the eigenvector gradient: only gaps below ~1e-6 are affected


class _TopEigenvector(torch.autograd.Function):
    """The eigenvector of the largest eigenvalue of symmetric ``[..., 4, 4]`` matrices, NaN-free backward."""

    @staticmethod
    def forward(ctx, F: torch.Tensor) -> torch.Tensor:
        values, vectors = torch.linalg.eigh(F)
        ctx.save_for_backward(values, vectors)
        return vectors[..., 3]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        values, vectors = ctx.saved_tensors
        # dv_top = sum_i v_i (v_i^T dF v_top) / (l_top - l_i) over i != top.
        gap = (values[..., 3:] - values[..., :3]).clamp(min=0)
        projected = (vectors[..., :3] * grad[..., :, None]).sum(-2)
        coeff = projected * gap / (gap.square() + _GAP_EPS)
        u = (vectors[..., :3] * coeff[..., None, :]).sum(-1)
        return u[..., :, None] * vectors[..., None, :, 3]


def top_eigenvector(F: torch.Tensor) -> torch.Tensor:
    """Top eigenvector of symmetric 4x4 matrices (``eigh`` reads the lower triangle, as in the reference)."""
    return _TopEigenvector.apply(F)


def rmsd_unaligned(X_a: torch.Tensor, X_b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """RMSD of ``[..., N, 3]`` point sets as they are (masked mean over N), floored as the reference does."""
    squared = (X_a - X_b).square().sum(-1)
    if mask is None:
        return squared.mean(-1).clamp(min=_MIN_SQ).sqrt()
    return ((mask * squared).sum(-1).clamp(min=_MIN_SQ) / (mask.sum(-1) + _EPS)).sqrt()


def paired_superpose(
    X_mobile: torch.Tensor,
    X_target: torch.Tensor,
    mask: torch.Tensor | None = None,
    dither: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Superpose each ``X_mobile[..., N, 3]`` onto ``X_target`` over ``mask[..., N]``: ``(rmsd[...], aligned)``.

    Computed in at least float32 and returned in it. Masked points of ``aligned`` are 0, as in the reference.
    ``dither`` adds the reference's 1e-5 Gaussian jitter to the quaternion matrix (from ``generator``, or torch's
    global generator), which it uses to break eigenvalue ties.
    """
    dtype = compute_dtype(torch.promote_types(X_mobile.dtype, X_target.dtype))
    batch_shape, n = X_mobile.shape[:-2], X_mobile.shape[-2]
    mobile = X_mobile.to(dtype).reshape(-1, n, 3)
    target = X_target.to(dtype).reshape(-1, n, 3)
    if mask is None:
        weights = torch.ones(mobile.shape[:2], dtype=dtype, device=mobile.device)
        mobile_mean, target_mean = mobile.mean(1, keepdim=True), target.mean(1, keepdim=True)
    else:
        weights = mask.to(dtype).reshape(-1, n)
        count = weights.sum(1)[:, None, None] + _EPS
        mobile_mean = (weights[..., None] * mobile).sum(1, keepdim=True) / count
        target_mean = (weights[..., None] * target).sum(1, keepdim=True) / count
    mobile_c = weights[..., None] * (mobile - mobile_mean)
    target_c = weights[..., None] * (target - target_mean)
    F = _quaternion_matrix(torch.einsum("sai,saj->sij", mobile_c, target_c))
    if dither:
        F = F + 1e-5 * torch.randn(F.shape, dtype=F.dtype, device=F.device, generator=generator)
    rotation = rotations_from_quaternions(top_eigenvector(F))
    aligned = torch.einsum("bxr,bir->bix", rotation, mobile_c) + target_mean
    if mask is not None:
        aligned = weights[..., None] * aligned
    rmsd = rmsd_unaligned(aligned, target, None if mask is None else weights)
    return rmsd.reshape(batch_shape), aligned.reshape(*batch_shape, n, 3)
