"""Design, pack and score sequences on :class:`~biozoo_chroma.Protein` objects (the reference's ``Chroma.design``,
``Chroma.pack`` and ``Chroma.score_sequence``, for a :class:`~biozoo_chroma.design.ChromaDesign` network).

These compose the tensor-level pieces: selections (:mod:`~biozoo_chroma.design.selection`), Potts design
(:meth:`ChromaDesign.design_potts`), autoregressive design (:mod:`~biozoo_chroma.design.autoregressive`), packing
(:meth:`ChromaDesign.pack`) and the design loss (:mod:`~biozoo_chroma.design.loss`). Every random draw comes from
one ``torch.Generator`` (``seed=`` or ``generator=``); torch's global generator is never touched.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from biozoo.errors import InvalidArgumentError
from biozoo_chroma.design.autoregressive import REGULARIZATIONS, check_top_p, design_autoregressive
from biozoo_chroma.design.loss import design_loss
from biozoo_chroma.design.network import ChromaDesign
from biozoo_chroma.design.potts import PROPOSALS, check_symmetry_order, check_temperature, sampling_masks
from biozoo_chroma.design.selection import banned_states, resolve_selection
from biozoo_chroma.design.traversal import SpatialTraversal
from biozoo_chroma.structures import Protein

METHODS = ("potts", "autoregressive")
#: What ``score_sequence`` reports per protein as a number (the other entries are tensors).
SEQUENCE_SCORES = ("neglogp", "neglogp_S", "neglogp_S_marginals", "neglogp_S_potts", "neglogp_chi", "rmsd", "clash")


class DesignedXCS(NamedTuple):
    """What :func:`design_xcs` returns (the reference's ``GraphDesign.sample`` outputs)."""

    X: torch.Tensor  # [B, L, 14, 3] backbone as given, side chains packed for the designed sequence
    S: torch.Tensor  # [B, L] the designed sequence
    permute_idx: torch.Tensor  # [B, L] the decoding order (sequence, for autoregressive design, and chi)


def make_generator(
    seed: int | None, generator: torch.Generator | None, device: torch.device | str = "cpu"
) -> torch.Generator:
    """``generator`` as given, else a new one seeded with ``seed`` (a fresh random seed when None)."""
    if generator is not None:
        return generator
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise InvalidArgumentError(f"seed must be an integer >= 0, got {seed!r}", "e.g. seed=0")
    made = torch.Generator(device=device)
    if seed is None:
        made.seed()
    else:
        made.manual_seed(seed)
    return made


def _where(model: ChromaDesign) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters())
    return param.device, param.dtype


def _check_protein(protein: Any, what: str = "protein") -> Protein:
    if not isinstance(protein, Protein):
        raise InvalidArgumentError(
            f"{what} must be a biozoo_chroma.Protein, got {type(protein).__name__}",
            'read one with Protein("file.pdb") (PDB or mmCIF)',
        )
    return protein


def _as_protein(protein: Protein, X: torch.Tensor, C: torch.Tensor, S: torch.Tensor) -> Protein:
    """A new Protein with ``protein``'s chain ids and numbering and the given coordinates and sequence."""
    return Protein.from_XCS(
        X.detach().float().cpu(), C.cpu(), S.cpu(), chain_ids=protein.chain_ids,
        residue_ids=protein.residue_ids, insertion_codes=protein.insertion_codes,
    )  # fmt: skip


def check_design_options(
    method: str,
    temperature_S: float,
    temperature_chi: float,
    top_p_S: float | None,
    regularization: str | None,
    proposal: str,
    symmetry_order: int | None,
) -> None:
    """Refuse bad design settings before anything is computed."""
    if method not in METHODS:
        raise InvalidArgumentError(f"unknown design method {method!r}", f"use one of: {', '.join(METHODS)}")
    check_temperature("temperature_S", temperature_S)
    check_temperature("temperature_chi", temperature_chi)
    check_top_p(top_p_S)
    if regularization not in REGULARIZATIONS:
        raise InvalidArgumentError(f"unknown regularization {regularization!r}", "use 'LCP' or None")
    if method == "potts":
        if top_p_S is not None:
            raise InvalidArgumentError(
                "top_p_S filters autoregressive decoding; Potts design does not use it",
                "use design_method='autoregressive' with top_p_S, or leave top_p_S unset",
            )
        if proposal not in PROPOSALS:
            raise InvalidArgumentError(f"unknown Potts proposal {proposal!r}", f"use one of: {', '.join(PROPOSALS)}")
    elif symmetry_order is not None:
        raise InvalidArgumentError(
            "symmetric sequence design (potts_symmetry_order) works with Potts design only",
            "use design_method='potts', or leave potts_symmetry_order unset",
        )


