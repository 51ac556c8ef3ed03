"""The README demo: what a new user sees in their first minute with biozoo.

Runs real ``zoo`` commands (printed before they run) and a few lines of the
Python API. Everything works offline from a fresh clone.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ZOO = str(Path(sys.executable).with_name("zoo"))
ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> None:
    print(f"\n$ zoo {shlex.join(args)}", flush=True)
    subprocess.run([ZOO, *args], check=True)


def main() -> None:
    run("plugins")
    run("list")
    run("info", "core/tiny-transformer")
    run("load", "core/tiny-transformer", "--dtype", "bfloat16")
    run("verify", "core/tiny-transformer")
    run("verify", "core/tiny-transformer", "--processor", "eager")

    print("\n$ python  # the same from Python, and which attention kernel each layer ran", flush=True)
    import torch

    import biozoo

    model = biozoo.load("core/tiny-transformer")
    ids = torch.tensor([[3, 7, 1, 9, 0, 0]])
    with torch.no_grad():
        out = model(input_ids=ids, padding_mask=ids.eq(0))
    print("logits:", [round(x, 4) for x in out["logits"][0].tolist()])
    for row in biozoo.explain(model):
        print(f"  {row['module']}: ran {row['ran']} ({row['reason']})")

    # a generative single-cell model: sample new PBMCs gene by gene (KV cache), and an scModelForge folder as it is
    work = Path(tempfile.mkdtemp())
    run("verify", "autoregressive/pbmc-small")
    run("generate", "autoregressive/pbmc-small", "-n", "100", "-o", str(work / "generated.h5ad"))
    run("info", str(ROOT / "plugins" / "autoregressive" / "tests" / "golden" / "scmodelforge-cls"))

    # protein backbones: Chroma's diffusion architecture, a small demo model trained here on 42 real chains
    run("verify", "chroma/demo")
    run("sample", "chroma/demo", "--length", "60", "-n", "2", "--steps", "100", "-o", str(work / "samples"))
    # ... and Chroma's design network on a real chain the demo models never saw: a sequence, side chains, scores
    protein = str(ROOT / "examples" / "2va0A.pdb.gz")
    run("design", "chroma/demo-design", protein, "-o", str(work / "designed.pdb"))
    run("pack", "chroma/demo-design", protein, "-o", str(work / "packed.pdb"))
    run("score", "chroma/demo-design", str(work / "packed.pdb"), str(work / "designed.pdb"), "--sequence")
    run("sample", "chroma/demo", "--motif", protein, "--motif-residues", "A:60-75", "--steps", "100", "--design",
        "potts", "-o", str(work / "scaffolds"))  # fmt: skip

    # scGPT on real cells: held-out PBMCs the shipped classifier never saw
    run("list", "scgpt")
    run("verify", "scgpt/cls")
    cells = ROOT / "examples" / "pbmc68k_test.h5ad"
    out = Path(tempfile.mkdtemp()) / "annotated.h5ad"
    run("embed", "scgpt/cls", str(cells), "-o", str(out.with_name("embedded.h5ad")))
    run("annotate", "scgpt/cls", str(cells), "-o", str(out))
    import anndata

    annotated = anndata.read_h5ad(out)
    agree = (annotated.obs["scgpt_cls_label"].astype(str) == annotated.obs["bulk_labels"].astype(str)).mean()
    print(f"\nagreement with the dataset's bulk_labels on {annotated.n_obs} held-out cells: {agree:.1%}")


if __name__ == "__main__":
    main()
