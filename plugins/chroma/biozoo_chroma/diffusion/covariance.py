"""Chroma's polymer-structured Gaussian over backbone coordinates: Sigma = R R^T, applied in O(L).

Each chain is a random walk over its atoms (``brownian``), or a mean-reverting walk whose decay is set so that the
radius of gyration follows Rg ~ N^(2/5) (``globular``), with the chains' centres placed by a separate translation
scale (``complex_scaling`` makes that scale the complex's expected inter-chain Rg). R maps white noise Z to a
structured displacement; its inverse, transposes and log-determinant follow in closed form, chain by chain.
Same maths as the reference's ``BackboneMVNGlobular``; here chains are segments of one sequence (``chains.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from biozoo.errors import InvalidArgumentError
from biozoo_chroma.diffusion.chains import ATOMS, ChainLayout, linear_recurrence
from biozoo_chroma.graph.geometry import compute_dtype

COVARIANCE_MODELS = ("brownian", "globular")

# Fitted to chains of uniform phi/psi (per-step scale), and the Rg scaling law Rg = r0 * N_atoms^nu per xyz axis.
_STEP_SCALE = 1.5587407701549267
_NU = 2.0 / 5.0
_RG0 = 2.0 / 3.0


class PolymerCovariance:
    """Multiply by R, R^T, R^-1, R^-T, Sigma and Sigma^-1; log|Sigma|; draws X = R Z from given noise Z."""

    def __init__(
        self, covariance_model: str = "brownian", complex_scaling: bool = False, sigma_translation: float = 1.0
    ) -> None:
        if covariance_model not in COVARIANCE_MODELS:
            raise InvalidArgumentError(
                f"unknown covariance model {covariance_model!r}",
                f"use one of: {', '.join(COVARIANCE_MODELS)} (the reference's residue_gas is not supported)",
            )
        if not (math.isfinite(sigma_translation) and sigma_translation > 0):
            raise InvalidArgumentError(
                f"sigma_translation must be a positive number, not {sigma_translation!r}", "e.g. 1.0"
            )
        self.covariance_model = covariance_model
        self.complex_scaling = complex_scaling
        self.sigma_translation = float(sigma_translation)
        self.scale = _STEP_SCALE

    # -- per-chain parameters of the globular model ------------------------------------------------------------

    def _globular(self, layout: ChainLayout, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-chain decay b, first-atom std x0 and mean shift xi, as tables ``[B, S+2]``.

        Rows 0..S are the segments (row 0 is padding); the last column is an empty chain slot. The reference keeps
        one slot per chain id up to max |C| of the batch, and the empty ones enter its Rg average (complex scaling)
        and its log-determinant, so they are reproduced here.
        """
        count = layout.segment_count(dtype)
        present = count > 0
        absent = layout.num_slots.to(dtype) - layout.num_chains.to(dtype)
        n_complex = count.sum(1)
        rg2_complex = _RG0**2 * n_complex ** (2 * _NU)
        # One empty slot looks like a chain of 1 atom to the clipped formulas.
        n = torch.cat([count.clamp(1, 1e6), count.new_ones(count.shape[0], 1)], 1)
        # The square root's argument is negative for a one-residue chain (4 atoms): the reference returns NaN for
        # the whole complex there; 0 gives such a chain the decay 3/N instead.
        root = (n ** (2 * (_NU - 1)) * (n**2 + 9) - (self.scale / _RG0) ** 2).clamp(min=0)
        decay = 3.0 / n + n ** (-_NU) * torch.sqrt(root)
        decay = decay.clamp(1e-4, 1.0 - 1e-4)
        x0_std = torch.sqrt(1.0 / (1.0 - decay**2))
        if self.complex_scaling:
            rg2_chain = _RG0**2 * count ** (2 * _NU)
            avg = (count * rg2_chain).sum(1) / ((n[:, :-1] * present).sum(1) + absent + 1e-5)
            rg_com = torch.clamp(rg2_complex - avg, min=1).sqrt()
            chains = layout.num_chains.to(dtype)
            com_std = torch.sqrt(chains / (chains - 1).clamp(min=1)) * rg_com
            shift = (x0_std - com_std[:, None]) / x0_std
        else:
            shift = (x0_std - 1.0) / x0_std
        return decay, x0_std, shift

    # -- the factors -------------------------------------------------------------------------------------------

    # -- building blocks on flattened atoms ``[B, 4L, 3]`` in the compute dtype -------------------------------------

    def _walk(self, Z: torch.Tensor, layout: ChainLayout, decay: torch.Tensor | None, reverse: bool) -> torch.Tensor:
        """Scaled per-chain (decaying) cumulative sum, forwards or backwards along each chain."""
        first = layout.end if reverse else layout.start
        if decay is None:  # brownian: a plain cumsum, less what the chains before this one summed to
            total = Z.flip(1).cumsum(1).flip(1) if reverse else Z.cumsum(1)
            out = total - layout.per_atom(layout.segment_sum((total - Z) * first[..., None]))
        else:
            coeff = layout.per_atom(decay[:, :-1, None])[..., 0]
            if reverse:
                out = linear_recurrence(Z.flip(1), coeff.flip(1), first.flip(1)).flip(1)
            else:
                out = linear_recurrence(Z, coeff, first)
        return self.scale * out * layout.in_chain[..., None]

    def _difference(
        self, X: torch.Tensor, layout: ChainLayout, decay: torch.Tensor | None, reverse: bool
    ) -> torch.Tensor:
        """Inverse of ``_walk``: (x_i - b x_(i-1)) / scale (x_(i+1) backwards), with nothing beyond a chain's end."""
        coeff = 1.0 if decay is None else layout.per_atom(decay[:, :-1, None])
        if reverse:
            neighbour = F.pad(X[:, 1:], (0, 0, 0, 1)) * ~layout.end[..., None]
        else:
            neighbour = F.pad(X[:, :-1], (0, 0, 1, 0)) * ~layout.start[..., None]
        return (X - coeff * neighbour) / self.scale * layout.in_chain[..., None]

    def _shift_mean(self, X: torch.Tensor, layout: ChainLayout, scale: torch.Tensor) -> torch.Tensor:
        """x <- x + scale * chain mean (globular chain placement; symmetric, so its own transpose)."""
        return (X + scale * layout.segment_mean(X)) * layout.in_chain[..., None]

    def _translate(self, X: torch.Tensor, layout: ChainLayout, scale_mean: float, scale_first: float) -> torch.Tensor:
        """x <- x + scale_mean * chain mean + scale_first * the chain's first atom (brownian chain placement)."""
        shift = scale_first * layout.segment_first(X) + scale_mean * layout.segment_mean(X)
        return (X + shift) * layout.in_chain[..., None]

    def _translate_transpose(
        self, X: torch.Tensor, layout: ChainLayout, scale_mean: float, scale_first: float
    ) -> torch.Tensor:
        """Transpose of ``_translate``: the first atom collects scale_first times the chain's sum."""
        sums = layout.per_atom(layout.segment_sum(X))
        out = (X + scale_mean * layout.segment_mean(X)) * layout.in_chain[..., None]
        return out + scale_first * sums * layout.start[..., None]

    def _first_scale(self, X: torch.Tensor, layout: ChainLayout, x0_std: torch.Tensor, power: float) -> torch.Tensor:
        """Multiply each chain's first atom by x0_std ** power (its stationary std: the walk starts in equilibrium)."""
        factor = layout.per_atom(x0_std[:, :-1, None]) ** power
        return torch.where(layout.start[..., None], X * factor, X)

    def _per_atom(self, layout: ChainLayout, table: torch.Tensor) -> torch.Tensor:
        return layout.per_atom(table[:, :-1, None])

    def _prepare(self, X: torch.Tensor, C: torch.Tensor) -> tuple[ChainLayout, torch.Tensor]:
        layout = ChainLayout.from_chain_map(C)
        flat = X.reshape(X.shape[0], -1, 3)
        return layout, flat.to(compute_dtype(flat.dtype)) * layout.in_chain[..., None]

    def _apply(self, ops: tuple[str, ...], X: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """Apply the named factors right to left in the compute dtype; return ``[B, L, 4, 3]`` in X's dtype."""
        layout, work = self._prepare(X, C)
        params = self._globular(layout, work.dtype) if self.covariance_model == "globular" else None
        for op in reversed(ops):
            work = getattr(self, f"_{op}")(work, layout, params)
        return work.to(X.dtype).reshape(C.shape[0], C.shape[1], ATOMS, 3)

    def _R(self, Z: torch.Tensor, layout: ChainLayout, params: tuple | None) -> torch.Tensor:
        if params is None:
            out = self._walk(Z, layout, None, reverse=False)
            return self._translate(out, layout, -1.0, self.sigma_translation)
        decay, x0_std, shift = params
        out = self._walk(self._first_scale(Z, layout, x0_std, 1.0), layout, decay, reverse=False)
        return self._shift_mean(out, layout, -self._per_atom(layout, shift))

    def _Rt(self, Z: torch.Tensor, layout: ChainLayout, params: tuple | None) -> torch.Tensor:
        if params is None:
            Z = self._translate_transpose(Z, layout, -1.0, self.sigma_translation)
            return self._walk(Z, layout, None, reverse=True)
        decay, x0_std, shift = params
        Z = self._shift_mean(Z, layout, -self._per_atom(layout, shift))
        return self._first_scale(self._walk(Z, layout, decay, reverse=True), layout, x0_std, 1.0)

    def _Ri(self, X: torch.Tensor, layout: ChainLayout, params: tuple | None) -> torch.Tensor:
        if params is None:
            X = self._translate(X, layout, 1.0 / self.sigma_translation, -1.0)
            return self._difference(X, layout, None, reverse=False)
        decay, x0_std, shift = params
        X = self._shift_mean(X, layout, self._per_atom(layout, shift / (1 - shift)))
        return self._first_scale(self._difference(X, layout, decay, reverse=False), layout, x0_std, -1.0)

    def _Rit(self, X: torch.Tensor, layout: ChainLayout, params: tuple | None) -> torch.Tensor:
        if params is None:
            out = self._difference(X, layout, None, reverse=True)
            return self._translate_transpose(out, layout, 1.0 / self.sigma_translation, -1.0)
        decay, x0_std, shift = params
        out = self._difference(self._first_scale(X, layout, x0_std, -1.0), layout, decay, reverse=True)
        return self._shift_mean(out, layout, self._per_atom(layout, shift / (1 - shift)))

    def multiply_R(self, Z: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """R Z: white noise ``[B, L, 4, 3]`` (or ``[B, 4L, 3]``) to a polymer-structured displacement."""
        return self._apply(("R",), Z, C)

    def multiply_R_transpose(self, Z: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """R^T Z."""
        return self._apply(("Rt",), Z, C)

    def multiply_R_inverse(self, X: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """R^-1 X: a displacement back to white noise."""
        return self._apply(("Ri",), X, C)

    def multiply_R_inverse_transpose(self, X: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """R^-T X."""
        return self._apply(("Rit",), X, C)

    def multiply_covariance(self, dX: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """Sigma dX = R R^T dX (turns a score into a displacement along the polymer's soft directions)."""
        return self._apply(("R", "Rt"), dX, C).reshape(dX.shape)

    def multiply_inverse_covariance(self, dX: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """Sigma^-1 dX = R^-T R^-1 dX."""
        return self._apply(("Rit", "Ri"), dX, C).reshape(dX.shape)

    def log_determinant(self, C: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """log|det R| per batch element ``[B]`` (= log det Sigma / 2), by the reference's per-chain formula.

        This is the change-of-variables term of the ELBO (X = R Z). As in the reference it is the globular formula
        for both models (exact for brownian only with sigma_translation = 1), and every chain slot up to max |C|
        of the batch contributes, whether or not it is present in this batch element.
        """
        layout = ChainLayout.from_chain_map(C)
        dtype = compute_dtype(dtype)
        count = layout.segment_count(dtype)
        decay, _, shift = self._globular(layout, dtype)
        terms = torch.log(1.0 - shift) - 0.5 * torch.log(1.0 - decay**2)
        present = torch.cat([count > 0, torch.zeros_like(count[:, :1], dtype=torch.bool)], 1)
        per_chain = (count.sum(1) * math.log(self.scale) + (terms * present).sum(1))
        absent = layout.num_slots.to(dtype) - layout.num_chains.to(dtype)
        return 3.0 * (per_chain + absent * terms[:, -1])

    def sample(self, C: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        """A draw from N(0, Sigma) made from the standard-normal tensor ``Z`` (``[B, L, 4, 3]`` or ``[B, 4L, 3]``)."""
        return self.multiply_R(Z, C)
