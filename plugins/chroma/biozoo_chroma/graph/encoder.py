"""The reference's ``BackboneEncoderGNN``: a feature graph, optional auxiliary embeddings added, then a GNN.

Both Chroma networks encode a backbone this way (the denoiser once per graph cycle, the design network once).
The children are named ``feature_graph`` and ``gnn`` as in the reference, so checkpoint keys map one to one
(through :func:`~biozoo_chroma.graph.keys.convert_reference_state_dict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from biozoo_chroma.graph.feature_graph import ProteinFeatureGraph
from biozoo_chroma.graph.gnn import GraphNN
from biozoo_chroma.graph.keys import split_encoder_kwargs


class GraphEncoder(nn.Module):
    """``(X, C) -> (node_h, edge_h, edge_idx, mask_i, mask_ij)``, configured by the reference's encoder kwargs."""

    def __init__(self, **init_kwargs: Any) -> None:
        super().__init__()
        feature_kwargs, gnn_kwargs = split_encoder_kwargs(init_kwargs)
        self.feature_graph = ProteinFeatureGraph(**feature_kwargs)
        self.gnn = GraphNN(**gnn_kwargs)

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> GraphEncoder:
        return cls(**dict(kwargs))

    def forward(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        node_h_aux: torch.Tensor | None = None,
        edge_h_aux: torch.Tensor | None = None,
        edge_idx: torch.Tensor | None = None,
        mask_ij: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode; auxiliary embeddings (time features, a previous cycle's outputs) are added under the masks."""
        node_h, edge_h, edge_idx, mask_i, mask_ij = self.feature_graph(
            X, C, edge_idx, mask_ij, generator=generator
        )
        if node_h_aux is not None:
            node_h = node_h + mask_i.unsqueeze(-1) * node_h_aux.to(node_h.dtype)
        if edge_h_aux is not None:
            edge_h = edge_h + mask_ij.unsqueeze(-1) * edge_h_aux.to(edge_h.dtype)
        node_h, edge_h = self.gnn(node_h, edge_h, edge_idx, mask_i, mask_ij)
        return node_h, edge_h, edge_idx, mask_i, mask_ij
