"""Chroma's reconstruction losses: how well a denoiser recovers a backbone from its noised copies.

``ReconstructionLosses.forward`` scores one prediction ``X0_pred`` of the true ``X`` at diffusion time t (the
training objective; differentiable, batched, per-complex values and ``batch_`` averages). ``estimate_metrics``
averages those scores over a grid of times, noising ``X`` at each and calling the denoiser (what the reference's
``Chroma.score_backbone`` reports). The aligned MSE terms are normalised by the same error of a second, independent
noised copy ``X_t_2`` (so a denoiser that does nothing scores about ``loss_scale * w``), and weighted by
``w = 1 / p(SSNR(t))``, the importance weight of sampling t uniformly. The reference's ``ReconstructionLosses``,
``DiffusionChainCov.elbo``/``pseudoelbo`` (``chroma/layers/structure/diffusion.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from biozoo.errors import InvalidArgumentError
from biozoo_chroma.diffusion.chains import impute_masked_X
from biozoo_chroma.diffusion.process import DiffusionProcess, check_backbone
from biozoo_chroma.diffusion.schedule import NoiseSchedule, Time, as_time
from biozoo_chroma.graph.builder import ProteinGraph
from biozoo_chroma.graph.geometry import compute_dtype
from biozoo_chroma.losses.hbonds import hbond_recovery
from biozoo_chroma.losses.rmsd import (
    backbone_rmsd,
    fragment_pair_rmsd,
    fragment_rmsd,
    neighborhood_rmsd,
    residue_distance_error,
)

X0Func = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: The loss groups of ``forward`` (the reference's ``loss_functions``), in the order they are computed.
LOSS_TERMS = ("elbo", "rmsd", "pseudoelbo", "fragment", "pair", "neighborhood", "distance", "hbonds")
#: The per-complex metrics ``estimate_metrics`` averages over time (besides ``X`` and ``X0_pred``).
METRICS = (
    "elbo",
    "global_mse",
    "elbo_X",
    "fragment_mse",
    "pair_mse",
    "neighborhood_mse",
    "distance_mse",
    "hb_local",
    "hb_nonlocal",
)
MAX_SAMPLES = 1000  # every sample's X0_pred is kept (as in the reference): 1000 x a 1000-residue batch is ~50 MB each
_EPS = 1e-5
_GAUSSIAN_ENTROPY = 0.5 * math.log(2.0 * math.pi * math.e)  # per coordinate


def check_num_samples_and_tspan(num_samples: int, tspan: Sequence[float]) -> tuple[float, float]:
    """Refuse a sample count that is not a positive int, or a time span that does not run forward in [0, 1]."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or not 1 <= num_samples <= MAX_SAMPLES:
        raise InvalidArgumentError(
            f"num_samples must be an integer from 1 to {MAX_SAMPLES}, not {num_samples!r}",
            "e.g. num_samples=50 (the reference's default): the number of diffusion times scored",
        )
    try:
        start, end = (float(v) for v in tspan)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"tspan must be a pair of numbers (t_initial, t_final), not {tspan!r}", "e.g. tspan=(1e-4, 1.0)"
        ) from None
    if not (math.isfinite(start) and math.isfinite(end) and 0.0 <= start < end <= 1.0):
        raise InvalidArgumentError(
            f"tspan {tuple(tspan)!r} must run forward in diffusion time: 0 <= t_initial < t_final <= 1",
            "e.g. tspan=(1e-4, 1.0) (the reference's default)",
        )
    return start, end


def check_structure(X: torch.Tensor, C: torch.Tensor) -> None:
    """Refuse a backbone without residues, a complex without any residue that has coordinates, or NaN/inf."""
    check_backbone(X, C)
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InvalidArgumentError(
            f"the structure is empty: X has shape {tuple(X.shape)}", "score a backbone with at least one residue"
        )
    empty = ~(C > 0).any(1)
    if bool(empty.any()):
        which = [int(i) for i in torch.nonzero(empty).flatten()]
        raise InvalidArgumentError(
            f"batch element(s) {which} have no residue with coordinates (every C <= 0)",
            "remove them from the batch; C > 0 marks the residues that have structure",
        )
    present = (C > 0)[..., None, None].expand_as(X)
    if not bool(torch.isfinite(X[present]).all()):
        raise InvalidArgumentError("X has NaN or infinite coordinates", "fix or remove those residues (C <= 0)")


