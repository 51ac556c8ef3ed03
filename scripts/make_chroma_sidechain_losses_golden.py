"""Make the golden file the chroma plugin's side-chain loss tests compare against (issue 13, rung 7's side chains).

The reference is generate-chroma 1.0.0 (generatebio/chroma 929407c), importable without its dependencies as for
scripts/make_chroma_structure_golden.py (whose stand-in modules this script reuses):

    .venv/bin/pip install --no-deps --target /tmp/chroma_ref generate-chroma==1.0.0
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python scripts/make_chroma_sidechain_losses_golden.py

It installs and downloads nothing, and writes ``plugins/chroma/tests/golden/chroma_sidechain_losses.safetensors``:
the reference's ``LossSideChainRMSD`` and ``LossSidechainClashes`` (chroma/layers/structure/sidechain.py, the two
side-chain terms of ``GraphDesign.loss``) on

* ``real``: the all-atom batch of chroma_sidechains.safetensors (3e8mA, and 4E43 chains 1 and 2 with gaps and
  padding), and ``ts50``: the TS50 chains 1ahsA and 2xdgA (padded) from chroma_structures.safetensors. The
  "prediction" is each structure rebuilt by the reference's ``SideChainBuilder`` from its chi plus Gaussian noise
  (``NOISE`` rad), and the structure with its symmetric atoms renamed (``flip``;
  its target, C and S are ``real``'s, not stored twice);
* ``random``: random side-chain atoms around real backbones, random residue types, gaps (C < 0) and padding (C = 0)
  whose coordinates are random too (so masking is what zeroes them).

Each case stores the RMSD with and without the symmetric alternative, the clash counts on the reference's own
kNN graph, the smooth (sigmoid) clashes, the clashes on a given graph with a causal edge mask (as ``GraphDesign.loss``
calls it) and a neighbour mask ``mask_j``, and the gradients of the RMSD and smooth-clash sums with respect to X.
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
sys.path.insert(0, str(ROOT / "scripts"))
from make_chroma_graph_golden import structures  # noqa: E402
from make_chroma_sidechain_golden import inputs  # noqa: E402
from make_chroma_structure_golden import stub_modules  # noqa: E402

SEED = 20260301
NOISE = 0.5  # rad of Gaussian noise on the native chi angles
SMOOTH_ALPHA = 2.0
NUM_NEIGHBORS = 30
RANDOM_SHAPE = (2, 48)


def ts50_batch(s: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1ahsA (126 residues) and 2xdgA (89, padded with C = 0) as one batch."""
    names = ("1ahsA", "2xdgA")
    length = max(s[f"{n}.all.C"].shape[1] for n in names)
    X, C, S = torch.zeros(2, length, 14, 3), torch.zeros(2, length, dtype=torch.long), torch.zeros(2, length).long()
    for b, n in enumerate(names):
        L = s[f"{n}.all.C"].shape[1]
        X[b, :L], C[b, :L], S[b, :L] = s[f"{n}.all.X"][0], s[f"{n}.all.C"][0], s[f"{n}.all.S"][0]
    return X, C, S


