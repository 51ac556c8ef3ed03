"""Chroma's alphabets and per-residue atom order, the tables every XCS tensor is indexed by.

Provenance: written from generatebio/chroma at commit 929407c (``generate-chroma`` 1.0.0, Apache-2.0):
the alphabet is ``constants.sequence.AA20``, the backbone order ``constants.sequence.ATOMS_BB``, the side-chain
atoms per residue ``constants.geometry.AA_GEOMETRY[res]["atoms"]``, the chain letters
``constants.sequence.CHAIN_ALPHABET``, the residue renamings ``System.canonicalize_protein`` (level 2, its
default) and ``utility.polyseq`` (one-letter codes of modified residues). Only the tables were read; no code is
copied. Index 0 of S is A (alanine): the alphabet is in one-letter order, not in three-letter order.
"""

from __future__ import annotations

#: S indexes this alphabet.
AA20 = "ACDEFGHIKLMNPQRSTVWY"

AA20_3 = (
    "ALA", "CYS", "ASP", "GLU", "PHE", "GLY", "HIS", "ILE", "LYS", "LEU",
    "MET", "ASN", "PRO", "GLN", "ARG", "SER", "THR", "VAL", "TRP", "TYR",
)  # fmt: skip

ATOMS_BB = ("N", "CA", "C", "O")

#: Side-chain heavy atoms in Chroma's order (slots 4..13 of an all-atom X). TRP's order is not alphabetical.
SIDECHAIN_ATOMS: dict[str, tuple[str, ...]] = {
    "ALA": ("CB",),
    "ARG": ("CB", "CG", "CD", "NE", "CZ", "NH1", "NH2"),
    "ASN": ("CB", "CG", "OD1", "ND2"),
    "ASP": ("CB", "CG", "OD1", "OD2"),
    "CYS": ("CB", "SG"),
    "GLN": ("CB", "CG", "CD", "OE1", "NE2"),
    "GLU": ("CB", "CG", "CD", "OE1", "OE2"),
    "GLY": (),
    "HIS": ("CB", "CG", "ND1", "CD2", "CE1", "NE2"),
    "ILE": ("CB", "CG1", "CG2", "CD1"),
    "LEU": ("CB", "CG", "CD1", "CD2"),
    "LYS": ("CB", "CG", "CD", "CE", "NZ"),
    "MET": ("CB", "CG", "SD", "CE"),
    "PHE": ("CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ"),
    "PRO": ("CB", "CG", "CD"),
    "SER": ("CB", "OG"),
    "THR": ("CB", "OG1", "CG2"),
    "TRP": ("CB", "CG", "CD2", "CD1", "CE2", "NE1", "CE3", "CZ3", "CH2", "CZ2"),
    "TYR": ("CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ", "OH"),
    "VAL": ("CB", "CG1", "CG2"),
}

#: The full 14-slot atom list of each residue (backbone first).
RESIDUE_ATOMS: dict[str, tuple[str, ...]] = {res: ATOMS_BB + side for res, side in SIDECHAIN_ATOMS.items()}

NUM_ATOMS_ALL = 14

#: Residue names read as a standard one, with atom renamings. Chroma's default canonicalisation (level 2):
#: CHARMM histidines, selenomethionine and selenocysteine; plus CSO (S-hydroxycysteine), which Chroma reads as C
#: through its one-letter table. Phosphorylated residues (SEP, TPO, PTR, HIP) are not mapped by default there,
#: so they are refused here.
MODIFIED_RESIDUES: dict[str, tuple[str, dict[str, str]]] = {
    "HSD": ("HIS", {}),
    "HSE": ("HIS", {}),
    "HSC": ("HIS", {}),
    "HSP": ("HIS", {}),
    "MSE": ("MET", {"SE": "SD"}),
    "SEC": ("CYS", {"SE": "SG"}),
    "CSO": ("CYS", {}),
}

#: Names that mean "the backbone O" in files from other programs (Chroma takes the first one present).
OXYGEN_ALIASES = ("O", "OXT", "OT1", "OT2", "OY")

#: Default chain ids for chains 1, 2, ... (Chroma's CHAIN_ALPHABET without its leading '_').
CHAIN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
