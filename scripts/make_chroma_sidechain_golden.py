"""Make the side-chain geometry data file and the golden file the chroma plugin's side-chain tests compare against.

The reference is generate-chroma 1.0.0 (generatebio/chroma 929407c), importable without its dependencies as for
scripts/make_chroma_structure_golden.py (whose stand-in modules this script reuses):

    .venv/bin/pip install --no-deps --target /tmp/chroma_ref generate-chroma==1.0.0
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python scripts/make_chroma_sidechain_golden.py

It installs and downloads nothing. It writes two files:

* ``plugins/chroma/biozoo_chroma/data/sidechain_geometry.json``: the reference's side-chain internal-coordinate
  tables (``chroma.constants.AA_GEOMETRY`` for the 20 standard amino acids: atoms, parent atoms, ideal bond
  lengths, angles and dihedrals in degrees, which dihedrals are chi angles) and its ``ATOM_SYMMETRIES``, as
  data, with a provenance note. The CHARMM atom types of the table are left out (nothing reads them).
* ``plugins/chroma/tests/golden/chroma_sidechains.safetensors``: on real all-atom structures from
  chroma_structures.safetensors (3e8mA, which has all 20 amino acids, and 4E43 chains 1 and 2 laid out with a
  gap and padding), the reference's ``ChiAngles``, ``SideChainBuilder`` (native chi, ideal geometry, random chi
  on random residue types, every residue type on one backbone), the chi of the rebuilt structures (round trips),
  ``SideChainSymmetryRenamer``, the atom and chi masks, the tables' buffers, and a ``NodePredictorChi`` with
  random weights (seed in the metadata): its log-likelihoods (eval and training mode) and a sample at a
  temperature together with the uniforms the sample drew.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "plugins/chroma/tests/golden"
DATA = ROOT / "plugins/chroma/biozoo_chroma/data/sidechain_geometry.json"
sys.path.insert(0, str(ROOT / "scripts"))
from make_chroma_graph_golden import structures  # noqa: E402
from make_chroma_structure_golden import stub_modules  # noqa: E402

SEED = 20260213
LENGTH = 80
EVERY = 32
HEAD_KWARGS = {"num_alphabet": 20, "num_chi_bins": 20, "dim_nodes": 24, "dim_hidden": 32}
TEMPERATURE = 0.5
PROVENANCE = (
    "Converted by scripts/make_chroma_sidechain_golden.py from generate-chroma 1.0.0 (generatebio/chroma 929407c, "
    "Apache-2.0, Copyright Generate Biomedicines, Inc.): chroma/constants/geometry.py AA_GEOMETRY (atoms, parents, "
    "z-lengths, z-angles, z-dihedrals, chi_indices; the CHARMM 'types' are left out) for the 20 standard amino "
    "acids, and chroma/constants/sequence.py ATOM_SYMMETRIES. The reference takes the ideal geometry from the "
    "CHARMM toppar topology files. Angles are in degrees, lengths in Angstrom. 'builder_overrides' is a change the "
    "reference's SideChainBuilder makes to the table when it builds (ARG NH1 placed cis to CD, dihedral 0), kept "
    "apart so the table itself stays the reference's."
)


def geometry_table() -> dict:
    """The reference's tables as plain JSON data (20 amino acids in the three-letter order of S)."""
    from chroma import constants

    residues = {}
    for name in constants.AA20_3:
        entry = constants.AA_GEOMETRY[name]
        residues[name] = {
            "atoms": list(entry["atoms"]),
            "parents": [list(p) for p in entry["parents"]],
            "lengths": [float(v) for v in entry["z-lengths"]],
            "angles": [float(v) for v in entry["z-angles"]],
            "dihedrals": [float(v) for v in entry["z-dihedrals"]],
            "chi_atoms": [int(v) for v in entry["chi_indices"]],
        }
    return {
        "provenance": PROVENANCE,
        "alphabet": constants.AA20,
        "residues": residues,
        "symmetries": {k: [list(pair) for pair in v] for k, v in constants.ATOM_SYMMETRIES.items()},
        "builder_overrides": [{"residue": "ARG", "atom": "NH1", "dihedral": 0.0}],
    }


def to_json(table: dict) -> str:
    """The table as JSON with one line per residue, so a diff of the data file reads residue by residue."""
    lines = [f"  {json.dumps(name)}: {json.dumps(entry)}" for name, entry in table["residues"].items()]
    head = {k: v for k, v in table.items() if k != "residues"}
    body = json.dumps(head, indent=1)[:-2]
    return body + ',\n "residues": {\n' + ",\n".join(lines) + "\n }\n}\n"


