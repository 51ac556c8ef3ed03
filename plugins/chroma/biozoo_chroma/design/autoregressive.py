"""Autoregressive sequence design (``design_method="autoregressive"``): ancestral sampling from the decoder.

The sequence half of the reference's ``GraphDesign.sample(sampling_method="autoregressive")``: residues are drawn
one at a time in a decoding order (by default a :class:`~biozoo_chroma.design.traversal.SpatialTraversal` that puts
the kept residues first), each from the decoder's distribution given the residues before it, sharpened by a
temperature, restricted to the allowed types (design mask, banned residues), optionally nucleus-filtered (top-p)
and shifted by the LCP bias (:mod:`~biozoo_chroma.design.lcp_decoding`). Kept residues are "sampled" from their one
allowed type, so they also condition the residues decoded after them.

The chi angles (side chains) are a second stage that reads the designed sequence; it is not part of this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from biozoo.errors import InvalidArgumentError
from biozoo_chroma.design.lcp_decoding import lcp_bias
from biozoo_chroma.design.network import ChromaDesign, DesignEncoding
from biozoo_chroma.design.potts import check_temperature, sampling_masks
from biozoo_chroma.design.selection import banned_states
from biozoo_chroma.design.traversal import SpatialTraversal

REGULARIZATIONS = (None, "LCP")


class AutoregressiveDesign(NamedTuple):
    """A designed sequence, its per-residue log-likelihoods under the decoder, and the order it was decoded in."""

    S: torch.Tensor  # [B, L]
    logp_S: torch.Tensor  # [B, L], at temperature 1, without bias or filtering
    permute_idx: torch.Tensor  # [B, L]


def check_top_p(top_p: float | None) -> float | None:
    """``None`` (no filtering) or a nucleus size in (0, 1]."""
    if top_p is None:
        return None
    if isinstance(top_p, bool) or not isinstance(top_p, int | float) or not (0 < top_p <= 1):
        raise InvalidArgumentError(
            f"top_p_S must be in (0, 1], got {top_p!r}",
            "pass e.g. top_p_S=0.9 to sample only from the most likely 90% of each residue's distribution, or "
            "None to sample from all of it",
        )
    return float(top_p)


def check_permutation(permute_idx: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A decoding order ``[B, L]`` that is a permutation of ``0..L-1`` in every row (checked once, before decoding)."""
    L = shape[-1]
    ok = isinstance(permute_idx, torch.Tensor) and tuple(permute_idx.shape) == tuple(shape)
    ok = ok and not permute_idx.is_floating_point()
    if ok:
        expected = torch.arange(L, device=permute_idx.device).expand(shape)
        ok = bool(torch.equal(torch.sort(permute_idx, dim=-1).values, expected))
    if not ok:
        raise InvalidArgumentError(
            f"permute_idx must be an integer tensor of shape {list(shape)} holding each of 0..{L - 1} once per row",
            "pass a decoding order such as torch.randperm(L) per system, or None to draw a spatial one",
        )
    return permute_idx.long()


@torch.no_grad()
def design_autoregressive(
    model: ChromaDesign,
    enc: DesignEncoding,
    X: torch.Tensor,
    C: torch.Tensor,
    S: torch.Tensor | None = None,
    *,
    mask_sample: torch.Tensor | None = None,
    permute_idx: torch.Tensor | None = None,
    ban_S: Sequence[str] | None = None,
    temperature: float = 0.1,
    top_p: float | None = None,
    regularization: str | None = "LCP",
    traversal: SpatialTraversal | None = None,
    generator: torch.Generator | None = None,
) -> AutoregressiveDesign:
    """Design sequences ``[B, L]`` for the backbones ``X, C`` that ``model.encode`` turned into ``enc``.

    ``mask_sample`` ``[B, L]`` marks the positions to design (the others keep their type in ``S``; see
    :func:`~biozoo_chroma.design.selection.resolve_selection`) or ``[B, L, Q]`` the allowed types per position;
    ``ban_S`` lists one-letter residues never to design; ``temperature`` (the reference's ``temperature_S``) > 0;
    ``top_p`` (``top_p_S``) in (0, 1]; ``regularization`` ``"LCP"`` or None. ``permute_idx`` fixes the decoding
    order; otherwise ``traversal`` (default :class:`SpatialTraversal`) draws one from ``X``. Every random draw
    comes from ``generator``.
    """
    temperature = check_temperature("temperature_S", temperature)
    top_p = check_top_p(top_p)
    if regularization not in REGULARIZATIONS:
        raise InvalidArgumentError(f"unknown regularization {regularization!r}", "use 'LCP' or None")
    if not model.predict_S_autoregressive:
        raise InvalidArgumentError(
            "this design network has no autoregressive decoder (it was built with sidechains=False)",
            "use design_method='potts', or a checkpoint with the autoregressive decoder",
        )
    banned = banned_states(ban_S, model.num_alphabet)
    if S is None:
        if mask_sample is not None:
            raise InvalidArgumentError(
                "a design mask needs the sequence of the positions it keeps", "pass S with mask_sample"
            )
        S = torch.zeros(C.shape, dtype=torch.long, device=C.device)
    if S.shape != C.shape:
        raise InvalidArgumentError(f"S has shape {list(S.shape)}, C {list(C.shape)}", "pass one type per position of C")
    if mask_sample is not None and tuple(mask_sample.shape) not in (tuple(C.shape), (*C.shape, model.num_alphabet)):
        raise InvalidArgumentError(
            f"mask_sample has shape {list(mask_sample.shape)}, C {list(C.shape)}",
            f"pass a [B, L] mask of positions to design or a [B, L, {model.num_alphabet}] mask of allowed residues",
        )
    allowed, mutable, _ = sampling_masks(model.num_alphabet, S, mask_sample, banned, generator)
    if permute_idx is None:
        permute_idx = (traversal or SpatialTraversal())(X, C, priority=mutable, generator=generator)
    else:
        permute_idx = check_permutation(permute_idx, C.shape)
    S_out, logp_S = model.decoder.decode(
        C, S, *enc, permute_idx, temperature=temperature, sample=True, allowed=allowed, top_p=top_p,
        bias=lcp_bias if regularization == "LCP" else None, generator=generator,
    )  # fmt: skip
    return AutoregressiveDesign(S_out, logp_S, permute_idx)

