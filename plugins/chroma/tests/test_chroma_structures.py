"""biozoo_chroma.Protein: real structures through XCS and back, Chroma's conventions, and the errors.

The structures are the real ones mdanalysistests ships (installed with --no-deps by ./dev): the 50 TS50 chains,
the complexes 4E43 (PDB) and 3PWP (mmCIF), and 1BD2 (mmCIF with unobserved residues). The files are read
independently with biotite to check what Protein writes.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path

import biotite.sequence as bseq
import biotite.structure as struc
import biotite.structure.io.pdb as pdb
import biotite.structure.io.pdbx as pdbx
import numpy as np
import pytest
import torch

from biozoo.errors import BiozooError
from biozoo.utils.atomic import OutputError
from biozoo_chroma import Protein, StructureError
from biozoo_chroma.constants import AA20, RESIDUE_ATOMS


def _data_dir() -> Path | None:
    spec = importlib.util.find_spec("MDAnalysisTests")  # located without importing it (it needs MDAnalysis)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if folder.is_dir() else None


pytestmark = pytest.mark.filterwarnings("ignore:.*elements were guessed:UserWarning")  # TS50 has no element column

DATA = _data_dir()
needs_data = pytest.mark.skipif(
    DATA is None, reason="mdanalysistests is not installed (./dev installs it: pip install --no-deps mdanalysistests)"
)
TS50 = sorted((DATA / "dssp").glob("????[A-Z].pdb.gz")) if DATA else []
COMPLEXES = [DATA / "4E43.pdb", DATA / "mmcif" / "3PWP.cif.gz"] if DATA else []
REAL = TS50 + COMPLEXES


def _read_biotite(path: Path) -> struc.AtomArray:
    """Model 1 of a file, read by biotite alone (the independent view the tests compare against)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        if ".cif" in path.name:
            return pdbx.get_structure(pdbx.CIFFile.read(handle), model=1)
        return pdb.PDBFile.read(handle).get_structure(model=1)


def _heavy_protein_atoms(array: struc.AtomArray) -> dict[tuple, np.ndarray]:
    """(chain, number, insertion, residue, atom) -> coordinates of the heavy atoms XCS has a slot for."""
    array = array[struc.filter_amino_acids(array)]
    out = {}
    for atom in array:
        if atom.res_name in RESIDUE_ATOMS and atom.atom_name in RESIDUE_ATOMS[atom.res_name]:
            out.setdefault((atom.chain_id, int(atom.res_id), atom.ins_code, atom.res_name, atom.atom_name), atom.coord)
    return out


def _residues(array: struc.AtomArray) -> list[tuple[str, int, str, str]]:
    array = array[struc.filter_amino_acids(array)]
    starts = struc.get_residue_starts(array)
    return [(array.chain_id[i], int(array.res_id[i]), array.ins_code[i], array.res_name[i]) for i in starts]


def _complete(key_atoms: dict[tuple, np.ndarray]) -> dict[tuple, np.ndarray]:
    """Only the residues with every heavy atom of their type (what an all-atom X keeps, as in the reference)."""
    by_residue: dict[tuple, set[str]] = {}
    for chain, num, ins, res, atom in key_atoms:
        by_residue.setdefault((chain, num, ins, res), set()).add(atom)
    full = {r for r, atoms in by_residue.items() if atoms == set(RESIDUE_ATOMS[r[3]])}
    return {k: v for k, v in key_atoms.items() if k[:4] in full}


def _round_trip(protein: Protein, all_atom: bool) -> Protein:
    return Protein.from_XCS(
        *protein.to_XCS(all_atom=all_atom),
        chain_ids=protein.chain_ids,
        residue_ids=protein.residue_ids,
        insertion_codes=protein.insertion_codes,
    )


