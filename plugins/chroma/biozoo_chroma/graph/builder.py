"""Which residues talk to which: Chroma's k-nearest-neighbour and random ``random_log`` graphs.

Distances are between residue centroids (the mean of the backbone atoms) unless ``distance_atom_type`` picks
one atom (index > 0, as in the reference: 0, N, also means the centroid). The random graphs keep the
``random_min_local`` nearest neighbours and draw the rest without replacement with probability
``~ D^(-3/temperature)`` (Gumbel top-k). That draw is the graph's randomness; it can be made repeatable three
ways: ``deterministic=True`` (the reference's fixed seed, one draw shared by the batch), a ``generator``, or
an injected ``noise`` tensor of uniforms, which is what tests use to compare graphs exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from biozoo.nn.checks import ConfigError, check_int, check_positive
from biozoo_chroma.graph.geometry import pairwise_distances
from biozoo_chroma.graph.ops import chain_map_to_mask, collect_edges

CRITERIA = ("knn", "random_log", "random_linear", "random_uniform")
_FAR = float(np.finfo(np.float32).max)  # the distance given to excluded pairs, as in the reference


def knn(
    D: torch.Tensor, mask: torch.Tensor, mask_2D: torch.Tensor | None, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest entries of each row of ``D`` among allowed pairs: ``(edge_idx, mask_ij)``.

    Excluded pairs get float32's largest value, so rows with fewer than ``k`` allowed pairs are filled with
    excluded ones, whose ``mask_ij`` is 0.
    """
    allowed = mask.unsqueeze(2) * mask.unsqueeze(1)
    if mask_2D is not None:
        allowed = allowed * mask_2D
    D = allowed * D + (1.0 - allowed) * _FAR
    _, edge_idx = torch.topk(D, min(k, D.shape[-1]), dim=-1, largest=False)
    return edge_idx, collect_edges(allowed.unsqueeze(-1), edge_idx).squeeze(-1)


class ProteinGraph(nn.Module):
    """Builds ``edge_idx [B, L, K]`` and ``mask_ij [B, L, K]`` from backbone ``X`` and chain map ``C``.

    ``K = min(num_neighbors, L)``. Arguments and defaults are the reference's ``ProteinGraph``'s.
    """

    def __init__(
        self,
        num_neighbors: int = 30,
        distance_atom_type: int = -1,
        cutoff: float | None = None,
        mask_interfaces: bool = False,
        criterion: str = "knn",
        random_alpha: float = 3.0,
        random_temperature: float = 1.0,
        random_min_local: int = 20,
        deterministic: bool = False,
        deterministic_seed: int = 10,
    ) -> None:
        super().__init__()
        if criterion not in CRITERIA:
            raise ConfigError("criterion", f"must be one of {', '.join(CRITERIA)}, got {criterion!r}")
        self.num_neighbors = check_int("num_neighbors", num_neighbors)
        self.distance_atom_type = int(distance_atom_type)
        self.cutoff = None if cutoff is None else check_positive("cutoff", cutoff)
        self.mask_interfaces = bool(mask_interfaces)
        self.criterion = criterion
        self.random_alpha = check_positive("random_alpha", random_alpha)
        self.random_temperature = check_positive("random_temperature", random_temperature)
        self.random_min_local = check_int("random_min_local", int(random_min_local), minimum=0)
        if criterion != "knn" and self.random_min_local > self.num_neighbors:
            raise ConfigError("random_min_local", f"must be <= num_neighbors ({num_neighbors}), got {random_min_local}")
        self.deterministic = bool(deterministic)
        self.deterministic_seed = int(deterministic_seed)

    def distances(self, X: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Residue distances ``[B, L, L]``, the node mask and the pair mask (interfaces, cutoff) before kNN."""
        mask = chain_map_to_mask(C, X.dtype)
        points = X[:, :, self.distance_atom_type] if self.distance_atom_type > 0 else X.mean(dim=2)
        D = pairwise_distances(points)
        mask_2D = mask.unsqueeze(2) * mask.unsqueeze(1)
        if self.mask_interfaces:
            mask_2D = (C.unsqueeze(1) == C.unsqueeze(2)).to(X.dtype)
        if self.cutoff is not None:
            mask_2D = torch.le(D, self.cutoff).to(X.dtype) * mask_2D
        return D, mask, mask_2D

    def noise_shape(self, X: torch.Tensor) -> list[int]:
        """Shape of the uniforms a random graph consumes (``noise=`` in :meth:`forward`)."""
        B, L = X.shape[:2]
        return [1 if self.deterministic else B, L, L]

    def _gumbel_keys(
        self, D: torch.Tensor, noise: torch.Tensor | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Sort keys whose top-k (smallest) is a draw without replacement weighted by the criterion."""
        if self.criterion == "random_log":
            logp = -3 * torch.log(D)
        elif self.criterion == "random_linear":
            logp = -D / self.random_alpha
        else:
            logp = D * 0
        if noise is None:
            if self.deterministic:  # the reference's fixed seed, one draw for the whole batch
                generator = torch.Generator(device=D.device).manual_seed(self.deterministic_seed)
                noise = torch.rand([1, *D.shape[1:]], device=D.device, generator=generator, dtype=D.dtype)
            else:
                noise = torch.rand(D.shape, device=D.device, generator=generator, dtype=D.dtype)
        G = -torch.log(-torch.log(noise.to(D.dtype)))
        return -(logp / self.random_temperature + G)

    def forward(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(edge_idx, mask_ij)``; ``noise`` (uniforms of :meth:`noise_shape`) replaces the random draw."""
        D, mask, mask_2D = self.distances(X, C)
        if self.criterion == "knn":
            return knn(D, mask, mask_2D, self.num_neighbors)
        if self.random_min_local == 0:
            return knn(self._gumbel_keys(D, noise, generator), mask, mask_2D, self.num_neighbors)
        # The nearest random_min_local first, then a random draw among the pairs they left.
        idx_local, mask_local = knn(D, mask, mask_2D, self.random_min_local)
        remaining = torch.ones_like(mask_2D).scatter(2, idx_local, 1.0 - mask_local)
        keys = self._gumbel_keys(D, noise, generator)
        idx_random, mask_random = knn(keys, mask, mask_2D * remaining, self.num_neighbors - self.random_min_local)
        k = min(self.num_neighbors, D.shape[-1])
        edge_idx = torch.cat([idx_local, idx_random], 2)[:, :, :k]
        return edge_idx.contiguous(), torch.cat([mask_local, mask_random], 2)[:, :, :k].contiguous()
