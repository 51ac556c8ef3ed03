"""Key mapping: a Hugging Face ``BertForMaskedLM`` state dict (Geneformer's checkpoint format) -> this plugin's names.

The core's components name their parameters after what they are (``embedding.norm``, ``encoder.layers.0.norm1``,
``self_attn.q_proj``); Hugging Face's BERT after its module tree. The mapping is a list of renames, applied in order
(more specific first), and a key it does not know is an error, never silently dropped: a checkpoint with a pooler
or another head is not this model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from biozoo.errors import WeightsError

RENAMES: tuple[tuple[str, str], ...] = (
    ("bert.embeddings.LayerNorm.", "embedding.norm."),
    ("bert.embeddings.", "embedding."),
    ("bert.encoder.layer.", "encoder.layers."),
    (".attention.self.query.", ".self_attn.q_proj."),
    (".attention.self.key.", ".self_attn.k_proj."),
    (".attention.self.value.", ".self_attn.v_proj."),
    (".attention.output.dense.", ".self_attn.out_proj."),
    (".attention.output.LayerNorm.", ".norm1."),
    (".intermediate.dense.", ".linear1."),
    (".output.dense.", ".linear2."),
    (".output.LayerNorm.", ".norm2."),
    ("cls.predictions.transform.dense.", "head.dense."),
    ("cls.predictions.transform.LayerNorm.", "head.norm."),
    ("cls.predictions.decoder.", "head.decoder."),
)
#: Hugging Face keys with no parameter of their own here: buffers, and the decoder bias's second name
SKIPPED = frozenset({"bert.embeddings.position_ids", "bert.embeddings.token_type_ids", "cls.predictions.bias"})
KNOWN_PREFIXES = ("embedding.", "encoder.layers.", "head.")


def biozoo_key(hf_key: str) -> str:
    """One Hugging Face key -> the name the assembled ``geneformer_mini.rank_value_bert`` model uses."""
    key = hf_key
    for old, new in RENAMES:
        key = key.replace(old, new)
    if not key.startswith(KNOWN_PREFIXES) or "LayerNorm" in key or ".attention." in key:
        raise WeightsError(
            f"{hf_key!r} is not a parameter of a BertForMaskedLM this plugin can load",
            "convert a BertForMaskedLM checkpoint (Geneformer's format): no pooler, no other heads",
        )
    return key


def from_hf_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A ``BertForMaskedLM.state_dict()`` renamed key by key (tensors untouched; tied ones stay shared)."""
    return {biozoo_key(k): v for k, v in state.items() if k not in SKIPPED}