@needs_data
@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name.split(".")[0])
def test_round_trip_through_xcs_keeps_coordinates_chains_numbering_and_sequence(path: Path, tmp_path: Path) -> None:
    """file -> Protein -> XCS (all atoms) -> Protein -> PDB and mmCIF -> biotite: the same atoms, ids and sequence."""
    original = _read_biotite(path)
    expected = _complete(_heavy_protein_atoms(original))
    protein = Protein(path)
    _, C, S = protein.to_XCS(all_atom=True)
    # the sequence of every amino acid residue in the file, read independently, in the alphabet order of S
    letters = [bseq.ProteinSequence.convert_letter_3to1(r[3]) for r in _residues(original)]
    assert "".join(AA20[i] for i in S[0].tolist()) == "".join(letters)
    assert protein.chain_ids == tuple(dict.fromkeys(r[0] for r in _residues(original)))
    back = _round_trip(protein, all_atom=True)
    for writer, tolerance in ((back.to_PDB, 1e-3), (back.to_CIF, 2e-5)):
        out = tmp_path / f"out.{writer.__name__[3:].lower()}"
        writer(out)
        written = _read_biotite(out)
        got = _heavy_protein_atoms(written)
        assert got.keys() == expected.keys()
        diff = np.abs(np.stack([got[k] for k in expected]) - np.stack(list(expected.values())))
        assert diff.max() <= tolerance, (out.name, diff.max())
        # every residue the file has is still there, with its chain and number, in order (PDB: those with
        # structure; the all-atom round trip keeps only residues with complete side chains, as the reference)
        kept = {k[:4] for k in expected}
        assert _residues(written) == [r for r in _residues(original) if r in kept]
    # the backbone round trip keeps every residue
    out = tmp_path / "backbone.pdb"
    _round_trip(protein, all_atom=False).to_PDB(out)
    assert _residues(_read_biotite(out)) == _residues(original)
    assert torch.equal(C.abs(), protein.to_XCS()[1].abs())


@needs_data
def test_direct_cif_copy_is_exact(tmp_path: Path) -> None:
    """Without the float32 XCS step, to_CIF keeps the file's coordinates exactly (mmCIF has no 3-decimal limit)."""
    path = DATA / "mmcif" / "3PWP.cif.gz"
    Protein(path).to_CIF(tmp_path / "copy.cif")
    got = _heavy_protein_atoms(_read_biotite(tmp_path / "copy.cif"))
    expected = _heavy_protein_atoms(_read_biotite(path))
    assert got.keys() == expected.keys()
    assert max(np.abs(got[k] - v).max() for k, v in expected.items()) <= 1e-6


@needs_data
def test_xcs_conventions_on_a_multichain_complex() -> None:
    """3PWP: five chains, C = 1..5 in file order, shapes [1, L, 4|14, 3], S in Chroma's alphabet, float32 / long."""
    protein = Protein.from_CIF(DATA / "mmcif" / "3PWP.cif.gz")
    X, C, S = protein.to_XCS()
    assert X.shape == (1, 829, 4, 3) and X.dtype == torch.float32
    assert C.shape == S.shape == (1, 829) and C.dtype == S.dtype == torch.long
    lengths = {"A": 275, "B": 100, "C": 9, "D": 200, "E": 245}
    assert protein.chain_ids == tuple(lengths)
    expected_c = torch.cat([torch.full((n,), k + 1) for k, n in enumerate(lengths.values())])
    assert torch.equal(C[0], expected_c)
    X14, C14, S14 = protein.to_XCS(all_atom=True)
    assert X14.shape == (1, 829, 14, 3) and torch.equal(S14, S)
    assert torch.equal(X14[:, :, :4][C14 > 0], X[C14 > 0])
    # GLY has no side chain: its slots 4..13 are zeros; TRP fills all 14 in Chroma's order (CD2 before CD1)
    gly = S[0] == AA20.index("G")
    assert torch.all(X14[0, gly, 4:] == 0)
    trp = int(torch.nonzero((S[0] == AA20.index("W")) & (C14[0] > 0))[0])
    cd2, cd1 = X14[0, trp, 6], X14[0, trp, 7]
    array = _read_biotite(DATA / "mmcif" / "3PWP.cif.gz")
    chain, number = protein.chain_ids[int(C[0, trp]) - 1], int(protein.residue_ids[trp])
    residue = array[(array.chain_id == chain) & (array.res_id == number)]
    assert np.allclose(residue[residue.atom_name == "CD2"].coord[0], cd2.numpy(), atol=1e-4)
    assert np.allclose(residue[residue.atom_name == "CD1"].coord[0], cd1.numpy(), atol=1e-4)
    # 4E43 (PDB): the peptide chain C is the third chain; waters and ligands are not residues
    X, C, _ = Protein(DATA / "4E43.pdb").to_XCS()
    assert torch.equal(torch.bincount(C[0]), torch.tensor([0, 99, 99, 6]))


