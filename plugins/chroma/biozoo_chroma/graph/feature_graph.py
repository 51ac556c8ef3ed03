"""The protein feature graph: backbone ``X`` and chain map ``C`` in, a featurised sparse graph out.

It builds the graph (:class:`ProteinGraph`), runs each configured node and edge feature layer, subtracts that
layer's centering means and projects it with its own linear map, and sums the projections. The centering means
are buffers (``node_means_{i}``, ``edge_means_{i}``): the reference computes them on first use from PDB 2G3N,
downloaded; here they are zeros until a checkpoint (or a test) sets them, and nothing is ever downloaded.

Geometry runs in at least float32 whatever the module's dtype (squared distances overflow float16 beyond
256 Å), and the constant buffers (centering means, Fourier frequencies, RBF centres) stay float32 when the
module is cast to float16 / bfloat16; the projections and everything after them run in the module's dtype.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from biozoo.components.base import Component
from biozoo.components.ports import Port, Ports
from biozoo.nn.checks import ConfigError, check_int
from biozoo.plugins.declarations import ComponentKind
from biozoo_chroma.graph.builder import ProteinGraph
from biozoo_chroma.graph.features import EDGE_FEATURES, NODE_FEATURES, Float32Buffers
from biozoo_chroma.graph.ops import chain_map_to_mask, collect_neighbors

# Port meanings shared by the chroma graph components.
BACKBONE, CHAIN_MAP = "protein-backbone-coordinates", "protein-chain-map"
NODE_H, EDGE_H, EDGE_IDX = "graph-node-features", "graph-edge-features", "graph-edge-index"
NODE_MASK, EDGE_MASK = "graph-node-mask", "graph-edge-mask"

FeatureSpec = str | Sequence[Any]


def parse_feature(spec: FeatureSpec, table: Mapping[str, type[nn.Module]], field: str) -> nn.Module:
    """Build a feature layer from ``"name"`` or ``("name", {options})`` (a list, as JSON gives it, works too)."""
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, Sequence) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], Mapping):
        name, options = spec[0], dict(spec[1])
    else:
        raise ConfigError(field, f"entries must be 'name' or ['name', {{options}}], got {spec!r}")
    if name not in table:
        raise ConfigError(field, f"has unknown feature {name!r}; known: {', '.join(table)}")
    try:
        return table[name](**options)
    except TypeError as e:  # an option the layer does not take
        raise ConfigError(field, f"feature {name!r}: {e}") from None


def _canonical(spec: FeatureSpec) -> Any:
    """A feature spec as plain JSON-able data (tuples become lists), for the config the component reports."""
    return spec if isinstance(spec, str) else [spec[0], dict(spec[1])]


class ProteinFeatureGraph(Float32Buffers, Component):
    """Chroma's ``ProteinFeatureGraph``: ``(X, C) -> (node_h, edge_h, edge_idx, mask_i, mask_ij)``.

    Defaults are those of the reference's backbone encoder (``BackboneEncoderGNN``), whose constructor is what
    checkpoints configure. ``graph_kwargs`` are :class:`ProteinGraph`'s arguments except ``num_neighbors``.
    """

    kind = ComponentKind.ENCODER

    def __init__(
        self,
        dim_nodes: int = 128,
        dim_edges: int = 128,
        num_neighbors: int = 30,
        graph_kwargs: Mapping[str, Any] | None = None,
        node_features: Sequence[FeatureSpec] = (("internal_coords", {"log_lengths": True}),),
        edge_features: Sequence[FeatureSpec] = ("distances_2mer", "orientations_2mer", "distances_chain"),
        centered: bool = True,
    ) -> None:
        super().__init__()
        self.dim_nodes, self.dim_edges = check_int("dim_nodes", dim_nodes), check_int("dim_edges", dim_edges)
        self.num_neighbors = check_int("num_neighbors", num_neighbors)
        if isinstance(node_features, str) or isinstance(edge_features, str):
            raise ConfigError("node_features", "and edge_features must be lists of feature specs, not one string")
        if not node_features or not edge_features:
            raise ConfigError("node_features", "and edge_features must each name at least one feature")
        try:
            self.graph_builder = ProteinGraph(num_neighbors, **dict(graph_kwargs or {}))
        except TypeError as e:  # an argument the graph builder does not take
            raise ConfigError("graph_kwargs", str(e)) from None
        self.node_layers = nn.ModuleList([parse_feature(s, NODE_FEATURES, "node_features") for s in node_features])
        self.edge_layers = nn.ModuleList([parse_feature(s, EDGE_FEATURES, "edge_features") for s in edge_features])
        self.node_features = [_canonical(s) for s in node_features]  # as validated JSON, for reporting
        self.edge_features = [_canonical(s) for s in edge_features]
        self.centered = bool(centered)
        if self.centered:  # zeros until a checkpoint provides them (the reference's come from PDB 2G3N)
            for i, layer in enumerate(self.node_layers):
                self.register_buffer(f"node_means_{i}", torch.zeros(1, 1, layer.dim_out))
            for i, layer in enumerate(self.edge_layers):
                self.register_buffer(f"edge_means_{i}", torch.zeros(1, 1, layer.dim_out))
        self.node_linears = nn.ModuleList([nn.Linear(layer.dim_out, dim_nodes) for layer in self.node_layers])
        self.edge_linears = nn.ModuleList([nn.Linear(layer.dim_out, dim_edges) for layer in self.edge_layers])

    def ports(self) -> Ports:
        dn, de = self.dim_nodes, self.dim_edges
        return Ports(
            inputs=(
                Port("X", BACKBONE, ("B", "L", 4, 3), "backbone N, CA, C, O"),
                Port("C", CHAIN_MAP, ("B", "L"), "chain k+1; -(k+1) without structure; 0 padding"),
                Port("edge_idx", EDGE_IDX, ("B", "L", "K"), "a given graph instead of building one", optional=True),
                Port("mask_ij", EDGE_MASK, ("B", "L", "K"), "its edge mask", optional=True),
            ),
            outputs=(
                Port("node_h", NODE_H, ("B", "L", dn)),
                Port("edge_h", EDGE_H, ("B", "L", "K", de), "K = min(num_neighbors, L)"),
                Port("edge_idx", EDGE_IDX, ("B", "L", "K")),
                Port("mask_i", NODE_MASK, ("B", "L")),
                Port("mask_ij", EDGE_MASK, ("B", "L", "K")),
            ),
        )

    def features(
        self, X: torch.Tensor, C: torch.Tensor, edge_idx: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each layer's raw features (before centering), in the geometry dtype; for inspection and tests."""
        Xg = X.to(torch.promote_types(X.dtype, torch.float32))
        return [layer(Xg, edge_idx, C) for layer in self.node_layers], [
            layer(Xg, edge_idx, C) for layer in self.edge_layers
        ]

    def _project(
        self, raw: list[torch.Tensor], linears: Sequence[nn.Module], prefix: str, first: int = 0
    ) -> torch.Tensor:
        out = None
        for i, (h, linear) in enumerate(zip(raw, linears, strict=True), start=first):
            if self.centered:
                h = h - getattr(self, f"{prefix}_means_{i}").to(h.dtype)
            h = linear(h.to(linear.weight.dtype))
            out = h if out is None else out + h
        assert out is not None  # the constructor requires at least one layer of each kind
        return out

    def _project_edges_fused(self, Xg: torch.Tensor, C: torch.Tensor, edge_idx: torch.Tensor) -> torch.Tensor:
        """The edge projections, through a layer's own ``project`` where it has one (without autograd)."""
        out = None
        for i, (layer, linear) in enumerate(zip(self.edge_layers, self.edge_linears, strict=True)):
            fused = getattr(layer, "project", None)
            if fused is None:
                h = self._project([layer(Xg, edge_idx, C)], [linear], "edge", first=i)
            else:
                h = fused(Xg, edge_idx, C, linear, getattr(self, f"edge_means_{i}") if self.centered else None)
            out = h if out is None else out.add_(h)
        assert out is not None  # the constructor requires at least one edge layer
        return out

    def forward(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        edge_idx: torch.Tensor | None = None,
        mask_ij: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Featurise; a given ``edge_idx`` is used as is (its ``mask_ij`` defaults to both ends present).

        ``noise`` / ``generator`` go to the random graph builders (:meth:`ProteinGraph.forward`).
        """
        Xg = X.to(torch.promote_types(X.dtype, torch.float32))
        if edge_idx is None:
            edge_idx, mask_ij = self.graph_builder(Xg, C, noise=noise, generator=generator)
        elif mask_ij is None:
            mask = chain_map_to_mask(C, Xg.dtype).unsqueeze(-1)
            mask_ij = (mask.unsqueeze(2) * collect_neighbors(mask, edge_idx)).squeeze(-1)
        if torch.is_grad_enabled():  # training: the plain path, which autograd follows
            node_raw, edge_raw = self.features(Xg, C, edge_idx)
            node_h = self._project(node_raw, self.node_linears, "node")
            edge_h = self._project(edge_raw, self.edge_linears, "edge")
        else:
            node_h = self._project([layer(Xg, edge_idx, C) for layer in self.node_layers], self.node_linears, "node")
            edge_h = self._project_edges_fused(Xg, C, edge_idx)
        mask_i = chain_map_to_mask(C, node_h.dtype)
        mask_ij = mask_ij.to(edge_h.dtype)
        return mask_i.unsqueeze(-1) * node_h, mask_ij.unsqueeze(-1) * edge_h, edge_idx, mask_i, mask_ij
