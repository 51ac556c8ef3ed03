"""Make the golden file the chroma plugin's loss tests compare against: the reference's reconstruction losses.

The reference is generate-chroma 1.0.0 (generatebio/chroma 929407c): ``ReconstructionLosses`` (its ``forward`` and
``estimate_metrics``, which ``Chroma.score_backbone`` calls), with ``DiffusionChainCov.elbo``/``pseudoelbo``,
``rmsd.py``'s superpositions, ``hbonds.py`` and ``backbone.LossBackboneResidueDistance``. None of these needs
weights or the network. Run, with the reference importable but not installed with its dependencies:

    .venv/bin/pip install --no-deps --target /tmp/chroma_ref generate-chroma==1.0.0
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python scripts/make_chroma_losses_golden.py

It writes plugins/chroma/tests/golden/chroma_losses.safetensors. The inputs are real backbones: the reference's own
XCS of 1ahsA, 2xdgA and 4E43 from chroma_structures.safetensors, laid out as three complexes with gaps (C < 0),
several chains and padding. Three things are fixed so that outputs are comparable: the denoiser is the smooth
stand-in ``x0_func`` of make_chroma_diffusion_golden.py (the same in the test); every prior draw the reference
makes (the noised input and the second noised copy that normalises the MSEs) is replaced, in order, by stored
noise; and the reference's Kabsch dither is switched off in all four of its superposition modules.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_chroma_diffusion_golden import x0_func  # the stand-in denoiser (also copied verbatim in the test)
from make_chroma_structure_golden import stub_modules  # the stand-ins for chroma's display-only imports

GOLDEN = Path(__file__).resolve().parents[1] / "plugins/chroma/tests/golden"
OUT = GOLDEN / "chroma_losses.safetensors"
LENGTH = 140
RUNS = {  # estimate_metrics settings: the public model's covariance, and a brownian one without input noise
    "globular_cs": {"process": {"covariance_model": "globular", "complex_scaling": True}, "num_samples": 6,
                    "use_noise": True},
    "brownian_fixed_point": {"process": {"covariance_model": "brownian"}, "num_samples": 3, "use_noise": False},
}  # fmt: skip
FORWARD_T = [0.05, 0.5, 0.95]  # one time per batch element, as in training


def make_inputs() -> dict[str, torch.Tensor]:
    """X [3, 140, 4, 3] and C from real chains: gaps inside and at chain ends, 1-3 chains, padding."""
    with safe_open(str(GOLDEN / "chroma_structures.safetensors"), "pt") as f:
        ahs, xdg, e43 = (f.get_tensor(f"{name}.bb.X")[0] for name in ("1ahsA", "2xdgA", "4E43"))
        e43_C = f.get_tensor("4E43.bb.C")[0]
    X = torch.zeros(3, LENGTH, 4, 3)
    C = torch.zeros(3, LENGTH, dtype=torch.long)
    # 1: 1ahsA (126 residues) with three residues without structure in the middle.
    X[0, :126], C[0, :126] = ahs, 1
    C[0, 40:43] = -1
    # 2: 4E43 chains 1 and 2 (60 residues each, facing each other) and its 6-residue chain 3; leading gap.
    parts = [torch.arange(10, 70), torch.arange(109, 169), torch.arange(198, 204)]
    index = torch.cat(parts)
    X[1, : len(index)], C[1, : len(index)] = e43[index], e43_C[index]
    C[1, 0] = -1
    # 3: 2xdgA (89) with two leading and one trailing residue without structure; then 40 residues of 1ahsA,
    # moved 15 A, as a second chain.
    X[2, :89], C[2, :89] = xdg, 1
    C[2, [0, 1, 88]] = -1
    X[2, 89:129], C[2, 89:129] = ahs[60:100] + torch.tensor([15.0, 0.0, 0.0]), 2
    X = X * (C > 0)[..., None, None]
    gen = torch.Generator().manual_seed(20261211)
    out = {"X": X, "C": C}
    for tag, run in RUNS.items():
        out[f"{tag}.noise"] = torch.randn(run["num_samples"], 2, 3, LENGTH, 4, 3, generator=gen)
    out["forward.t"] = torch.tensor(FORWARD_T)
    out["forward.Z_input"] = torch.randn(3, LENGTH, 4, 3, generator=gen)
    out["forward.Z"] = torch.randn(3, LENGTH, 4, 3, generator=gen)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=OUT)
    args = parser.parse_args()
    stub_modules()
    from chroma.layers.structure import backbone, diffusion  # the reference, importable via PYTHONPATH

    torch.manual_seed(0)
    inputs = make_inputs()
    X, C = inputs["X"], inputs["C"]
    out: dict[str, torch.Tensor] = dict(inputs)

    def losses_for(process_kw: dict, noise: list[torch.Tensor]) -> diffusion.ReconstructionLosses:
        d = diffusion.DiffusionChainCov(**process_kw)
        losses = diffusion.ReconstructionLosses(d, loss_scale=10.0, rmsd_method="symeig")
        for module in (losses.loss_rmsd, losses.loss_fragment, losses.loss_fragment_pair, losses.loss_neighborhood):
            module.rmsd.dither = False
        draws = iter(noise)
        draw = d.base_gaussian.sample
        d.base_gaussian.sample = lambda C_, draw=draw: draw(C_, Z=next(draws).reshape(C_.shape[0], -1, 3))
        return losses

    for tag, run in RUNS.items():
        noise = inputs[f"{tag}.noise"]
        # The reference draws (noised input, baseline copy) per time, or only the copy without input noise.
        order = [noise[i, k] for i in range(run["num_samples"]) for k in ((0, 1) if run["use_noise"] else (1,))]
        losses = losses_for(run["process"], order)
        metrics, samples = losses.estimate_metrics(
            x0_func, X, C, num_samples=run["num_samples"], use_noise=run["use_noise"], return_samples=True
        )
        out[f"{tag}.t"] = torch.tensor(samples["t"])
        for key, values in samples.items():
            if key in ("t", "X"):  # X is the imputed input at every time
                continue
            out[f"{tag}.samples.{key}"] = torch.stack(values, 0)
            out[f"{tag}.metrics.{key}"] = metrics[key]
        print(tag, {k: [round(float(x), 4) for x in v] for k, v in metrics.items() if v.dim() == 1})

    # One forward at per-element times (the training objective), batch averages included.
    d_kw = RUNS["globular_cs"]["process"]
    losses = losses_for(d_kw, [inputs["forward.Z_input"], inputs["forward.Z"]])
    t = inputs["forward.t"]
    X_imputed = backbone.impute_masked_X(X, C)
    X_t = losses.noise_perturb(X_imputed, C, t=t)
    X0_pred = x0_func(X_t, C, t)
    out["forward.X0_pred"] = X0_pred
    for key, value in losses(X0_pred, X, C, t).items():
        if key not in ("t", "X", "X0_pred"):
            out[f"forward.{key}"] = value.reshape(-1)

    out = {k: v.detach().contiguous() for k, v in out.items()}
    metadata = {
        "reference": "generate-chroma 1.0.0",
        "torch": torch.__version__,
        "runs": json.dumps(RUNS),
        "loss_scale": "10.0",
        "num_neighbors": "30",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(args.out), metadata=metadata)
    print("wrote", args.out, args.out.stat().st_size, "bytes,", len(out), "tensors")


if __name__ == "__main__":
    main()