@needs_data
def test_unobserved_residues_are_gaps_with_negative_c_and_survive_cif(tmp_path: Path) -> None:
    """1BD2's mmCIF lists residues without atoms: they become C = -k at their place, zeros in X, and stay in mmCIF."""
    protein = Protein(DATA / "mmcif" / "1BD2.cif.gz")
    X, C, S = protein.to_XCS()
    d = protein.chain_ids.index("D") + 1
    in_d = C[0].abs() == d
    gaps = protein.residue_ids[(in_d & (C[0] < 0)).numpy()]
    assert gaps.tolist() == [133, 134, 135, 136, 170, 171, 172, 204, 205, 206, 207, 208, 209, 210]
    assert torch.all(X[C < 0] == 0)
    numbers = protein.residue_ids[in_d.numpy()]
    codes = [protein.insertion_codes[i] for i in np.flatnonzero(in_d.numpy())]
    assert np.all(np.diff(numbers) >= 0)  # the gaps sit where the numbering says (54, 54A, 55: insertion codes)
    assert len(set(zip(numbers.tolist(), codes, strict=True))) == len(codes) and "A" in codes
    back = _round_trip(protein, all_atom=False)
    back.to_CIF(tmp_path / "gaps.cif")
    again = Protein(tmp_path / "gaps.cif")
    X2, C2, S2 = again.to_XCS()
    assert torch.equal(C2, C) and torch.equal(S2, S) and torch.allclose(X2, X, atol=2e-5)
    assert np.array_equal(again.residue_ids, protein.residue_ids) and again.chain_ids == protein.chain_ids
    # PDB cannot hold residues without atoms: they are left out, the rest keeps its numbering
    back.to_PDB(tmp_path / "gaps.pdb")
    from_pdb = Protein(tmp_path / "gaps.pdb")
    assert len(from_pdb) == int((C > 0).sum())
    assert np.array_equal(from_pdb.residue_ids, protein.residue_ids[(C[0] > 0).numpy()])


def test_from_xcs_defaults_padding_and_order() -> None:
    """Padding (C = 0) is dropped, chains come in increasing |C| named A, B, ..., numbered from 1."""
    X = torch.randn(1, 6, 4, 3)
    C = torch.tensor([[2, 2, 1, -1, 1, 0]])
    S = torch.tensor([[0, 1, 2, 3, 4, 5]])
    protein = Protein(X, C, S)
    assert protein.chain_ids == ("A", "B")
    assert protein.sequence() == "DEFAC"  # chain 1 (positions 2, 3, 4) then chain 2 (positions 0, 1)
    assert protein.residue_ids.tolist() == [1, 2, 3, 1, 2]
    X2, C2, _ = protein.to_XCS()
    assert C2.tolist() == [[1, -1, 1, 2, 2]]
    assert torch.equal(X2[0, 0], X[0, 2]) and torch.all(X2[0, 1] == 0)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


ATOM = "ATOM  {:5d} {:<4s} {:3s} {:1s}{:4d}    {:8.3f}{:8.3f}{:8.3f}  1.00  0.00           {}\n"


