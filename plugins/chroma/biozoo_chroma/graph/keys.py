"""From the reference's state-dict keys to these modules' keys, for the feature graph and the graph network.

The module trees mirror the reference's, so almost every key is kept as is (under any prefix, e.g.
``encoders.0.feature_graph.`` or ``decoder.gnn.``). Two kinds of keys differ:

* ``*.node_norm_layer.weights`` / ``*.edge_norm_layer.weights`` become ``.weight`` (the LayerNorm convention);
* ``*.frame_builder._t_atom`` / ``*.frame_builder._R_atom`` (inside ``random_fourier_2mer`` layers and the
  backbone model's ``backbone_updates.{c}``) are constant tables (ideal backbone fragment, identity), and the
  backbone model's ``*.rmsd.R_to_F`` (under ``noise_perturb.`` and ``loss_diffusion.``) the constant map from
  a 3x3 cross-covariance to Kabsch's 4x4 quaternion matrix; they are checked to hold those constants and
  dropped (the code holds them as constants).

A converter applies :func:`convert_reference_state_dict` and then loads with ``strict=True``, so any other
difference is an error instead of the reference's silent ``strict=False``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

import torch

RENAMED_SUFFIXES = {
    "node_norm_layer.weights": "node_norm_layer.weight",
    "edge_norm_layer.weights": "edge_norm_layer.weight",
}


@cache
def dropped_constants() -> dict[str, torch.Tensor]:
    """The reference's constant buffers we rebuild instead of loading: its FrameBuilder's ideal N, CA, C fragment
    and identity rotation, and its Kabsch helper's quaternion map (built on first use: ``superposition`` imports
    ``graph.geometry``, so importing it here at module level would be a cycle)."""
    from biozoo_chroma.superposition import quaternion_matrix

    return {
        "frame_builder._t_atom": torch.tensor([[1.459, 0.0, 0.0], [0.0, 0.0, 0.0], [-0.547, 0.0, -1.424]]).reshape(
            1, 1, 3, 3
        ),
        "frame_builder._R_atom": torch.eye(3).reshape(1, 1, 1, 3, 3),
        # Row 3 r + c: the 4x4 quaternion matrix of the cross-covariance with a single 1 at (r, c).
        "rmsd.R_to_F": quaternion_matrix(torch.eye(9).reshape(9, 3, 3)).reshape(9, 16),
    }


def _ends_with(key: str, suffix: str) -> bool:
    """``key`` is ``suffix`` or ends with ``.suffix`` (any module prefix)."""
    return key == suffix or key.endswith("." + suffix)


def reference_key(key: str) -> str | None:
    """Our key for a reference key; ``None`` for a dropped constant."""
    if any(_ends_with(key, suffix) for suffix in dropped_constants()):
        return None
    for old, new in RENAMED_SUFFIXES.items():
        if _ends_with(key, old):
            return key[: len(key) - len(old)] + new
    return key


def convert_reference_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the reference's keys; refuse a dropped constant that does not hold its constant value."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = reference_key(key)
        if new is None:
            suffix = next(s for s in dropped_constants() if _ends_with(key, s))
            expected = dropped_constants()[suffix]
            if value.shape != expected.shape or not torch.equal(value.float().cpu(), expected):
                raise ValueError(f"{key} is not the constant table it should be; the checkpoint is not Chroma's")
            continue
        out[new] = value
    return out


# BackboneEncoderGNN's constructor defaults: what a checkpoint's init_kwargs leave out means these.
ENCODER_DEFAULTS: dict[str, object] = {
    "dim_nodes": 128,
    "dim_edges": 128,
    "num_neighbors": 30,
    "node_features": [["internal_coords", {"log_lengths": True}]],
    "edge_features": ["distances_2mer", "orientations_2mer", "distances_chain"],
    "num_layers": 3,
    "node_mlp_layers": 1,
    "node_mlp_dim": None,
    "edge_update": True,
    "edge_mlp_layers": 1,
    "edge_mlp_dim": None,
    "skip_connect_input": False,
    "mlp_activation": "softplus",
    "dropout": 0.1,
    "graph_distance_atom_type": -1,
    "graph_cutoff": None,
    "graph_mask_interfaces": False,
    "graph_criterion": "knn",
    "graph_random_min_local": 20,
    "checkpoint_gradients": False,
}


def split_encoder_kwargs(init_kwargs: Mapping[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    """A reference encoder's init_kwargs -> ``(ProteinFeatureGraph kwargs, GraphNN kwargs)``.

    The reference's ``BackboneEncoderGNN`` is exactly a feature graph followed by a GNN with the LayerNorm
    ("transformer") norm and messages divided by ``num_neighbors``; keys it does not read are ignored, as it does.
    """
    a = {**ENCODER_DEFAULTS, **{k: v for k, v in init_kwargs.items() if k in ENCODER_DEFAULTS}}
    graph = {
        "distance_atom_type": a["graph_distance_atom_type"],
        "cutoff": a["graph_cutoff"],
        "mask_interfaces": a["graph_mask_interfaces"],
        "criterion": a["graph_criterion"],
        "random_min_local": a["graph_random_min_local"],
    }
    feature_graph = {
        "dim_nodes": a["dim_nodes"],
        "dim_edges": a["dim_edges"],
        "num_neighbors": a["num_neighbors"],
        "graph_kwargs": graph,
        "node_features": a["node_features"],
        "edge_features": a["edge_features"],
    }
    gnn = {
        "num_layers": a["num_layers"],
        "dim_nodes": a["dim_nodes"],
        "dim_edges": a["dim_edges"],
        "node_mlp_layers": a["node_mlp_layers"],
        "node_mlp_dim": a["node_mlp_dim"],
        "edge_update": a["edge_update"],
        "edge_mlp_layers": a["edge_mlp_layers"],
        "edge_mlp_dim": a["edge_mlp_dim"],
        "mlp_activation": a["mlp_activation"],
        "dropout": a["dropout"],
        "norm": "transformer",
        "scale": a["num_neighbors"],
        "skip_connect_input": a["skip_connect_input"],
        "checkpoint_gradients": a["checkpoint_gradients"],
    }
    return feature_graph, gnn
