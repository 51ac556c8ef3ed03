"""Symmetric assemblies: sample one asymmetric unit (AU), let the denoiser see it with its symmetry mates.

The reference's ``SymmetryConditioner`` contract (generate-chroma 1.0.0): the sampler's state is the AU
(``[B, L, 4, 3]``, chains ``C``); the conditioner tiles it with the group's rotations (``expand_au``, after
moving its centre so that the assembly's chain centres spread as the prior expects of a complex of that size),
keeps the ``num_chain_neighbors + 1`` copies nearest a seed copy (``subsample``), rotates them back so that the
seed is the AU itself (``canonicalize``), and returns that sub-complex as the constrained state. Gradients from
the copies flow back into the AU averaged (``grad surgery``: optionally with the centre-of-mass component
rescaled, or removed). After sampling, :meth:`SymmetryConditioner.postprocess` rebuilds the full assembly from the
seed copy (``symmetrize``). Unlike the reference this works for batches (the reference reshapes to batch 1), and
padding (C = 0) stays padding in every copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from biozoo_chroma.conditioners.errors import ConditionerError
from biozoo_chroma.conditioners.groups import group_order, point_group
from biozoo_chroma.diffusion.chains import ChainLayout, center_X
from biozoo_chroma.diffusion.conditioners import State
from biozoo_chroma.diffusion.covariance import _NU, _RG0
from biozoo_chroma.graph.geometry import compute_dtype

if TYPE_CHECKING:
    from biozoo_chroma.structures import Protein


def flat_bottom_potential(r: torch.Tensor, r0: float, k: float, d: float) -> torch.Tensor:
    """0 within ``d`` of ``r0``, ``k (|r - r0| - d)^2`` beyond: a restraint that only acts on outliers.

    The reference defines it for an interface restraint between chains but never calls it; it is kept here so a
    composed restraint can use it.
    """
    excess = (r - r0).abs() - d
    return torch.where(excess < 0, torch.zeros_like(r), k * excess**2)


def chain_center_spread(C: torch.Tensor) -> torch.Tensor:
    """Expected std of the chain centres of each complex ``[B]`` under the prior's Rg scaling (Rg ~ N^(2/5)).

    The complex's Rg^2 less the size-weighted mean chain Rg^2 is the spread of the centres (at least 1), corrected
    for the centres being drawn independently but measured about their mean. Chain slots up to max |C| of the batch
    that are empty count as chains of one atom in the weighting, as in the reference's ``translational_scaling``.
    """
    layout = ChainLayout.from_chain_map(C)
    count = layout.segment_count(torch.float32)[:, 1:]
    absent = layout.num_slots - layout.num_chains
    rg2_complex = _RG0**2 * count.sum(1) ** (2 * _NU)
    rg2_mean = (count * _RG0**2 * count ** (2 * _NU)).sum(1) / (count.sum(1) + absent + 1e-5)
    spread = torch.clamp(rg2_complex - rg2_mean, min=1).sqrt()
    chains = layout.num_chains
    return torch.sqrt(chains / (chains - 1).clamp(min=1)) * spread


def expand_chain_map(C: torch.Tensor, copies: int) -> torch.Tensor:
    """``copies`` copies of C side by side, copy i's chain ids shifted by i * max(C) (signs and padding kept)."""
    top = C.amax(dim=1, keepdim=True)
    shifted = [torch.where(C == 0, C, C.sign() * (C.abs() + top * i)) for i in range(copies)]
    return torch.cat(shifted, dim=1)