def _residue_lines(res: str, chain: str, num: int, atoms: list[str], start: int = 1) -> str:
    return "".join(
        ATOM.format(start + i, f" {a}" if len(a) < 4 else a, res, chain, num, 1.0 * i, 2.0, 3.0, a[0])
        for i, a in enumerate(atoms)
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("", "is empty"),
        ("HEADER    nothing here\nEND\n", "no ATOM or HETATM records"),
        (b"\x1f\x8b\x08\x00garbage", "cannot read"),
        (b"\xff\xfe\x00binary\x00", "not a text file"),
    ],
    ids=["missing", "empty", "no-atoms", "broken-gzip", "binary"],
)
def test_unreadable_files_are_clear_errors(tmp_path: Path, content: str | bytes | None, message: str) -> None:
    path = tmp_path / "x.pdb"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(StructureError, match=message) as info:
        Protein(path)
    assert isinstance(info.value, BiozooError) and info.value.hint


def test_non_protein_files_are_refused(tmp_path: Path) -> None:
    ligand = _write(
        tmp_path / "ligand.pdb",
        "HETATM    1  O   HOH A 101       1.000   2.000   3.000  1.00  0.00           O\n"
        "HETATM    2  C1  GOL A 102       1.000   2.000   3.000  1.00  0.00           C\n",
    )
    with pytest.raises(StructureError, match=r"no amino acid residues \(found: GOL x1, HOH x1\)"):
        Protein(ligand)
    dna = _write(tmp_path / "dna.pdb", _residue_lines("DA", "A", 1, ["P", "OP1", "C1'", "N9"]))
    with pytest.raises(StructureError, match="no amino acid residues"):
        Protein.from_PDB(dna)
    with pytest.raises(StructureError, match="PDB or mmCIF"):
        Protein(_write(tmp_path / "ligand.txt", "HETATM"))


def test_missing_backbone_atoms_name_the_residue(tmp_path: Path) -> None:
    """Strict by default; strict=False keeps the residue without structure (C < 0), as the reference does."""
    text = _residue_lines("GLY", "A", 1, ["N", "CA", "C", "O"]) + _residue_lines("ALA", "B", 7, ["N", "CA", "CB"], 5)
    path = _write(tmp_path / "broken.pdb", text)
    with pytest.raises(StructureError, match=r"residue ALA 7 of chain 'B' lacks the backbone atom\(s\) C, O") as info:
        Protein(path)
    assert "strict=False" in info.value.hint
    X, C, S = Protein(path, strict=False).to_XCS()
    assert C.tolist() == [[1, -2]] and torch.all(X[0, 1] == 0) and S.tolist() == [[AA20.index("G"), 0]]


def test_modified_and_unknown_residues(tmp_path: Path) -> None:
    """MSE reads as MET (its SE as SD), like the reference; an unknown amino acid is refused by name."""
    mse = _residue_lines("MSE", "A", 3, ["N", "CA", "C", "O", "CB", "CG", "SE", "CE"])
    protein = Protein(_write(tmp_path / "mse.pdb", mse))
    X, C, _ = protein.to_XCS(all_atom=True)
    assert protein.sequence() == "M" and C.tolist() == [[1]]
    assert X[0, 0, 6].tolist() == [6.0, 2.0, 3.0]  # SD is slot 6 of MET, read from SE
    mly = _residue_lines("MLY", "A", 9, ["N", "CA", "C", "O", "CB"])
    with pytest.raises(StructureError, match="residue MLY 9 of chain 'A' is an amino acid") as info:
        Protein(_write(tmp_path / "mly.pdb", mly))
    assert "MLY -> LYS" in info.value.hint
    assert Protein(tmp_path / "mly.pdb", strict=False).to_XCS()[1].tolist() == [[-1]]


