"""Make the golden files the chroma plugin's graph tests compare against: the reference's feature graph and GNN.

The reference is generate-chroma 1.0.0 (generatebio/chroma 929407c), importable without its dependencies as
for scripts/make_chroma_structure_golden.py (whose stand-in modules this script reuses):

    .venv/bin/pip install --no-deps --target /tmp/chroma_ref generate-chroma==1.0.0
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python scripts/make_chroma_graph_golden.py

It installs and downloads nothing. Building a reference feature graph normally downloads PDB 2G3N to compute
feature-centering means; here ``ProteinFeatureGraph._load_centering_params`` is replaced, for this process only,
by one that computes the means with the reference's own ``_feature_stats`` on a real chain from the structures
golden file (1ahsA), so the centering buffers are realistic and the checkpoint carries them.

Coordinates come from plugins/chroma/tests/golden/chroma_structures.safetensors (4E43 for two-chain layouts,
1ahsA otherwise); gaps (C < 0) and padding (C = 0) are zeroed as a Protein would have them. It writes:

* ``chroma_graph_backbone.safetensors`` and ``chroma_graph_design.safetensors``: one reference
  ``BackboneEncoderGNN`` each (random weights; public-like init_kwargs in the metadata), its state dict under
  ``ref.``, inputs, graphs (deterministic random_log, injected noise, global seed; kNN), the feature graph's
  node/edge features, the GNN's outputs, and the GNN's outputs under a causal edge mask;
* ``chroma_graph_features.safetensors``: every feature layer's raw output on a small two-chain case with a gap
  and padding, plus kNN graphs under cutoff / mask_interfaces / distance_atom_type / small-protein options.
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
from make_chroma_structure_golden import stub_modules  # noqa: E402

BACKBONE_KWARGS = {  # the backbone's feature set (chroma.md 2.4, entry A) on a random_log graph
    "dim_nodes": 32,
    "dim_edges": 32,
    "num_neighbors": 16,
    "node_features": [["internal_coords", {"log_lengths": True}]],
    "edge_features": ["distances_2mer", "orientations_2mer", "orientations_chain", "distances_chain"],
    "num_layers": 3,
    "mlp_activation": "softplus",
    "dropout": 0.1,
    "graph_criterion": "random_log",
    "graph_random_min_local": 8,
}
DESIGN_KWARGS = {  # the design network's feature set (chroma.md 2.4, entry B), kNN, uneven sizes
    "dim_nodes": 40,
    "dim_edges": 24,
    "num_neighbors": 12,
    "node_features": [["internal_coords", {"log_lengths": True}]],
    "edge_features": [
        "orientations_2mer",
        "distances_chain",
        "orientations_chain",
        ["random_fourier_2mer", {"dim_embedding": 192, "trainable": False, "scale": 0.1}],
    ],
    "num_layers": 2,
    "node_mlp_layers": 2,
    "node_mlp_dim": 48,
    "edge_mlp_dim": 20,
    "mlp_activation": "relu",
    "dropout": 0.1,
    "graph_criterion": "knn",
}
RAW_FEATURES = {  # name -> (kind, spec): every layer the feature graph offers, some with options
    "internal_coords": ("node", "internal_coords"),
    "internal_coords_log": ("node", ["internal_coords", {"log_lengths": True}]),
    "internal_coords_ideality": ("node", ["internal_coords", {"include_ideality": True}]),
    "distances_2mer": ("edge", "distances_2mer"),
    "distances_2mer_ir": ("edge", ["distances_2mer", {"features": "inverse+raw"}]),
    "orientations_2mer": ("edge", "orientations_2mer"),
    "orientations_chain": ("edge", "orientations_chain"),
    "orientations_chain_inverse": ("edge", ["orientations_chain", {"feature": "inverse"}]),
    "distances_chain": ("edge", "distances_chain"),
    "random_fourier_2mer": ("edge", ["random_fourier_2mer", {"dim_embedding": 64, "scale": 0.1}]),
    "random_fourier_2mer_quat": ("edge", ["random_fourier_2mer", {"dim_embedding": 32, "use_quaternion": True}]),
}
GRAPH_OPTIONS = {  # name -> ProteinGraph kwargs for the graph-only cases
    "knn": {"num_neighbors": 8},
    "knn_cutoff": {"num_neighbors": 8, "cutoff": 9.0},
    "knn_interfaces": {"num_neighbors": 8, "mask_interfaces": True},
    "knn_ca": {"num_neighbors": 8, "distance_atom_type": 1},
    "knn_k_over_L": {"num_neighbors": 64},
    "random_log_det": {"num_neighbors": 12, "criterion": "random_log", "random_min_local": 4, "deterministic": True},
    "random_log_no_local": {"num_neighbors": 12, "criterion": "random_log", "random_min_local": 0},
    "random_linear": {"num_neighbors": 12, "criterion": "random_linear", "random_min_local": 4},
    "random_log_k_over_L": {"num_neighbors": 64, "criterion": "random_log", "random_min_local": 20},
}
SEED = 20260110


def structures() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDEN / "chroma_structures.safetensors"))


def chain_window(X: torch.Tensor, C: torch.Tensor, chain: int, n: int, near: torch.Tensor | None) -> torch.Tensor:
    """``n`` consecutive residues of ``chain``: the first ones, or those whose centroid is nearest ``near``."""
    idx = torch.nonzero(torch.eq(C, chain)).flatten()
    if near is None:
        return X[idx[:n]]
    starts = range(len(idx) - n + 1)
    dist = [float((X[idx[s : s + n], 1].mean(0) - near).norm()) for s in starts]
    best = min(starts, key=lambda s: dist[s])
    return X[idx[best : best + n]]


def layout(
    segments: list[tuple[int, int]], length: int, s: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """X, C for one batch member from ``(C value, count)`` segments; chain k's residues from 4E43 chain k.

    Chains 1 and 2 are facing windows of 4E43 chains 1 and 2 (so some edges cross the interface); chain 3 is
    from 1ahsA. Positions with C <= 0 have zero coordinates, as a Protein's XCS would.
    """
    X43, C43 = s["4E43.bb.X"][0], s["4E43.bb.C"][0]
    need: dict[int, int] = {}
    for c, n in segments:
        need[abs(c)] = need.get(abs(c), 0) + n
    pools: dict[int, torch.Tensor] = {}
    if 1 in need:
        pools[1] = chain_window(X43, C43, 1, need[1], None)
    if 2 in need:
        near = pools[1][:, 1].mean(0) if 1 in pools else None
        pools[2] = chain_window(X43, C43, 2, need[2], near)
    if 3 in need:
        pools[3] = s["1ahsA.bb.X"][0][: need[3]] + 15.0
    X = torch.zeros(length, 4, 3)
    C = torch.zeros(length, dtype=torch.long)
    pos, used = 0, dict.fromkeys(need, 0)
    for c, n in segments:
        k = abs(c)
        if c > 0:
            X[pos : pos + n] = pools[k][used[k] : used[k] + n]
        C[pos : pos + n] = c
        pos, used[k] = pos + n, used[k] + n
    return X, C


def batch(layouts: list[list[tuple[int, int]]], length: int, s) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [layout(segments, length, s) for segments in layouts]
    return torch.stack([p[0] for p in pairs]).contiguous(), torch.stack([p[1] for p in pairs]).contiguous()


def patch_centering(s: dict[str, torch.Tensor]) -> None:
    """Centering means from 1ahsA via the reference's own statistics, instead of downloading 2G3N."""
    from chroma.layers.structure import protein_graph

    X_ref, C_ref = s["1ahsA.bb.X"], s["1ahsA.bb.C"]

    def load_centering(self, reference_pdb: str) -> None:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            stats = self._feature_stats(X_ref, C_ref)
        for kind, specs in (("node", self.node_features), ("edge", self.edge_features)):
            for i, spec in enumerate(specs):
                mean = torch.tensor(stats[json.dumps(spec)], dtype=torch.float32).view(1, 1, -1)
                self.register_buffer(f"{kind}_means_{i}", mean)

    protein_graph.ProteinFeatureGraph._load_centering_params = load_centering


