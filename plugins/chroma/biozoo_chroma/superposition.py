"""Optimal rigid superposition of paired point sets (Kabsch, by the quaternion method of Coutsias et al. 2004).

One implementation for the two users: the sampler's score aligns the denoiser's X0 onto the current state, and the
reconstruction losses superpose predictions onto the truth over many small sets at once. The rotation is the top
eigenvector of a symmetric 4x4 matrix built from the 3x3 cross-covariance. ``torch.linalg.eigh``'s gradient is NaN
wherever two eigenvalues are equal (e.g. an all-masked set, whose matrix is 0), even where the upstream gradient is
0, and the losses are trained through, so the top eigenvector has its own backward, which needs only the gaps to the
top eigenvalue and damps a zero gap to 0. Like the reference (``symeig`` alignment), the matrix may get a 1e-5
dither that breaks ties between equal eigenvalues, drawn from torch's global generator or ``generator``.
"""

from __future__ import annotations

import torch

from biozoo_chroma.graph.geometry import compute_dtype, rotations_from_quaternions

COUNT_EPS = 1e-5  # the reference's epsilon on a set's point count
_GAP_EPS = 1e-12  # damping of 1/gap in the eigenvector gradient: only gaps below ~1e-6 are affected


def quaternion_matrix(cov: torch.Tensor) -> torch.Tensor:
    """The symmetric 4x4 matrix whose top eigenvector is the optimal rotation, from a 3x3 cross-covariance."""
    (sxx, sxy, sxz), (syx, syy, syz), (szx, szy, szz) = (cov[..., i, :].unbind(-1) for i in range(3))
    rows = [
        [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
        [syz - szy, sxx - syy - szz, sxy + syx, sxz + szx],
        [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
        [sxy - syx, sxz + szx, syz + szy, -sxx - syy + szz],
    ]
    return torch.stack([torch.stack(row, -1) for row in rows], -2)


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


def superposition(
    mobile: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    dither: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fit of ``mobile [S, N, 3]`` onto ``target`` over ``weights [S, N]`` (0/1; ``None``: all points).

    Returns ``(rotation [S, 3, 3], mobile_mean [S, 1, 3], target_mean [S, 1, 3])``, in at least float32: a point
    ``x`` of the mobile set goes to ``rotation @ (x - mobile_mean) + target_mean``. Masked means divide by the
    count plus the reference's 1e-5.
    """
    dtype = compute_dtype(torch.promote_types(mobile.dtype, target.dtype))
    mobile, target = mobile.to(dtype), target.to(dtype)
    if weights is None:
        mobile_mean, target_mean = mobile.mean(1, keepdim=True), target.mean(1, keepdim=True)
        cov = torch.einsum("sai,saj->sij", mobile - mobile_mean, target - target_mean)
    else:
        w = weights.to(dtype)[..., None]
        count = w.sum(1, keepdim=True) + COUNT_EPS
        mobile_mean, target_mean = (w * mobile).sum(1, keepdim=True) / count, (w * target).sum(1, keepdim=True) / count
        cov = torch.einsum("sai,saj->sij", w * (mobile - mobile_mean), w * (target - target_mean))
    F = quaternion_matrix(cov)
    if dither:
        F = F + 1e-5 * torch.randn(F.shape, dtype=F.dtype, device=F.device, generator=generator)
    return rotations_from_quaternions(top_eigenvector(F)), mobile_mean, target_mean
