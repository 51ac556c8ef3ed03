"""Make the golden file the chroma plugin's score tests compare against: the reference's ``Chroma.score_backbone``.

The reference is generate-chroma 1.0.0 (generatebio/chroma 929407c), importable without its dependencies as for
scripts/make_chroma_structure_golden.py (whose stand-in modules, and the graph script's offline centering patch,
this script reuses):

    .venv/bin/pip install --no-deps --target /tmp/chroma_ref generate-chroma==1.0.0
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python scripts/make_chroma_score_golden.py

It installs and downloads nothing, and stores no weights: the model is the reference ``GraphBackbone`` of
chroma_backbone_knn.safetensors (its init_kwargs and ``ref.`` state dict, loaded strictly), so the tests score
with that golden's converted weights. ``Chroma.score_backbone`` runs on a ``Chroma`` whose only part is that
backbone network (no design network, no weights download), with reference ``Protein`` objects built from real
chains (the reference's own XCS in chroma_structures.safetensors).

Three things are fixed so that the outputs are comparable:

* both dithers are off: the frame-averaging dither patched to 0 (as the backbone script does) and the Kabsch
  dither of the four superposition modules of ``loss_diffusion``;
* the reference's prior draws (the noised input, then the second noised copy, per time) come from a
  ``torch.Generator`` seeded with ``SEED``, in the reference's order, instead of its global generator (which its
  frame averaging also draws from, multiplying the draw by 0 when the dither is off). biozoo's
  ``score_backbone(seed=SEED)`` draws the same tensors in the same order from its own generator, so no noise is
  stored: the test checks the draw order itself;
* the model is in eval mode (no dropout), as ``Chroma`` is.

Runs (small, so that the tests run in seconds): ``list`` scores two proteins in one call (70 residues of 1ahsA
with three without structure; a two-chain window of 4E43, 30 + 30 residues) at 4 times; ``single`` scores one
protein (2xdgA, 89 residues) at 3 times; both over the default tspan (1e-4, 1). For each: the padded batch the
reference built (``X``, ``C``), the time grid, every metric per protein and time (from the reference's
``estimate_metrics`` samples, captured), the per-protein scores its dictionaries report, and the mean prediction
``X0_pred`` (with every time's prediction in ``list``). The reference ignores ``tspan`` (docs/chroma.md), so
only the default is comparable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "plugins/chroma/tests/golden"
OUT = GOLDEN / "chroma_score.safetensors"
sys.path.insert(0, str(ROOT / "scripts"))
from make_chroma_backbone_golden import dither_off  # noqa: E402
from make_chroma_graph_golden import patch_centering, structures  # noqa: E402
from make_chroma_structure_golden import stub_modules  # noqa: E402

SEED = 7
METRICS = ("elbo", "global_mse", "elbo_X", "fragment_mse", "pair_mse", "neighborhood_mse", "distance_mse",
           "hb_local", "hb_nonlocal")  # fmt: skip
RUNS = {  # small, so that the tests run in seconds
    "list": {"proteins": ["1ahsA_gap", "4E43_pair"], "num_samples": 4},
    "single": {"proteins": ["2xdgA"], "num_samples": 3},
}


def proteins(s: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """XCS of the scored proteins: real chains, one with a gap, one a two-chain complex."""
    X, C, S = s["1ahsA.bb.X"][:, :70].clone(), s["1ahsA.bb.C"][:, :70].clone(), s["1ahsA.bb.S"][:, :70]
    C[:, 40:43] = -1
    X[:, 40:43] = 0.0
    X43, C43, S43 = s["4E43.bb.X"], s["4E43.bb.C"], s["4E43.bb.S"]
    index = torch.cat([torch.arange(10, 40), torch.arange(109, 139)])  # 30 residues of chains 1 and 2 each
    assert set(C43[0, index].tolist()) == {1, 2}
    return {
        "1ahsA_gap": (X, C, S),
        "4E43_pair": (X43[:, index].clone(), C43[:, index].clone(), S43[:, index].clone()),
        "2xdgA": (s["2xdgA.bb.X"], s["2xdgA.bb.C"], s["2xdgA.bb.S"]),
    }


def reference_model():
    """The knn golden's GraphBackbone, strictly loaded, in eval mode, with both dithers off."""
    from chroma.models.graph_backbone import GraphBackbone

    with safe_open(str(GOLDEN / "chroma_backbone_knn.safetensors"), "pt") as f:
        kwargs = json.loads(f.metadata()["init_kwargs"])
        g = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    model = GraphBackbone(**kwargs).eval()
    model.load_state_dict({k.removeprefix("ref."): v for k, v in g.items() if k.startswith("ref.")}, strict=True)
    losses = model.loss_diffusion
    for module in (losses.loss_rmsd, losses.loss_fragment, losses.loss_fragment_pair, losses.loss_neighborhood):
        module.rmsd.dither = False
    dither_off()
    return model