def encoder_case(kwargs: dict, X: torch.Tensor, C: torch.Tensor, seed: int) -> tuple[dict, dict]:
    """A reference BackboneEncoderGNN with random weights and everything the tests compare against."""
    from chroma.layers import graph as ref_graph
    from chroma.models.graph_design import BackboneEncoderGNN

    torch.manual_seed(seed)
    enc = BackboneEncoderGNN(**kwargs).eval()
    out: dict[str, torch.Tensor] = {"X": X, "C": C}
    out.update({f"ref.{k}": v.detach().clone().contiguous() for k, v in enc.state_dict().items()})
    builder = enc.feature_graph.graph_builder
    notes: dict[str, float] = {}
    with torch.no_grad():
        if builder.criterion != "knn":
            # seeded draw: the reference's rand_like(D) consumes exactly torch.rand(B, L, L) after this seed
            torch.manual_seed(seed + 1)
            out["graph.seeded.edge_idx"], out["graph.seeded.mask_ij"] = builder(X, C)
            torch.manual_seed(seed + 1)
            out["graph.seeded.noise"] = torch.rand(C.shape[0], C.shape[1], C.shape[1])
            builder.deterministic = True
        edge_idx, mask_ij = builder(X, C)
        out["graph.edge_idx"], out["graph.mask_ij"] = edge_idx, mask_ij
        node_h, edge_h, _, mask_i, mask_ij = enc.feature_graph(X, C, edge_idx, mask_ij)
        out["features.node_h"], out["features.edge_h"], out["features.mask_i"] = node_h, edge_h, mask_i
        out["gnn.node_h"], out["gnn.edge_h"] = enc.gnn(node_h, edge_h, edge_idx, mask_i, mask_ij)
        causal = ref_graph.edge_mask_causal(edge_idx, mask_ij)
        out["gnn_causal.mask_ij"] = causal
        node_c, edge_c = enc.gnn(node_h, edge_h, edge_idx, mask_i, causal)
        out["gnn_causal.node_h"], out["gnn_causal.edge_h"] = node_c, edge_c
        node_cache, edge_cache = enc.gnn.init_steps(node_h, edge_h)
        for t in range(C.shape[1]):
            node_cache, edge_cache = enc.gnn.step(t, node_cache, edge_cache, edge_idx, mask_i, causal)
        notes["ref_step_vs_parallel_node"] = float((node_cache[-1] - node_c).abs().max())
        notes["ref_step_vs_parallel_edge"] = float((edge_cache[-1] - edge_c).abs().max())
    return {k: v.contiguous() for k, v in out.items()}, notes


