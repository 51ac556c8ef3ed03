"""Residue frames <-> ideal backbones: the reference's ``FrameBuilder``.

A frame is a rotation R (columns: CA->N, the N-CA-C plane normal, their cross) and a translation t (the CA).
``forward`` places an ideal N, CA, C (Engh & Huber) in each frame and the carbonyl O from CHARMM's alanine
geometry against the next residue's N; ``inverse`` reads frames off any backbone. The ideal fragment is a
constant, not a buffer (the reference's ``_t_atom`` / ``_R_atom`` buffers are dropped by the key mapping).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from biozoo_chroma.backbone.transforms import compose_translation
from biozoo_chroma.graph.geometry import (
    extend_atoms,
    frames_from_backbone,
    quaternions_from_rotations,
    rotations_from_quaternions,
)

# N, CA, C of an ideal residue in its own frame: N-CA 1.459 Å, CA-C 1.525 Å at 111 degrees.
IDEAL_N_CA_C = ((1.459, 0.0, 0.0), (0.0, 0.0, 0.0), (-0.547, 0.0, -1.424))
LENGTH_C_O, ANGLE_CA_C_O, DIHEDRAL_NNEXT_CA_C_O = 1.2297, 122.52, 180.0  # CHARMM all36 ALA, degrees


class FrameBuilder(nn.Module):
    """``(R [B, L, 3, 3], t [B, L, 3], C) -> X [B, L, 4, 3]`` and back (``inverse``)."""

    def __init__(self, distance_eps: float = 1e-3) -> None:
        super().__init__()
        self.distance_eps = distance_eps

    def _build_O(self, X_chain: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """Add the carbonyl O (against the next position's N, whatever its chain: the reference's behaviour)."""
        X_N, X_CA, X_C = X_chain.unbind(-2)
        present = (C > 0).to(X_chain.dtype)
        X_N_next = F.pad(present[:, 1:].unsqueeze(-1) * X_N[:, 1:], (0, 0, 0, 1))
        ones = torch.ones(C.shape, dtype=X_chain.dtype, device=C.device)
        X_O = extend_atoms(
            X_N_next,
            X_CA,
            X_C,
            LENGTH_C_O * ones,
            ANGLE_CA_C_O * ones * (math.pi / 180.0),
            DIHEDRAL_NNEXT_CA_C_O * ones * (math.pi / 180.0),
            self.distance_eps,
        )
        return present[..., None, None] * torch.stack([X_N, X_CA, X_C, X_O], -2)

    def forward(
        self, R: torch.Tensor | None, t: torch.Tensor, C: torch.Tensor, q: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The ideal backbone in frames ``(R, t)``; or give quaternions ``q`` (then ``R`` is None)."""
        if (R is None) == (q is None):
            raise ValueError("give exactly one of R and q")
        if R is None:
            R = rotations_from_quaternions(q, normalize=True, eps=self.distance_eps)
        ideal = torch.tensor(IDEAL_N_CA_C, dtype=t.dtype, device=t.device)
        X_chain = compose_translation(R.unsqueeze(-3), t.unsqueeze(-2), ideal)
        return self._build_O(X_chain, C)

    def inverse(self, X: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Frames ``R [B, L, 3, 3]``, ``t [B, L, 3]`` (CA) and quaternions ``q [B, L, 4]``; zero where C <= 0."""
        R, t = frames_from_backbone(X[:, :, :4], self.distance_eps)
        q = quaternions_from_rotations(R, self.distance_eps)
        mask = (C > 0).to(X.dtype).unsqueeze(-1)
        return mask.unsqueeze(-1) * R, mask * t, mask * q
