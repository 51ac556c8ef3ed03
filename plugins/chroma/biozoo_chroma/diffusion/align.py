"""The sampler's alignment: the denoiser's X0 moved rigidly onto the current state before the score compares them.

A prediction in an arbitrary frame is thus not penalised for its rotation. Like the reference (``BackboneRMSD.align``
with its default ``symeig`` method) the fit is dithered by default (see :mod:`biozoo_chroma.superposition`);
``dither=False`` makes it deterministic.
"""

from __future__ import annotations

import torch

from biozoo_chroma.superposition import superposition


def align_backbone(
    X_mobile: torch.Tensor,
    X_target: torch.Tensor,
    C: torch.Tensor,
    dither: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rigidly move all atoms of ``X_mobile`` ``[B, L, A, 3]`` onto ``X_target``, fitted on present residues (C > 0)."""
    batch = X_mobile.shape[0]
    mobile, target = X_mobile.reshape(batch, -1, 3), X_target.reshape(batch, -1, 3)
    weights = (C > 0).repeat_interleave(X_mobile.shape[2], dim=1)
    rotation, mobile_mean, target_mean = superposition(mobile, target, weights, dither, generator)
    aligned = torch.einsum("bxr,bir->bix", rotation, mobile.to(rotation.dtype) - mobile_mean) + target_mean
    return aligned.reshape(X_mobile.shape).to(X_mobile.dtype)
