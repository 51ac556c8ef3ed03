"""Protein structures for Chroma: PDB / mmCIF in and out, and Chroma's XCS tensors, over biotite.

The names follow the reference (``chroma.data.Protein``): ``Protein(path)``, ``from_PDB``, ``from_CIF``,
``from_XCS``, ``to_PDB``, ``to_CIF``, ``to_XCS``. The XCS conventions are the reference's
(``System.to_XCS`` / ``System.from_XCS`` in generate-chroma 1.0.0):

* ``X`` ``[1, L, 4, 3]`` (N, CA, C, O) or ``[1, L, 14, 3]`` (backbone, then the side chain in
  :data:`~biozoo_chroma.constants.SIDECHAIN_ATOMS` order), float32, zeros where there is no structure;
* ``C`` ``[1, L]`` long: chain ``k`` (0-based, in file order) is ``k + 1``; ``-(k + 1)`` for a residue without
  structure (unobserved in an mmCIF's sequence, or, in all-atom X, missing a heavy atom); 0 is padding;
* ``S`` ``[1, L]`` long, indices into ``ACDEFGHIKLMNPQRSTVWY``.

Chain ids, residue numbers and insertion codes are kept on the :class:`Protein` (``chain_ids``,
``residue_ids``, ``insertion_codes``), and ``from_XCS`` takes them back, so a file survives a trip through XCS.
"""

from __future__ import annotations

import gzip
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from biozoo.errors import BiozooError
from biozoo.utils.atomic import OutputError, atomic_path
from biozoo_chroma.constants import (
    AA20,
    AA20_3,
    ATOMS_BB,
    CHAIN_ALPHABET,
    MODIFIED_RESIDUES,
    NUM_ATOMS_ALL,
    RESIDUE_ATOMS,
)

if TYPE_CHECKING:
    import torch

__all__ = ["Protein", "StructureError"]

PathLike = str | os.PathLike[str]

#: Largest structure read (atom records), so a huge or hostile file fails clearly instead of exhausting memory.
MAX_ATOMS = 5_000_000

_PDB_SUFFIXES = (".pdb", ".ent")
_CIF_SUFFIXES = (".cif", ".mmcif")
_BACKBONE_ALIASES = {"N": "N", "NT": "N", "CA": "CA", "C": "C", "CY": "C", "O": "O", "OY": "O", "OXT": "O"}
_BACKBONE_ALIASES |= {"OT1": "O", "OT2": "O"}
_INDEX_3 = {name: i for i, name in enumerate(AA20_3)}
_SLOTS = {res: {atom: i for i, atom in enumerate(atoms)} for res, atoms in RESIDUE_ATOMS.items()}


class StructureError(BiozooError):
    """A structure file or XCS tensors cannot be read as a protein (unreadable, empty, not protein, incomplete)."""


@dataclass
class _Atoms:
    """One model's atom records as parallel arrays, whichever format they came from."""

    chain_key: np.ndarray  # groups residues into chains (label_asym_id in mmCIF, chain id in PDB)
    chain_id: np.ndarray  # the author chain id users see
    res_key: np.ndarray  # groups atoms into residues (with chain_key)
    seq_id: np.ndarray  # mmCIF label_seq_id (places unobserved residues), -1 where there is none
    res_id: np.ndarray
    ins_code: np.ndarray
    res_name: np.ndarray
    atom_name: np.ndarray
    coord: np.ndarray


def _backbone_slot(atom_name: str) -> int | None:
    name = _BACKBONE_ALIASES.get(atom_name, "O" if atom_name.startswith("OCT") else None)
    return None if name is None else ATOMS_BB.index(name)


def _describe(chain_id: str, res_name: str, res_id: int, ins: str) -> str:
    return f"residue {res_name} {res_id}{ins} of chain {chain_id!r}"