def expand_au(
    X: torch.Tensor, C: torch.Tensor, G: torch.Tensor, translate_ratio: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The AU ``[B, L, A, 3]`` tiled by every rotation of G -> ``[B, |G| L, A, 3]`` and its chain map.

    With ``translate_ratio`` ``[B]`` the AU's centre (over present residues) is first scaled by it, which moves the
    copies apart or together about the symmetry axes.
    """
    if translate_ratio is not None:
        present = (C > 0).to(X.dtype)[..., None, None].expand(-1, -1, X.shape[2], 1)
        center = (present * X).sum([1, 2], keepdim=True) / present.sum([1, 2], keepdim=True)
        X = (X - center) + center * translate_ratio.to(X.dtype).reshape(-1, 1, 1, 1)
    tiled = torch.einsum("gij,braj->bgrai", G.to(X), X).reshape(X.shape[0], -1, *X.shape[2:])
    return tiled, expand_chain_map(C, G.shape[0])


def subsample(
    X: torch.Tensor, C: torch.Tensor, order: int, neighbors: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The seed copy and its ``neighbors`` nearest copies (by centre distance, nearest first) of a tiled assembly.

    Returns their coordinates ``[B, (neighbors + 1) L, A, 3]``, the chain map of the first ``neighbors + 1`` copies
    (ids 1.., so the seed always has the AU's ids) and the chosen copies ``[B, neighbors + 1]``.
    """
    B = X.shape[0]
    copies = X.reshape(B, order, -1, 3)
    centers = copies.mean(2)
    distance = (centers - centers[:, seed : seed + 1]).pow(2).sum(-1).sqrt()
    index = distance.topk(neighbors + 1, largest=False).indices
    chosen = copies.gather(1, index[..., None, None].expand(-1, -1, *copies.shape[2:]))
    C_sub = C.reshape(B, order, -1)[:, : neighbors + 1].reshape(B, -1)
    return chosen.reshape(B, -1, *X.shape[2:]), C_sub, index


def asymmetric_unit(chain_lengths: Sequence[int], group: str) -> list[int]:
    """The AU's chain lengths of an assembly of ``chain_lengths`` with symmetry ``group`` (checked).

    The group's order must divide the number of chains and the lengths must repeat with that period: an assembly
    of 3 x 30 residues under C3 has the AU [30].
    """
    order, count = group_order(group), len(chain_lengths)
    if count % order:
        raise ConditionerError(
            f"symmetry {group} has {order} copies, which does not divide the {count} chain(s) asked for",
            f"give a multiple of {order} chains, e.g. --chains {','.join([str(chain_lengths[0])] * order)}",
        )
    unit = list(chain_lengths[: count // order])
    if list(chain_lengths) != unit * order:
        raise ConditionerError(
            f"chain lengths {','.join(map(str, chain_lengths))} do not repeat {order} times as symmetry {group} needs",
            f"give the asymmetric unit's lengths {order} times over, e.g. --chains {','.join(map(str, unit * order))}",
        )
    return unit


class SymmetryConditioner(nn.Module):
    """Constrain sampling to a point group's assemblies of the sampled AU (the reference's contract).

    ``group`` is a name (``"C3"``, ``"D2"``) or rotation matrices ``[|G|, 3, 3]``; the denoiser sees the AU and its
    ``num_chain_neighbors`` nearest copies (at most |G| - 1). ``seed_idx`` fixes the seed copy (else one is drawn
    from torch's CPU generator each call, as the reference does: no device sync). ``freeze_com`` removes the
    centre-of-mass component of the copies' gradient; ``grad_com_surgery`` rescales it by the ratio of the
    assembly's to the AU's expected centre spread; with either, the copies are not moved apart
    (``enable_rigid_drift`` otherwise sets how far).
    """

    def __init__(
        self,
        group: str | torch.Tensor,
        num_chain_neighbors: int,
        freeze_com: bool = False,
        grad_com_surgery: bool = False,
        enable_rigid_drift: bool = True,
        canonicalize: bool = True,
        seed_idx: int | None = None,
    ) -> None:
        super().__init__()
        G = point_group(group) if isinstance(group, str) else torch.as_tensor(group, dtype=torch.float32)
        if G.dim() != 3 or G.shape[1:] != (3, 3) or G.shape[0] < 1:
            raise ConditionerError(
                f"symmetry group matrices must have shape [n, 3, 3], not {list(G.shape)}", "or name a group: 'C3'"
            )
        if isinstance(num_chain_neighbors, bool) or not isinstance(num_chain_neighbors, int) or num_chain_neighbors < 0:
            raise ConditionerError(
                f"num_chain_neighbors must be an integer >= 0, not {num_chain_neighbors!r}",
                f"e.g. {G.shape[0] - 1} to show the denoiser the whole assembly",
            )
        order = G.shape[0]
        if seed_idx is not None and not (isinstance(seed_idx, int) and 0 <= seed_idx < order):
            raise ConditionerError(f"seed_idx must be a copy index from 0 to {order - 1}, not {seed_idx!r}", "or None")
        self.register_buffer("G", G, persistent=False)
        self.name = group if isinstance(group, str) else f"{order} rotations"
        self.num_chain_neighbors = min(num_chain_neighbors, order - 1)
        self.freeze_com, self.grad_com_surgery = bool(freeze_com), bool(grad_com_surgery)
        self.enable_rigid_drift, self.canonicalize = bool(enable_rigid_drift), bool(canonicalize)
        self.seed_idx = seed_idx

    @property
    def order(self) -> int:
        """|G|: copies of the AU in the full assembly."""
        return self.G.shape[0]

    @property
    def potts_symmetry_order(self) -> int:
        """Copies in the sampled sub-complex (what sequence design ties together)."""
        return self.num_chain_neighbors + 1

    def translate_ratio(self, C: torch.Tensor, C_tess: torch.Tensor) -> torch.Tensor:
        """How far the AU's centre moves out so the copies' centres spread like a complex's (1 without drift)."""
        if not self.enable_rigid_drift:
            return torch.ones(C.shape[0], device=C.device)
        return chain_center_spread(C_tess) / (chain_center_spread(C) * math.sqrt(self.potts_symmetry_order))

    def _grad_surgery(self, C: torch.Tensor, C_tess: torch.Tensor, C_sub: torch.Tensor) -> Callable:
        def surgery(dX: torch.Tensor) -> torch.Tensor:
            if self.grad_com_surgery:
                ratio = (chain_center_spread(C_tess) / chain_center_spread(C)).to(dX.dtype).reshape(-1, 1, 1, 1)
                mean = dX.mean([1, 2], keepdim=True)
                dX = dX + mean * (ratio - 1)
            if self.freeze_com:
                dX = center_X(dX, C_sub)
            return dX / self.potts_symmetry_order

        return surgery

    def forward(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        O: torch.Tensor,  # noqa: E741
        U: torch.Tensor,
        t: torch.Tensor,
    ) -> State:
        """The AU ``X [B, L, 4, 3]`` -> the canonical sub-complex ``[B, (k+1) L, 4, 3]`` with its C and tiled O."""
        G = self.G.to(device=X.device, dtype=compute_dtype(X.dtype))
        Xc = X.to(G.dtype)
        ratio = None
        if not (self.grad_com_surgery or self.freeze_com):
            ratio = self.translate_ratio(C, expand_chain_map(C, self.order))
        X_tess, C_tess = expand_au(Xc, C, G, ratio)
        seed = self.seed_idx if self.seed_idx is not None else int(torch.randint(0, self.order, (1,)))
        X_sub, C_sub, _ = subsample(X_tess, C_tess, self.order, self.num_chain_neighbors, seed)
        if self.canonicalize:
            X_sub = torch.einsum("ij,barj->bari", torch.linalg.inv(G[seed]), X_sub)
        if X_sub.requires_grad:
            X_sub.register_hook(self._grad_surgery(C, C_tess, C_sub))
        k = self.potts_symmetry_order
        O_sub = O[:, None].expand(-1, k, -1, -1).reshape(*C_sub.shape, O.shape[-1])
        return X_sub.to(X.dtype), C_sub, O_sub, U, t

    def symmetrize(
        self, X: torch.Tensor, C: torch.Tensor, S: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The full assembly from a sampled sub-complex: its seed copy (the first) tiled by all of G, centred on
        its backbone atoms. ``X`` may have any number of atoms per residue (backbone or all-atom)."""
        B, k = X.shape[0], self.potts_symmetry_order
        X_seed = X.reshape(B, k, -1, *X.shape[2:])[:, 0]
        C_seed, S_seed = C.reshape(B, k, -1)[:, 0], S.reshape(B, k, -1)[:, 0]
        G = self.G.to(device=X.device, dtype=compute_dtype(X.dtype))
        X_full, C_full = expand_au(X_seed.to(G.dtype), C_seed, G)
        present = (C_full > 0).to(G.dtype)[..., None, None]
        backbone = X_full[:, :, :4]
        center = (present * backbone).sum([1, 2], keepdim=True) / (4 * present.sum([1, 2], keepdim=True))
        return (X_full - center).to(X.dtype), C_full, S_seed.repeat(1, self.order)

    def postprocess(self, protein: Protein) -> Protein:
        """The sampled (or designed) sub-complex as the full assembly, side chains included when complete."""
        from biozoo_chroma.structures import Protein

        X_all, C_all, S = protein.to_XCS(all_atom=True)
        X, C, _ = protein.to_XCS()
        if torch.equal(C_all, C):  # every residue has its side chain: keep it
            X = X_all
        return Protein.from_XCS(*self.symmetrize(X, C, S))
