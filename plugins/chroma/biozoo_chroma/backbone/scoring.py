"""``ChromaBackbone.score_backbone``: how well the model denoises given backbones (the reference's ``score_backbone``).

The proteins are padded into one batch (as the reference does), noised over a grid of diffusion times, denoised
by the model and scored by :meth:`~biozoo_chroma.losses.ReconstructionLosses.estimate_metrics`. Every draw (the
noise, the second noised copy, random graphs, and the dithers when on) comes from one generator seeded with
``seed``, in the reference's order, so with the dithers off a score equals the reference's (which seeds its
global generator with 0) on the same weights. The dithers are off by default: scores are then a function of the
structure, the model and the seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from biozoo.errors import InvalidArgumentError
from biozoo_chroma.backbone.sampling import MAX_RESIDUES
from biozoo_chroma.losses import METRICS, ReconstructionLosses, check_num_samples_and_tspan

if TYPE_CHECKING:
    from biozoo_chroma.backbone.model import ChromaBackbone
    from biozoo_chroma.structures import Protein


class Score(NamedTuple):
    """One metric: its average over the time grid, and its value at each time (the reference's namedtuple)."""

    score: float
    subcomponents: list[float]


class Coordinates(NamedTuple):
    """The imputed input ``X`` or the prediction ``X0_pred``: the time average ``[1, L, 4, 3]`` and each time's."""

    value: torch.Tensor
    samples: torch.Tensor


def _check_proteins(proteins: Any) -> list[Protein]:
    from biozoo_chroma.structures import Protein

    items = list(proteins) if isinstance(proteins, list | tuple) else [proteins]
    if not items:
        raise InvalidArgumentError("score_backbone got an empty list of proteins", "pass a Protein or a list of them")
    for item in items:
        if not isinstance(item, Protein):
            raise InvalidArgumentError(
                f"score_backbone scores biozoo_chroma.Protein objects, not {type(item).__name__}",
                "load one with Protein('file.pdb')",
            )
    lengths = [len(p) for p in items]
    if len(items) * max(lengths) > MAX_RESIDUES:
        raise InvalidArgumentError(
            f"{len(items)} protein(s) padded to {max(lengths):,} residues is more than {MAX_RESIDUES:,} residues "
            "in one batch",
            "score fewer or shorter proteins per call (memory grows with the square of the length)",
        )
    return items


def _batch(proteins: list[Protein], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone X ``[B, L, 4, 3]`` and C ``[B, L]``, zero-padded to the longest protein."""
    pairs = [p.to_XCS()[:2] for p in proteins]
    L = max(X.shape[1] for X, _ in pairs)
    X = torch.cat([torch.nn.functional.pad(X, (0, 0, 0, 0, 0, L - X.shape[1])) for X, _ in pairs])
    C = torch.cat([torch.nn.functional.pad(C, (0, L - C.shape[1])) for _, C in pairs])
    return X.to(device), C.to(device)


def score_backbone(
    model: ChromaBackbone,
    proteins: Protein | Sequence[Protein],
    num_samples: int = 50,
    tspan: Sequence[float] = (1e-4, 1.0),
    seed: int = 0,
    *,
    dither: bool = False,
) -> dict[str, Any] | list[dict[str, Any]]:
    """Score one Protein (a dict) or a list of them (a list of dicts) with the model's denoiser.

    Each dict holds, per metric of :data:`~biozoo_chroma.losses.METRICS`, a :class:`Score` (time average and
    the value at each time); ``t`` (the time grid); ``X`` and ``X0_pred`` as :class:`Coordinates`, cut to the
    protein's own length. ``seed`` (default 0, the reference's fixed seed) feeds every draw; ``dither=True``
    turns on the reference's two dithers (drawn from the same generator). Runs in eval mode (no dropout).
    """
    single = not isinstance(proteins, list | tuple)
    items = _check_proteins(proteins)
    check_num_samples_and_tspan(num_samples, tspan)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidArgumentError(f"seed must be an integer, not {seed!r}", "e.g. seed=0")
    device = next(model.parameters()).device
    X, C = _batch(items, device)
    generator = torch.Generator(device=device).manual_seed(seed)
    losses = ReconstructionLosses(model.diffusion, loss_scale=model.loss_scale, dither=dither)

    def X0_func(X_t: torch.Tensor, C_: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model.denoise(X_t, C_, t, dither=dither, generator=generator)

    training = model.training
    model.eval()
    try:
        metrics, samples = losses.estimate_metrics(
            X0_func, X, C, num_samples=num_samples, tspan=tspan, generator=generator, return_samples=True
        )
    finally:
        model.train(training)
    grid = [float(t) for t in samples["t"].cpu()]
    results = []
    for i, protein in enumerate(items):
        L = len(protein)
        result: dict[str, Any] = {"t": grid}
        for key in ("X", "X0_pred"):
            value = metrics[key][i : i + 1, :L].float().cpu()
            result[key] = Coordinates(value, samples[key][:, i : i + 1, :L].float().cpu())
        for key in METRICS:
            per_t = samples[key][:, i].double().cpu()
            result[key] = Score(float(metrics[key][i]), [float(v) for v in per_t])
        results.append(result)
    return results[0] if single else results
