"""What the geneformer_mini plugin offers, declared as data (`zoo list`, `zoo plugins`).

`zoo list` imports this module, so it must stay cheap: no torch, no model code, no numpy. Targets are
"module:attribute" strings, imported the first time a model, a task or a kernel needs them.
"""

from __future__ import annotations

from pathlib import Path

from biozoo.plugins import ComponentDecl, ComponentKind, ProcessorDecl, TaskDecl, hookimpl

ARCHITECTURE = "geneformer_mini.rank_value_bert"  # components are named '<plugin>.<name>'
KERNEL = "geneformer-chunked"  # processor names are global (users type them): make yours distinctive
MANIFESTS = Path(__file__).resolve().parent / "manifests"  # absolute: never relative to the working directory


@hookimpl
def biozoo_components() -> list[ComponentDecl]:
    return [
        ComponentDecl(
            ARCHITECTURE,
            ComponentKind.ARCHITECTURE,
            "biozoo_geneformer_mini.model:RankValueBert",
            "rank-value gene tokens -> BERT (core blocks) -> MLM logits and mean-pooled cell embeddings",
        ),
    ]


@hookimpl
def biozoo_attention_processors() -> list[ProcessorDecl]:
    return [
        ProcessorDecl(
            KERNEL,
            "biozoo_geneformer_mini.kernels:ChunkedAttention",
            "exact softmax attention over query chunks (bounded memory for 2048-gene cells); key-padding masks",
            priority=-10,
        ),
    ]


@hookimpl
def biozoo_tasks() -> list[TaskDecl]:
    return [
        TaskDecl("embed", ARCHITECTURE, "biozoo_geneformer_mini.tasks:embed", "cell embeddings into obsm"),
    ]


@hookimpl
def biozoo_manifests() -> list[Path]:
    return [MANIFESTS]
