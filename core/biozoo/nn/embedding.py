"""Token embedding: the simplest encoder, token ids -> hidden states."""

from __future__ import annotations

import torch
from torch import nn

from biozoo.components.base import Component
from biozoo.components.ports import Port, Ports
from biozoo.nn.checks import check_index, check_int, check_positive
from biozoo.plugins.declarations import ComponentKind


class TokenEmbedding(Component):
    """``nn.Embedding`` (+ optional LayerNorm), registered as ``core.token_embedding``."""

    kind = ComponentKind.ENCODER

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        padding_idx: int | None = None,
        layer_norm: bool = False,
        layer_norm_eps: float = 1e-5,
        token_meaning: str = "token-ids",
    ) -> None:
        super().__init__()
        check_int("vocab_size", vocab_size)
        check_int("d_model", d_model)
        check_index("padding_idx", padding_idx, vocab_size, "vocab_size")
        check_positive("layer_norm_eps", layer_norm_eps)
        self.d_model, self.token_meaning = d_model, token_meaning
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps) if layer_norm else None

    def ports(self) -> Ports:
        return Ports(
            inputs=(Port("input_ids", self.token_meaning, ("B", "T")),),
            outputs=(Port("hidden", "hidden", ("B", "T", self.d_model)),),
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"token ids must be integers, got {input_ids.dtype}")
        vocab = self.embedding.num_embeddings
        if input_ids.numel() and (int(input_ids.max()) >= vocab or int(input_ids.min()) < 0):
            raise ValueError(f"token ids must be in [0, {vocab}); got {int(input_ids.min())}..{int(input_ids.max())}")
        x = self.embedding(input_ids)
        return self.norm(x) if self.norm is not None else x
