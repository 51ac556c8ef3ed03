"""Side chains of a :class:`~biozoo_chroma.Protein`, with the error that names residues lacking them.

A structure read from a file may have no side chains at all (a backbone model, a CA-trace-like export) or miss
atoms on some residues (unresolved density). Chi angles of such residues would be silent garbage (dihedrals of
zeros), so asking for them is refused, naming the residues.
"""

from __future__ import annotations

import torch

from biozoo.errors import BiozooError
from biozoo_chroma.constants import AA20, AA20_3
from biozoo_chroma.sidechains.chi import chi_angles
from biozoo_chroma.structures import Protein

#: How many residues an error names before it summarises the rest.
NAMED = 8


class SideChainError(BiozooError):
    """Side chains were needed (chi angles, packing scores) but the structure lacks some or all of them."""


def missing_side_chains(protein: Protein) -> list[str]:
    """Residues that have a backbone but lack a heavy atom of their side chain, as ``'LYS 23 of chain A'``."""
    _, C_bb, _ = protein.to_XCS()
    _, C_all, _ = protein.to_XCS(all_atom=True)
    incomplete = ((C_bb > 0) & (C_all < 0))[0].nonzero().flatten().tolist()
    names, ids, ins = protein.sequence(), protein.residue_ids, protein.insertion_codes
    chain_of = (C_bb[0].abs() - 1).tolist()
    chains = protein.chain_ids
    return [f"{AA20_3[AA20.index(names[i])]} {ids[i]}{ins[i]} of chain {chains[chain_of[i]]}" for i in incomplete]


def protein_chi(protein: Protein) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(X [1, L, 14, 3], C, S, chi [1, L, 4], chi mask)`` of a protein whose observed residues all have side chains.

    Raises :class:`SideChainError` naming the residues (up to :data:`NAMED`) that have a backbone but an
    incomplete side chain.
    """
    missing = missing_side_chains(protein)
    if missing:
        shown = ", ".join(missing[:NAMED]) + (f" and {len(missing) - NAMED} more" if len(missing) > NAMED else "")
        every = len(missing) == int(protein.observed.sum())
        raise SideChainError(
            f"{'no residue has' if every else f'{len(missing)} residue(s) lack'} a complete side chain: {shown}",
            "give an all-atom structure (a backbone-only file has no chi angles), or build the missing side chains "
            "first (biozoo_chroma.sidechains.SideChainBuilder places them from chi angles)",
        )
    X, C, S = protein.to_XCS(all_atom=True)
    chi, mask = chi_angles(X, C, S)
    return X, C, S, chi, mask
