"""The denoiser's coordinate head: the reference's ``GraphBackboneUpdate``.

From the encoder's node and edge embeddings it predicts new residue frames and builds an ideal backbone in them
(:class:`~biozoo_chroma.backbone.frames.FrameBuilder`), then (``unconstrained``) adds a per-atom offset in each
residue's new frame. Methods, as in the reference:

- ``neighbor``: every edge j -> i predicts frame i relative to frame j (quaternion, translation, weight
  logits); frames are replaced by the weighted average of their neighbours' proposals (``iterations`` times);
- ``neighbor_global``: the same with one more, virtual neighbour: a global frame (the mean of all frames);
- ``neighbor_global_affine``: the same, each prediction a learned mix of the current geometry and a new one;
- ``local``: each node predicts a transform of its own frame;
- ``none``: no frame update (only the unconstrained offsets).

Linear heads run in the module's dtype; all geometry runs in at least float32 (SVD and frame arithmetic lose
too much in half precision, and SVD has no half kernels).
"""

from __future__ import annotations

import torch
from torch import nn

from biozoo.nn.checks import ConfigError, check_int
from biozoo_chroma.backbone.frames import FrameBuilder
from biozoo_chroma.backbone.transforms import (
    DITHER_EPS,
    average_transforms,
    collect_neighbor_inner_transforms,
    collect_neighbor_transforms,
    compose_inner_transforms,
    compose_transforms,
    compose_translation,
    equilibrate_transforms,
)
from biozoo_chroma.graph.geometry import quaternions_from_rotations, rotations_from_quaternions

METHODS = ("neighbor", "neighbor_global", "neighbor_global_affine", "local", "none")
Outputs = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]


def geometry_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


