"""The core's own declarations, registered like any plugin under the name ``core``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from biozoo.plugins import ComponentDecl, ComponentKind, ProcessorDecl, hookimpl

K = ComponentKind


@hookimpl
def biozoo_components() -> list[ComponentDecl]:
    return [
        ComponentDecl(
            "core.sequence_classifier",
            K.ARCHITECTURE,
            "biozoo.models.sequence_classifier:SequenceClassifier",
            "token ids -> embedding -> positions -> encoder -> pooled classifier",
        ),
        ComponentDecl(
            "core.masked_lm",
            K.ARCHITECTURE,
            "biozoo.nn.bert:MaskedLM",
            "token ids (and types) -> embedding -> encoder -> per-token logits (BERT-style masked LM)",
        ),
        ComponentDecl(
            "core.bert_embedding",
            K.ENCODER,
            "biozoo.nn.bert:BertEmbedding",
            "LayerNorm(token + position + token-type embeddings), BERT order",
        ),
        ComponentDecl(
            "core.mlm_head",
            K.HEAD,
            "biozoo.nn.bert:MaskedLMHead",
            "dense -> activation -> LayerNorm -> vocabulary logits at every position (BERT's MLM head)",
        ),
        ComponentDecl(
            "core.token_embedding",
            K.ENCODER,
            "biozoo.nn.embedding:TokenEmbedding",
            "token ids -> hidden (nn.Embedding, optional LayerNorm)",
        ),
        ComponentDecl(
            "core.transformer_encoder",
            K.ENCODER,
            "biozoo.nn.transformer:TransformerEncoder",
            "stack of pre- or post-norm transformer encoder layers",
        ),
        ComponentDecl(
            "core.pooled_classifier",
            K.HEAD,
            "biozoo.nn.heads:PooledClassifier",
            "cls/mean/max pooling, then an MLP to class logits",
        ),
        ComponentDecl(
            "core.no_positional",
            K.POSITIONAL_ENCODING,
            "biozoo.nn.positional:NoPositionalEncoding",
            "no position information (set-like inputs such as genes)",
        ),
        ComponentDecl(
            "core.sinusoidal_positional",
            K.POSITIONAL_ENCODING,
            "biozoo.nn.positional:SinusoidalPositionalEncoding",
            "fixed sinusoidal table, added",
        ),
        ComponentDecl(
            "core.learned_positional",
            K.POSITIONAL_ENCODING,
            "biozoo.nn.positional:LearnedPositionalEncoding",
            "learned table, added",
        ),
        ComponentDecl(
            "core.rotary_positional",
            K.POSITIONAL_ENCODING,
            "biozoo.nn.positional:RotaryPositionalEncoding",
            "RoPE on queries and keys; linear, NTK-aware, dynamic and YaRN scaling",
        ),
    ]


@hookimpl
def biozoo_attention_processors() -> list[ProcessorDecl]:
    return [
        ProcessorDecl(
            "eager",
            "biozoo.attention.processors:EagerProcessor",
            "reference math; honours everything; returns weights",
            priority=0,
            auto=True,
        ),
        ProcessorDecl(
            "sdpa",
            "biozoo.attention.processors:SdpaProcessor",
            "torch scaled_dot_product_attention (fused kernels)",
            priority=10,
            auto=True,
        ),
    ]


@hookimpl
def biozoo_manifests() -> list[Path]:
    return [registry_dir()]


def registry_dir() -> Path:
    """``registry/`` of the source tree, shipped in the wheel as ``biozoo._registry``."""
    try:
        return Path(str(resources.files("biozoo._registry")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "registry"
