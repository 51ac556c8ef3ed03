"""Batched optimal superposition of paired point sets, with masks, and the RMSD after it.

The reconstruction losses superpose a prediction onto the truth over many small sets at once (whole complexes,
7-residue fragments, fragment pairs, neighbourhoods), so this works over any leading batch shape, through
:func:`biozoo_chroma.superposition.superposition` (whose top eigenvector has a NaN-free backward: the losses are
trained through). Values are those of the reference's ``CrossRMSD.pairedRMSD(..., compute_alignment=True)``.
"""

from __future__ import annotations

import torch

from biozoo_chroma.graph.geometry import compute_dtype
from biozoo_chroma.superposition import COUNT_EPS as _EPS
from biozoo_chroma.superposition import superposition, top_eigenvector

__all__ = ["paired_superpose", "rmsd_unaligned", "top_eigenvector"]

_MIN_SQ = 1e-8  # the reference's floor on a summed squared deviation (keeps sqrt differentiable at 0)


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
    weights = None if mask is None else mask.to(dtype).reshape(-1, n)
    rotation, mobile_mean, target_mean = superposition(mobile, target, weights, dither, generator)
    mobile_c = mobile - mobile_mean if weights is None else weights[..., None] * (mobile - mobile_mean)
    aligned = torch.einsum("bxr,bir->bix", rotation, mobile_c) + target_mean
    if weights is not None:
        aligned = weights[..., None] * aligned
    rmsd = rmsd_unaligned(aligned, target, weights)
    return rmsd.reshape(batch_shape), aligned.reshape(*batch_shape, n, 3)
