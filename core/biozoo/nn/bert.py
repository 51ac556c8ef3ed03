"""BERT-order building blocks: summed token, position and token-type embeddings normalised together, and the
masked-language-model head.

BERT (and the rank-value single-cell encoders built on it, such as Geneformer) sums three embeddings *before* a
LayerNorm; ``core.token_embedding`` + a positional component normalise before adding positions, which is not the
same function. ``core.bert_embedding`` and ``core.mlm_head`` compute what Hugging Face's ``BertEmbeddings`` and
``BertLMPredictionHead`` compute (tested against them on the same weights), and ``core.masked_lm`` puts them around
any encoder.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from biozoo.components.base import Architecture, Component, Slot
from biozoo.components.ports import Port, Ports
from biozoo.nn.checks import check_index, check_int, check_positive, check_probability
from biozoo.nn.transformer import activation_fn
from biozoo.plugins.declarations import ComponentKind


class BertEmbedding(Component):
    """``LayerNorm(word[ids] + position[0..T) + token_type[types])``, then dropout (``core.bert_embedding``)."""

    kind = ComponentKind.ENCODER

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        max_positions: int = 512,
        type_vocab_size: int = 2,
        padding_idx: int | None = None,
        layer_norm_eps: float = 1e-12,
        dropout: float = 0.1,
        token_meaning: str = "token-ids",
    ) -> None:
        super().__init__()
        check_int("vocab_size", vocab_size)
        check_int("d_model", d_model)
        check_int("max_positions", max_positions)
        check_int("type_vocab_size", type_vocab_size, minimum=0)
        check_index("padding_idx", padding_idx, vocab_size, "vocab_size")
        check_positive("layer_norm_eps", layer_norm_eps)
        check_probability("dropout", dropout)
        self.d_model, self.max_positions, self.token_meaning = d_model, max_positions, token_meaning
        self.word_embeddings = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.position_embeddings = nn.Embedding(max_positions, d_model)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, d_model) if type_vocab_size else None
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def ports(self) -> Ports:
        return Ports(
            inputs=(
                Port("input_ids", self.token_meaning, ("B", "T")),
                Port("token_type_ids", "token-type-ids", ("B", "T"), optional=True),
            ),
            outputs=(Port("hidden", "hidden", ("B", "T", self.d_model)),),
        )

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``token_type_ids`` default to type 0 everywhere, as in BERT."""
        length = input_ids.shape[1]
        if length > self.max_positions:
            raise ValueError(f"{length} tokens is more than max_positions={self.max_positions}")
        x = self.word_embeddings(input_ids)
        x = x + self.position_embeddings.weight[:length]
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                x = x + self.token_type_embeddings.weight[0]
            else:
                x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.norm(x))


class MaskedLMHead(Component):
    """``decoder(LayerNorm(act(dense(h))))``: a score per vocabulary token at every position (``core.mlm_head``)."""

    kind = ComponentKind.HEAD

    def __init__(self, d_model: int, vocab_size: int, activation: str = "gelu", layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        check_int("d_model", d_model)
        check_int("vocab_size", vocab_size)
        check_positive("layer_norm_eps", layer_norm_eps)
        self.d_model, self.vocab_size, self.activation = d_model, vocab_size, activation
        self.act = activation_fn(activation)
        self.dense = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.decoder = nn.Linear(d_model, vocab_size)

    def ports(self) -> Ports:
        return Ports(
            inputs=(Port("hidden", "hidden", ("B", "T", self.d_model)),),
            outputs=(Port("logits", "token-logits", ("B", "T", self.vocab_size)),),
        )

    def forward(self, hidden: torch.Tensor, padding_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {"logits": self.decoder(self.norm(self.act(self.dense(hidden))))}


class MaskedLM(Architecture):
    """``core.masked_lm``: embedding (e.g. ``core.bert_embedding``) -> encoder -> per-token head (``core.mlm_head``).

    ``forward`` returns ``hidden`` and ``logits``; ``hidden_states`` returns the embedding output and every
    encoder layer's output (Hugging Face's ``output_hidden_states``), for models whose users read a chosen layer.
    """

    slots: ClassVar[dict[str, Slot]] = {
        "embedding": Slot(ComponentKind.ENCODER, description="token ids (and token types) -> hidden"),
        "encoder": Slot(ComponentKind.ENCODER, description="hidden -> hidden"),
        "head": Slot(ComponentKind.HEAD, description="hidden -> per-token logits"),
    }

    def __init__(self, *, embedding, encoder, head, token_meaning: str = "token-ids") -> None:
        super().__init__()
        self.token_meaning = token_meaning
        self.embedding, self.encoder, self.head = embedding, encoder, head

    def model_inputs(self) -> tuple[Port, ...]:
        return (
            Port("input_ids", self.token_meaning, ("B", "T")),
            Port("padding_mask", "padding-mask", ("B", "T"), optional=True),
            Port("token_type_ids", "token-type-ids", ("B", "T"), optional=True),
        )

    def _embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        if token_type_ids is None:
            return self.embedding(input_ids)
        return self.embedding(input_ids, token_type_ids)

    def forward(
        self,
        input_ids: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``padding_mask`` bool ``[B, T]``, True = padding."""
        hidden = self.encoder(self._embed(input_ids, token_type_ids), padding_mask=padding_mask)
        return {"hidden": hidden, **self.head(hidden, padding_mask=padding_mask)}

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """``[embedding output, layer 1 output, ..., last layer output]`` (the encoder's ``hidden_states``)."""
        return self.encoder.hidden_states(self._embed(input_ids, token_type_ids), padding_mask=padding_mask)