class Protein:
    """A protein (one or more chains) with Chroma's XCS view.

    ``Protein(path)`` reads a PDB or mmCIF file (``.gz`` too); ``Protein(X, C, S)`` builds one from tensors.
    Only model 1 of a multi-model file is read. Waters, ligands, ions and nucleic acids are left out; a file
    with no amino acid at all is refused. Hydrogens are not kept (XCS has no slot for them).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) == 1 and isinstance(args[0], str | os.PathLike):
            other = self._read(Path(args[0]), None, **kwargs)
        elif len(args) == 3:
            other = self.from_XCS(*args, **kwargs)
        else:
            raise StructureError(
                f"Protein() takes a file path or three tensors (X, C, S), not {len(args)} positional argument(s)",
                "use Protein('file.pdb'), Protein('file.cif.gz') or Protein(X, C, S)",
            )
        self.__dict__.update(other.__dict__)

    # -- construction -------------------------------------------------------------------------------------

    @classmethod
    def _build(
        cls,
        names: Sequence[str],
        chain: np.ndarray,
        chain_ids: Sequence[str],
        res_ids: np.ndarray,
        ins_codes: Sequence[str],
        xyz: np.ndarray,
        has: np.ndarray,
    ) -> Protein:
        protein = cls.__new__(cls)
        protein._names = list(names)
        protein._chain = np.asarray(chain, dtype=np.int64)
        protein._chain_ids = tuple(chain_ids)
        protein._res_ids = np.asarray(res_ids, dtype=np.int64)
        protein._ins = list(ins_codes)
        protein._xyz = np.asarray(xyz, dtype=np.float64)
        protein._has = np.asarray(has, dtype=bool)
        return protein

    @classmethod
    def from_PDB(cls, input_file: PathLike, *, strict: bool = True) -> Protein:
        """Read a PDB file (``.pdb``, ``.pdb.gz``, any name); model 1 only. See :meth:`from_CIF` for ``strict``."""
        return cls._read(Path(input_file), "pdb", strict=strict)

    @classmethod
    def from_CIF(cls, input_file: PathLike, *, strict: bool = True) -> Protein:
        """Read an mmCIF file (``.cif``, ``.cif.gz``, any name); model 1 only.

        Residues listed in ``entity_poly_seq`` but absent from ``atom_site`` become residues without structure
        (C < 0), as in the reference. With ``strict=False`` a residue missing backbone atoms, or an amino acid
        of unknown name, is kept without structure (C < 0, S = 0) the way the reference does, instead of being
        an error.
        """
        return cls._read(Path(input_file), "cif", strict=strict)

    @classmethod
    def from_XCS(
        cls,
        X: torch.Tensor,
        C: torch.Tensor,
        S: torch.Tensor,
        *,
        chain_ids: Sequence[str] | None = None,
        residue_ids: Sequence[int] | np.ndarray | None = None,
        insertion_codes: Sequence[str] | None = None,
    ) -> Protein:
        """Build a protein from XCS tensors (batch size 1).

        Chains are taken in increasing ``|C|``; padding (C = 0) is dropped; C < 0 gives a residue without
        structure. ``chain_ids`` (one per chain, default A, B, ...), ``residue_ids`` and ``insertion_codes``
        (one per position of C, default 1, 2, ... per chain) restore what a file had; pass a protein's own
        ``chain_ids``, ``residue_ids`` and ``insertion_codes`` to round-trip it.
        """
        x, c, s = _check_xcs(X, C, S)
        length = c.shape[0]
        keep = c != 0
        order = np.argsort(np.abs(c), kind="stable")
        order = order[keep[order]]
        labels = np.unique(np.abs(c[keep]))
        if chain_ids is None:
            if len(labels) > len(CHAIN_ALPHABET):
                raise StructureError(
                    f"C has {len(labels)} chains, more than the {len(CHAIN_ALPHABET)} default chain ids",
                    "pass chain_ids=[...] to name them",
                )
            chain_ids = list(CHAIN_ALPHABET[: len(labels)])
        chain_ids = [str(cid) for cid in chain_ids]
        if len(chain_ids) != len(labels):
            raise StructureError(
                f"chain_ids names {len(chain_ids)} chain(s) but C has {len(labels)}",
                "give one chain id per distinct |C| > 0, in increasing |C|",
            )
        chain = np.searchsorted(labels, np.abs(c[order]))
        if residue_ids is None:
            res_ids = np.zeros(length, dtype=np.int64)
            for k in range(len(labels)):
                in_chain = order[chain == k]
                res_ids[in_chain] = np.arange(1, len(in_chain) + 1)
        else:
            res_ids = np.asarray(residue_ids, dtype=np.int64)
            if res_ids.shape != (length,):
                raise StructureError(
                    f"residue_ids has shape {res_ids.shape}, C has {length} positions",
                    "give one residue number per position of C",
                )
        ins = [""] * length if insertion_codes is None else [str(code) for code in insertion_codes]
        if len(ins) != length:
            raise StructureError(
                f"insertion_codes has {len(ins)} entries, C has {length} positions",
                "give one insertion code ('' for none) per position of C",
            )
        names = [AA20_3[int(i)] for i in s[order]]
        n = len(order)
        xyz = np.zeros((n, NUM_ATOMS_ALL, 3))
        has = np.zeros((n, NUM_ATOMS_ALL), dtype=bool)
        observed = c[order] > 0
        width = x.shape[1]
        for i in np.flatnonzero(observed):
            count = min(width, len(RESIDUE_ATOMS[names[i]]))
            xyz[i, :count] = x[order[i], :count]
            has[i, :count] = True
        return cls._build(names, chain, chain_ids, res_ids[order], [ins[i] for i in order], xyz, has)

    # -- views ----------------------------------------------------------------------------------------------

    @property
    def chain_ids(self) -> tuple[str, ...]:
        """The chain ids, one per chain in XCS order (chain ``k`` has C = ``±(k+1)``)."""
        return self._chain_ids

    @property
    def residue_ids(self) -> np.ndarray:
        """Residue numbers as in the file, one per XCS position."""
        return self._res_ids.copy()

    @property
    def insertion_codes(self) -> list[str]:
        """PDB insertion codes ('' for none), one per XCS position."""
        return list(self._ins)

    @property
    def observed(self) -> np.ndarray:
        """Which residues have a full backbone (the residues with C > 0 in backbone XCS)."""
        return self._has[:, :4].all(axis=1)

    def sequence(self) -> str:
        """The one-letter sequence of every residue (with or without structure), chains concatenated."""
        return "".join(AA20[_INDEX_3[name]] for name in self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        chains = ", ".join(f"{cid}:{int((self._chain == k).sum())}" for k, cid in enumerate(self._chain_ids))
        return f"Protein({len(self)} residues; chains {chains})"

    def to_XCS(
        self, all_atom: bool = False, device: str | torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The XCS tensors ``X [1, L, 4|14, 3]`` float32, ``C [1, L]`` and ``S [1, L]`` long.

        As in the reference, an all-atom X marks a residue missing any of its heavy atoms as without structure
        (C < 0, zeros), even when its backbone is complete.
        """
        import torch

        width = NUM_ATOMS_ALL if all_atom else len(ATOMS_BB)
        # the slots each residue's type has (4 + its side chain); the rest of a 14-slot row stays zero
        needed = np.arange(width)[None, :] < np.array([len(RESIDUE_ATOMS[name]) for name in self._names])[:, None]
        complete = (self._has[:, :width] | ~needed).all(axis=1)
        x = np.where((complete[:, None] & needed)[:, :, None], self._xyz[:, :width], 0.0)
        c = np.where(complete, self._chain + 1, -(self._chain + 1))
        s = np.array([_INDEX_3[name] for name in self._names], dtype=np.int64)
        out = (
            torch.tensor(x, dtype=torch.float32).reshape(1, len(self), width, 3),
            torch.tensor(c, dtype=torch.long).reshape(1, -1),
            torch.tensor(s, dtype=torch.long).reshape(1, -1),
        )
        return tuple(t.to(device) for t in out) if device is not None else out  # type: ignore[return-value]

    # -- reading ----------------------------------------------------------------------------------------------

    @classmethod
    def _read(cls, path: Path, fmt: str | None, strict: bool = True) -> Protein:
        text = _read_text(path)
        if fmt is None:
            fmt = _guess_format(path, text)
        atoms, gaps = _parse_pdb(path, text) if fmt == "pdb" else _parse_cif(path, text)
        return cls._from_atoms(path, atoms, gaps, strict)

    @classmethod
    def _from_atoms(cls, path: Path, atoms: _Atoms, gaps: dict[str, list[tuple[int, str, int]]], strict: bool):
        """Group atom records into residues and chains, keep the amino acids, add mmCIF's unobserved residues."""
        n = len(atoms.res_key)
        if n == 0:
            raise StructureError(f"{path} has no atom records", "check that it is a PDB or mmCIF coordinate file")
        chains: dict[str, list[tuple]] = {}  # chain key -> residues (seq_id, name, number, ins, xyz, has)
        chain_ids: dict[str, str] = {}
        skipped: dict[str, int] = {}
        # residue boundaries: a change of chain or residue key (atom records of one residue are contiguous)
        change = np.ones(n, dtype=bool)
        change[1:] = (atoms.res_key[1:] != atoms.res_key[:-1]) | (atoms.chain_key[1:] != atoms.chain_key[:-1])
        starts = np.flatnonzero(change)
        for lo, hi in zip(starts, np.append(starts[1:], n), strict=True):
            file_name = str(atoms.res_name[lo])
            key, cid = str(atoms.chain_key[lo]), str(atoms.chain_id[lo])
            rid, ins, seq_id = int(atoms.res_id[lo]), str(atoms.ins_code[lo]), int(atoms.seq_id[lo])
            atom_names = [str(a) for a in atoms.atom_name[lo:hi]]
            name, renames = MODIFIED_RESIDUES.get(file_name, (file_name, {}))
            xyz = np.zeros((NUM_ATOMS_ALL, 3))
            has = np.zeros(NUM_ATOMS_ALL, dtype=bool)
            if name not in RESIDUE_ATOMS:
                if not ({"N", "CA", "C"} <= set(atom_names) or file_name == "UNK"):
                    skipped[file_name] = skipped.get(file_name, 0) + 1  # water, ligand, ion, nucleotide
                    continue
                name = _unknown_amino_acid(path, _describe(cid, file_name, rid, ins), strict)
            else:
                slots = _SLOTS[name]
                for j, atom in enumerate(atom_names):
                    if atoms.res_name[lo + j] != file_name:  # microheterogeneity: the first residue name wins
                        continue
                    atom = renames.get(atom, atom)
                    if name == "ILE" and atom == "CD":
                        atom = "CD1"  # force-field naming of Ile's delta carbon
                    slot = _backbone_slot(atom)
                    if slot is None:
                        slot = slots.get(atom)
                    if slot is None or has[slot]:  # hydrogens, OXT after O, alternate locations after the first
                        continue
                    xyz[slot] = atoms.coord[lo + j]
                    has[slot] = True
                if not has[:4].all():
                    if strict:
                        missing = ", ".join(ATOMS_BB[j] for j in range(4) if not has[j])
                        raise StructureError(
                            f"{path}: {_describe(cid, file_name, rid, ins)} lacks the backbone atom(s) {missing}",
                            "complete the residue (or delete it) in the file, or pass strict=False to keep it as a "
                            "residue without structure (C < 0), as Chroma does",
                        )
                    has[:] = False
                    xyz[:] = 0.0
            chain_ids.setdefault(key, cid)
            chains.setdefault(key, []).append((seq_id, name, rid, ins, xyz, has))
        if not chains:
            found = ", ".join(f"{name} x{count}" for name, count in sorted(skipped.items())) or "nothing"
            raise StructureError(
                f"{path} has no amino acid residues (found: {found})",
                "biozoo_chroma reads proteins; nucleic acids, ligands and waters are left out",
            )
        names: list[str] = []
        chain: list[int] = []
        res_ids: list[int] = []
        ins_codes: list[str] = []
        xyz_rows: list[np.ndarray] = []
        has_rows: list[np.ndarray] = []
        empty_xyz, empty_has = np.zeros((NUM_ATOMS_ALL, 3)), np.zeros(NUM_ATOMS_ALL, dtype=bool)
        for k, (key, residues) in enumerate(chains.items()):
            missing_rows = []
            for seq_id, mon, number in gaps.get(key, []):
                name = MODIFIED_RESIDUES.get(mon, (mon, {}))[0]
                if name not in RESIDUE_ATOMS:
                    name = _unknown_amino_acid(path, _describe(chain_ids[key], mon, number, ""), strict)
                missing_rows.append((seq_id, name, number, "", empty_xyz, empty_has))
            if missing_rows:  # unobserved residues go where their label_seq_id puts them
                residues = sorted(residues + missing_rows, key=lambda row: row[0])
            for _seq, name, rid, ins, xyz, has in residues:
                names.append(name)
                chain.append(k)
                res_ids.append(rid)
                ins_codes.append(ins)
                xyz_rows.append(xyz)
                has_rows.append(has)
        return cls._build(
            names,
            np.array(chain),
            list(chain_ids.values()),
            np.array(res_ids),
            ins_codes,
            np.stack(xyz_rows),
            np.stack(has_rows),
        )

    # -- writing ----------------------------------------------------------------------------------------------

    def to_PDB(self, output_file: PathLike, *, overwrite: bool = False) -> Path:
        """Write the atoms with structure as PDB ATOM records (residues without structure cannot be said in PDB).

        Written atomically: on any failure no partial file is left, and an existing file is kept unless
        ``overwrite=True``.
        """
        import biotite.structure.io.pdb as pdb

        target = _check_target(output_file, overwrite)
        for cid in self._chain_ids:
            if len(cid) > 1:
                raise StructureError(
                    f"chain id {cid!r} has more than one character, which PDB cannot hold",
                    "write mmCIF with to_CIF(...), or give one-character chain_ids to from_XCS",
                )
        if len(self._res_ids) and (self._res_ids.min() < -999 or self._res_ids.max() > 9999):
            raise StructureError(
                "residue numbers outside -999..9999 do not fit PDB's residue number column",
                "write mmCIF with to_CIF(...)",
            )
        array = self._atom_array()
        if array.array_length() > 99999:
            raise StructureError(
                f"{array.array_length()} atoms do not fit PDB's atom serial column (99999 at most)",
                "write mmCIF with to_CIF(...)",
            )
        handle = pdb.PDBFile()
        handle.set_structure(array)
        with atomic_path(target) as tmp:
            handle.write(str(tmp))
        return target

    def to_CIF(self, output_file: PathLike, *, overwrite: bool = False) -> Path:
        """Write mmCIF: every residue in ``entity_poly_seq`` (those without structure too), atoms in ``atom_site``.

        One entity per chain; ``label_seq_id`` counts residues along the chain, ``auth_seq_id`` and
        ``pdbx_PDB_ins_code`` keep the residue numbering. Atomic, and no overwrite unless ``overwrite=True``.
        """
        import biotite.structure.io.pdbx as pdbx

        target = _check_target(output_file, overwrite)
        cif = pdbx.CIFFile()
        block = pdbx.CIFBlock()
        cif[target.name.split(".")[0] or "protein"] = block
        n_chains = len(self._chain_ids)
        label_asym = [CHAIN_ALPHABET[k] if k < len(CHAIN_ALPHABET) else f"C{k}" for k in range(n_chains)]
        entity = [str(k + 1) for k in range(n_chains)]
        seq_id = np.zeros(len(self), dtype=np.int64)
        for k in range(n_chains):
            in_chain = np.flatnonzero(self._chain == k)
            seq_id[in_chain] = np.arange(1, len(in_chain) + 1)
        block["entry"] = pdbx.CIFCategory({"id": "biozoo_chroma"})
        block["entity"] = pdbx.CIFCategory({"id": np.array(entity), "type": np.array(["polymer"] * n_chains)})
        block["entity_poly"] = pdbx.CIFCategory(
            {"entity_id": np.array(entity), "type": np.array(["polypeptide(L)"] * n_chains)}
        )
        ent_of = np.array(entity)[self._chain] if len(self) else np.array([], dtype=str)
        names = np.array(self._names)
        block["entity_poly_seq"] = pdbx.CIFCategory(
            {"entity_id": ent_of, "num": seq_id, "mon_id": names, "hetero": np.array(["n"] * len(self))}
        )
        observed = self._has.any(axis=1)
        block["pdbx_poly_seq_scheme"] = pdbx.CIFCategory(
            {
                "asym_id": np.array(label_asym)[self._chain],
                "entity_id": ent_of,
                "seq_id": seq_id,
                "mon_id": names,
                "pdb_seq_num": self._res_ids,
                "auth_seq_num": _masked(self._res_ids.astype(str), ~observed),
                "pdb_mon_id": _masked(names, ~observed),
                "pdb_strand_id": np.array(self._chain_ids)[self._chain],
                "pdb_ins_code": _masked(np.array(self._ins, dtype=object).astype(str), np.array(self._ins) == ""),
            }
        )
        rows, slots = np.nonzero(self._has)
        atom_names = np.array([RESIDUE_ATOMS[self._names[r]][j] for r, j in zip(rows, slots, strict=True)], dtype=str)
        xyz = self._xyz[rows, slots]
        ins = np.array(self._ins, dtype=object)[rows].astype(str)
        block["atom_site"] = pdbx.CIFCategory(
            {
                "group_PDB": np.array(["ATOM"] * len(rows)),
                "id": np.arange(1, len(rows) + 1),
                "type_symbol": np.array([a[0] for a in atom_names], dtype=str),
                "label_atom_id": atom_names,
                "label_alt_id": _masked(np.array(["."] * len(rows)), np.ones(len(rows), dtype=bool), inapplicable=True),
                "label_comp_id": names[rows],
                "label_asym_id": np.array(label_asym)[self._chain[rows]],
                "label_entity_id": ent_of[rows],
                "label_seq_id": seq_id[rows],
                "pdbx_PDB_ins_code": _masked(ins, ins == ""),
                "Cartn_x": np.array([f"{v:.5f}" for v in xyz[:, 0]]),
                "Cartn_y": np.array([f"{v:.5f}" for v in xyz[:, 1]]),
                "Cartn_z": np.array([f"{v:.5f}" for v in xyz[:, 2]]),
                "occupancy": np.array(["1.00"] * len(rows)),
                "B_iso_or_equiv": np.array(["0.00"] * len(rows)),
                "auth_seq_id": self._res_ids[rows],
                "auth_comp_id": names[rows],
                "auth_asym_id": np.array(self._chain_ids)[self._chain[rows]],
                "auth_atom_id": atom_names,
                "pdbx_PDB_model_num": np.ones(len(rows), dtype=np.int64),
            }
        )
        with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            cif.write(handle)
        return target

    def _atom_array(self) -> Any:
        """The atoms with structure as a biotite AtomArray (heavy atoms in Chroma's order per residue)."""
        import biotite.structure as struc

        rows, slots = np.nonzero(self._has)
        array = struc.AtomArray(len(rows))
        array.coord = self._xyz[rows, slots]
        array.chain_id = np.array(self._chain_ids)[self._chain[rows]] if len(rows) else []
        array.res_id = self._res_ids[rows]
        array.ins_code = np.array(self._ins, dtype=object)[rows].astype(str) if len(rows) else []
        array.res_name = np.array(self._names)[rows] if len(rows) else []
        names = [RESIDUE_ATOMS[self._names[r]][j] for r, j in zip(rows, slots, strict=True)]
        array.atom_name = names
        array.element = [name[0] for name in names]
        array.hetero[:] = False
        array.add_annotation("occupancy", float)
        array.occupancy[:] = 1.0
        array.add_annotation("b_factor", float)
        return array