class GraphBackboneUpdate(nn.Module):
    """``(X, C, node_h, edge_h, edge_idx, mask_i, mask_ij) -> (X_update, R_ji, t_ji, logit_ji)``."""

    def __init__(
        self,
        dim_nodes: int,
        dim_edges: int,
        distance_scale: float = 10.0,
        distance_eps: float = 1e-3,
        method: str = "neighbor",
        iterations: int = 1,
        unconstrained: bool = True,
        num_transform_weights: int = 1,
        black_hole_init: bool = False,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ConfigError("backbone_update_method", f"must be one of {', '.join(METHODS)}, got {method!r}")
        if method == "none" and not unconstrained:
            raise ConfigError("backbone_update_unconstrained", "must be true when backbone_update_method is 'none'")
        if num_transform_weights not in (1, 2, 3):
            raise ConfigError("backbone_update_num_weights", f"must be 1, 2 or 3, got {num_transform_weights!r}")
        self.distance_scale, self.distance_eps = float(distance_scale), float(distance_eps)
        self.method, self.iterations = method, check_int("backbone_update_iterations", iterations)
        self.unconstrained, self.black_hole_init = bool(unconstrained), bool(black_hole_init)
        self.num_transform_weights = num_transform_weights
        self.dither_eps = DITHER_EPS  # the frame-averaging dither; 0 makes the update deterministic
        self.frame_builder = FrameBuilder(distance_eps)
        if method == "local":
            self.W_q, self.W_t = nn.Linear(dim_nodes, 4), nn.Linear(dim_nodes, 3)
        elif method.startswith("neighbor"):
            if method == "neighbor_global_affine":
                self.W_s_node, self.W_s_edge = nn.Linear(dim_nodes, 2), nn.Linear(dim_edges, 2)
            self.W_q, self.W_t = nn.Linear(dim_edges, 4), nn.Linear(dim_edges, 3)
            self.W_w = nn.Linear(dim_edges, num_transform_weights)
            if method != "neighbor":
                self.W_q_global, self.W_t_global = nn.Linear(dim_nodes, 4), nn.Linear(dim_nodes, 3)
                self.W_w_global = nn.Linear(dim_nodes, num_transform_weights)
        if self.unconstrained:
            self.W_t_local = nn.Linear(dim_nodes, 12)

    # -- helpers ---------------------------------------------------------------------------------------------------

    def _head(self, layer: nn.Linear, h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return layer(h.to(layer.weight.dtype)).to(dtype)

    def _rotation(self, q: torch.Tensor) -> torch.Tensor:
        return rotations_from_quaternions(q, normalize=True, eps=self.distance_eps)

    def _frames(self, X: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        R_i, t_i, _ = self.frame_builder.inverse(X, C)
        if self.black_hole_init:  # AlphaFold-style: ignore the input geometry, start every frame at the origin
            R_i = torch.eye(3, dtype=X.dtype, device=X.device).expand(*X.shape[:2], 3, 3)
            t_i = torch.zeros(*X.shape[:2], 3, dtype=X.dtype, device=X.device)
        return R_i, t_i

    def _global_frame(
        self, R_i: torch.Tensor, t_i: torch.Tensor, mask_i: torch.Tensor, generator: torch.Generator | None, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean frame of all residues, undithered as in the reference.

        The reference still draws (and multiplies by 0) a dither here; with the dither on, the same draw is
        consumed so that later draws come in the reference's order.
        """
        if eps:
            torch.randn((R_i.shape[0], 3, 3), dtype=R_i.dtype, device=R_i.device, generator=generator)
        return average_transforms(R_i, t_i, mask_i.unsqueeze(-1), mask_i, dim=1, dither_eps=0.0)

    # -- methods ---------------------------------------------------------------------------------------------------

    def _local(self, X, C, node_h, edge_h, edge_idx, mask_i, mask_ij, generator, eps) -> Outputs:
        R_i, t_i = self._frames(X, C)
        R = self._rotation(self._head(self.W_q, node_h, X.dtype))
        t = self.distance_scale * self._head(self.W_t, node_h, X.dtype)
        R_new, t_new = compose_transforms(R_i, t_i, R, t)
        return self.frame_builder(R_new, t_new, C), None, None, None

    def _neighbor(self, X, C, node_h, edge_h, edge_idx, mask_i, mask_ij, generator, eps) -> Outputs:
        R_ji = self._rotation(self._head(self.W_q, edge_h, X.dtype))
        t_ji = self.distance_scale * self._head(self.W_t, edge_h, X.dtype)
        logit_ij = self._head(self.W_w, edge_h, X.dtype)
        R_i, t_i = self._frames(X, C)
        R_i, t_i = equilibrate_transforms(
            R_i, t_i, R_ji, t_ji, logit_ij, mask_ij.to(X.dtype), edge_idx, self.iterations,
            dither_eps=eps, generator=generator,
        )  # fmt: skip
        return self.frame_builder(R_i, t_i, C), R_ji, t_ji, None

    def _neighbor_global(self, X, C, node_h, edge_h, edge_idx, mask_i, mask_ij, generator, eps) -> Outputs:
        R_ji = self._rotation(self._head(self.W_q, edge_h, X.dtype))
        t_ji = self.distance_scale * self._head(self.W_t, edge_h, X.dtype)
        logit_ji = self._head(self.W_w, edge_h, X.dtype)
        R_gi = self._rotation(self._head(self.W_q_global, node_h, X.dtype))
        t_gi = self.distance_scale * self._head(self.W_t_global, node_h, X.dtype)
        logit_gi = self._head(self.W_w_global, node_h, X.dtype)
        R_i, t_i = self._frames(X, C)
        R_global, t_global = self._global_frame(R_i, t_i, mask_i.to(X.dtype), generator, eps)
        R_i, t_i = equilibrate_transforms(
            R_i, t_i, R_ji, t_ji, logit_ji, mask_ij.to(X.dtype), edge_idx, self.iterations,
            R_global, t_global, R_gi, t_gi, logit_gi, dither_eps=eps, generator=generator,
        )  # fmt: skip
        return self.frame_builder(R_i, t_i, C), R_ji, t_ji, logit_ji

    def _neighbor_global_affine(self, X, C, node_h, edge_h, edge_idx, mask_i, mask_ij, generator, eps) -> Outputs:
        R_init, t_init = self._frames(X, C)
        R_j, t_j = collect_neighbor_transforms(R_init, t_init, edge_idx)
        R_global, t_global = self._global_frame(R_init, t_init, mask_i.to(X.dtype), generator, eps)
        R_ji0, t_ji0 = compose_inner_transforms(R_j, t_j, R_init.unsqueeze(-3), t_init.unsqueeze(-2))
        R_gi0, t_gi0 = compose_inner_transforms(R_global.unsqueeze(1), t_global.unsqueeze(1), R_init, t_init)
        q_ji0, q_gi0 = quaternions_from_rotations(R_ji0), quaternions_from_rotations(R_gi0)
        s_node = torch.sigmoid(self._head(self.W_s_node, node_h, X.dtype).unsqueeze(-1)).unbind(-2)
        s_edge = torch.sigmoid(self._head(self.W_s_edge, edge_h, X.dtype).unsqueeze(-1)).unbind(-2)
        d = self.distance_scale
        q_ji = s_edge[0] * q_ji0 + (1.0 - s_edge[0]) * self._head(self.W_q, edge_h, X.dtype)
        t_ji = s_edge[1] * t_ji0 + (1.0 - s_edge[1]) * d * self._head(self.W_t, edge_h, X.dtype)
        q_gi = s_node[0] * q_gi0 + (1.0 - s_node[0]) * self._head(self.W_q_global, node_h, X.dtype)
        t_gi = s_node[1] * t_gi0 + (1.0 - s_node[1]) * d * self._head(self.W_t_global, node_h, X.dtype)
        logit_ji = self._head(self.W_w, edge_h, X.dtype)
        logit_gi = self._head(self.W_w_global, node_h, X.dtype)
        R_ji = self._rotation(q_ji)
        R_i, t_i = equilibrate_transforms(
            R_init, t_init, R_ji, t_ji, logit_ji, mask_ij.to(X.dtype), edge_idx, self.iterations,
            R_global, t_global, self._rotation(q_gi), t_gi, logit_gi, dither_eps=eps,
            generator=generator,
        )  # fmt: skip
        return self.frame_builder(R_i, t_i, C), R_ji, t_ji, logit_ji

    def inner_transforms(self, X: torch.Tensor, C: torch.Tensor, edge_idx: torch.Tensor):
        """The true ``(R_ji, t_ji)`` of a backbone on a graph (what ``R_ji``/``t_ji`` predict; for losses)."""
        R_i, t_i = self._frames(X, C)
        return collect_neighbor_inner_transforms(R_i, t_i, edge_idx)

    def forward(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        node_h: torch.Tensor,
        edge_h: torch.Tensor,
        edge_idx: torch.Tensor,
        mask_i: torch.Tensor,
        mask_ij: torch.Tensor,
        generator: torch.Generator | None = None,
        dither_eps: float | None = None,
    ) -> Outputs:
        """Update ``X``; ``dither_eps`` overrides :attr:`dither_eps` (the frame-averaging dither) for this call."""
        eps = self.dither_eps if dither_eps is None else float(dither_eps)
        X = X.to(geometry_dtype(X.dtype))
        if self.method == "none":
            X_update, R_ji, t_ji, logit_ji = X, None, None, None
        else:
            method = getattr(self, "_" + self.method)
            X_update, R_ji, t_ji, logit_ji = method(X, C, node_h, edge_h, edge_idx, mask_i, mask_ij, generator, eps)
        if self.unconstrained:  # offsets from the ideal geometry, in each residue's new frame
            R_i, _, _ = self.frame_builder.inverse(X_update, C)
            t_local = self._head(self.W_t_local, node_h, X.dtype).reshape(X.shape)
            dX = compose_translation(R_i.unsqueeze(-3), torch.zeros_like(t_local), t_local)
            if self.training:  # the reference drops the offsets for a random half of the batch while training
                keep = torch.randint(0, 2, (C.shape[0], 1, 1, 1), device=X.device, generator=generator) > 0
                dX = keep.to(dX.dtype) * dX
            X_update = X_update + dX
        return X_update, R_ji, t_ji, logit_ji
