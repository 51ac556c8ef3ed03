"""The plugin's architecture: the core's BERT-order masked LM, plus Geneformer's cell embeddings.

Every block is the core's (``core.bert_embedding``, ``core.transformer_encoder``, ``core.mlm_head``, wired by
``core.masked_lm``, i.e. :class:`biozoo.nn.bert.MaskedLM`); the manifest names them and their configs. What
Geneformer adds is a cell embedding: the mean of a layer's hidden states over the cell's gene tokens (padding
left out). This subclass returns it beside the MLM logits, and :meth:`RankValueBert.embed_cells` computes it
without the vocabulary-sized head, which is what ``zoo embed`` runs.
"""

from __future__ import annotations

import torch

from biozoo.nn.bert import MaskedLM

TOKEN_MEANING = "rank-value-gene-ids"  # a port meaning: the embedding's input must say the same (assembly checks)


def mean_over_genes(hidden: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """``[B, T, D]`` -> ``[B, D]``: the mean over positions that are not padding (``padding_mask`` True = pad)."""
    if padding_mask is None:
        return hidden.mean(dim=1)
    keep = (~padding_mask).unsqueeze(-1).to(hidden.dtype)
    return (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)


class RankValueBert(MaskedLM):
    """``geneformer_mini.rank_value_bert``: ``core.masked_lm`` whose outputs add ``cell_embedding`` ``[B, D]``.

    ``embedding_layer`` picks the hidden states that are averaged: an index into ``[embedding output, layer 1,
    ..., last layer]``, so ``-1`` (the default) is the last layer and ``-2`` the one before it (Geneformer's own
    ``EmbExtractor`` default, ``emb_layer=-1``, means that second-to-last layer).
    """

    def __init__(
        self, *, embedding, encoder, head, token_meaning: str = TOKEN_MEANING, embedding_layer: int = -1
    ) -> None:
        super().__init__(embedding=embedding, encoder=encoder, head=head, token_meaning=token_meaning)
        states = len(getattr(encoder, "layers", ())) + 1
        if isinstance(embedding_layer, bool) or not isinstance(embedding_layer, int):
            raise TypeError(f"embedding_layer must be an integer, got {embedding_layer!r}")
        if not -states <= embedding_layer < states:
            raise ValueError(f"embedding_layer must be in [{-states}, {states - 1}], got {embedding_layer}")
        self.embedding_layer = embedding_layer

    def forward(
        self,
        input_ids: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``hidden`` and ``logits`` (as ``core.masked_lm``, zero at padding), and ``cell_embedding``.

        ``padding_mask``: bool ``[B, T]``, True = padding. Outputs at padded positions are set to zero: attention
        kernels may skip padded query rows, so their values would otherwise depend on the kernel.
        """
        out = super().forward(input_ids, padding_mask=padding_mask, token_type_ids=token_type_ids)
        if padding_mask is not None:  # a kernel may skip padded queries (AttentionCall.query_keep): define them
            pad = padding_mask.unsqueeze(-1)
            out = {name: value.masked_fill(pad, 0.0) for name, value in out.items()}
        if self.embedding_layer == -1:
            return {**out, "cell_embedding": mean_over_genes(out["hidden"], padding_mask)}
        return {**out, "cell_embedding": self.embed_cells(input_ids, padding_mask, token_type_ids)}

    def embed_cells(
        self,
        input_ids: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``cell_embedding`` alone: the MLM head (a score per vocabulary gene at every position) is not run."""
        states = self.hidden_states(input_ids, padding_mask=padding_mask, token_type_ids=token_type_ids)
        return mean_over_genes(states[self.embedding_layer], padding_mask)