@torch.no_grad()
def design_xcs(
    model: ChromaDesign,
    X: torch.Tensor,
    C: torch.Tensor,
    S: torch.Tensor,
    *,
    mask_sample: torch.Tensor | None = None,
    ban_S: Sequence[str] | None = None,
    method: str = "potts",
    t: float | torch.Tensor | None = 0.5,
    temperature_S: float = 0.01,
    temperature_chi: float = 1e-3,
    top_p_S: float | None = None,
    regularization: str | None = "LCP",
    potts_sweeps: int = 500,
    potts_proposal: str = "dlmc",
    symmetry_order: int | None = None,
    permute_idx: torch.Tensor | None = None,
    chi_uniforms: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    verbose: bool = False,
) -> DesignedXCS:
    """Design a sequence for the backbone ``X [B, L, 4 or 14, 3]`` and pack its side chains (``GraphDesign.sample``).

    In the reference's order: the sequence is designed from the encoding at diffusion time ``t`` (Potts MCMC or
    autoregressive decoding, in a spatial decoding order that puts the kept residues of ``mask_sample`` first),
    then every side chain is packed from the encoding of the exact structure (t = 0) in the same order.
    ``permute_idx`` fixes that order and ``chi_uniforms [B, L, 4]`` the chi draws; the rest comes from
    ``generator``.
    """
    check_design_options(method, temperature_S, temperature_chi, top_p_S, regularization, potts_proposal,
                         symmetry_order)  # fmt: skip
    if symmetry_order is not None:
        check_symmetry_order(symmetry_order, C.shape[1], int(C.abs().amax()))
    banned = banned_states(ban_S, model.num_alphabet)
    if generator is None:
        generator = make_generator(None, None, C.device)
    start = time.perf_counter()
    if method == "autoregressive":
        enc = model.encode(X, C, t)
        designed = design_autoregressive(
            model, enc, X[:, :, :4], C, S, mask_sample=mask_sample, permute_idx=permute_idx, ban_S=ban_S,
            temperature=temperature_S, top_p=top_p_S, regularization=regularization, generator=generator,
        )  # fmt: skip
        S_new, permute_idx = designed.S, designed.permute_idx
    else:
        if permute_idx is None:  # the order packing uses: kept residues first, as the reference draws it
            mutable = sampling_masks(model.num_alphabet, S, mask_sample, banned, generator)[1]
            permute_idx = SpatialTraversal()(X[:, :, :4], C, priority=mutable, generator=generator)
        S_new, _ = model.design_potts(
            X, C, S, t=t, mask_sample=mask_sample, ban_S=ban_S, temperature=temperature_S, num_sweeps=potts_sweeps,
            proposal=potts_proposal, regularization=regularization, symmetry_order=symmetry_order,
            generator=generator,
        )  # fmt: skip
    if verbose:
        print(f"designed {S_new.shape[1]} residues ({method}) in {time.perf_counter() - start:.2f} s", file=sys.stderr)
    packed = model.pack(
        X[:, :, :4], C, S_new, temperature_chi=temperature_chi, permute_idx=permute_idx, uniforms=chi_uniforms,
        generator=generator,
    )  # fmt: skip
    if verbose:
        print(f"packed side chains in {time.perf_counter() - start:.2f} s (total)", file=sys.stderr)
    return DesignedXCS(packed.X, S_new, permute_idx)


