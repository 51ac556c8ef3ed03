"""Motif scaffolding: sample a protein whose selected residues keep a given structure's backbone.

The reference's ``SubstructureConditioner`` contract (generate-chroma 1.0.0): the sampler's unconstrained state X
is whitened with the prior's R^-1 and re-coloured by the prior conditioned on the motif
(:class:`~biozoo_chroma.conditioners.conditional_mvn.ConditionalBackboneMVN`), so the constrained X has the motif's
atoms exactly and the rest distributed as the prior says given them. Optional reconstruction guidance (``rg``) adds
the energy |R^-1 (X_motif - X0)|^2 of the denoiser's prediction at the motif (the rest imputed along the chain),
with its gradient rescaled to RMS ``weight / sigma(t)`` (at most ``weight_max``) inside ``tspan`` and 0 outside.

Sample with the motif protein's chains, e.g. ``model.sample(protein_init=protein, conditioner=conditioner)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from biozoo_chroma.conditioners.conditional_mvn import ConditionalBackboneMVN
from biozoo_chroma.conditioners.errors import ConditionerError
from biozoo_chroma.diffusion.chains import center_X, impute_masked_X
from biozoo_chroma.diffusion.conditioners import State

if TYPE_CHECKING:
    from biozoo_chroma.backbone.model import ChromaBackbone
    from biozoo_chroma.structures import Protein


def motif_mask(protein: Protein, selection: Any) -> torch.Tensor:
    """The motif's positions ``[1, L]`` bool from a mask or a selection string (``"A:10-20"``), checked: not
    empty, not the whole protein, and every selected residue has a backbone."""
    from biozoo_chroma.design.selection import SelectionError, resolve_selection

    try:
        D = resolve_selection(protein, selection, what="motif residues")
    except SelectionError as e:
        raise ConditionerError(e.message, e.hint) from None
    C = protein.to_XCS()[1]
    if not bool(D.any()):
        raise ConditionerError("the motif selection is empty", 'select residues to keep, e.g. "A:10-20"')
    if bool(D.all()):
        raise ConditionerError(
            "the motif selection is the whole protein: nothing is left to sample",
            "select only the residues to keep, or give a structure with residues to fill in",
        )
    unobserved = torch.nonzero(D[0] & (C[0] <= 0))[:, 0].tolist()
    if unobserved:
        chain, numbers = protein.chain_ids, protein.residue_ids
        names = [f"{chain[int(C[0, i].abs()) - 1]}:{numbers[i]}" for i in unobserved[:5]]
        raise ConditionerError(
            f"motif residue(s) {', '.join(names)} have no backbone coordinates in the structure",
            "select only residues whose N, CA, C and O atoms are in the file",
        )
    return D


class SubstructureConditioner(nn.Module):
    """Keep the backbone of ``selection`` of ``protein`` fixed while sampling the rest (the reference's contract).

    ``backbone_model`` supplies the prior (and the denoiser for ``rg``); ``gamma`` inflates the spread of chain
    centres (0.01 .. 1 lets the scaffold's centre move off the motif's); ``center_init`` centres the structure first.
    """

    def __init__(
        self,
        protein: Protein,
        backbone_model: ChromaBackbone,
        selection: Any,
        rg: bool = False,
        weight: float = 1.0,
        tspan: tuple[float, float] = (1e-1, 1.0),
        weight_max: float = 3.0,
        gamma: float | None = None,
        center_init: bool = True,
    ) -> None:
        super().__init__()
        if not (0 <= tspan[0] < tspan[1]):
            raise ConditionerError(f"tspan {tspan!r} must be increasing times (start, end)", "e.g. tspan=(0.1, 1.0)")
        D = motif_mask(protein, selection)
        X, C, S = protein.to_XCS()
        if center_init:
            X = center_X(X, C)
        self.backbone_model = backbone_model
        covariance = backbone_model.diffusion.covariance
        self.conditional = ConditionalBackboneMVN(X, C, D, covariance.complex_scaling, gamma)
        self.rg, self.weight, self.weight_max, self.tspan = bool(rg), float(weight), float(weight_max), tuple(tspan)
        self.register_buffer("X", self.conditional.mu_sample.clone())
        self.register_buffer("C", C)
        self.register_buffer("S", S)
        self.register_buffer("D", D)

    def _transform_gradient(self, t: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        def transform(grad: torch.Tensor) -> torch.Tensor:
            inside = (t > self.tspan[0]) & (t < self.tspan[1])
            sigma = self.backbone_model.diffusion.schedule.sigma(t).to(grad.device)
            scale = (self.weight / sigma).clamp(max=self.weight_max).masked_fill(~inside, 0.0)
            rms = grad.square().mean(dim=[1, 2, 3], keepdim=True).sqrt()
            return scale.to(grad.dtype).reshape(-1, 1, 1, 1) * grad / rms

        return transform

    def rg_loss(self, X0: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """|R^-1 (X_motif - X0)|^2 per batch element, both imputed from their motif residues alone."""
        C_motif = torch.where(self.D, C, -C.abs())
        X0 = impute_masked_X(X0, C_motif)
        target = impute_masked_X(self.X.to(X0.dtype).expand(X0.shape[0], -1, -1, -1), C_motif)
        whitened = self.backbone_model.diffusion.covariance.multiply_R_inverse(target - X0, C)
        return whitened.square().sum([1, 2, 3])

    def forward(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        O: torch.Tensor,  # noqa: E741
        U: torch.Tensor,
        t: torch.Tensor,
    ) -> State:
        """Unconstrained X -> X with the motif in place (and U plus the guidance energy with ``rg``)."""
        if X.shape[1] != self.C.shape[1]:
            raise ConditionerError(
                f"the motif's protein has {self.C.shape[1]} residues but the sampler's system has {X.shape[1]}",
                "sample with the motif's chains: model.sample(protein_init=protein, conditioner=...)",
            )
        Z = self.backbone_model.diffusion.covariance.multiply_R_inverse(X, C)
        X = self.conditional.sample(Z)
        if self.rg:
            X_input = X + 0.0
            if X_input.requires_grad:
                X_input.register_hook(self._transform_gradient(torch.as_tensor(t, device=X.device)))
            X0 = self.backbone_model.denoise(X_input, C, t)
            U = U + self.rg_loss(X0, C)
        return X, C, O, U, t