class ReconstructionLosses:
    """Reconstruction losses of one diffusion process; ``loss_scale`` (Angstrom) sets the error unit (10 = nm).

    ``num_neighbors`` is the kNN graph of the pair, neighbourhood and H-bond terms (built on the true X).
    ``dither`` is the reference's 1e-5 jitter of every superposition; it defaults to the process's
    ``align_dither``. Like ``DiffusionProcess``, this holds no weights.
    """

    def __init__(
        self,
        process: DiffusionProcess,
        loss_scale: float = 10.0,
        num_neighbors: int = 30,
        dither: bool | None = None,
    ) -> None:
        if not (math.isfinite(loss_scale) and loss_scale > 0):
            raise InvalidArgumentError(f"loss_scale must be a positive number, not {loss_scale!r}", "e.g. 10.0")
        self.process = process
        self.loss_scale = float(loss_scale)
        self.graph_builder = ProteinGraph(num_neighbors=num_neighbors)
        self.dither = process.align_dither if dither is None else bool(dither)

    # -- pieces ----------------------------------------------------------------------------------------------------

    def importance_weights(self, t: Time) -> torch.Tensor:
        """w = 1 / p(SSNR(t)), with p = -d SSNR^-1 / d SSNR taken by autograd as the reference does."""
        schedule = self.process.schedule
        ssnr = schedule.SSNR(as_time(t))
        return -1.0 / NoiseSchedule._autograd_deriv(schedule.SSNR_inv, ssnr)

    def graph(self, X: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The kNN graph ``(edge_idx, mask_ij)`` of the true backbone (float32 distances, whatever X's dtype)."""
        with torch.no_grad():
            return self.graph_builder(X.detach().to(compute_dtype(X.dtype)), C)

    def elbo(
        self, X0_pred: torch.Tensor, X: torch.Tensor, C: torch.Tensor, t: Time
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ELBO per atom ``[B]`` and its atom-weighted batch average (nats; higher is better).

        A weighted denoising error in whitened coordinates (information-theoretic diffusion), less the Gaussian
        entropy per coordinate and log|det R|, over every atom of every chain (gaps imputed, padding left out).
        """
        t = as_time(t, X)
        schedule = self.process.schedule
        dX = impute_masked_X(X, C) - impute_masked_X(X0_pred, C)
        whitened = self.process.covariance.multiply_R_inverse(dX, C)
        weight = (0.5 * schedule.SNR_derivative(t)).reshape(-1, 1, 1, 1).to(X.dtype)
        snr = schedule.SNR(t).reshape(-1, 1, 1, 1).to(X.dtype)
        per_coordinate = weight * (whitened.square() - 1 / (1 + snr)) - _GAUSSIAN_ENTROPY
        mask = (C != 0).to(X.dtype)[:, :, None, None]
        atoms = 4 * mask.sum([1, 2, 3])
        gap = (mask * per_coordinate).sum([1, 2, 3])
        elbo = (gap - self.process.covariance.log_determinant(C, X.dtype)) / (atoms + _EPS)
        return elbo, (atoms * elbo).sum() / (atoms.sum() + _EPS)

    def pseudoelbo(self, loss_per_residue: torch.Tensor, C: torch.Tensor, t: Time) -> tuple[torch.Tensor, torch.Tensor]:
        """A per-residue loss ``[B, L]`` weighted like the ELBO's error term: per complex ``[B]`` and batch."""
        weight = 0.5 * self.process.schedule.SNR_derivative(as_time(t, C)).reshape(-1, 1)
        loss = weight.to(loss_per_residue.dtype) * loss_per_residue
        mask = (C > 0).to(loss.dtype)
        return (mask * loss).sum(-1) / (mask.sum(-1) + _EPS), (mask * loss).sum() / (mask.sum() + _EPS)

    @staticmethod
    def batch_average(loss: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """Average of per-complex values weighted by their present residues."""
        weights = (C > 0).to(loss.dtype).sum(-1)
        return (weights * loss).sum() / (weights.sum() + _EPS)

    # -- the losses at one time ------------------------------------------------------------------------------------

    def forward(
        self,
        X0_pred: torch.Tensor,
        X: torch.Tensor,
        C: torch.Tensor,
        t: Time,
        Z: torch.Tensor | None = None,
        *,
        terms: Sequence[str] = LOSS_TERMS,
        graph: tuple[torch.Tensor, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every loss of ``terms`` for the prediction ``X0_pred`` of ``X`` at time t (``[1]`` or ``[B]``).

        ``Z`` (standard normal, shaped like X) makes the second noised copy ``X_t_2`` that normalises the aligned
        MSEs; without it, it is drawn from ``generator``. ``graph`` is ``self.graph(X, C)`` if already built.
        Values are in at least float32; gradients flow to ``X0_pred``.
        """
        check_backbone(X, C)
        if X0_pred.shape != X.shape:
            raise InvalidArgumentError(
                f"X0_pred has shape {tuple(X0_pred.shape)}, X has {tuple(X.shape)}", "predict one X0 per X"
            )
        unknown = sorted(set(terms) - set(LOSS_TERMS))
        if unknown:
            raise InvalidArgumentError(f"unknown loss terms {unknown}", f"use some of: {', '.join(LOSS_TERMS)}")
        dtype = compute_dtype(torch.promote_types(X0_pred.dtype, X.dtype))
        X0_pred, X = X0_pred.to(dtype), X.to(dtype)
        t = as_time(t, X)
        losses: dict[str, torch.Tensor] = {"t": t, "X": X, "X0_pred": X0_pred}
        needs_noise = {"rmsd", "fragment", "pair", "neighborhood", "distance"} & set(terms)
        X_t_2 = None
        if needs_noise:
            if Z is None:
                Z = torch.randn(X.shape, dtype=dtype, device=X.device, generator=generator)
            X_t_2 = self.process.noise(X, C, t, Z.to(dtype))
        w = self.importance_weights(t).to(dtype)
        mask = (C > 0).to(dtype)
        scale, avg = self.loss_scale, self.batch_average
        align = {"dither": self.dither, "generator": generator}
        if {"pair", "neighborhood", "hbonds"} & set(terms) and graph is None:
            graph = self.graph(X, C)

        def normalised(error: torch.Tensor, noise_error: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
            dims = list(range(1, error.dim()))
            return scale * w * (weights * error).sum(dims) / ((weights * noise_error).sum(dims) + _EPS)

        if "elbo" in terms:
            losses["elbo"], losses["batch_elbo"] = self.elbo(X0_pred, X, C, t)
        if "rmsd" in terms:
            rmsd_denoise = backbone_rmsd(X, X0_pred, C, **align)[0]
            rmsd_noise = backbone_rmsd(X, X_t_2, C, **align)[0]
            losses["rmsd_ratio"] = avg(w * rmsd_denoise / (rmsd_noise + _EPS), C)
            losses["global_mse"] = w * scale * rmsd_denoise.square() / (rmsd_noise.square() + _EPS)
            losses["batch_global_mse"] = avg(losses["global_mse"], C)
        if "pseudoelbo" in terms:
            unaligned = ((X - X0_pred) / scale).square().sum(-1).mean(-1)
            losses["elbo_X"], losses["batch_pseudoelbo_X"] = self.pseudoelbo(unaligned, C, t)
        if "fragment" in terms:
            error = fragment_rmsd(X0_pred, X, C, **align).square()
            noise_error = fragment_rmsd(X_t_2, X, C, **align).square()
            losses["fragment_mse"] = normalised(error, noise_error, mask)
            losses["batch_fragment_mse"] = avg(losses["fragment_mse"], C)
        if "pair" in terms:
            edge_idx, mask_ij = graph
            error = fragment_pair_rmsd(X0_pred, X, C, edge_idx, **align).square()
            noise_error = fragment_pair_rmsd(X_t_2, X, C, edge_idx, **align).square()
            losses["pair_mse"] = normalised(error, noise_error, mask_ij.to(dtype))
            losses["batch_pair_mse"] = avg(losses["pair_mse"], C)
        if "neighborhood" in terms:
            rmsd, mask_n = neighborhood_rmsd(X0_pred, X, C, graph[0], **align)
            noise_rmsd, _ = neighborhood_rmsd(X_t_2, X, C, graph[0], **align)
            losses["neighborhood_mse"] = normalised(rmsd.square(), noise_rmsd.square(), mask_n)
            losses["batch_neighborhood_mse"] = avg(losses["neighborhood_mse"], C)
        if "distance" in terms:
            error = residue_distance_error(X0_pred, X, C)
            noise_error = residue_distance_error(X_t_2, X, C)
            losses["distance_mse"] = normalised(error, noise_error, mask)
            losses["batch_distance_mse"] = avg(losses["distance_mse"], C)
        if "hbonds" in terms:
            local, nonlocal_, error_co = (w * v for v in hbond_recovery(X0_pred, X, C, *graph))
            losses["hb_local"], losses["batch_hb_local"] = local, avg(local, C)
            losses["hb_nonlocal"], losses["batch_hb_nonlocal"] = nonlocal_, avg(nonlocal_, C)
            losses["batch_hb_contact_order"] = avg(error_co, C)
        return losses

    __call__ = forward

    # -- scoring ---------------------------------------------------------------------------------------------------

    def time_grid(self, num_samples: int, tspan: Sequence[float] = (1e-4, 1.0)) -> torch.Tensor:
        """``num_samples`` times evenly spaced over tspan (float64 spacing rounded to float32, as the reference)."""
        start, end = check_num_samples_and_tspan(num_samples, tspan)
        return torch.tensor(np.linspace(start, end, num_samples), dtype=torch.float64).float()

    @torch.no_grad()
    def estimate_metrics(
        self,
        X0_func: X0Func,
        X: torch.Tensor,
        C: torch.Tensor,
        num_samples: int = 50,
        tspan: Sequence[float] = (1e-4, 1.0),
        use_noise: bool = True,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
        return_samples: bool = False,
    ) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The metrics of ``METRICS`` per complex ``[B]`` (and ``X``, ``X0_pred``), averaged over a time grid.

        At each t, X (gaps imputed) is noised (unless ``use_noise=False``, which tests whether X is a fixed
        point of the denoiser), denoised with ``X0_func(X_t, C, t)`` and scored by ``forward``. ``noise``
        ``[num_samples, 2, B, L, 4, 3]`` fixes every draw (per t: the noised input, then ``X_t_2``); otherwise
        they come from ``generator``, by default one seeded with ``seed``, so a score is repeatable without
        touching torch's global generator (the reference forks it and seeds 0). ``return_samples`` also
        returns every time's values stacked on dim 0 (``t`` included).
        """
        check_structure(X, C)
        grid = self.time_grid(num_samples, tspan)
        shape = (num_samples, 2, *X.shape)
        if noise is not None and tuple(noise.shape) != shape:
            raise InvalidArgumentError(
                f"noise must have shape {list(shape)} (per time: the noised input, then the baseline copy), "
                f"got {list(noise.shape)}",
                "leave noise=None to draw it from generator= / seed=",
            )
        if generator is None and (noise is None or self.dither):
            generator = torch.Generator(device=X.device).manual_seed(seed)
        dtype = compute_dtype(X.dtype)
        X = impute_masked_X(X.to(dtype), C)
        graph = self.graph(X, C)
        grid = grid.to(X.device)

        def draw(i: int, k: int) -> torch.Tensor:
            if noise is not None:
                return noise[i, k].to(dtype)
            return torch.randn(X.shape, dtype=dtype, device=X.device, generator=generator)

        kept: dict[str, list[torch.Tensor]] = {}
        for i in range(num_samples):
            t = grid[i]
            Z_input, Z_baseline = draw(i, 0), draw(i, 1)
            X_t = self.process.noise(X, C, t, Z_input) if use_noise else X
            X0 = X0_func(X_t, C, t)
            losses = self.forward(X0, X, C, t, Z_baseline, graph=graph, generator=generator)
            for key, value in losses.items():
                if not key.startswith("batch_") and key != "rmsd_ratio":
                    kept.setdefault(key, []).append(value)
        samples = {key: torch.stack(values, 0) for key, values in kept.items()}
        samples["t"] = samples["t"].reshape(-1)
        metrics = {key: value.mean(0) for key, value in samples.items() if key != "t"}
        return (metrics, samples) if return_samples else metrics