def inputs(s: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of two real all-atom structures: 3e8mA's first residues; 4E43 chains 1 and 2 with a gap and padding."""
    X = torch.zeros(2, LENGTH, 14, 3)
    C = torch.zeros(2, LENGTH, dtype=torch.long)
    S = torch.zeros(2, LENGTH, dtype=torch.long)
    X[0], C[0], S[0] = s["3e8mA.all.X"][0, :LENGTH], s["3e8mA.all.C"][0, :LENGTH], s["3e8mA.all.S"][0, :LENGTH]
    X4, C4, S4 = s["4E43.all.X"][0], s["4E43.all.C"][0], s["4E43.all.S"][0]
    pos = 0
    for chain, n, gap in ((1, 33, 4), (2, 30, 0)):
        idx = torch.nonzero(torch.eq(C4, chain)).flatten()[:n]
        X[1, pos : pos + n], C[1, pos : pos + n], S[1, pos : pos + n] = X4[idx], chain, S4[idx]
        pos += n
        C[1, pos : pos + gap] = -chain  # residues without structure: zeros, as a Protein has them
        S[1, pos : pos + gap] = torch.arange(gap)
        pos += gap
    return X.contiguous(), C, S


def head_case(X: torch.Tensor, C: torch.Tensor, S: torch.Tensor, chi, mask_chi) -> dict[str, torch.Tensor]:
    from chroma.models.graph_design import NodePredictorChi

    torch.manual_seed(SEED + 1)
    head = NodePredictorChi(**HEAD_KWARGS)
    out = {f"head.ref.{k}": v.detach().clone().contiguous() for k, v in head.state_dict().items()}
    node_h = torch.randn(X.shape[0], X.shape[1], HEAD_KWARGS["dim_nodes"])
    mask_i = (C > 0).float()
    out["head.node_h"], out["head.mask_i"] = node_h, mask_i
    with torch.no_grad():
        head.eval()
        out["head.eval.logp_chi"], out["head.eval.log_probs_chi"] = head(S, chi, mask_chi, node_h, mask_i)
        head.train()  # label smoothing only: the head's MLPs have no dropout
        out["head.train.logp_chi"], _ = head(S, chi, mask_chi, node_h, mask_i)
        head.eval()
        torch.manual_seed(SEED + 2)
        out["head.sample.chi"] = head.sample(S, mask_chi, node_h, mask_i, temperature=TEMPERATURE)
        torch.manual_seed(SEED + 2)  # the sample draws one torch.rand(B, L) per chi, in order
        out["head.sample.uniforms"] = torch.stack([torch.rand(C.shape) for _ in range(4)], -1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=GOLDEN / "chroma_sidechains.safetensors")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    stub_modules()
    from chroma.layers.structure import sidechain

    table = geometry_table()
    args.data.parent.mkdir(parents=True, exist_ok=True)
    args.data.write_text(to_json(table))
    print("wrote", args.data)

    X, C, S = inputs(structures())
    builder, angles, renamer = sidechain.SideChainBuilder(), sidechain.ChiAngles(), sidechain.SideChainSymmetryRenamer()
    out: dict[str, torch.Tensor] = {"X": X, "C": C, "S": S}
    # under the names GraphDesign gives these modules, so the keys test sees a design checkpoint's keys
    for prefix, module in (("chi_to_X", builder), ("X_to_chi", angles), ("loss_rmsd.renamer", renamer)):
        out.update({f"ref.{prefix}.{k}": v.contiguous() for k, v in module.state_dict().items()})
    torch.manual_seed(SEED)
    S_random = torch.randint(0, 20, S.shape)
    chi_random = (torch.rand(*S.shape, 4) * 2 - 1) * math.pi
    # every residue type on one real backbone: 20 copies of 3e8mA's first residues, copy k all of type k
    X_every = X[:1, :EVERY, :4].expand(20, -1, -1, -1).contiguous()
    C_every = C[:1, :EVERY].expand(20, -1).contiguous()
    S_every = torch.arange(20).view(20, 1).expand(-1, EVERY).contiguous()
    chi_every = (torch.rand(20, EVERY, 4) * 2 - 1) * math.pi
    with torch.no_grad():
        chi, mask_chi = angles(X, C, S)
        out["chi.real"], out["chi.mask"] = chi, mask_chi
        out["mask.atoms"], out["mask.chi"] = sidechain.atom_mask(C, S), sidechain.chi_mask(C, S)
        out["build.real"], out["build.real.mask"] = builder(X[:, :, :4], C, S, chi)
        out["build.ideal"], _ = builder(X[:, :, :4], C, S)
        out["build.ideal_from_all_atom"], _ = builder(X, C, S)  # the builder drops side-chain atoms it is given
        out["random.S"], out["random.chi"] = S_random, chi_random
        out["build.random"], _ = builder(X[:, :, :4], C, S_random, chi_random)
        out["roundtrip.random.chi"], _ = angles(out["build.random"], C, S_random)
        out["roundtrip.real.chi"], _ = angles(out["build.real"], C, S)
        out["every.X"], out["every.C"], out["every.S"], out["every.chi"] = X_every, C_every, S_every, chi_every
        out["every.build"], _ = builder(X_every, C_every, S_every, chi_every)
        out["every.roundtrip.chi"], _ = angles(out["every.build"], C_every, S_every)
        out["renamer.real"] = renamer(X, S)
    out.update(head_case(X, C, S, chi, mask_chi))
    out = {k: v.contiguous() for k, v in out.items()}
    notes = {
        "roundtrip_real_chi_max_abs": float(((out["roundtrip.real.chi"] - chi) * mask_chi).abs().max()),
        "build_real_vs_native_rmsd": float(
            (((out["build.real"] - X) ** 2).sum(-1) * out["mask.atoms"]).sum().div(out["mask.atoms"].sum()).sqrt()
        ),
    }
    metadata = {
        "reference": "generate-chroma 1.0.0",
        "seed": str(SEED),
        "head_kwargs": json.dumps(HEAD_KWARGS),
        "temperature": str(TEMPERATURE),
        "notes": json.dumps(notes),
    }
    save_file(out, str(args.out), metadata=metadata)
    print("wrote", args.out, f"({args.out.stat().st_size} bytes)", notes)


if __name__ == "__main__":
    main()
