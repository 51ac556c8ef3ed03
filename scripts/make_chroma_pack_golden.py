"""Make the golden file the chroma plugin's packing tests compare against: the reference's two-stage chi decoder.

The reference is generate-chroma 1.0.0 (generatebio/chroma 929407c), importable without its dependencies as for
scripts/make_chroma_structure_golden.py (whose stand-in modules, the graph script's offline centering patch, the
design script's init_kwargs and the side-chain script's all-atom inputs this script reuses):

    .venv/bin/pip install --no-deps --target /tmp/chroma_ref generate-chroma==1.0.0
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python scripts/make_chroma_pack_golden.py

It installs and downloads nothing. It builds a reference ``GraphDesign`` (make_chroma_design_golden.INIT_KWARGS,
two-stage packing, chi decoder with the ``chi_rbf`` embedding) with random weights (seed in the metadata) and
writes ``chroma_pack.safetensors``: its whole state dict (``ref.``, geometry tables included, as a checkpoint
holds them) and, on two real all-atom systems (3e8mA; 4E43 chains 1 and 2 with a gap and padding):

* ``forward`` teacher-forced with a fixed ``permute_idx`` at times ``t``: ``fwd.logp_chi``, ``fwd.chi``,
  ``fwd.mask_chi`` (and ``fwd.logp_S``);
* ``pack`` with that order: clamped (``clamped.*``: sequential log-likelihood of the true chi, rebuilt atoms),
  and sampled at each temperature of ``TEMPERATURES`` (``pack.{T}.X``, ``.chi``, ``.logp_chi``), with the
  uniforms the chi head drew (``pack.{T}.uniforms``, in residue order: one ``torch.rand(B, 1)`` per step and chi);
* the chi decoder's ``decode`` with a design mask and ``resample_chi=False`` (``masked.*``; one system per call,
  since batched the reference broadcasts the mask over the batch).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "plugins/chroma/tests/golden"
sys.path.insert(0, str(ROOT / "scripts"))
from make_chroma_design_golden import INIT_KWARGS  # noqa: E402
from make_chroma_graph_golden import patch_centering, structures  # noqa: E402
from make_chroma_sidechain_golden import inputs  # noqa: E402
from make_chroma_structure_golden import stub_modules  # noqa: E402

SEED = 20261313
LENGTH = 48
TIMES = (0.4, 0.0)
TEMPERATURES = (1e-3, 1.0)


def step_uniforms(permute_idx: torch.Tensor) -> torch.Tensor:
    """The uniforms the reference's chi head draws while decoding (after seeding), in residue order."""
    B, L = permute_idx.shape
    drawn = torch.stack([torch.cat([torch.rand(B, 1) for _ in range(4)], -1) for _ in range(L)], 1)
    return torch.zeros_like(drawn).scatter_(1, permute_idx.unsqueeze(-1).expand(-1, -1, 4), drawn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=GOLDEN / "chroma_pack.safetensors")
    args = parser.parse_args()
    stub_modules()
    from chroma.models.graph_design import GraphDesign

    s = structures()
    patch_centering(s)
    X, C, S = (v[:, :LENGTH].contiguous() for v in inputs(s))
    B, L = C.shape
    torch.manual_seed(SEED)
    model = GraphDesign(**INIT_KWARGS).eval()
    gen = torch.Generator().manual_seed(SEED + 1)
    permute_idx = torch.stack([torch.randperm(L, generator=gen) for _ in range(B)])
    t = torch.tensor(TIMES)
    out: dict[str, torch.Tensor] = {"X": X, "C": C, "S": S, "t": t, "permute_idx": permute_idx}
    out.update({f"ref.{k}": v.detach().clone() for k, v in model.state_dict().items()})
    with torch.no_grad():
        fwd = model(X, C, S, t=t, permute_idx=permute_idx)
        for k in ("logp_chi", "chi", "mask_chi", "logp_S"):
            out[f"fwd.{k}"] = fwd[k]
        X_c, _, scores = model.pack(X, C, S, permute_idx=permute_idx, clamped=True, return_scores=True)
        out["clamped.X"], out["clamped.logp_chi"] = X_c, scores["logp_chi"]
        for T in TEMPERATURES:
            torch.manual_seed(SEED + 2)
            X_p, _, scores = model.pack(X, C, S, permute_idx=permute_idx, temperature_chi=T, return_scores=True)
            torch.manual_seed(SEED + 2)
            out[f"pack.{T}.uniforms"] = step_uniforms(permute_idx)
            out[f"pack.{T}.X"], out[f"pack.{T}.logp_chi"] = X_p, scores["logp_chi"]
            out[f"pack.{T}.chi"] = model.X_to_chi(X_p, C, S)[0]
        # the chi decoder alone with a design mask, keeping the given chi elsewhere (resample_chi=False)
        node_h, edge_h, edge_idx, mask_i, mask_ij = model.encode(X, C)
        node_h = node_h + mask_i.unsqueeze(-1) * model.embed_S(S)
        node_h, edge_h = model.encoder_S_gnn(node_h, edge_h, edge_idx, mask_i, mask_ij)
        mask_sample = (torch.rand(B, L, generator=gen) < 0.5).float()
        out["masked.mask_sample"] = mask_sample
        rows: dict[str, list[torch.Tensor]] = {"chi": [], "logp_chi": [], "uniforms": []}
        for b in range(B):
            one = (X[b : b + 1], C[b : b + 1], S[b : b + 1], node_h[b : b + 1], edge_h[b : b + 1],
                   edge_idx[b : b + 1], mask_i[b : b + 1], mask_ij[b : b + 1], permute_idx[b : b + 1])  # fmt: skip
            torch.manual_seed(SEED + 3 + b)
            _, chi_b, _, logp_b, _ = model.decoder_chi.decode(
                *one, temperature_chi=0.5, mask_sample=mask_sample[b : b + 1], resample_chi=False
            )
            torch.manual_seed(SEED + 3 + b)
            rows["uniforms"].append(step_uniforms(permute_idx[b : b + 1]))
            rows["chi"].append(chi_b)
            rows["logp_chi"].append(logp_b)
        out.update({f"masked.{k}": torch.cat(v) for k, v in rows.items()})
    meta = {
        "reference": "generate-chroma 1.0.0", "torch": torch.__version__, "init_kwargs": json.dumps(INIT_KWARGS),
        "seed": str(SEED), "times": json.dumps(TIMES), "temperatures": json.dumps(TEMPERATURES),
        "masked_temperature": "0.5",
    }  # fmt: skip
    save_file({k: v.detach().contiguous() for k, v in out.items()}, str(args.out), metadata=meta)
    print("wrote", args.out, f"{args.out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
