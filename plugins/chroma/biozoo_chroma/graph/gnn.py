"""Chroma's graph neural network: message passing with node and edge updates, and its one-node step mode.

Each layer normalises nodes and edges (a LayerNorm per vector, then the mask), computes a message on every
edge from ``[h_i, h_j, e_ij]``, sums the messages and divides by ``scale`` (the encoders use the neighbour
count), updates nodes residually from ``[h_i, message]``, then edges residually from the *updated* nodes and the
normalised edges. :meth:`GraphNN.step` recomputes node ``t`` only, from caches of every layer's input; under a
causal edge mask (:func:`~biozoo_chroma.graph.ops.edge_mask_causal`) stepping through ``t = 0..L-1`` equals
the parallel forward, which is what autoregressive decoding relies on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from biozoo.components.base import Component
from biozoo.components.ports import Port, Ports
from biozoo.nn.checks import ConfigError, check_int, check_positive, check_probability
from biozoo.plugins.declarations import ComponentKind
from biozoo_chroma.graph.feature_graph import EDGE_H, EDGE_IDX, EDGE_MASK, NODE_H, NODE_MASK
from biozoo_chroma.graph.ops import collect_neighbors, pack_edges_step

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "softplus": nn.Softplus}


class MLP(nn.Module):
    """``Linear -> act -> Dropout`` repeated ``num_layers_hidden`` times, then ``Linear``.

    Kept as one ``nn.Sequential`` named ``layers`` so parameter names (``layers.0``, ``layers.3``) are the
    reference's.
    """

    def __init__(
        self,
        dim_in: int,
        dim_hidden: int | None = None,
        dim_out: int | None = None,
        num_layers_hidden: int = 1,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError("mlp_activation", f"must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        dim_out = dim_in if dim_out is None else dim_out
        dim_hidden = dim_out if dim_hidden is None else check_int("mlp_dim", dim_hidden)
        check_int("mlp_layers", num_layers_hidden, minimum=0)
        layers: list[nn.Module] = []
        d = dim_in
        for _ in range(num_layers_hidden):
            layers += [nn.Linear(d, dim_hidden), ACTIVATIONS[activation](), nn.Dropout(dropout)]
            d = dim_hidden
        self.layers = nn.Sequential(*layers, nn.Linear(d, dim_out))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.layers(h)

    def on_edges(self, node_h: torch.Tensor, edge_h: torch.Tensor, edge_idx: torch.Tensor) -> torch.Tensor:
        """``self(pack_edges(node_h, edge_h, edge_idx))`` without building the packed ``[h_i, h_j, e_ij]``.

        The first linear map splits by input block: its ``h_i`` and ``h_j`` blocks are applied once per node
        and gathered, only the ``e_ij`` block once per edge. With K neighbours that is about a third of the
        first layer's work and none of the packed tensor's memory traffic; equal up to summation order.
        """
        first, d = self.layers[0], node_h.shape[-1]
        W = first.weight
        h = F.linear(edge_h, W[:, 2 * d :])
        h = h + collect_neighbors(F.linear(node_h, W[:, d : 2 * d]), edge_idx)
        h = h + F.linear(node_h, W[:, :d], first.bias).unsqueeze(2)
        return self.layers[1:](h)


class MaskedNorm(nn.Module):
    """The reference's ``MaskedNorm(norm="transformer")``: LayerNorm over features, affine, then the mask.

    The statistics are per vector, so masks do not enter them; the reference's other norms ("instance",
    "layer") are used by no Chroma model and are not offered.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = check_positive("eps", eps)
        self.weight = nn.Parameter(torch.rand(num_features))  # the reference's init; checkpoints replace it
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = F.layer_norm(h, h.shape[-1:], self.weight, self.bias, self.eps)
        if mask is not None:
            out = out * (mask != 0).to(out.dtype).unsqueeze(-1)
        return out


