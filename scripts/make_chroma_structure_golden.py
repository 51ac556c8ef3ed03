"""Make the golden XCS file the chroma plugin's structure tests compare against: the reference's own X, C, S.

The reference is generate-chroma 1.0.0 (generatebio/chroma 929407c). It does not install on Python 3.11 with its
dependencies (scikit-learn==1.1.2), and only its structure code runs here, so this script installs nothing. It
needs the package importable without its dependencies, next to torch, numpy, scipy, tqdm and requests, e.g.:

    .venv/bin/pip install --no-deps --target /tmp/chroma_ref generate-chroma==1.0.0
    .venv/bin/pip install --no-deps mdanalysistests==2.11.0        # the structures (TS50, 4E43)
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python scripts/make_chroma_structure_golden.py

Before ``import chroma`` it puts empty stand-ins for nglview, sklearn.decomposition and PIL into sys.modules
(chroma imports them at top level for display and letter shapes, which structure I/O never calls). Nothing is
downloaded. It writes plugins/chroma/tests/golden/chroma_structures.safetensors: per structure, the reference's
``Protein.from_PDB(path).to_XCS()`` (backbone) and ``to_XCS(all_atom=True)``.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.machinery
import importlib.util
import shutil
import sys
import tempfile
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

STRUCTURES = ["dssp/1ahsA.pdb.gz", "dssp/2xdgA.pdb.gz", "dssp/3e8mA.pdb.gz", "4E43.pdb"]
OUT = Path(__file__).resolve().parents[1] / "plugins/chroma/tests/golden/chroma_structures.safetensors"


def stub_modules() -> None:
    """Empty modules (with a __spec__, which torch._dynamo's find_spec needs) for chroma's display-only imports."""
    for name in ["nglview", "sklearn", "sklearn.decomposition", "PIL", "PIL.Image", "PIL.ImageDraw", "PIL.ImageFont"]:
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
        module.__path__ = []  # a package, so submodules resolve
        sys.modules[name] = module
    sys.modules["sklearn.decomposition"].PCA = object  # type: ignore[attr-defined]
    for name in ["Image", "ImageDraw", "ImageFont"]:
        setattr(sys.modules["PIL"], name, sys.modules[f"PIL.{name}"])


def data_dir() -> Path:
    spec = importlib.util.find_spec("MDAnalysisTests")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("mdanalysistests is not installed: pip install --no-deps mdanalysistests==2.11.0")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=OUT)
    args = parser.parse_args()
    stub_modules()
    from chroma.data.protein import Protein  # the reference, importable via PYTHONPATH

    tensors: dict[str, torch.Tensor] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rel in STRUCTURES:
            source = data_dir() / rel
            name = source.name.split(".")[0]
            plain = Path(tmp) / f"{name}.pdb"  # the reference reads plain .pdb files only
            opener = gzip.open if source.suffix == ".gz" else open
            with opener(source, "rb") as f, open(plain, "wb") as g:
                shutil.copyfileobj(f, g)
            protein = Protein.from_PDB(str(plain))
            for all_atom in (False, True):
                X, C, S = protein.to_XCS(all_atom=all_atom)
                tag = f"{name}.{'all' if all_atom else 'bb'}"
                tensors[f"{tag}.X"], tensors[f"{tag}.C"], tensors[f"{tag}.S"] = X.contiguous(), C, S
            print(name, tuple(X.shape), "C values", sorted(set(C[0].tolist())))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"reference": "generate-chroma 1.0.0", "structures": ",".join(STRUCTURES)}
    save_file(tensors, str(args.out), metadata=metadata)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
