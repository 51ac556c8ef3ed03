"""Chaining conditioners: each one's output state is the next one's input; post-processing runs in the same order.

Order matters: a substructure constraint on the AU followed by a symmetry expansion fixes the motif in every copy;
the other way round the motif would have to index the expanded complex.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from biozoo_chroma.conditioners.errors import ConditionerError
from biozoo_chroma.diffusion.conditioners import Conditioner, State

if TYPE_CHECKING:
    from biozoo_chroma.structures import Protein


def postprocess(conditioner: object, protein: Protein) -> Protein:
    """``protein`` after ``conditioner``'s post-processing hook (e.g. rebuilding a symmetric assembly), if any."""
    hook = getattr(conditioner, "postprocess", None)
    return hook(protein) if callable(hook) else protein


class ComposedConditioner(nn.Module):
    """Apply ``conditioners`` in order (the reference's ``ComposedConditioner``)."""

    def __init__(self, conditioners: Iterable[Conditioner]) -> None:
        super().__init__()
        items = list(conditioners)
        bad = [type(c).__name__ for c in items if not callable(c)]
        if bad:
            raise ConditionerError(
                f"ComposedConditioner got {', '.join(bad)}, which cannot be called as conditioner(X, C, O, U, t)",
                "pass conditioner modules, e.g. [SubstructureConditioner(...), SymmetryConditioner('C3', 2)]",
            )
        modules = [c for c in items if isinstance(c, nn.Module)]
        self.modules_ = nn.ModuleList(modules)  # registered so .to() and state_dict() reach them
        self.conditioners = items

    def forward(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        O: torch.Tensor,  # noqa: E741
        U: torch.Tensor,
        t: torch.Tensor,
    ) -> State:
        for conditioner in self.conditioners:
            X, C, O, U, t = conditioner(X, C, O, U, t)  # noqa: E741
        return X, C, O, U, t

    def postprocess(self, protein: Protein) -> Protein:
        """Every member's post-processing, in the chain's order."""
        for conditioner in self.conditioners:
            protein = postprocess(conditioner, protein)
        return protein
