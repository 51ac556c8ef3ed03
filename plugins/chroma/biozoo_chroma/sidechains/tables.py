"""The side-chain geometry tables as tensors, read from ``biozoo_chroma/data/sidechain_geometry.json``.

The JSON is data converted from the reference (see its ``provenance`` field and
``scripts/make_chroma_sidechain_golden.py``); here it becomes per-residue-type index and value tensors that the
builder, the chi angles and the symmetry renamer gather with ``S``. Every table is indexed ``[aa, ...]`` in the
order of :data:`~biozoo_chroma.constants.AA20_3`; side-chain atom ``a`` (0..9) is slot ``4 + a`` of an all-atom X.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import torch

from biozoo_chroma.constants import AA20, AA20_3, ATOMS_BB, NUM_ATOMS_ALL

NUM_SIDECHAIN_ATOMS = NUM_ATOMS_ALL - len(ATOMS_BB)  # 10
NUM_CHI = 4


@cache
def geometry_data() -> dict[str, Any]:
    """The JSON table (cached; read from the installed package)."""
    text = resources.files("biozoo_chroma").joinpath("data/sidechain_geometry.json").read_text(encoding="utf-8")
    data = json.loads(text)
    if data["alphabet"] != AA20 or list(data["residues"]) != list(AA20_3):
        raise RuntimeError("sidechain_geometry.json is not in Chroma's alphabet order; regenerate it")
    return data


@dataclass(frozen=True)
class SideChainTables:
    """Per residue type (20) and side-chain atom (10) or chi (4), as CPU tensors.

    ``internal [20, 10, 3]`` float32: bond length, angle, dihedral (radians) placing each atom from its parents;
    ``parents [20, 10, 3]`` long: the slots (0..13) of the three atoms each atom is placed from;
    ``chi_of_atom [20, 10]`` long: which chi (0..3) sets an atom's dihedral, -1 for a fixed one;
    ``chi_quartets [20, 4, 4]`` long: the four slots each chi is the dihedral of (0 where there is no such chi);
    ``num_atoms [20]`` and ``num_chi [20]`` long; ``symmetry [20, 10]`` long: each side-chain atom's
    180-degree-symmetric partner (itself when it has none).
    """

    internal: torch.Tensor
    parents: torch.Tensor
    chi_of_atom: torch.Tensor
    chi_quartets: torch.Tensor
    num_atoms: torch.Tensor
    num_chi: torch.Tensor
    symmetry: torch.Tensor


@cache
def tables() -> SideChainTables:
    """Build the tensors once, on the CPU whatever the default device is (a model assembled on the meta device
    must not cache meta tables); modules copy them into (non-persistent) buffers so they follow ``.to(device)``."""
    with torch.device("cpu"):
        return _build_tables()


def _build_tables() -> SideChainTables:
    data = geometry_data()
    shape = (len(AA20_3), NUM_SIDECHAIN_ATOMS)
    internal = torch.zeros(*shape, 3, dtype=torch.float32)
    parents = torch.zeros(*shape, 3, dtype=torch.long)
    chi_of_atom = torch.full(shape, -1, dtype=torch.long)
    chi_quartets = torch.zeros(len(AA20_3), NUM_CHI, 4, dtype=torch.long)
    symmetry = torch.arange(NUM_SIDECHAIN_ATOMS).repeat(len(AA20_3), 1)
    num_atoms = torch.zeros(len(AA20_3), dtype=torch.long)
    num_chi = torch.zeros(len(AA20_3), dtype=torch.long)
    overrides = {(o["residue"], o["atom"]): o for o in data["builder_overrides"]}
    for aa, name in enumerate(AA20_3):
        entry = data["residues"][name]
        slots = {atom: i for i, atom in enumerate(list(ATOMS_BB) + entry["atoms"])}
        num_atoms[aa] = len(slots)
        num_chi[aa] = len(entry["chi_atoms"])
        for a, atom in enumerate(entry["atoms"]):
            dihedral = overrides.get((name, atom), {}).get("dihedral", entry["dihedrals"][a])
            # degrees -> radians in float32 as (value * pi) / 180, the reference's rounding
            internal[aa, a] = torch.tensor([entry["lengths"][a], entry["angles"][a], dihedral])
            parents[aa, a] = torch.tensor([slots[p] for p in entry["parents"][a]])
            if not (parents[aa, a] < 4 + a).all():
                raise RuntimeError(f"sidechain_geometry.json: {name} {atom} is placed from an atom built after it")
        for k, a in enumerate(entry["chi_atoms"]):
            chi_of_atom[aa, a] = k
            chi_quartets[aa, k] = torch.cat([parents[aa, a], torch.tensor([4 + a])])
        for first, second in data["symmetries"].get(name, []):
            i, j = entry["atoms"].index(first), entry["atoms"].index(second)
            symmetry[aa, i], symmetry[aa, j] = j, i
    internal[..., 1:] = internal[..., 1:] * math.pi / 180.0
    return SideChainTables(internal, parents, chi_of_atom, chi_quartets, num_atoms, num_chi, symmetry)


def _count_mask(C: torch.Tensor, S: torch.Tensor, counts: torch.Tensor, width: int) -> torch.Tensor:
    """``[B, L, width]`` bool: slot < the residue type's count, on residues with structure (C > 0)."""
    per_residue = counts.to(S.device)[S] * (C > 0)
    return torch.arange(width, device=S.device) < per_residue.unsqueeze(-1)


def atom_mask(C: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """Which of the 14 slots each residue has (backbone and its type's side chain), ``[B, L, 14]`` bool."""
    return _count_mask(C, S, tables().num_atoms, NUM_ATOMS_ALL)


def chi_mask(C: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """Which of the 4 chi angles each residue's type has, ``[B, L, 4]`` bool (0 for Ala, Gly; 4 for Arg, Lys)."""
    return _count_mask(C, S, tables().num_chi, NUM_CHI)
