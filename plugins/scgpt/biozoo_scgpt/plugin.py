"""What the scgpt plugin offers, as data (no torch, no model code imported here)."""

from __future__ import annotations

from biozoo.plugins import ComponentDecl, ComponentKind, ConverterDecl, TaskDecl, hookimpl

K = ComponentKind
M = "biozoo_scgpt.modules"


@hookimpl
def biozoo_components() -> list[ComponentDecl]:
    return [
        ComponentDecl(
            "scgpt.transformer_model",
            K.ARCHITECTURE,
            "biozoo_scgpt.model:ScGPTModel",
            "scGPT TransformerModel: gene + value encoders, transformer, expression/CLS/MVC decoders",
        ),
        ComponentDecl(
            "scgpt.transformer_generator",
            K.ARCHITECTURE,
            "biozoo_scgpt.model:ScGPTGenerator",
            "scGPT TransformerGenerator for perturbation prediction",
        ),
        ComponentDecl("scgpt.gene_encoder", K.ENCODER, f"{M}:GeneEncoder", "gene ids -> LN(embedding)"),
        ComponentDecl(
            "scgpt.continuous_value_encoder", K.ENCODER, f"{M}:ContinuousValueEncoder", "expression values -> MLP -> LN"
        ),
        ComponentDecl(
            "scgpt.category_value_encoder", K.ENCODER, f"{M}:CategoryValueEncoder", "binned values -> LN(embedding)"
        ),
        ComponentDecl(
            "scgpt.scaling_value_encoder", K.ENCODER, f"{M}:ScalingValueEncoder", "values scale the gene embeddings"
        ),
        ComponentDecl("scgpt.batch_label_encoder", K.ENCODER, f"{M}:BatchLabelEncoder", "batch label -> embedding"),
        ComponentDecl(
            "scgpt.perturbation_encoder", K.ENCODER, f"{M}:PerturbationEncoder", "perturbation flags -> embedding"
        ),
        ComponentDecl(
            "scgpt.expr_decoder", K.DECODER, f"{M}:ExprDecoder", "hidden -> expression (+ explicit zero probability)"
        ),
        ComponentDecl(
            "scgpt.affine_expr_decoder",
            K.DECODER,
            f"{M}:AffineExprDecoder",
            "hidden -> coeff * values + bias (perturbation)",
        ),
        ComponentDecl(
            "scgpt.mvc_decoder",
            K.DECODER,
            f"{M}:MVCDecoder",
            "masked value prediction from the cell embedding (4 styles)",
        ),
        ComponentDecl("scgpt.cls_decoder", K.HEAD, f"{M}:ClsDecoder", "cell embedding -> class logits"),
        ComponentDecl(
            "scgpt.adversarial_discriminator",
            K.HEAD,
            f"{M}:AdversarialDiscriminator",
            "cell embedding -> batch logits through gradient reversal",
        ),
    ]


@hookimpl
def biozoo_converters() -> list[ConverterDecl]:
    return [
        ConverterDecl(
            "scgpt",
            "biozoo_scgpt.convert:convert_checkpoint",
            "official scGPT folder (args.json, vocab.json, best_model.pt) -> biozoo model folder",
        )
    ]


@hookimpl
def biozoo_tasks() -> list[TaskDecl]:
    arch = "scgpt.transformer_model"
    return [
        TaskDecl("embed", arch, "biozoo_scgpt.tasks:embed", "cell embeddings into obsm['X_scGPT']"),
        TaskDecl("annotate", arch, "biozoo_scgpt.tasks:annotate", "cell-type labels and confidence into obs"),
        TaskDecl("finetune", arch, "biozoo_scgpt.tasks:finetune", "train a cell-type classifier"),
    ]