def _unknown_amino_acid(path: Path, where: str, strict: bool) -> str:
    """Refuse an amino acid of unknown name, or (``strict=False``) keep it as Chroma does: S = 0, no structure."""
    if strict:
        raise StructureError(
            f"{path}: {where} is an amino acid biozoo_chroma does not know (it reads the 20 standard ones and "
            + ", ".join(sorted(MODIFIED_RESIDUES))
            + ")",
            "rename it in the file to its parent residue (e.g. MLY -> LYS), or pass strict=False to keep it as a "
            "residue without structure (C < 0, S = 0), as Chroma does",
        )
    return AA20_3[0]


def _masked(values: np.ndarray, missing: np.ndarray, inapplicable: bool = False) -> Any:
    """A CIF column whose ``missing`` entries are written as '?' (or '.' when ``inapplicable``)."""
    import biotite.structure.io.pdbx as pdbx

    absent = pdbx.MaskValue.INAPPLICABLE if inapplicable else pdbx.MaskValue.MISSING
    mask = np.where(missing, absent, pdbx.MaskValue.PRESENT)
    return pdbx.CIFColumn(pdbx.CIFData(np.asarray(values, dtype=str)), pdbx.CIFData(mask))


def _check_target(output_file: PathLike, overwrite: bool) -> Path:
    target = Path(output_file)
    if target.is_dir():
        raise OutputError(f"the output {target} is a folder", "give a file name")
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise OutputError(
            f"the output {target} already exists", "pass overwrite=True to replace it, or choose a new name"
        )
    return target