class GraphLayer(nn.Module):
    """One message-passing layer (see the module docstring); ``forward`` for all nodes, ``step`` for one."""

    def __init__(
        self,
        dim_nodes: int,
        dim_edges: int,
        node_mlp_layers: int = 1,
        node_mlp_dim: int | None = None,
        edge_update: bool = True,
        edge_mlp_layers: int = 1,
        edge_mlp_dim: int | None = None,
        mlp_activation: str = "relu",
        dropout: float = 0.0,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.dim_nodes, self.scale, self.edge_update = dim_nodes, check_positive("scale", scale), bool(edge_update)
        mlp = {"activation": mlp_activation, "dropout": dropout}
        self.node_norm_layer = MaskedNorm(dim_nodes)
        # As in the reference, the message MLP is sized by the edge MLP options.
        self.message_mlp = MLP(2 * dim_nodes + dim_edges, edge_mlp_dim, dim_nodes, edge_mlp_layers, **mlp)
        self.update_mlp = MLP(2 * dim_nodes, node_mlp_dim, dim_nodes, node_mlp_layers, **mlp)
        self.edge_norm_layer = MaskedNorm(dim_edges)
        if self.edge_update:
            self.edge_mlp = MLP(2 * dim_nodes + dim_edges, edge_mlp_dim, dim_edges, edge_mlp_layers, **mlp)

    def _node_update(
        self,
        node_h_i: torch.Tensor,
        node_norm_i: torch.Tensor,
        messages: torch.Tensor,
        mask_i: torch.Tensor | None,
        mask_ij: torch.Tensor | None,
    ) -> torch.Tensor:
        """Residual node update from the messages on its edges (``message_mlp``'s outputs, before masking)."""
        if mask_ij is not None:
            messages = messages * mask_ij.unsqueeze(-1)
        out = node_h_i + self.update_mlp(torch.cat([node_norm_i, messages.sum(2) / self.scale], -1))
        return out if mask_i is None else out * mask_i.unsqueeze(-1)

    def _edge_update(
        self, edge_h: torch.Tensor, packed: torch.Tensor, mask_ij: torch.Tensor | None
    ) -> torch.Tensor:
        out = edge_h + self.edge_mlp(packed)
        return out if mask_ij is None else out * mask_ij.unsqueeze(-1)

    def forward(
        self,
        node_h: torch.Tensor,
        edge_h: torch.Tensor,
        edge_idx: torch.Tensor,
        mask_i: torch.Tensor | None = None,
        mask_ij: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        node_norm = self.node_norm_layer(node_h, mask_i)
        edge_norm = self.edge_norm_layer(edge_h, mask_ij)
        if mask_i is not None:
            mask_i = (mask_i != 0).to(node_h.dtype)
        if mask_ij is not None:
            mask_ij = (mask_ij != 0).to(node_h.dtype)
        messages = self.message_mlp.on_edges(node_norm, edge_norm, edge_idx)
        node_out = self._node_update(node_h, node_norm, messages, mask_i, mask_ij)
        if not self.edge_update:
            return node_out, None
        out = edge_h + self.edge_mlp.on_edges(node_out, edge_norm, edge_idx)
        return node_out, out if mask_ij is None else out * mask_ij.unsqueeze(-1)

    def step(
        self,
        t: int,
        node_h: torch.Tensor,
        node_h_out: torch.Tensor,
        edge_h: torch.Tensor,
        edge_idx: torch.Tensor,
        mask_i: torch.Tensor,
        mask_ij: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs at node ``t`` (``[B, 1, D]``, ``[B, 1, K, D]``) from this layer's inputs and earlier outputs.

        ``node_h`` and ``edge_h`` are the layer's inputs for all nodes; ``node_h_out`` holds its outputs for the
        nodes already stepped (the edge update reads them at the neighbours).
        """
        sl = slice(t, t + 1)
        node_t, edge_t, idx_t = node_h[:, sl], edge_h[:, sl], edge_idx[:, sl]
        mask_i_t, mask_ij_t = (mask_i[:, sl] != 0).to(node_h.dtype), (mask_ij[:, sl] != 0).to(node_h.dtype)
        node_norm_t = self.node_norm_layer(node_t, mask_i_t)
        edge_norm_t = self.edge_norm_layer(edge_t, mask_ij_t)
        # Neighbours are normalised after gathering (only node t's own tensors were normalised above).
        packed = mask_ij_t.unsqueeze(-1) * pack_edges_step(t, node_h, edge_norm_t, idx_t)
        d = self.dim_nodes
        nodes_ij = self.node_norm_layer(packed[..., : 2 * d].unflatten(-1, (2, d)), mask_ij_t.unsqueeze(-1))
        packed = torch.cat([nodes_ij.flatten(-2), packed[..., 2 * d :]], -1)
        node_out_t = self._node_update(node_t, node_norm_t, self.message_mlp(packed), mask_i_t, mask_ij_t)
        if not self.edge_update:
            return node_out_t, edge_t
        node_h_out = node_h_out.clone()
        node_h_out[:, sl] = node_out_t
        return node_out_t, self._edge_update(edge_t, pack_edges_step(t, node_h_out, edge_norm_t, idx_t), mask_ij_t)


class GraphNN(Component):
    """Chroma's ``GraphNN``: a stack of :class:`GraphLayer` with masks re-applied after every layer."""

    kind = ComponentKind.ENCODER

    def __init__(
        self,
        num_layers: int,
        dim_nodes: int,
        dim_edges: int,
        node_mlp_layers: int = 1,
        node_mlp_dim: int | None = None,
        edge_update: bool = True,
        edge_mlp_layers: int = 1,
        edge_mlp_dim: int | None = None,
        mlp_activation: str = "relu",
        dropout: float = 0.0,
        norm: str = "transformer",
        scale: float = 1.0,
        skip_connect_input: bool = False,
        checkpoint_gradients: bool = False,
    ) -> None:
        super().__init__()
        if norm != "transformer":
            raise ConfigError("norm", f"only 'transformer' (per-vector LayerNorm) is supported, got {norm!r}")
        self.num_layers = check_int("num_layers", num_layers)
        self.dim_nodes, self.dim_edges = check_int("dim_nodes", dim_nodes), check_int("dim_edges", dim_edges)
        check_probability("dropout", dropout)
        self.skip_connect_input, self.checkpoint_gradients = bool(skip_connect_input), bool(checkpoint_gradients)
        self.layers = nn.ModuleList(
            GraphLayer(
                dim_nodes,
                dim_edges,
                node_mlp_layers,
                node_mlp_dim,
                edge_update,
                edge_mlp_layers,
                edge_mlp_dim,
                mlp_activation,
                dropout,
                scale,
            )
            for _ in range(num_layers)
        )

    def ports(self) -> Ports:
        dn, de = self.dim_nodes, self.dim_edges
        return Ports(
            inputs=(
                Port("node_h", NODE_H, ("B", "L", dn)),
                Port("edge_h", EDGE_H, ("B", "L", "K", de)),
                Port("edge_idx", EDGE_IDX, ("B", "L", "K")),
                Port("mask_i", NODE_MASK, ("B", "L"), optional=True),
                Port("mask_ij", EDGE_MASK, ("B", "L", "K"), optional=True),
            ),
            outputs=(Port("node_h", NODE_H, ("B", "L", dn)), Port("edge_h", EDGE_H, ("B", "L", "K", de))),
        )

    def forward(
        self,
        node_h: torch.Tensor,
        edge_h: torch.Tensor,
        edge_idx: torch.Tensor,
        mask_i: torch.Tensor | None = None,
        mask_ij: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        node_init, edge_init = node_h, edge_h
        keep_i = None if mask_i is None else (mask_i != 0).to(node_h.dtype).unsqueeze(-1)
        keep_ij = None if mask_ij is None else (mask_ij != 0).to(edge_h.dtype).unsqueeze(-1)
        for layer in self.layers:
            if self.skip_connect_input:
                node_h, edge_h = node_h + node_init, edge_h + edge_init
            if self.checkpoint_gradients and torch.is_grad_enabled():
                node_h, new_edge_h = checkpoint(layer, node_h, edge_h, edge_idx, mask_i, mask_ij, use_reentrant=False)
            else:
                node_h, new_edge_h = layer(node_h, edge_h, edge_idx, mask_i, mask_ij)
            edge_h = new_edge_h if new_edge_h is not None else edge_h
            if self.skip_connect_input:
                node_h, edge_h = node_h - node_init, edge_h - edge_init
            if keep_i is not None:
                node_h = node_h * keep_i
            if keep_ij is not None:
                edge_h = edge_h * keep_ij
        return node_h, edge_h

    def init_steps(self, node_h: torch.Tensor, edge_h: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Caches for :meth:`step`: every layer's input (and the last output), all set to the first input."""
        n = len(self.layers) + 1
        return [node_h.clone() for _ in range(n)], [edge_h.clone() for _ in range(n)]

    def step(
        self,
        t: int,
        node_h_cache: list[torch.Tensor],
        edge_h_cache: list[torch.Tensor],
        edge_idx: torch.Tensor,
        mask_i: torch.Tensor,
        mask_ij: torch.Tensor,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Update node ``t`` through every layer, writing into the caches in place (and returning them)."""
        if self.skip_connect_input:
            raise NotImplementedError("step mode with skip_connect_input (the reference has none either)")
        for i, layer in enumerate(self.layers):
            node_t, edge_t = layer.step(
                t, node_h_cache[i], node_h_cache[i + 1], edge_h_cache[i], edge_idx, mask_i, mask_ij
            )
            node_h_cache[i + 1][:, t : t + 1] = node_t
            edge_h_cache[i + 1][:, t : t + 1] = edge_t
        return node_h_cache, edge_h_cache

    def sequential(
        self,
        tensors: dict[str, torch.Tensor | list[torch.Tensor]],
        pre_step_function: Callable[[int, dict], dict] | None = None,
        post_step_function: Callable[[int, dict], dict] | None = None,
    ) -> dict:
        """Step through nodes ``0..L-1`` with optional callbacks around each step (the reference's API).

        ``tensors`` holds ``node_h``, ``edge_h``, ``edge_idx``, ``mask_i``, ``mask_ij``; the caches are added as
        ``node_h_cache`` / ``edge_h_cache`` (their last entries are the outputs).
        """
        tensors["node_h_cache"], tensors["edge_h_cache"] = self.init_steps(tensors["node_h"], tensors["edge_h"])
        for t in range(tensors["node_h"].shape[1]):
            if pre_step_function is not None:
                tensors = pre_step_function(t, tensors)
            tensors["node_h_cache"], tensors["edge_h_cache"] = self.step(
                t,
                tensors["node_h_cache"],
                tensors["edge_h_cache"],
                tensors["edge_idx"],
                tensors["mask_i"],
                tensors["mask_ij"],
            )
            if post_step_function is not None:
                tensors = post_step_function(t, tensors)
        return tensors
