"""Side chains from chi angles: backbone ``X [B, L, 4, 3]`` + sequence + chi -> all-atom ``X [B, L, 14, 3]``.

Each side-chain atom is placed from three already placed atoms by a bond length, an angle and a dihedral (NERF,
:func:`~biozoo_chroma.graph.geometry.extend_atoms`). The lengths and angles are the ideal (CHARMM) values of
:mod:`biozoo_chroma.sidechains.tables`; a dihedral is the residue's chi angle where one drives it, else ideal.
Ten placement rounds cover every residue type at once (the atoms of all residues of the batch are placed
together), so it is batched, differentiable in X and chi, and runs in any float dtype (the geometry itself is
computed in at least float32; see :func:`~biozoo_chroma.graph.geometry.compute_dtype`).
"""

from __future__ import annotations

import torch
from torch import nn

from biozoo_chroma.constants import ATOMS_BB
from biozoo_chroma.graph.geometry import compute_dtype, extend_atoms
from biozoo_chroma.sidechains.tables import NUM_SIDECHAIN_ATOMS, atom_mask, tables

#: The reference builds with this smoothing in its normalisations (not extend_atoms' default 1e-3).
BUILD_EPS = 1e-6


class SideChainBuilder(nn.Module):
    """All-atom coordinates from a backbone, a sequence and chi angles (the reference's ``SideChainBuilder``).

    ``forward(X, C, S, chi=None) -> (X_all [B, L, 14, 3], mask [B, L, 14])``. ``X`` may be all-atom: only its
    N, CA, C, O are read. ``chi [B, L, 4]`` in radians; entries past a residue type's number of chi angles
    are ignored, and ``chi=None`` builds the ideal rotamer of the tables. Atoms a residue does not have, and
    every atom of a residue without structure (C <= 0), are zero, as ``mask`` says. The tables are
    non-persistent buffers: they follow ``.to(device)`` and never enter a state dict.
    """

    def __init__(self, eps: float = BUILD_EPS) -> None:
        super().__init__()
        self.eps = eps
        t = tables()
        self.register_buffer("internal", t.internal.clone(), persistent=False)
        self.register_buffer("parents", t.parents.clone(), persistent=False)
        self.register_buffer("chi_of_atom", t.chi_of_atom.clone(), persistent=False)

    def forward(
        self, X: torch.Tensor, C: torch.Tensor, S: torch.Tensor, chi: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = compute_dtype(X.dtype)
        backbone = X[:, :, : len(ATOMS_BB)].to(dtype)
        lengths, angles, dihedrals = self.internal.to(dtype)[S].unbind(-1)  # each [B, L, 10]
        if chi is not None:
            which = self.chi_of_atom[S]  # [B, L, 10], -1 where the dihedral is fixed
            chosen = torch.gather(chi.to(dtype), -1, which.clamp(min=0))
            dihedrals = torch.where(which >= 0, chosen, dihedrals)
        parents = self.parents[S]  # [B, L, 10, 3] slots
        full = torch.cat([backbone, backbone.new_zeros(*backbone.shape[:2], NUM_SIDECHAIN_ATOMS, 3)], dim=2)
        slots = torch.arange(len(ATOMS_BB), full.shape[2], device=full.device)
        for a in range(NUM_SIDECHAIN_ATOMS):
            index = parents[:, :, a].unsqueeze(-1).expand(-1, -1, -1, 3)
            x1, x2, x3 = torch.gather(full, 2, index).unbind(2)
            atom = extend_atoms(x1, x2, x3, lengths[..., a], angles[..., a], dihedrals[..., a], eps=self.eps)
            # out of place, so autograd sees every placement
            full = full.index_copy(2, slots[a : a + 1], atom.unsqueeze(2))
        mask = atom_mask(C, S)
        full = full * mask.unsqueeze(-1).to(dtype)
        return full.to(X.dtype), mask

