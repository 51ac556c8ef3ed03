"""Chroma's protein feature graph and graph neural network (issue 10, part 1, item 2).

:class:`ProteinFeatureGraph` turns a backbone into node and edge features on a kNN or random graph;
:class:`GraphNN` passes messages over it, in parallel or one node at a time (:meth:`GraphNN.step`).
Both are registry components (``chroma.feature_graph``, ``chroma.graph_nn``).
"""

from __future__ import annotations

from biozoo_chroma.graph.builder import ProteinGraph, knn
from biozoo_chroma.graph.feature_graph import ProteinFeatureGraph
from biozoo_chroma.graph.features import EDGE_FEATURES, NODE_FEATURES
from biozoo_chroma.graph.gnn import MLP, GraphLayer, GraphNN, MaskedNorm
from biozoo_chroma.graph.keys import convert_reference_state_dict, reference_key, split_encoder_kwargs
from biozoo_chroma.graph.ops import (
    chain_map_to_mask,
    collect_edges,
    collect_neighbors,
    edge_mask_causal,
    pack_edges,
    permute_graph_embeddings,
    permute_tensor,
)

__all__ = [
    "EDGE_FEATURES",
    "MLP",
    "NODE_FEATURES",
    "GraphLayer",
    "GraphNN",
    "MaskedNorm",
    "ProteinFeatureGraph",
    "ProteinGraph",
    "chain_map_to_mask",
    "collect_edges",
    "collect_neighbors",
    "convert_reference_state_dict",
    "edge_mask_causal",
    "knn",
    "pack_edges",
    "permute_graph_embeddings",
    "permute_tensor",
    "reference_key",
    "split_encoder_kwargs",
]
