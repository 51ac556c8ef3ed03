"""The other naming of symmetric side chains (Asp OD1/OD2, Glu OE1/OE2, Phe/Tyr CD1/CD2 and CE1/CE2, Arg NH1/NH2).

Such atom pairs are equivalent by a 180-degree flip, so a structure's naming is arbitrary; side-chain losses
compare a prediction against both namings of the target (the reference's ``SideChainSymmetryRenamer``).
"""

from __future__ import annotations

import torch

from biozoo_chroma.constants import ATOMS_BB
from biozoo_chroma.sidechains.tables import tables


def swap_symmetric_atoms(X: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """All-atom ``X [B, L, 14, 3]`` with each symmetric pair's coordinates exchanged (other atoms unchanged)."""
    partner = tables().symmetry.to(S.device)[S]  # [B, L, 10]
    backbone, side = X[:, :, : len(ATOMS_BB)], X[:, :, len(ATOMS_BB) :]
    side = torch.gather(side, 2, partner.unsqueeze(-1).expand(-1, -1, -1, 3))
    return torch.cat([backbone, side], dim=2)
