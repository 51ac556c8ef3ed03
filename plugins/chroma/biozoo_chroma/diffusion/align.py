"""Optimal superposition of one backbone onto another (Kabsch, by the quaternion method of Coutsias et al. 2004).

The score aligns the denoiser's X0 onto the current X before measuring their difference, so that a prediction in
an arbitrary frame is not penalised for its rotation. Like the reference (``BackboneRMSD.align`` with its default
``symeig`` method), the 4x4 quaternion matrix gets a 1e-5 dither by default, drawn from torch's global generator
(or ``generator``), which breaks ties between equal eigenvalues; ``dither=False`` makes the alignment deterministic.
"""

from __future__ import annotations

import torch

from biozoo_chroma.diffusion.chains import compute_dtype
from biozoo_chroma.graph.geometry import rotations_from_quaternions


def _quaternion_matrix(cov: torch.Tensor) -> torch.Tensor:
    """The symmetric 4x4 matrix whose top eigenvector is the optimal rotation, from a 3x3 cross-covariance."""
    (sxx, sxy, sxz), (syx, syy, syz), (szx, szy, szz) = (cov[..., i, :].unbind(-1) for i in range(3))
    rows = [
        [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
        [syz - szy, sxx - syy - szz, sxy + syx, sxz + szx],
        [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
        [sxy - syx, sxz + szx, syz + szy, -sxx - syy + szz],
    ]
    return torch.stack([torch.stack(row, -1) for row in rows], -2)


def align_backbone(
    X_mobile: torch.Tensor,
    X_target: torch.Tensor,
    C: torch.Tensor,
    dither: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rigidly move all atoms of ``X_mobile`` ``[B, L, A, 3]`` onto ``X_target``, fitted on present residues (C > 0)."""
    dtype = compute_dtype(X_mobile.dtype)
    batch = X_mobile.shape[0]
    mobile = X_mobile.to(dtype).reshape(batch, -1, 3)
    target = X_target.to(dtype).reshape(batch, -1, 3)
    mask = (C > 0).to(dtype).repeat_interleave(X_mobile.shape[2], dim=1)[..., None]
    count = mask.sum(1, keepdim=True) + 1e-5
    mobile_mean = (mask * mobile).sum(1, keepdim=True) / count
    target_mean = (mask * target).sum(1, keepdim=True) / count
    cov = torch.einsum("bai,baj->bij", mask * (mobile - mobile_mean), mask * (target - target_mean))
    F = _quaternion_matrix(cov)
    if dither:
        F = F + 1e-5 * torch.randn(F.shape, dtype=F.dtype, device=F.device, generator=generator)
    # eigh reads the lower triangle only, as in the reference (the dither makes F slightly asymmetric).
    rotation = rotations_from_quaternions(torch.linalg.eigh(F).eigenvectors[..., 3])
    aligned = torch.einsum("bxr,bir->bix", rotation, mobile - mobile_mean) + target_mean
    return aligned.reshape(X_mobile.shape).to(X_mobile.dtype)
