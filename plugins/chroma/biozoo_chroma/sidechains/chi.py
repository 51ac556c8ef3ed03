"""Chi angles from all-atom coordinates, and the chi binning of Chroma's chi decoder, in both directions.

Chi ``k`` of a residue is the dihedral of the four atoms that place its chi-driven atom (the ``chi_quartets``
of :mod:`biozoo_chroma.sidechains.tables`), so :func:`chi_angles` inverts
:class:`~biozoo_chroma.sidechains.builder.SideChainBuilder` exactly where the side chain has ideal geometry.
Symmetric side chains (Asp, Glu, Phe, Tyr, Arg's NH1/NH2) get no special treatment here, as in the reference:
their last chi is read from the atoms as named; :mod:`biozoo_chroma.sidechains.symmetry` gives the other naming.

The chi decoder discretises each chi into ``num_bins`` equal bins over [-pi, pi) and places a sample inside its
bin by a continuous offset (:func:`chi_to_bins`, :func:`bins_to_chi`, :func:`sample_in_bins`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from biozoo_chroma.graph.geometry import compute_dtype, dihedrals
from biozoo_chroma.sidechains.builder import BUILD_EPS
from biozoo_chroma.sidechains.tables import NUM_CHI, chi_mask, tables


def chi_angles(X: torch.Tensor, C: torch.Tensor, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(chi [B, L, 4], mask [B, L, 4] bool)`` from all-atom ``X [B, L, 14, 3]``, radians in (-pi, pi].

    Chi angles a residue's type does not have, and those of residues without structure, are 0 (``mask`` False).
    Computed in at least float32, returned in X's dtype. Use :func:`biozoo_chroma.sidechains.inputs.protein_chi`
    for a :class:`~biozoo_chroma.Protein`: it refuses residues whose side chains are missing, by name.
    """
    B, L = S.shape
    quartets = tables().chi_quartets.to(S.device)[S].reshape(B, L, NUM_CHI * 4, 1).expand(-1, -1, -1, 3)
    atoms = torch.gather(X.to(compute_dtype(X.dtype)), 2, quartets).reshape(B, L, NUM_CHI, 4, 3)
    chi = dihedrals(*atoms.unbind(-2), eps=BUILD_EPS)
    mask = chi_mask(C, S)
    return (chi * mask).to(X.dtype), mask


def bin_edges(num_bins: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``num_bins + 1`` edges from -pi to pi (float32, computed in float64 as the reference does)."""
    return torch.linspace(-math.pi, math.pi, num_bins + 1, dtype=torch.float64, device=device).float()


def chi_onehot(chi: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """``[..., num_bins]`` indicator of the bin ``left <= chi < right``.

    As in the reference, a chi of exactly +pi (or outside [-pi, pi)) falls in no bin: its row is all zero.
    """
    chi = chi.unsqueeze(-1)
    return ((chi >= edges[:-1]) & (chi < edges[1:])).to(chi.dtype)


def chi_to_bins(chi: torch.Tensor, num_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(bin index long, offset in [0, 1))`` of each chi, wrapped into [-pi, pi) first (so +pi is bin 0)."""
    width = 2 * math.pi / num_bins
    position = torch.remainder(chi.to(compute_dtype(chi.dtype)) + math.pi, 2 * math.pi) / width
    index = position.floor().clamp(0, num_bins - 1)
    return index.long(), (position - index).to(chi.dtype)


def bins_to_chi(index: torch.Tensor, offset: torch.Tensor, num_bins: int) -> torch.Tensor:
    """The chi at ``offset`` (0..1) of the way through bin ``index``; inverse of :func:`chi_to_bins`."""
    width = 2 * math.pi / num_bins
    return -math.pi + (index.to(offset.dtype) + offset) * width


def sample_in_bins(logits: torch.Tensor, u: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Continuous chi by inverting the piecewise-linear CDF of ``softmax(logits)`` over the bins at ``u``.

    ``logits [..., num_bins]``, ``u [...]`` uniforms in [0, 1). The bin is the first whose cumulative mass
    exceeds ``u``, and the chi lies inside it in proportion to where ``u`` falls in that bin's mass. This is the
    reference's reparameterised sampler; with ``u`` given it is deterministic (and differentiable in logits).
    """
    cmf = torch.cumsum(F.softmax(logits, dim=-1), dim=-1)
    u = u.to(cmf.dtype).unsqueeze(-1)
    index = (u < cmf).to(cmf.dtype).argmax(-1, keepdim=True)  # 0 if rounding leaves u above the total mass
    cmf = F.pad(cmf, (1, 0))
    left, right = edges[:-1].to(cmf.dtype), edges[1:].to(cmf.dtype)
    shape = (*cmf.shape[:-1], left.shape[0])
    y_left = torch.gather(left.expand(shape), -1, index)
    y_right = torch.gather(right.expand(shape), -1, index)
    c_left, c_right = torch.gather(cmf, -1, index), torch.gather(cmf, -1, index + 1)
    return (y_left + (y_right - y_left) * (u - c_left) / (c_right - c_left + 1e-5)).squeeze(-1)
