"""The order in which autoregressive design decodes residues: a random, spatially smooth traversal.

A random left-to-right order would make each residue's already-decoded neighbours a random subset of its
structural environment. Chroma (``ProteinTraversalSpatial``) instead draws a uniform key per residue, smooths
the keys over the structure's kNN graph a few times (each step mixes a key with its neighbours' mean), and decodes
in increasing key order: residues close in space get close keys, so decoding grows in spatially coherent
patches. A ``priority`` per residue is added to the keys, so integer priority groups decode in order (design
puts the clamped residues, priority 0, before the designed ones, priority 1).

Randomness: the keys, then (with ``smooth_randomize``) the smoothing strength ``alpha ~ U(0, 1)``, both from one
``torch.Generator`` in that order; a CPU generator seeded like the reference's global generator gives the
reference's permutation. ``deterministic=True`` is the reference's fixed-seed mode (seed 10, one key vector
shared by the batch, ``alpha = smooth_alpha``).
"""

from __future__ import annotations

import torch
from torch import nn

from biozoo.nn.checks import check_int, check_probability
from biozoo_chroma.graph.builder import ProteinGraph
from biozoo_chroma.graph.ops import collect_neighbors

#: The meaning of a decoding-order port (``permute_idx [B, L]``).
DECODING_ORDER = "decoding-order"
#: The reference's fixed seed for ``deterministic=True``.
DETERMINISTIC_SEED = 10


class SpatialTraversal(nn.Module):
    """``permute_idx [B, L]``: a graph-smoothed random decoding order (the reference's ProteinTraversalSpatial).

    Arguments and defaults are the reference's. The graph is built on ``X`` as given: the reference passes the
    design network's 14-atom X (zero side chains for a backbone), whose centroid is the backbone's scaled by 4/14,
    so the kNN graph, and the order, are the same as from the 4-atom X.
    """

    def __init__(
        self,
        smooth_alpha: float = 1.0,
        smooth_steps: int = 5,
        smooth_randomize: bool = True,
        graph_num_neighbors: int = 30,
        deterministic: bool = False,
    ) -> None:
        super().__init__()
        self.smooth_alpha = check_probability("smooth_alpha", smooth_alpha)
        self.smooth_steps = check_int("smooth_steps", smooth_steps, minimum=0)
        self.smooth_randomize = bool(smooth_randomize)
        self.deterministic = bool(deterministic)
        self.norm_eps = 1e-5
        self.graph = ProteinGraph(num_neighbors=graph_num_neighbors)

    def keys(
        self, X: torch.Tensor, C: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The smoothed sort keys ``[B, L]`` in [0, 1) (before any priority)."""
        B, L = C.shape
        alpha: float | torch.Tensor = self.smooth_alpha
        if self.deterministic:
            fixed = torch.Generator(device=C.device).manual_seed(DETERMINISTIC_SEED)
            z = torch.rand((1, L), generator=fixed, device=C.device).expand(B, L)
        else:
            z = torch.rand((B, L), generator=generator, device=C.device)
            if self.smooth_randomize:
                alpha = torch.rand((), generator=generator, device=C.device)
        # alpha = 0 (possible only when drawn) leaves z as it is, so smoothing runs without reading alpha back
        if self.smooth_steps > 0 and (self.smooth_randomize or self.smooth_alpha > 0):
            edge_idx, mask_ij = self.graph(X.float(), C)  # kNN ties are not a bf16 question
            mask_ij = mask_ij.float()
            for _ in range(self.smooth_steps):
                z_j = collect_neighbors(z.unsqueeze(-1), edge_idx).squeeze(-1)
                z_mean = (mask_ij * z_j).sum(2) / (mask_ij.sum(2) + self.norm_eps)
                z = alpha * z_mean + (1.0 - alpha) * z
        return z

    def forward(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        priority: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """A decoding order ``[B, L]`` (a permutation of ``0..L-1`` per system); ``priority [B, L]`` groups come
        in increasing order."""
        z = self.keys(X, C, generator)
        if priority is not None:
            z = z + priority.to(z.dtype)
        return torch.argsort(z, dim=-1)
