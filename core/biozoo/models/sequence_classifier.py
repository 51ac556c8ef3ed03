"""A generic token-sequence classifier: embedding -> positions -> encoder -> head.

The core's own architecture (``core.sequence_classifier``): small enough to
test assembly, weights and the Hub with no plugin installed, general enough to
carry a real model.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from biozoo.components.base import Architecture, Slot
from biozoo.components.ports import Port
from biozoo.plugins.declarations import ComponentKind


class SequenceClassifier(Architecture):
    slots: ClassVar[dict[str, Slot]] = {
        "embedding": Slot(ComponentKind.ENCODER, description="token ids -> hidden"),
        "positional": Slot(ComponentKind.POSITIONAL_ENCODING, required=False, description="adds positions"),
        "encoder": Slot(ComponentKind.ENCODER, description="hidden -> hidden"),
        "head": Slot(ComponentKind.HEAD, description="hidden -> logits"),
    }

    def __init__(self, *, embedding, encoder, head, positional=None, token_meaning: str = "token-ids") -> None:
        super().__init__()
        self.token_meaning = token_meaning
        self.embedding, self.positional, self.encoder, self.head = embedding, positional, encoder, head

    def model_inputs(self) -> tuple[Port, ...]:
        return (
            Port("input_ids", self.token_meaning, ("B", "T")),
            Port("padding_mask", "padding-mask", ("B", "T"), optional=True),
        )

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``input_ids [B,T]``; ``padding_mask`` bool ``[B,T]``, True = padding."""
        x = self.embedding(input_ids)
        rotary = None
        if self.positional is not None:
            if getattr(self.positional, "mode", "none") == "rotary":
                rotary = self.positional
            else:
                x = self.positional(x)
        hidden = self.encoder(x, padding_mask=padding_mask, rotary=rotary)
        out = self.head(hidden, padding_mask=padding_mask)
        return {"hidden": hidden, **out}