def raw_features_case(s) -> dict[str, torch.Tensor]:
    """Each feature layer's raw output, and graph-only cases, on small two- and three-chain layouts."""
    from chroma.layers.structure.protein_graph import ProteinFeatureGraph, ProteinGraph

    X, C = batch([[(1, 3), (-1, 1), (1, 2), (2, 4)], [(2, 1), (1, 6), (0, 3)]], 10, s)
    out: dict[str, torch.Tensor] = {"X": X, "C": C}
    with torch.no_grad():
        edge_idx, mask_ij = ProteinGraph(num_neighbors=5)(X, C)
        out["edge_idx"], out["mask_ij"] = edge_idx, mask_ij
        for name, (kind, spec) in RAW_FEATURES.items():
            fg = ProteinFeatureGraph(
                dim_nodes=8,
                dim_edges=8,
                num_neighbors=5,
                node_features=[spec] if kind == "node" else [],
                edge_features=[spec] if kind == "edge" else [],
                centered=False,
            )
            layer = (fg.node_layers if kind == "node" else fg.edge_layers)[0]
            out[f"raw.{name}"] = layer(X, edge_idx, C)
            for key, value in layer.state_dict().items():
                out[f"raw.{name}.state.{key}"] = value
        Xg, Cg = batch(
            [[(-1, 2), (1, 12), (2, 8), (-2, 2), (2, 4), (3, 6)], [(2, 16), (1, 8), (0, 10)], [(1, 9), (0, 25)]],
            34,
            s,
        )
        out["graphs.X"], out["graphs.C"] = Xg, Cg
        for name, options in GRAPH_OPTIONS.items():
            builder = ProteinGraph(**options)
            torch.manual_seed(SEED)
            edge_idx, out[f"graphs.{name}.mask_ij"] = builder(Xg, Cg)
            out[f"graphs.{name}.edge_idx"] = edge_idx.to(torch.int32)  # half the bytes; L < 2**31
            if options.get("criterion", "knn") != "knn" and not options.get("deterministic"):
                torch.manual_seed(SEED)
                out[f"graphs.{name}.noise"] = torch.rand(Cg.shape[0], Cg.shape[1], Cg.shape[1])
    return {k: v.contiguous() for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=GOLDEN)
    args = parser.parse_args()
    stub_modules()
    import chroma  # noqa: F401  (the reference, importable via PYTHONPATH)

    s = structures()
    patch_centering(s)
    meta = {"reference": "generate-chroma 1.0.0", "torch": torch.__version__}
    cases = {
        "backbone": (
            BACKBONE_KWARGS,
            batch([[(1, 12), (-1, 3), (1, 5), (2, 12)], [(1, 22), (0, 10)]], 32, s),
        ),
        "design": (
            DESIGN_KWARGS,
            batch([[(-1, 2), (1, 10), (2, 8), (-2, 2), (2, 4), (3, 6)], [(2, 16), (1, 8), (0, 8)]], 32, s),
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (name, (kwargs, (X, C))) in enumerate(cases.items()):
        tensors, notes = encoder_case(kwargs, X, C, SEED + 10 * i)
        path = args.out / f"chroma_graph_{name}.safetensors"
        save_file(tensors, str(path), metadata={**meta, "init_kwargs": json.dumps(kwargs), "notes": json.dumps(notes)})
        print("wrote", path, f"{path.stat().st_size / 1e6:.2f} MB", notes)
    path = args.out / "chroma_graph_features.safetensors"
    options = {"raw_features": json.dumps(RAW_FEATURES), "graph_options": json.dumps(GRAPH_OPTIONS)}
    save_file(raw_features_case(s), str(path), metadata={**meta, **options})
    print("wrote", path, f"{path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
