"""Make the golden file the chroma plugin's design-API tests compare against: ``GraphDesign.loss`` and
``GraphDesign.sample`` with packing (issue 13, rung 7).

The reference is generate-chroma 1.0.0, importable without its dependencies as for the other chroma golden scripts
(this one reuses their stand-in modules and offline centering patch, and the packing golden's model):

    .venv/bin/pip install --no-deps --target /tmp/chroma_ref generate-chroma==1.0.0
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python scripts/make_chroma_design_api_golden.py

It installs and downloads nothing. The model is the reference ``GraphDesign`` of ``chroma_pack.safetensors``
(``make_chroma_design_golden.INIT_KWARGS``, its random weights loaded from that file's ``ref.`` entries, so they
are not stored twice), on that file's inputs (3e8mA; 4E43 chains 1 and 2 with a gap; all-atom, 48 residues).
It writes ``chroma_design_api.safetensors``:

* ``loss.fixed.*``: ``loss(X, C, S, t, permute_idx, batched=False)`` with a fixed order at times ``t``, every
  output, and the uniforms its chi re-draw took (``loss.fixed.uniforms [B, L, 4]``: one ``torch.rand(B, L)`` per
  chi after ``torch.manual_seed``); ``loss.batched.*`` the same with ``batched=True`` and t = None;
* ``loss.random.*``: ``loss(X, C, S, batched=False)`` after ``torch.manual_seed(LOSS_SEED)``: the decoding order
  is drawn by ``ProteinTraversalSpatial`` and the chi by the head, both from the global generator, which a
  ``torch.Generator`` seeded alike reproduces draw for draw (what ``Chroma.score_sequence`` runs, at t = None);
* ``design.{name}.*``: ``sample(..., sampling_method="autoregressive", temperature_S=1e-5, t=0.5)`` with a fixed
  order per system (the reference's batched autoregressive sample fails), options in the ``designs`` metadata:
  the designed ``S``, the packed ``X``, and the uniforms the chi decoder drew (recorded by wrapping its
  ``_sample_continuous``, residue order).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "plugins/chroma/tests/golden"
sys.path.insert(0, str(ROOT / "scripts"))
from make_chroma_design_golden import INIT_KWARGS  # noqa: E402
from make_chroma_graph_golden import patch_centering, structures  # noqa: E402
from make_chroma_structure_golden import stub_modules  # noqa: E402

SEED = 20261370
LOSS_SEED = 20261371
TIMES = (0.4, 0.1)
TEMPERATURE_S = 1e-5
#: name -> (system, GraphDesign.sample options besides the fixed order, temperatures and t)
DESIGNS = {
    "plain1": (1, {"regularization": None}),  # with LCP the reference's bias is NaN at 4E43's gap at this T
    "lcp0": (0, {"regularization": "LCP"}),
    "masked0": (0, {"regularization": "LCP", "mask": True, "ban_S": ["C", "P", "R"]}),  # none of them kept
}


def loss_uniforms(B: int, L: int) -> torch.Tensor:
    """The uniforms the chi head's parallel ``sample`` draws (after seeding): one ``[B, L]`` draw per chi."""
    return torch.stack([torch.rand(B, L) for _ in range(4)], -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=GOLDEN / "chroma_design_api.safetensors")
    args = parser.parse_args()
    stub_modules()
    from chroma.models.graph_design import GraphDesign, NodePredictorChi

    patch_centering(structures())
    pack = load_file(str(GOLDEN / "chroma_pack.safetensors"))
    model = GraphDesign(**INIT_KWARGS).eval()
    model.load_state_dict({k.removeprefix("ref."): v for k, v in pack.items() if k.startswith("ref.")}, strict=True)
    X, C, S = pack["X"], pack["C"], pack["S"]
    B, L = C.shape
    gen = torch.Generator().manual_seed(SEED)
    permute_idx = torch.stack([torch.randperm(L, generator=gen) for _ in range(B)])
    out: dict[str, torch.Tensor] = {"X": X, "C": C, "S": S, "t": torch.tensor(TIMES), "permute_idx": permute_idx}

    drawn: list[torch.Tensor] = []
    original = NodePredictorChi._sample_continuous

    def recording(self, logits, left, right):  # the reference's signature
        state = torch.get_rng_state()
        drawn.append(torch.rand(list(logits.shape)[:-1]))
        torch.set_rng_state(state)
        return original(self, logits, left, right)

    NodePredictorChi._sample_continuous = recording
    with torch.no_grad():
        for name, t, batched in (("fixed", torch.tensor(TIMES), False), ("batched", None, True)):
            torch.manual_seed(SEED + 1)
            losses = model.loss(X, C, S, t=t, permute_idx=permute_idx, batched=batched)
            torch.manual_seed(SEED + 1)
            out[f"loss.{name}.uniforms"] = loss_uniforms(B, L)
            out.update({f"loss.{name}.{k}": v for k, v in losses.items() if k != "permute_idx"})
        torch.manual_seed(LOSS_SEED)
        losses = model.loss(X, C, S, batched=False)
        out.update({f"loss.random.{k}": v for k, v in losses.items() if isinstance(v, torch.Tensor)})

        mask = (torch.rand(B, L, generator=gen) < 0.5).float()
        out["design.mask"] = mask
        for name, (b, options) in DESIGNS.items():
            options = dict(options)
            one = (X[b : b + 1], C[b : b + 1], S[b : b + 1])
            if options.pop("mask", False):
                options["mask_sample"] = mask[b : b + 1]
            drawn.clear()
            torch.manual_seed(SEED + 2)
            X_d, S_d, _ = model.sample(
                *one, t=0.5, permute_idx=permute_idx[b : b + 1], temperature_S=TEMPERATURE_S, temperature_chi=1e-3,
                sampling_method="autoregressive", **options,
            )  # fmt: skip
            steps = torch.stack([torch.cat(drawn[i : i + 4], -1) for i in range(0, len(drawn), 4)], 1)  # [1, L, 4]
            where = permute_idx[b : b + 1, :, None].expand(-1, -1, 4)
            out[f"design.{name}.uniforms"] = torch.zeros_like(steps).scatter_(1, where, steps)
            out[f"design.{name}.X"], out[f"design.{name}.S"] = X_d, S_d
    NodePredictorChi._sample_continuous = original
    meta = {
        "reference": "generate-chroma 1.0.0", "torch": torch.__version__, "init_kwargs": json.dumps(INIT_KWARGS),
        "weights": "chroma_pack.safetensors ref.*", "seed": str(SEED), "loss_seed": str(LOSS_SEED),
        "times": json.dumps(TIMES), "temperature_S": str(TEMPERATURE_S), "temperature_chi": "0.001",
        "design_t": "0.5", "designs": json.dumps({k: [b, o] for k, (b, o) in DESIGNS.items()}),
    }  # fmt: skip
    save_file({k: v.detach().clone().contiguous() for k, v in out.items()}, str(args.out), metadata=meta)
    print("wrote", args.out, f"{args.out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