def _read_text(path: Path) -> str:
    """The file's text (gunzipped when it is gzip), with a clear error for what cannot be read."""
    if not path.exists():
        raise StructureError(f"cannot read {path}: no such file", "check the path")
    if path.is_dir():
        raise StructureError(f"cannot read {path}: it is a folder", "give a .pdb or .cif file (optionally .gz)")
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        text = data.decode("utf-8", errors="strict")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise StructureError(f"cannot read {path}: {exc}", "check that the file is complete and readable") from None
    except UnicodeDecodeError:
        raise StructureError(
            f"cannot read {path}: it is not a text file", "give a PDB or mmCIF text file (optionally gzip-compressed)"
        ) from None
    if not text.strip():
        raise StructureError(f"{path} is empty", "give a PDB or mmCIF file with coordinates")
    return text


def _guess_format(path: Path, text: str) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    last = suffixes[-1] if suffixes else ""
    if last in _PDB_SUFFIXES:
        return "pdb"
    if last in _CIF_SUFFIXES:
        return "cif"
    head = text.lstrip()[:5]
    if head.startswith("data_"):
        return "cif"
    raise StructureError(
        f"cannot tell whether {path} is PDB or mmCIF from its name",
        "name it .pdb or .cif (optionally .gz), or use Protein.from_PDB / Protein.from_CIF",
    )


