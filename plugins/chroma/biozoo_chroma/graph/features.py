"""Chroma's node and edge feature layers: raw geometric features of a backbone on a graph.

Each layer maps ``(X [B, L, 4, 3], edge_idx [B, L, K], C [B, L])`` to ``[B, L, dim_out]`` (node layers) or
``[B, L, K, dim_out]`` (edge layers). They hold no learned weights; the feature graph centres and projects
them. Names, options and defaults follow the reference's feature keys (``"distances_2mer"``, ...), which is
what a checkpoint's ``node_features`` / ``edge_features`` list.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from biozoo.nn.checks import ConfigError, check_int, check_positive
from biozoo_chroma.graph import geometry as geo
from biozoo_chroma.graph.ops import chain_map_to_mask, collect_neighbors


class Float32Buffers(nn.Module):
    """Keeps this module's float32 buffers float32 when the model is cast to float16 / bfloat16.

    They are geometry constants (Fourier frequencies, RBF centres, centering means): rounded to bf16, a
    frequency of ~2 times a distance of ~30 Å is off by radians, and the features become noise.
    """

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        kept = {n: b for n, b in self._buffers.items() if b is not None and b.dtype == torch.float32}
        out = super()._apply(fn, recurse)
        for name, old in kept.items():
            new = self._buffers[name]
            if new is not None and new.dtype in (torch.float16, torch.bfloat16):
                self._buffers[name] = old.to(new.device)
        return out


def centered_bias(linear: nn.Linear, mean: torch.Tensor | None) -> torch.Tensor | None:
    """The bias of ``x -> linear(x - mean)`` written as ``x -> W x + bias`` (computed in float32)."""
    if mean is None:
        return linear.bias
    shift = mean.reshape(-1).float() @ linear.weight.float().T
    bias = -shift if linear.bias is None else linear.bias.float() - shift
    return bias.to(linear.weight.dtype)


def edge_mask(C: torch.Tensor, edge_idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``mask_i * mask_j`` on every edge, ``[B, L, K, 1]``."""
    mask = chain_map_to_mask(C, dtype).unsqueeze(-1)
    return mask.unsqueeze(2) * collect_neighbors(mask, edge_idx)


def edge_2mers(X: torch.Tensor, edge_idx: torch.Tensor) -> torch.Tensor:
    """Atoms of residue i followed by atoms of residue j on every edge: ``[B, L, K, 2A, 3]``."""
    B, L, K = edge_idx.shape
    flat = X.reshape(B, L, -1)
    X_i = flat.unsqueeze(2).expand(B, L, K, flat.shape[-1])
    return torch.cat([X_i, collect_neighbors(flat, edge_idx)], -1).reshape(B, L, K, 2 * X.shape[2], 3)


def _distance_function(kind: str, eps: float) -> Callable[[torch.Tensor], torch.Tensor]:
    functions = {
        "log": lambda D: torch.log(D + eps),
        "inverse": lambda D: 1.0 / (D + eps),
        "raw": lambda D: D,
    }
    if kind not in functions:
        raise ConfigError("feature", f"must be one of {', '.join(functions)}, got {kind!r}")
    return functions[kind]


# A Gaussian bump far from its centre is held at exp(-50) ~ 2e-22 instead of falling to ~1e-40. The reference's
# values there are subnormal floats, and on x86 every operation touching one (the exp itself, then each
# multiply-add of the projection) takes a slow microcode path: at 100 residues this made its RBF features cost
# more than the whole graph network. No model output can tell 2e-22 from 1e-40 (float32 resolves 1e-7).
EXPONENT_FLOOR = 50.0


