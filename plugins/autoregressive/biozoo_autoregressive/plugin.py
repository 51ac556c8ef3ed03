"""What the autoregressive plugin offers, as data (no torch, no model code imported here)."""

from __future__ import annotations

from biozoo.plugins import ComponentDecl, ComponentKind, FolderFormatDecl, TaskDecl, hookimpl

ARCH = "autoregressive.transformer"


@hookimpl
def biozoo_components() -> list[ComponentDecl]:
    return [
        ComponentDecl(
            ARCH,
            ComponentKind.ARCHITECTURE,
            "biozoo_autoregressive.model:AutoregressiveTransformer",
            "causal single-cell transformer: scModelForge's (exact) or next-gene generative",
        )
    ]


@hookimpl
def biozoo_folder_formats() -> list[FolderFormatDecl]:
    return [
        FolderFormatDecl(
            "scmodelforge",
            marker="config.json",
            match={"model_type": "autoregressive_transformer", "scmodelforge_version": None},
            target="biozoo_autoregressive.scmodelforge_folder:read_folder",
            description="scModelForge save_pretrained folders (config.json + model.safetensors), loaded as they are",
        )
    ]


@hookimpl
def biozoo_tasks() -> list[TaskDecl]:
    return [
        TaskDecl("embed", ARCH, "biozoo_autoregressive.tasks:embed", "cell embeddings into obsm['X_autoregressive']"),
        TaskDecl("generate", ARCH, "biozoo_autoregressive.tasks:generate", "sample new cells into an .h5ad"),
    ]