def test_only_model_one_is_read(tmp_path: Path) -> None:
    model = _residue_lines("GLY", "A", 1, ["N", "CA", "C", "O"])
    moved = model.replace("   2.000   3.000", "   9.000   9.000")
    path = _write(tmp_path / "nmr.pdb", f"MODEL        1\n{model}ENDMDL\nMODEL        2\n{moved}ENDMDL\n")
    X, _, _ = Protein(path).to_XCS()
    assert X.shape == (1, 1, 4, 3) and X[0, 0, :, 1].tolist() == [2.0] * 4


def test_outputs_are_atomic_and_never_overwrite(tmp_path: Path) -> None:
    protein = Protein(torch.zeros(1, 2, 4, 3), torch.ones(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long))
    out = tmp_path / "p.pdb"
    out.write_text("keep me")
    with pytest.raises(OutputError, match="already exists"):
        protein.to_PDB(out)
    assert out.read_text() == "keep me"
    protein.to_PDB(out, overwrite=True)
    assert Protein(out).sequence() == "AA"
    # a failure while writing leaves neither a partial file nor a temporary
    long_ids = Protein.from_XCS(*protein.to_XCS(), chain_ids=["AB"])
    with pytest.raises(StructureError, match="more than one character"):
        long_ids.to_PDB(tmp_path / "long.pdb")
    long_ids.to_CIF(tmp_path / "long.cif")
    assert Protein(tmp_path / "long.cif").chain_ids == ("AB",)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.cif", "p.pdb"]
    assert os.stat(tmp_path / "long.cif").st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_bad_xcs_tensors_are_clear_errors() -> None:
    X, C, S = torch.zeros(1, 3, 4, 3), torch.ones(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)
    cases = [
        ((torch.zeros(2, 3, 4, 3), C.expand(2, 3), S.expand(2, 3)), "one protein at a time"),
        ((torch.zeros(1, 3, 5, 3), C, S), r"X has shape \(1, 3, 5, 3\)"),
        ((X, C, torch.full((1, 3), 20)), "outside 0..19"),
        ((X, C.float(), S), "integer tensors"),
        ((torch.full((1, 3, 4, 3), float("nan")), C, S), "NaN"),
        ((X.numpy(), C, S), "must be a torch.Tensor"),
    ]
    for args, message in cases:
        with pytest.raises(StructureError, match=message):
            Protein.from_XCS(*args)
    with pytest.raises(StructureError, match="chain_ids names 2 chain"):
        Protein.from_XCS(X, C, S, chain_ids=["A", "B"])
    with pytest.raises(StructureError, match="a file path or three tensors"):
        Protein(X, C)


GOLDEN = Path(__file__).parent / "golden" / "chroma_structures.safetensors"


@needs_data
@pytest.mark.parametrize("name", ["1ahsA", "2xdgA", "3e8mA", "4E43"])
@pytest.mark.parametrize("kind", ["bb", "all"])
def test_xcs_equals_the_reference(name: str, kind: str) -> None:
    """X, C and S equal generate-chroma 1.0.0's own to_XCS, bit for bit (golden/PROVENANCE.md)."""
    from safetensors.torch import load_file

    golden = load_file(GOLDEN)
    ref_x, ref_c, ref_s = (golden[f"{name}.{kind}.{t}"] for t in "XCS")
    path = DATA / ("4E43.pdb" if name == "4E43" else f"dssp/{name}.pdb.gz")
    X, C, S = Protein(path).to_XCS(all_atom=kind == "all")
    n = C.shape[1]
    # the reference keeps the water/ligand groups after TER as extra chains with no structure; biozoo drops them
    extra = ref_c[0, n:]
    assert torch.all(extra < 0) and torch.all(ref_s[0, n:] == 0) and torch.all(ref_x[0, n:] == 0)
    assert torch.all(extra.abs() > C.abs().max())
    assert (len(extra) > 0) == (name == "4E43")
    assert torch.equal(C, ref_c[:, :n]) and torch.equal(S, ref_s[:, :n])
    assert torch.equal(X, ref_x[:, :n])