class RBFExpansion(Float32Buffers):
    """Gaussian bumps ``exp(-((d - c_k) / std)^2)`` at evenly spaced centres; each value becomes ``num_rbf``."""

    def __init__(self, value_min: float, value_max: float, num_rbf: int, std: float | None = None) -> None:
        super().__init__()
        centers = torch.linspace(value_min, value_max, check_int("rbf_count", num_rbf, minimum=2))
        self.register_buffer("rbf_centers", centers)
        step = torch.linspace(value_min, value_max, num_rbf, device="cpu")[:2]  # a number also when built on meta
        self.std = float(step[1] - step[0]) if std is None else check_positive("std", std)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = (h.unsqueeze(-1) - self.rbf_centers.to(h.dtype)) / self.std
        return torch.exp(-(z**2).clamp(max=EXPONENT_FLOOR)).reshape(*h.shape[:-1], -1)

    def expand_(self, h: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` as ``[..., num_rbf]`` in one buffer, in place (the same operations; no autograd)."""
        z = h.unsqueeze(-1) - self.rbf_centers.to(h.dtype)
        return z.div_(self.std).square_().clamp_(max=EXPONENT_FLOOR).neg_().exp_()


class FourierFeaturization(Float32Buffers):
    """Random Fourier features ``[cos(x B), sin(x B)]`` with ``B ~ 2 pi scale N(0, 1)`` (``d_input x d_model/2``)."""

    def __init__(
        self, d_input: int, d_model: int, trainable: bool = False, scale: float = 1.0, generator=None
    ) -> None:
        super().__init__()
        if d_model % 2:
            raise ConfigError("dim_embedding", f"must be even (cos and sin halves), got {d_model}")
        B = 2 * math.pi * scale * torch.randn(d_input, d_model // 2, generator=generator)
        if trainable:
            self.B = nn.Parameter(B)
        else:
            self.register_buffer("B", B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x @ self.B.to(x.dtype)
        return torch.cat([h.cos(), h.sin()], -1)


class NodeInternalCoords(Float32Buffers):
    """Per residue: cos and sin of 4 dihedrals and 4 angle complements, and 4 bond lengths (20 values).

    ``log_lengths`` uses ``log(length + distance_eps)``; ``include_ideality`` adds 8 scores against Engh and
    Huber's ideal lengths and angles (28 values).
    """

    IDEAL_LENGTHS = (1.459, 1.525, 1.336, 1.229)
    IDEAL_ANGLES_DEG = (111.0, 117.2, 121.7, 120.0)

    def __init__(self, include_ideality: bool = False, distance_eps: float = 0.01, log_lengths: bool = False) -> None:
        super().__init__()
        self.include_ideality, self.log_lengths = bool(include_ideality), bool(log_lengths)
        self.distance_eps = check_positive("distance_eps", distance_eps)
        self.dim_out = 28 if self.include_ideality else 20
        if self.include_ideality:
            angles = [math.pi - a * math.pi / 180.0 for a in self.IDEAL_ANGLES_DEG]
            self.register_buffer("ideal_lengths", torch.tensor(self.IDEAL_LENGTHS).view(1, 1, -1))
            self.register_buffer("ideal_angles", torch.tensor(angles).view(1, 1, -1))

    def forward(self, X: torch.Tensor, edge_idx: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        D, A, lengths, mask_D, mask_A, mask_L = geo.internal_coords(X, C)
        angles = torch.cat([D, A], -1)
        if self.log_lengths:
            lengths = torch.log(lengths + self.distance_eps)
        cos, sin = torch.cos(angles), torch.sin(angles)
        parts = [cos, sin, lengths]
        if self.include_ideality:
            mask_angles = torch.cat([mask_D, mask_A], -1)
            eps = self.distance_eps
            ideal = self.ideal_lengths.to(X.dtype)
            length_scores = mask_L * (torch.log(lengths + eps) - torch.log(ideal + eps)) ** 2
            angle_scores = mask_A * torch.cos(A - self.ideal_angles.to(X.dtype))
            parts = [mask_angles * cos, mask_angles * sin, lengths, length_scores, angle_scores]
        return chain_map_to_mask(C, X.dtype).unsqueeze(-1) * torch.cat(parts, -1)


class EdgeDistance2mer(nn.Module):
    """All ``(2A)^2`` atom-atom distances between residues i and j, as RBFs and/or log / inverse / raw values."""

    def __init__(
        self,
        features: str = "rbf+log",
        distance_eps: float = 0.01,
        num_atom_types: int = 4,
        rbf_min: float = 0.0,
        rbf_max: float = 20.0,
        rbf_count: int = 20,
    ) -> None:
        super().__init__()
        self.features = features.split("+")
        self.distance_eps = check_positive("distance_eps", distance_eps)
        pairs = (2 * check_int("num_atom_types", num_atom_types)) ** 2
        self.functions: list[Callable[[torch.Tensor], torch.Tensor]] = []
        dims = 0
        for kind in self.features:
            if kind == "rbf":
                self.rbf_function = RBFExpansion(rbf_min, rbf_max, rbf_count)
                self.functions.append(self.rbf_function)
                dims += pairs * rbf_count
            else:
                self.functions.append(_distance_function(kind, self.distance_eps))
                dims += pairs
        self.dim_out = dims
        self.chunk = 1024  # edges per fused RBF block in :meth:`project` (1,024 x 1,280 floats, 5 MB: fastest here)

    def forward(self, X: torch.Tensor, edge_idx: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        D = geo.pairwise_distances(edge_2mers(X, edge_idx)).flatten(3)
        return edge_mask(C, edge_idx, X.dtype) * torch.cat([f(D) for f in self.functions], -1)

    def project(
        self, X: torch.Tensor, edge_idx: torch.Tensor, C: torch.Tensor, linear: nn.Linear, mean: torch.Tensor | None
    ) -> torch.Tensor:
        """``linear(forward(...) - mean)`` without materialising the RBF features (inference only).

        The RBF block is ``(2A)^2 * rbf_count`` values per edge (1,280 by default): 4M floats at 100 residues
        and 30 neighbours, built in five memory-bound passes and then read once by the projection. Here it is
        built and projected ``chunk`` edges at a time, in place, so it stays in cache; the mask (a per-edge
        scalar) is applied after the projection and the centering means are folded into the bias. Same
        arithmetic as the unfused path up to float summation order.
        """
        D = geo.pairwise_distances(edge_2mers(X, edge_idx)).flatten(3)
        B, L, K, P = D.shape
        flat = D.reshape(B * L * K, P)
        W = linear.weight
        out = torch.zeros(flat.shape[0], W.shape[0], dtype=W.dtype, device=W.device)
        column = 0
        for f in self.functions:
            if f is getattr(self, "rbf_function", None):
                width = P * f.rbf_centers.numel()
                W_f = W[:, column : column + width].T
                for start in range(0, flat.shape[0], self.chunk):
                    block = f.expand_(flat[start : start + self.chunk]).flatten(1)
                    out[start : start + self.chunk].addmm_(block.to(W.dtype), W_f)
            else:
                width = P
                out.addmm_(f(flat).to(W.dtype), W[:, column : column + width].T)
            column += width
        bias = centered_bias(linear, mean)
        out = out.mul_(edge_mask(C, edge_idx, W.dtype).reshape(-1, 1))
        if bias is not None:
            out.add_(bias)
        return out.reshape(B, L, K, -1)


def _frames(X: torch.Tensor, eps: float) -> torch.Tensor:
    """Residue frames with the layer's own smoothing constant (the orientation layers use 0.1)."""
    return geo.frames_from_backbone(X, eps)[0]


class EdgeOrientation2mer(nn.Module):
    """Unit vectors between every pair of atoms of residues i and j, in residue i's frame (``3 (2A)^2`` values)."""

    def __init__(self, distance_eps: float = 0.1, num_atom_types: int = 4) -> None:
        super().__init__()
        self.distance_eps = check_positive("distance_eps", distance_eps)
        self.dim_out = 3 * (2 * check_int("num_atom_types", num_atom_types)) ** 2

    def forward(self, X: torch.Tensor, edge_idx: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        X_ij = edge_2mers(X, edge_idx)
        U = geo.normed_vec(X_ij.unsqueeze(3) - X_ij.unsqueeze(4), self.distance_eps)  # [a, b] = x_b - x_a
        R = _frames(X, self.distance_eps)
        U_local = torch.einsum("nijabx,nixy->nijaby", U, R)
        return edge_mask(C, edge_idx, X.dtype) * U_local.flatten(3)


class EdgeOrientationChain(nn.Module):
    """Distance, direction and relative rotation between residue and chain frames (24 values).

    Three blocks of 8 (``f(distance)``, unit direction in the first frame, quaternion of the relative rotation):
    chain i to chain j, chain i to residue j, residue i to residue j. A chain's frame and centre are averages
    over its residues with structure.
    """

    def __init__(self, feature: str = "log", distance_eps: float = 0.1, norm_eps: float = 1e-1) -> None:
        super().__init__()
        self.distance_eps = check_positive("distance_eps", distance_eps)
        self.norm_eps = check_positive("norm_eps", norm_eps)
        self.feature_function = _distance_function(feature, self.distance_eps)
        self.dim_out = 24

    def _chain_frames(self, X: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        eps = self.norm_eps
        N, CA, C_atom = X[:, :, 0], X[:, :, 1], X[:, :, 2]
        u_n = geo.chain_average(geo.normed_vec(N - CA, eps), C)
        u_c = geo.chain_average(geo.normed_vec(C_atom - CA, eps), C)
        n1 = geo.normed_vec(u_n, eps)
        n2 = geo.normed_cross(n1, geo.normed_vec(u_c, eps), eps)
        return torch.stack([n1, n2, geo.normed_cross(n1, n2, eps)], -1)

    def _relative(
        self, X_i: torch.Tensor, X_j: torch.Tensor, R_i: torch.Tensor, R_j: torch.Tensor
    ) -> torch.Tensor:
        dX = X_j - X_i.unsqueeze(2)
        length = torch.sqrt((dX**2).sum(-1, keepdim=True) + self.distance_eps)
        direction = torch.einsum("niab,nija->nijb", R_i, dX / length)
        q = geo.quaternions_from_rotations(torch.einsum("niab,nijac->nijbc", R_i, R_j))
        return torch.cat([self.feature_function(length), direction, q], -1)

    def forward(self, X: torch.Tensor, edge_idx: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        B, L, K = edge_idx.shape

        def neighbours(R: torch.Tensor) -> torch.Tensor:
            return collect_neighbors(R.reshape(B, L, 9), edge_idx).reshape(B, L, K, 3, 3)

        R = _frames(X, self.norm_eps)
        R_chain = self._chain_frames(X, C)
        CA = X[:, :, 1]
        CA_chain = geo.chain_average(CA, C)
        CA_j = collect_neighbors(CA, edge_idx)
        h = torch.cat(
            [
                self._relative(CA_chain, collect_neighbors(CA_chain, edge_idx), R_chain, neighbours(R_chain)),
                self._relative(CA_chain, CA_j, R_chain, neighbours(R)),
                self._relative(CA, CA_j, R, neighbours(R)),
            ],
            -1,
        )
        return edge_mask(C, edge_idx, X.dtype) * h


class EdgeDistanceChain(nn.Module):
    """Whether i and j are in different chains, and within a chain ``log(|j - i| + 1)`` and ``sign(j - i)``.

    Indices are positions in the tensor, so a gap (``C < 0``) counts as residues, as in the reference.
    """

    dim_out = 3

    def forward(self, X: torch.Tensor, edge_idx: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        chain_j = collect_neighbors(C.unsqueeze(-1), edge_idx).squeeze(-1)
        interface = (C.unsqueeze(-1) != chain_j).to(X.dtype)
        offset = (edge_idx - torch.arange(edge_idx.shape[1], device=X.device).view(1, -1, 1)).to(X.dtype)
        intra = 1.0 - interface
        return torch.stack([interface, intra * torch.log(offset.abs() + 1.0), intra * torch.sign(offset)], -1)


class EdgeRandomFourierFeatures2mer(nn.Module):
    """Random Fourier features of residue i's position in j's frame plus of the 2-mer distances (and rotation).

    The frequency matrices are drawn from a private generator seeded with ``seed`` (the reference's seed 10
    draws the same matrices), so the global random state is left alone. Checkpoints carry them as buffers.
    """

    def __init__(
        self,
        dim_embedding: int = 128,
        trainable: bool = False,
        scale: float = 1.0,
        use_quaternion: bool = False,
        seed: int = 10,
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
        self.vector_f = FourierFeaturization(3, dim_embedding, trainable, scale, generator=g)
        self.distance_f = FourierFeaturization(64, dim_embedding, trainable, scale, generator=g)
        self.use_quaternion = bool(use_quaternion)
        if self.use_quaternion:
            self.quat_f = FourierFeaturization(4, dim_embedding, trainable, scale, generator=g)
        self.dim_out = dim_embedding

    def forward(self, X: torch.Tensor, edge_idx: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        D = geo.pairwise_distances(edge_2mers(X, edge_idx)).flatten(3)
        mask = chain_map_to_mask(C, X.dtype).unsqueeze(-1)
        R, t = geo.frames_from_backbone(X[:, :, :4])
        R, t = mask.unsqueeze(-1) * R, mask * t
        B, L, K = edge_idx.shape
        R_j = collect_neighbors(R.reshape(B, L, 9), edge_idx).reshape(B, L, K, 3, 3)
        t_j = collect_neighbors(t, edge_idx)
        R_j_inv = R_j.transpose(-1, -2)
        t_ji = (R_j_inv @ (t.unsqueeze(2) - t_j).unsqueeze(-1)).squeeze(-1)  # i seen from j's frame
        h = self.vector_f(t_ji) + self.distance_f(D)
        if self.use_quaternion:
            h = h + self.quat_f(geo.quaternions_from_rotations(R_j_inv @ R.unsqueeze(2)))
        return h


NODE_FEATURES: dict[str, type[nn.Module]] = {"internal_coords": NodeInternalCoords}
EDGE_FEATURES: dict[str, type[nn.Module]] = {
    "distances_2mer": EdgeDistance2mer,
    "orientations_2mer": EdgeOrientation2mer,
    "orientations_chain": EdgeOrientationChain,
    "distances_chain": EdgeDistanceChain,
    "random_fourier_2mer": EdgeRandomFourierFeatures2mer,
}