def random_batch(X_real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real backbones with random side-chain atoms (within ~2.5 A of CA), random types, a gap and padding."""
    B, L = RANDOM_SHAPE
    X = X_real[:, :L].clone()
    X[:, :, 4:] = X[:, :, 1:2] + 2.5 * torch.randn(B, L, 10, 3)
    C = torch.ones(B, L, dtype=torch.long)
    C[1, 20:] = 2
    C[0, 10:14] = -1  # a gap
    C[1, 40:] = 0  # padding
    X[1, 40:] = 5.0 * torch.randn(L - 40, 14, 3)  # not zeros: the masks must drop them
    return X, C, torch.randint(0, 20, (B, L))


def causal_graph(C: torch.Tensor, edge_idx: torch.Tensor, mask_ij: torch.Tensor) -> torch.Tensor:
    """Keep the edges to residues decoded earlier in a random order (as GraphDesign's ``mask_ij_causal``)."""
    rank = torch.argsort(torch.rand(C.shape), dim=-1)  # residue i is decoded at step rank[i]
    rank_j = torch.gather(rank, 1, edge_idx.flatten(1)).view(edge_idx.shape)
    return mask_ij * (rank_j < rank.unsqueeze(-1)).float()


def case(prefix: str, X: torch.Tensor, X_target: torch.Tensor, C: torch.Tensor, S: torch.Tensor) -> dict:
    """The reference's losses on one (prediction, target) pair; X is the first argument, as in GraphDesign.loss."""
    from chroma.layers.structure import protein_graph, sidechain

    rmsd_loss, clash_loss = sidechain.LossSideChainRMSD(), sidechain.LossSidechainClashes(NUM_NEIGHBORS)
    smooth_loss = sidechain.LossSidechainClashes(
        NUM_NEIGHBORS, use_smooth_cutoff=True, smooth_cutoff_alpha=SMOOTH_ALPHA
    )
    out = {f"{prefix}.X": X, f"{prefix}.X_target": X_target, f"{prefix}.C": C, f"{prefix}.S": S}
    edge_idx, mask_ij = protein_graph.ProteinGraph(NUM_NEIGHBORS)(X_target[:, :, :4], C)
    out[f"{prefix}.edge_idx"], out[f"{prefix}.mask_ij"] = edge_idx, mask_ij
    out[f"{prefix}.mask_ij_causal"] = causal_graph(C, edge_idx, mask_ij)
    out[f"{prefix}.mask_j"] = (torch.rand(C.shape) < 0.7).float()
    with torch.no_grad():
        out[f"{prefix}.rmsd"] = rmsd_loss(X, X_target, C, S)
        out[f"{prefix}.rmsd.no_symmetry"] = rmsd_loss(X, X_target, C, S, include_symmetry=False)
        out[f"{prefix}.clashes"] = clash_loss(X, C, S)
        out[f"{prefix}.clashes.target"] = clash_loss(X_target, C, S)
        out[f"{prefix}.clashes.causal"] = clash_loss(
            X, C, S, edge_idx=edge_idx, mask_ij=out[f"{prefix}.mask_ij_causal"]
        )
        out[f"{prefix}.clashes.mask_j"] = clash_loss(X, C, S, mask_j=out[f"{prefix}.mask_j"])
        out[f"{prefix}.clashes.smooth"] = smooth_loss(X, C, S)
    X_grad = X.clone().requires_grad_(True)
    rmsd_loss(X_grad, X_target, C, S).sum().backward()
    out[f"{prefix}.grad.rmsd"] = X_grad.grad
    X_grad = X.clone().requires_grad_(True)
    smooth_loss(X_grad, C, S).sum().backward()
    out[f"{prefix}.grad.clashes.smooth"] = X_grad.grad
    return out


def noisy_rebuild(X: torch.Tensor, C: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """The structure rebuilt by the reference's builder from its own chi plus Gaussian noise."""
    from chroma.layers.structure import sidechain

    chi, _ = sidechain.ChiAngles()(X, C, S)
    with torch.no_grad():
        X_pred, _ = sidechain.SideChainBuilder()(X[:, :, :4], C, S, chi + NOISE * torch.randn(chi.shape))
    return X_pred


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=GOLDEN / "chroma_sidechain_losses.safetensors")
    args = parser.parse_args()
    stub_modules()
    from chroma.layers.structure import sidechain

    torch.manual_seed(SEED)
    s = structures()
    out: dict[str, torch.Tensor] = {}
    X, C, S = inputs(s)
    X_ts50, C_ts50, S_ts50 = ts50_batch(s)
    out.update(case("real", noisy_rebuild(X, C, S), X, C, S))
    flip = case("flip", sidechain.SideChainSymmetryRenamer()(X, S), X, C, S)
    out.update({k: v for k, v in flip.items() if k not in ("flip.X_target", "flip.C", "flip.S")})  # real's
    out.update(case("ts50", noisy_rebuild(X_ts50, C_ts50, S_ts50), X_ts50, C_ts50, S_ts50))
    X_random, C_random, S_random = random_batch(X)
    X_random_target = X_random + 0.7 * torch.randn(X_random.shape)
    out.update(case("random", X_random, X_random_target, C_random, S_random))
    out = {k: v.detach().clone().contiguous() for k, v in out.items()}
    notes = {
        f"{p}.{k}": float(out[f"{p}.{k}"][out[f"{'real' if p == 'flip' else p}.C"] > 0].float().mean())
        for p in ("real", "flip", "ts50", "random")
        for k in ("rmsd", "rmsd.no_symmetry", "clashes", "clashes.target")
    }
    metadata = {
        "reference": "generate-chroma 1.0.0",
        "seed": str(SEED),
        "noise_rad": str(NOISE),
        "smooth_cutoff_alpha": str(SMOOTH_ALPHA),
        "num_neighbors": str(NUM_NEIGHBORS),
        "torch": torch.__version__,
        "means": json.dumps(notes),
    }
    save_file(out, str(args.out), metadata=metadata)
    print("wrote", args.out, f"({args.out.stat().st_size} bytes)")
    for k, v in notes.items():
        print(f"  mean {k}: {v:.4f}" if math.isfinite(v) else f"  {k}: {v}")


if __name__ == "__main__":
    main()
