"""Make the golden file of the chroma plugin's end-to-end statistical test (issue 13, rung 8): the reference's
sample-then-design pipeline (``Chroma.sample`` = ``GraphBackbone.sample_sde`` then ``Chroma.design`` =
``GraphDesign.sample``) run over many seeds with the weights of ``chroma/demo`` and ``chroma/demo-design``.

The reference is generate-chroma 1.0.0, importable without its dependencies as for the other chroma golden
scripts (their stand-in modules and offline centering patch are reused):

    .venv/bin/pip install --no-deps --target /tmp/chroma_ref generate-chroma==1.0.0
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python scripts/make_chroma_end_to_end_golden.py

It installs and downloads nothing. The reference models are built from the registry manifests' configs (which are
the reference's ``init_kwargs``) and loaded, strictly, with the registry weights mapped back to the reference's
keys (the converter's key mapping read backwards; the constant tables the converter drops keep the reference's own
values). Then, at ``Chroma.sample``'s defaults except the step count (reverse SDE, Euler-Maruyama, langevin_factor
2, inverse_temperature 10, not isothermal, tspan (1, 0.001)):

* ``SAMPLES`` backbones of one ``LENGTH``-residue chain from the reference's initial helices, in one batch,
  after ``torch.manual_seed(SEED)``;
* each designed at ``Chroma.design``'s defaults (Potts, DLMC, 500 sweeps, temperature_S 0.01, LCP,
  design_t 0.5, temperature_chi 1e-3) after ``torch.manual_seed(SEED + 1 + i)``.

It writes ``chroma_end_to_end.safetensors``: ``X_backbone [N, L, 4, 3]`` (the sampled backbones), ``S [N, L]``
(the designed sequences), ``X [N, L, 14, 3]`` (with the packed side chains) and ``C [N, L]``. The test computes the
same statistics on these and on biozoo's own samples, so the golden holds outputs, not statistics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "plugins/chroma/tests/golden"
REGISTRY = ROOT / "registry/chroma/demo"
sys.path.insert(0, str(ROOT / "scripts"))
from make_chroma_graph_golden import patch_centering, structures  # noqa: E402
from make_chroma_structure_golden import stub_modules  # noqa: E402

SAMPLES = 32
LENGTH = 64
STEPS = 200
SEED = 20261380
SAMPLER = {"tspan": (1.0, 0.001), "langevin_factor": 2.0, "langevin_isothermal": False, "inverse_temperature": 10.0,
           "sde_func": "reverse_sde", "integrate_func": "euler_maruyama", "initialize_noise": True}  # fmt: skip
DESIGN = {"t": 0.5, "temperature_S": 0.01, "temperature_chi": 1e-3, "sampling_method": "potts",
          "regularization": "LCP", "potts_sweeps": 500, "potts_proposal": "dlmc"}  # fmt: skip


def reference_model(cls: type, folder: Path, our_key) -> torch.nn.Module:
    """A reference model with the registry folder's weights, every reference key filled (strictly)."""
    config = yaml.safe_load((folder / "manifest.yaml").read_text())["architecture"]["config"]
    model = cls(**config).eval()
    ours = load_file(str(folder / "model.safetensors"))
    state = {}
    for key, value in model.state_dict().items():
        mapped = our_key(key)
        state[key] = value if mapped is None else ours.pop(mapped)  # None: a constant table the converter drops
    if ours:
        raise SystemExit(f"{folder}: weights the reference model has no key for: {sorted(ours)[:5]}")
    model.load_state_dict(state, strict=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=GOLDEN / "chroma_end_to_end.safetensors")
    args = parser.parse_args()
    stub_modules()
    from chroma.layers.structure.backbone import ProteinBackbone
    from chroma.models.graph_backbone import GraphBackbone
    from chroma.models.graph_design import GraphDesign

    from biozoo_chroma.graph.keys import reference_key
    from biozoo_chroma.sidechains.keys import reference_sidechain_key

    def design_key(key: str) -> str | None:
        return None if reference_sidechain_key(key) is None else reference_key(key)

    patch_centering(structures())
    backbone = reference_model(GraphBackbone, REGISTRY, reference_key)
    design = reference_model(GraphDesign, REGISTRY / "design", design_key)
    start = time.perf_counter()
    with torch.no_grad():
        X_init = ProteinBackbone(num_batch=SAMPLES, num_residues=LENGTH, init_state="alpha")()
        C = torch.ones(SAMPLES, LENGTH, dtype=torch.long)
        torch.manual_seed(SEED)
        outs = backbone.sample_sde(C, X_init=X_init, N=STEPS, **SAMPLER)
    X_backbone, C = outs["X_sample"].detach(), outs["C"]
    sampled = time.perf_counter() - start
    designed_X, designed_S = [], []
    for i in range(SAMPLES):
        torch.manual_seed(SEED + 1 + i)
        X_d, S_d, _ = design.sample(X_backbone[i : i + 1], C[i : i + 1], torch.zeros_like(C[i : i + 1]), **DESIGN)
        designed_X.append(X_d.detach())
        designed_S.append(S_d)
    out = {"X_backbone": X_backbone.contiguous(), "C": C.contiguous(), "S": torch.cat(designed_S).contiguous(),
           "X": torch.cat(designed_X).contiguous()}  # fmt: skip
    meta = {
        "reference": "generate-chroma 1.0.0", "torch": torch.__version__, "weights": "registry/chroma/demo (+ design/)",
        "samples": str(SAMPLES), "length": str(LENGTH), "steps": str(STEPS), "seed": str(SEED),
        "sampler": json.dumps(SAMPLER), "design": json.dumps(DESIGN),
        "seconds": json.dumps({"sample": round(sampled, 1), "design": round(time.perf_counter() - start - sampled, 1)}),
    }  # fmt: skip
    save_file(out, str(args.out), metadata=meta)
    print(f"wrote {args.out} ({meta['seconds']} s)")


if __name__ == "__main__":
    main()