def seeded_prior(model, seed: int) -> None:
    """The prior's draws from a generator seeded ``seed`` (shape and order as the reference's own)."""
    d = model.noise_perturb
    generator = torch.Generator().manual_seed(seed)
    draw = d.base_gaussian.sample

    def sample(C, draw=draw):
        return draw(C, Z=torch.randn([C.shape[0], C.shape[1] * 4, 3], generator=generator))

    d.base_gaussian.sample = sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=OUT)
    args = parser.parse_args()
    stub_modules()
    from chroma.data.protein import Protein  # the reference, importable via PYTHONPATH
    from chroma.models.chroma import Chroma

    s = structures()
    patch_centering(s)
    xcs = proteins(s)
    out: dict[str, torch.Tensor] = {}
    for name, (X, C, S) in xcs.items():
        out[f"{name}.X"], out[f"{name}.C"], out[f"{name}.S"] = X, C, S

    for tag, run in RUNS.items():
        model = reference_model()
        seeded_prior(model, SEED)
        captured = {}
        estimate = model.estimate_metrics

        def capture(X, C, estimate=estimate, captured=captured, **kw):
            captured["X"], captured["C"] = X, C
            captured["metrics"], captured["samples"] = estimate(X, C, **kw)
            return captured["metrics"], captured["samples"]

        model.estimate_metrics = capture
        chroma = Chroma.__new__(Chroma)
        nn.Module.__init__(chroma)
        chroma.backbone_network = model
        items = [Protein.from_XCS(*xcs[name]) for name in run["proteins"]]
        kw = {"num_samples": run["num_samples"]} if "num_samples" in run else {}
        with torch.no_grad():
            scores = chroma.score_backbone(items if len(items) > 1 else items[0], **kw)
        scores = scores if isinstance(scores, list) else [scores]
        samples = captured["samples"]
        out[f"{tag}.X"], out[f"{tag}.C"] = captured["X"], captured["C"]
        out[f"{tag}.t"] = torch.tensor(samples["t"], dtype=torch.float64)
        for key in METRICS:
            out[f"{tag}.samples.{key}"] = torch.stack(samples[key], 0)  # [T, B]
            out[f"{tag}.score.{key}"] = torch.tensor([d[key].score for d in scores], dtype=torch.float64)
        out[f"{tag}.metrics.X0_pred"] = captured["metrics"]["X0_pred"]
        if tag == "list":
            out[f"{tag}.samples.X0_pred"] = torch.stack(samples["X0_pred"], 0)
        print(tag, {k: [round(float(v), 4) for v in out[f"{tag}.score.{k}"]] for k in METRICS})

    out = {k: v.detach().contiguous() for k, v in out.items()}
    metadata = {
        "reference": "generate-chroma 1.0.0", "torch": torch.__version__, "seed": str(SEED), "runs": json.dumps(RUNS),
        "model": "chroma_backbone_knn.safetensors (init_kwargs and ref. state dict)",
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(args.out), metadata=metadata)
    print("wrote", args.out, f"{args.out.stat().st_size / 1e6:.2f} MB,", len(out), "tensors")


if __name__ == "__main__":
    main()
