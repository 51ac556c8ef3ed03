"""What the chroma plugin offers, as data (no torch, no model code imported here).

The backbone model and its parts are registry components; the structure layer (``biozoo_chroma.Protein``),
the diffusion process and the reconstruction losses are Python APIs without weights. Sequence design
(issue 10, part 2) will add the design network and its tasks here.
"""

from __future__ import annotations

from biozoo.plugins import ComponentDecl, ComponentKind, ConverterDecl, TaskDecl, hookimpl


@hookimpl
def biozoo_components() -> list[ComponentDecl]:
    return [
        ComponentDecl(
            "chroma.feature_graph",
            ComponentKind.ENCODER,
            "biozoo_chroma.graph.feature_graph:ProteinFeatureGraph",
            "backbone X, chain map C -> kNN/random_log graph with node and edge features (centering buffers)",
        ),
        ComponentDecl(
            "chroma.graph_nn",
            ComponentKind.ENCODER,
            "biozoo_chroma.graph.gnn:GraphNN",
            "message passing with node and edge updates over a protein graph; one-node step mode",
        ),
        ComponentDecl(
            "chroma.backbone",
            ComponentKind.ARCHITECTURE,
            "biozoo_chroma.backbone.model:ChromaBackbone",
            "Chroma's backbone diffusion model (config: the reference's init_kwargs): denoise(X, C, t), sample()",
        ),
        ComponentDecl(
            "chroma.chi_head",
            ComponentKind.HEAD,
            "biozoo_chroma.sidechains.head:NodePredictorChi",
            "chi decoder head: node embeddings + sequence -> binned chi log-likelihoods; chi sampling at a temperature",
        ),
        ComponentDecl(
            "chroma.design",
            ComponentKind.ARCHITECTURE,
            "biozoo_chroma.design.network:ChromaDesign",
            "Chroma's design network (config: the reference's init_kwargs): Potts h/J, marginals, AR logp_S; "
            "design_potts()",
        ),
        ComponentDecl(
            "chroma.sequence_decoder",
            ComponentKind.DECODER,
            "biozoo_chroma.design.decoder:SequenceDecoder",
            "autoregressive sequence decoder: graph embeddings + decoding order -> logp_S; step decoding with "
            "temperature, allowed types, top-p and the LCP bias",
        ),
    ]


@hookimpl
def biozoo_converters() -> list[ConverterDecl]:
    return [
        ConverterDecl(
            "chroma",
            "biozoo_chroma.convert:convert_checkpoint",
            "licensed Chroma backbone .pt [+ design .pt] (the reference's save_model format) -> biozoo model folder "
            "(the design network in OUT/design)",
        )
    ]


@hookimpl
def biozoo_tasks() -> list[TaskDecl]:
    return [
        TaskDecl("sample", "chroma.backbone", "biozoo_chroma.tasks:sample", "sample backbones into PDB/mmCIF files"),
        TaskDecl("score", "chroma.backbone", "biozoo_chroma.tasks:score", "score PDB/mmCIF backbones (ELBO, MSEs)"),
        TaskDecl("score", "chroma.design", "biozoo_chroma.tasks:score_design", "score sequences and side chains"),
        *(
            TaskDecl(task, architecture, f"biozoo_chroma.tasks:{task}", what)
            for task, what in (("design", "design a sequence and pack it"), ("pack", "pack side chains"))
            for architecture in ("chroma.design", "chroma.backbone")  # a backbone folder: its design/ network
        ),
    ]
