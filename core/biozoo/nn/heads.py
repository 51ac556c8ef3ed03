"""Pooling and classification heads shared across models."""

from __future__ import annotations

import torch
from torch import nn

from biozoo.components.base import Component
from biozoo.components.ports import Port, Ports
from biozoo.nn.checks import ConfigError, check_int, check_probability
from biozoo.nn.precision import upcast
from biozoo.plugins.declarations import ComponentKind

POOLINGS = ("cls", "mean", "max")


def pool(hidden: torch.Tensor, padding_mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """``[B,T,D] -> [B,D]``; ``padding_mask`` is True at padding, which never contributes."""
    if how == "cls":
        return hidden[:, 0]
    keep = None if padding_mask is None else (~padding_mask).unsqueeze(-1)
    if how == "mean":  # a sum over the tokens: float32 in half precision, cast back
        if keep is None:
            return upcast(hidden).mean(dim=1).to(hidden.dtype)
        return ((upcast(hidden) * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)).to(hidden.dtype)
    if how == "max":
        if keep is None:
            return hidden.amax(dim=1)
        return hidden.masked_fill(~keep, float("-inf")).amax(dim=1)
    raise ValueError(f"unknown pooling {how!r}; choose from {', '.join(POOLINGS)}")


class PooledClassifier(Component):
    """Pool hidden states, then an MLP to class logits (``core.pooled_classifier``)."""

    kind = ComponentKind.HEAD

    def __init__(
        self,
        d_model: int,
        num_classes: int,
        pooling: str = "cls",
        hidden_layers: int = 0,
        dropout: float = 0.0,
        embedding_meaning: str = "sequence-embedding",
    ) -> None:
        super().__init__()
        check_int("d_model", d_model)
        check_int("num_classes", num_classes)
        check_int("hidden_layers", hidden_layers, minimum=0)
        check_probability("dropout", dropout)
        if pooling not in POOLINGS:
            raise ConfigError("pooling", f"must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.d_model, self.num_classes, self.pooling, self.embedding_meaning = (
            d_model,
            num_classes,
            pooling,
            embedding_meaning,
        )
        layers: list[nn.Module] = []
        for _ in range(hidden_layers):
            layers += [nn.Linear(d_model, d_model), nn.ReLU(), nn.LayerNorm(d_model), nn.Dropout(dropout)]
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(d_model, num_classes)

    def ports(self) -> Ports:
        return Ports(
            inputs=(
                Port("hidden", "hidden", ("B", "T", self.d_model)),
                Port("padding_mask", "padding-mask", ("B", "T"), optional=True),
            ),
            outputs=(
                Port("embedding", self.embedding_meaning, ("B", self.d_model)),
                Port("logits", "class-logits", ("B", self.num_classes)),
            ),
        )

    def forward(self, hidden: torch.Tensor, padding_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        embedding = pool(hidden, padding_mask, self.pooling)
        return {"embedding": embedding, "logits": self.out(self.mlp(embedding))}
