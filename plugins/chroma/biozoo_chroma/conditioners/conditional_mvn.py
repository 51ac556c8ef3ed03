"""The diffusion prior N(0, R R^T) conditioned on known backbone atoms (motif): a Gaussian over the rest.

Partitioning the atoms into free (1) and known (2), the conditional of the free atoms given the known ones has mean
mu_1 = m + S12 S22^+ (x_2 - m) (m: the known atoms' centre, so the motif's placement does not pull the rest towards
the origin) and covariance S11 - S12 S22^+ S21, whose Cholesky factor, scattered back to the full atom set with
zeros at the known atoms, is the conditional R. A draw is mu + R_clamp Z: exactly the motif at the known atoms.

As in the reference (``mvn.ConditionalBackboneMVNGlobular``), R is the globular model's, built densely (it is
(4L)^2, fine for the few hundred residues of a scaffold); ``gamma`` replaces the chains' centre spread by
``gamma`` times the complex's expected Rg, which lets the scaffold's centre move away from the motif's.
"""

from __future__ import annotations

import torch
from torch import nn

from biozoo_chroma.diffusion.chains import ATOMS, ChainLayout
from biozoo_chroma.diffusion.covariance import _NU, _RG0, PolymerCovariance


def dense_R(
    C: torch.Tensor, complex_scaling: bool, gamma: float | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The globular R ``[4L, 4L]`` of one chain map ``[1, L]`` (absent residues count as present).

    Applying the O(L) operator to the identity gives R without a second implementation of its factors. With
    ``gamma``, R's per-chain mean-shift factor (I - xi/N 11^T) is swapped for the one whose centre std is
    ``gamma`` Rg_complex: composing the two shifts is one more per-chain mean shift by (xi - xi') / (1 - xi).
    """
    C = C.abs()
    n = C.shape[1] * ATOMS
    covariance = PolymerCovariance("globular", complex_scaling=complex_scaling)
    eye = torch.eye(n, dtype=dtype, device=C.device).reshape(n, C.shape[1], ATOMS, 1).expand(-1, -1, -1, 3)
    R = covariance.multiply_R(eye.contiguous(), C.expand(n, -1).contiguous())[..., 0].reshape(n, n).T
    if gamma is None or gamma <= 0:
        return R
    layout = ChainLayout.from_chain_map(C)
    _, x0_std, shift = covariance._globular(layout, R.dtype)
    count = layout.segment_count(R.dtype)
    rg_complex = _RG0 * count.sum(1, keepdim=True) ** _NU
    wanted = (x0_std[:, :-1] - gamma * rg_complex) / x0_std[:, :-1]
    factor = layout.per_atom(((shift[:, :-1] - wanted) / (1 - shift[:, :-1]))[..., None])[0, :, 0]  # [4L]
    segment = layout.segment[0]
    same_chain = (segment[:, None] == segment[None, :]).to(R.dtype)
    chain_mean = same_chain / same_chain.sum(1, keepdim=True)
    return R + factor[:, None] * (chain_mean @ R)


class ConditionalBackboneMVN(nn.Module):
    """The prior conditioned on the atoms of residues ``D`` ``[1, L]`` being at ``X`` ``[1, L, 4, 3]``."""

    def __init__(
        self, X: torch.Tensor, C: torch.Tensor, D: torch.Tensor, complex_scaling: bool, gamma: float | None = None
    ) -> None:
        super().__init__()
        # Built once in float64: the Schur complement, pinv and Cholesky lose digits in float32 (the reference's
        # float32 build is off by ~1e-5 relative from the exact conditional); stored in float32.
        X, R = X.double(), dense_R(C, complex_scaling, gamma, torch.float64)
        RRt = R @ R.T
        known = D.bool().reshape(-1).repeat_interleave(ATOMS)
        free_ix, known_ix = torch.nonzero(~known)[:, 0], torch.nonzero(known)[:, 0]
        S11, S12, S22 = RRt[free_ix][:, free_ix], RRt[free_ix][:, known_ix], RRt[known_ix][:, known_ix]
        gain = S12 @ torch.linalg.pinv(S22)
        chol = torch.linalg.cholesky(S11 - gain @ S12.T)
        R_clamp = torch.zeros_like(R)
        R_clamp[free_ix[:, None], free_ix[None, :]] = chol
        self.register_buffer("R_clamp", R_clamp.float())
        self.register_buffer("R_clamp_inverse", torch.linalg.pinv(R_clamp).float())
        self.register_buffer("gain", gain)
        self.register_buffer("free_ix", free_ix)
        self.register_buffer("known_ix", known_ix)
        self.register_buffer("D", D.bool())
        self.register_buffer("mu_sample", self.mu(X).float())
        self.gain = self.gain.float()

    def mu(self, X: torch.Tensor) -> torch.Tensor:
        """The conditional mean given the known residues' atoms in ``X`` ``[B, L, 4, 3]``."""
        B = X.shape[0]
        flat = X.reshape(B, -1, 3)
        known = flat[:, self.known_ix]
        center = known.mean(1, keepdim=True)
        free = center + self.gain.to(X.dtype) @ (known - center)
        return flat.index_copy(1, self.free_ix, free).reshape(X.shape)

    def sample(self, Z: torch.Tensor) -> torch.Tensor:
        """mu + R_clamp Z for standard-normal-like ``Z`` ``[B, L, 4, 3]``."""
        flat = Z.reshape(Z.shape[0], -1, 3)
        return self.mu_sample.to(Z.dtype) + (self.R_clamp.to(Z.dtype) @ flat).reshape(Z.shape)