def design(
    model: ChromaDesign,
    protein: Protein,
    design_ban_S: Sequence[str] | None = None,
    design_method: str = "potts",
    design_selection: Any = None,
    design_t: float | None = 0.5,
    temperature_S: float = 0.01,
    temperature_chi: float = 1e-3,
    top_p_S: float | None = None,
    regularization: str | None = "LCP",
    potts_mcmc_depth: int = 500,
    potts_proposal: str = "dlmc",
    potts_symmetry_order: int | None = None,
    verbose: bool = False,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Protein:
    """A new Protein with a designed sequence and packed side chains (the reference's ``Chroma.design``).

    Arguments and defaults are the reference's. ``design_selection`` (the residues to design; the others keep
    their type) is a boolean mask or a string such as ``"A:10-20 B"``
    (:func:`~biozoo_chroma.design.selection.resolve_selection`); ``design_ban_S`` one-letter codes never to use,
    e.g. ``["C"]``; ``design_t`` the noise level the backbone is treated as (0.5: robust design, 0 or None:
    literal). Every side chain is repacked, kept residues' too, as in the reference. ``seed`` (or ``generator``)
    makes the design repeatable.
    """
    _check_protein(protein)
    check_design_options(design_method, temperature_S, temperature_chi, top_p_S, regularization, potts_proposal,
                         potts_symmetry_order)  # fmt: skip
    banned_states(design_ban_S, model.num_alphabet)
    if potts_symmetry_order is not None:
        check_symmetry_order(potts_symmetry_order, len(protein), len(protein.chain_ids))
    mask = None if design_selection is None else resolve_selection(protein, design_selection)
    device, dtype = _where(model)
    generator = make_generator(seed, generator, device)
    X, C, S = protein.to_XCS(device=device)
    designed = design_xcs(
        model, X.to(dtype), C, S, mask_sample=None if mask is None else mask.to(device).float(), ban_S=design_ban_S,
        method=design_method, t=design_t, temperature_S=temperature_S, temperature_chi=temperature_chi,
        top_p_S=top_p_S, regularization=regularization, potts_sweeps=potts_mcmc_depth, potts_proposal=potts_proposal,
        symmetry_order=potts_symmetry_order, generator=generator, verbose=verbose,
    )  # fmt: skip
    return _as_protein(protein, designed.X, C, designed.S)


def pack(
    model: ChromaDesign,
    protein: Protein,
    temperature_chi: float = 1e-3,
    clamped: bool = False,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Protein:
    """A new Protein with every side chain packed for its sequence (the reference's ``Chroma.pack``).

    The backbone and sequence stay. With ``clamped`` nothing is drawn: the structure's own side chains are
    scored and rebuilt from their chi angles, so it needs every residue's side-chain atoms (a ``SideChainError``
    counts the residues without them).
    """
    _check_protein(protein)
    if not clamped:
        check_temperature("temperature_chi", temperature_chi)
    device, dtype = _where(model)
    generator = make_generator(seed, generator, device)
    X, C, S = protein.to_XCS(device=device)
    if clamped:  # the own chi are read from the all-atom X; C stays the backbone's so no residue drops out
        X = protein.to_XCS(all_atom=True, device=device)[0]
    packed = model.pack(X.to(dtype), C, S, temperature_chi=temperature_chi, clamped=clamped, generator=generator)
    return _as_protein(protein, packed.X, C, S)


def _pad_batch(proteins: list[Protein], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All-atom XCS of several proteins, zero-padded to the longest (the reference's ``_protein_list_to_XCS``)."""
    tensors = [p.to_XCS(all_atom=True, device=device) for p in proteins]
    L = max(x.shape[1] for x, _, _ in tensors)
    pad = torch.nn.functional.pad
    return (
        torch.cat([pad(x, (0, 0, 0, 0, 0, L - x.shape[1])) for x, _, _ in tensors]),
        torch.cat([pad(c, (0, L - c.shape[1])) for _, c, _ in tensors]),
        torch.cat([pad(s, (0, L - s.shape[1])) for _, _, s in tensors]),
    )


@torch.no_grad()
def score_sequence(
    model: ChromaDesign,
    proteins: Protein | list[Protein],
    t: float | torch.Tensor | None = None,
    *,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
    """Sequence and side-chain scores of each protein under the design network (the reference's
    ``Chroma.score_sequence``, i.e. ``GraphDesign.loss`` per protein).

    Per protein: ``neglogp`` and its terms ``neglogp_S`` (autoregressive), ``neglogp_S_marginals``,
    ``neglogp_S_potts`` (when the network has those heads), ``neglogp_chi`` (nats per residue or chi angle;
    lower is better), ``rmsd`` (Å per residue) and ``clash`` (per residue) of side chains re-drawn at temperature
    0.01, each a 0-dim tensor; ``mask_chi [L, 4]``, ``permute_idx`` (the decoding order over the batch's
    positions) and ``t``. A list
    is one padded batch and gives a list; one Protein gives one dict. Residues missing side-chain atoms are left
    out, as in the reference (all-atom XCS). The decoding order and the chi draws come from ``seed`` (default 0,
    so a score repeats) or ``generator``.
    """
    many = isinstance(proteins, list)
    items = proteins if many else [proteins]
    if not items:
        raise InvalidArgumentError("no proteins to score", "pass a Protein or a non-empty list of them")
    for i, protein in enumerate(items):
        _check_protein(protein, f"proteins[{i}]" if many else "protein")
    device, dtype = _where(model)
    X, C, S = _pad_batch(items, device)
    empty = [i for i in range(len(items)) if not bool((C[i] > 0).any())]
    if empty:
        raise InvalidArgumentError(
            f"protein(s) {', '.join(map(str, empty))} have no residue with all its side-chain atoms, so there is "
            "nothing to score",
            "score all-atom structures; pack the side chains first (zoo pack MODEL in.pdb -o packed.pdb)",
        )
    generator = make_generator(seed, generator, device)
    losses = design_loss(model, X.to(dtype), C, S, t=t, batched=False, generator=generator)
    scores = []
    for i, protein in enumerate(items):
        L = len(protein)
        row = {k: losses[k][i].float().cpu() for k in SEQUENCE_SCORES if k in losses}
        row["mask_chi"] = losses["mask_chi"][i, :L].cpu()
        row["permute_idx"] = losses["permute_idx"][i].cpu()
        row["t"] = losses["t"][i].float().cpu()
        scores.append(row)
    return scores if many else scores[0]