def _parse_pdb(path: Path, text: str) -> tuple[_Atoms, dict]:
    import biotite.structure.io.pdb as pdb

    n_records = sum(1 for line in text.splitlines() if line.startswith(("ATOM  ", "HETATM")))
    if n_records == 0:
        raise StructureError(f"{path} has no ATOM or HETATM records", "check that it is a PDB coordinate file")
    if n_records > MAX_ATOMS:
        raise StructureError(f"{path} has {n_records} atom records, more than {MAX_ATOMS}", "split the file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            handle = pdb.PDBFile.read(io.StringIO(text))
            array = handle.get_structure(model=1, altloc="all", extra_fields=[])
    except Exception as exc:  # biotite raises several types for malformed records
        raise StructureError(f"cannot read {path} as PDB: {exc}", "check that it is a PDB coordinate file") from None
    chain_id = array.chain_id.astype(str)
    res_key = np.char.add(array.res_id.astype(str), np.char.add("|", array.ins_code.astype(str)))
    return (
        _Atoms(
            chain_id,
            chain_id,
            res_key,
            np.full(len(res_key), -1),
            array.res_id,
            array.ins_code.astype(str),
            array.res_name.astype(str),
            array.atom_name.astype(str),
            array.coord.astype(np.float64),
        ),
        {},
    )


def _column(category: Any, name: str, fallback: str | None = None) -> np.ndarray | None:
    if name in category:
        return category[name].as_array(str)
    if fallback is not None and fallback in category:
        return category[fallback].as_array(str)
    return None


def _parse_cif(path: Path, text: str) -> tuple[_Atoms, dict]:
    """atom_site of model 1, read column by column (label and author fields both), and the unobserved residues."""
    import biotite.structure.io.pdbx as pdbx

    try:
        cif = pdbx.CIFFile.read(io.StringIO(text))
        block = cif.block
        has_atoms = "atom_site" in block
        site = block["atom_site"] if has_atoms else None
    except Exception as exc:  # biotite raises several types for malformed files
        raise StructureError(
            f"cannot read {path} as mmCIF: {exc}", "check that it is an mmCIF coordinate file"
        ) from None
    if site is None:
        raise StructureError(f"{path} has no atom_site category", "check that it is an mmCIF coordinate file")
    try:
        if site.row_count > MAX_ATOMS:
            raise StructureError(f"{path} has {site.row_count} atom records, more than {MAX_ATOMS}", "split the file")
        atom = _column(site, "label_atom_id", "auth_atom_id")
        comp = _column(site, "label_comp_id", "auth_comp_id")
        asym = _column(site, "label_asym_id", "auth_asym_id")
        auth_asym = _column(site, "auth_asym_id", "label_asym_id")
        seq = _column(site, "label_seq_id")
        auth_seq = _column(site, "auth_seq_id", "label_seq_id")
        xyz = [_column(site, f"Cartn_{axis}") for axis in "xyz"]
        if any(c is None for c in (atom, comp, asym, auth_seq, *xyz)):
            raise StructureError(
                f"{path}: atom_site lacks the atom, residue, chain, number or coordinate columns",
                "check that it is an mmCIF coordinate file",
            )
        n = len(atom)
        model = _column(site, "pdbx_PDB_model_num")
        first = np.ones(n, dtype=bool) if model is None else model == model[0]
        ins = _column(site, "pdbx_PDB_ins_code")
        ins = np.zeros(n, dtype="<U1") if ins is None else np.where(np.isin(ins, [".", "?"]), "", ins)
        seq = np.array(["."] * n) if seq is None else seq
        res_id = np.array([int(v) for v in auth_seq])
        coord = np.stack([c.astype(np.float64) for c in xyz], axis=1)  # type: ignore[union-attr]
    except StructureError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise StructureError(f"cannot read {path} as mmCIF: {exc}", "check the atom_site values") from None
    res_key = np.char.add(np.char.add(seq.astype(str), "|"), np.char.add(auth_seq.astype(str), ins))
    seq_num = np.array([-1 if v in (".", "?") else int(v) for v in seq])
    atoms = _Atoms(
        asym[first],
        auth_asym[first],
        res_key[first],
        seq_num[first],
        res_id[first],
        ins[first],
        comp[first],
        atom[first],
        coord[first],
    )
    return atoms, _unobserved(block, atoms)


def _unobserved(block: Any, atoms: _Atoms) -> dict[str, list[tuple[int, str, int]]]:
    """Per chain, the ``entity_poly_seq`` residues with no atom: ``(label_seq_id, residue name, number)``.

    Numbers come from ``pdbx_poly_seq_scheme`` when present (the reference numbers them by position).
    """
    if "entity_poly_seq" not in block or "atom_site" not in block:
        return {}
    site = block["atom_site"]
    entity_col = _column(site, "label_entity_id")
    seq_col = _column(site, "label_seq_id")
    if entity_col is None or seq_col is None:
        return {}
    eps = block["entity_poly_seq"]
    sequences: dict[str, dict[int, str]] = {}
    for ent, num, mon in zip(
        eps["entity_id"].as_array(str), eps["num"].as_array(str), eps["mon_id"].as_array(str), strict=True
    ):
        sequences.setdefault(ent, {}).setdefault(int(num), mon)  # heterogeneity: the first monomer wins
    numbers: dict[tuple[str, int], int] = {}
    if "pdbx_poly_seq_scheme" in block:
        scheme = block["pdbx_poly_seq_scheme"]
        for asym, sid, num in zip(
            scheme["asym_id"].as_array(str),
            scheme["seq_id"].as_array(str),
            scheme["pdb_seq_num"].as_array(str),
            strict=True,
        ):
            if num not in (".", "?"):
                numbers[(asym, int(sid))] = int(num)
    gaps: dict[str, list[tuple[int, str, int]]] = {}
    asym_col = _column(site, "label_asym_id")
    keys = [str(k) for k in dict.fromkeys(atoms.chain_key)]
    for key in keys:
        rows = asym_col == key
        ents = set(entity_col[rows])
        seen = {int(s) for s in seq_col[rows] if s not in (".", "?")}
        if len(ents) != 1 or not seen:
            continue
        full = sequences.get(next(iter(ents)))
        if not full:
            continue
        gaps[key] = [(sid, mon, numbers.get((key, sid), sid)) for sid, mon in sorted(full.items()) if sid not in seen]
    return gaps


def _check_xcs(X: Any, C: Any, S: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """XCS tensors as numpy ``x [L, A, 3]``, ``c [L]``, ``s [L]``, after the checks that give clear errors."""
    import torch

    for name, t in (("X", X), ("C", C), ("S", S)):
        if not isinstance(t, torch.Tensor):
            raise StructureError(
                f"{name} must be a torch.Tensor, not {type(t).__name__}", "pass the tensors to_XCS returns"
            )
    if X.dim() != 4 or X.shape[2] not in (4, NUM_ATOMS_ALL) or X.shape[3] != 3:
        raise StructureError(
            f"X has shape {tuple(X.shape)}", "X must be [1, L, 4, 3] (backbone) or [1, L, 14, 3] (all atoms)"
        )
    if X.shape[0] != 1 or C.shape != X.shape[:2] or S.shape != X.shape[:2]:
        raise StructureError(
            f"X {tuple(X.shape)}, C {tuple(C.shape)} and S {tuple(S.shape)} do not describe one protein",
            "pass one protein at a time (batch size 1): X[i:i+1], C[i:i+1], S[i:i+1]; C and S are [1, L]",
        )
    if C.dtype.is_floating_point or S.dtype.is_floating_point:
        raise StructureError("C and S must be integer tensors", "use C.long() and S.long()")
    x = X.detach().to("cpu", torch.float64).numpy()[0]
    c = C.detach().to("cpu", torch.int64).numpy()[0]
    s = S.detach().to("cpu", torch.int64).numpy()[0]
    if s.size and (s.min() < 0 or s.max() >= len(AA20)):
        raise StructureError(f"S has values outside 0..{len(AA20) - 1}", f"S indexes the alphabet {AA20}")
    if not np.isfinite(x[c > 0]).all():
        raise StructureError("X has NaN or infinite coordinates where C > 0", "check the model or data that made X")
    return x, c, s
