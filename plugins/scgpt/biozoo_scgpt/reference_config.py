"""Translate scGPT's constructor arguments (and ``args.json``) into biozoo manifest sections.

scGPT users know ``TransformerModel(ntoken, d_model, nhead, d_hid, nlayers, ...)``;
biozoo assembles the same model from named components. This module is the one
place that knows how one maps onto the other, so the converter, the tests and
``ScGPT.from_reference_args`` all agree.
"""

from __future__ import annotations

from typing import Any

from biozoo.manifest.schema import ComponentRef

MODEL, GENERATOR = "scgpt.transformer_model", "scgpt.transformer_generator"


def _transformer(d_model: int, nhead: int, d_hid: int, nlayers: int, dropout: float, pre_norm: bool) -> ComponentRef:
    return ComponentRef(
        name="core.transformer_encoder",
        config={
            "d_model": d_model,
            "num_layers": nlayers,
            "num_heads": nhead,
            "dim_feedforward": d_hid,
            "dropout": dropout,
            "activation": "relu",
            "layer_norm_eps": 1e-5,
            # the reference's PyTorch path ignores pre_norm; its flash path normalises the residual stream
            "norm_scheme": "residual" if pre_norm else "post",
            "zero_padding_outputs": True,
        },
    )


def model_components(
    ntoken: int,
    d_model: int,
    nhead: int,
    d_hid: int,
    nlayers: int,
    nlayers_cls: int = 3,
    n_cls: int = 1,
    pad_token_id: int = 0,
    dropout: float = 0.5,
    pad_value: float = 0,
    do_mvc: bool = False,
    do_dab: bool = False,
    use_batch_labels: bool = False,
    num_batch_labels: int | None = None,
    domain_spec_batchnorm: bool | str = False,
    input_emb_style: str = "continuous",
    n_input_bins: int | None = None,
    cell_emb_style: str = "cls",
    mvc_decoder_style: str = "inner product",
    ecs_threshold: float = 0.3,
    explicit_zero_prob: bool = False,
    pre_norm: bool = False,
    **ignored: Any,
) -> tuple[ComponentRef, dict[str, ComponentRef]]:
    """(architecture, components) for ``TransformerModel(...)`` with these arguments.

    ``use_fast_transformer`` and ``fast_transformer_backend`` are accepted and
    ignored: in biozoo the attention kernel is a runtime choice, not architecture.
    """
    unknown = set(ignored) - {"use_fast_transformer", "fast_transformer_backend", "vocab", "pad_token"}
    if unknown:
        raise TypeError(f"unknown scGPT TransformerModel argument(s): {', '.join(sorted(unknown))}")
    if (use_batch_labels or domain_spec_batchnorm or do_dab) and not num_batch_labels:
        raise ValueError("use_batch_labels, domain_spec_batchnorm and do_dab need num_batch_labels")
    if input_emb_style == "continuous":
        value = ComponentRef(name="scgpt.continuous_value_encoder", config={"d_model": d_model, "dropout": dropout})
    elif input_emb_style == "category":
        if not n_input_bins:
            raise ValueError("input_emb_style 'category' needs n_input_bins")
        value = ComponentRef(
            name="scgpt.category_value_encoder",
            config={"num_embeddings": n_input_bins, "embedding_dim": d_model, "padding_idx": int(pad_value)},
        )
    elif input_emb_style == "scaling":
        value = ComponentRef(name="scgpt.scaling_value_encoder", config={"d_model": d_model})
    else:
        raise ValueError(f"unknown input_emb_style {input_emb_style!r}; choose continuous, category or scaling")
    components = {
        "encoder": ComponentRef(
            name="scgpt.gene_encoder",
            config={"num_embeddings": ntoken, "embedding_dim": d_model, "padding_idx": pad_token_id},
        ),
        "value_encoder": value,
        "transformer_encoder": _transformer(d_model, nhead, d_hid, nlayers, dropout, pre_norm),
        "decoder": ComponentRef(
            name="scgpt.expr_decoder",
            config={"d_model": d_model, "explicit_zero_prob": explicit_zero_prob, "use_batch_labels": use_batch_labels},
        ),
        "cls_decoder": ComponentRef(
            name="scgpt.cls_decoder", config={"d_model": d_model, "n_cls": n_cls, "nlayers": nlayers_cls}
        ),
    }
    if use_batch_labels:
        components["batch_encoder"] = ComponentRef(
            name="scgpt.batch_label_encoder", config={"num_embeddings": num_batch_labels, "embedding_dim": d_model}
        )
    if do_mvc:
        components["mvc_decoder"] = ComponentRef(
            name="scgpt.mvc_decoder",
            config={
                "d_model": d_model,
                "arch_style": mvc_decoder_style,
                "explicit_zero_prob": explicit_zero_prob,
                "use_batch_labels": use_batch_labels,
            },
        )
    if do_dab:
        components["grad_reverse_discriminator"] = ComponentRef(
            name="scgpt.adversarial_discriminator", config={"d_model": d_model, "n_cls": num_batch_labels}
        )
    arch = ComponentRef(
        name=MODEL,
        config={
            "pad_token_id": pad_token_id,
            "pad_value": pad_value,
            "cell_emb_style": cell_emb_style,
            "domain_spec_batchnorm": domain_spec_batchnorm,
            "num_batch_labels": num_batch_labels,
            "ecs_threshold": ecs_threshold,
            "explicit_zero_prob": explicit_zero_prob,
        },
    )
    return arch, components


def generator_components(
    ntoken: int,
    d_model: int,
    nhead: int,
    d_hid: int,
    nlayers: int,
    nlayers_cls: int,
    n_cls: int,
    pad_token_id: int = 0,
    dropout: float = 0.5,
    pad_value: float = 0,
    pert_pad_id: int = 2,
    do_mvc: bool = False,
    n_input_bins: int = 0,
    cell_emb_style: str = "cls",
    mvc_decoder_style: str = "inner product",
    decoder_activation: str | None = None,
    decoder_adaptive_bias: bool = False,
    ecs_threshold: float = 0.3,
    explicit_zero_prob: bool = False,
    pre_norm: bool = False,
    **ignored: Any,
) -> tuple[ComponentRef, dict[str, ComponentRef]]:
    """(architecture, components) for ``TransformerGenerator(...)`` with these arguments."""
    unknown = set(ignored) - {
        "use_fast_transformer",
        "fast_transformer_backend",
        "vocab",
        "pad_token",
        "domain_spec_batchnorm",
    }
    if unknown:
        raise TypeError(f"unknown scGPT TransformerGenerator argument(s): {', '.join(sorted(unknown))}")
    components = {
        "encoder": ComponentRef(
            name="scgpt.gene_encoder",
            config={"num_embeddings": ntoken, "embedding_dim": d_model, "padding_idx": pad_token_id},
        ),
        "value_encoder": ComponentRef(
            name="scgpt.continuous_value_encoder", config={"d_model": d_model, "dropout": dropout}
        ),
        "pert_encoder": ComponentRef(
            name="scgpt.perturbation_encoder", config={"d_model": d_model, "pert_pad_id": pert_pad_id}
        ),
        "transformer_encoder": _transformer(d_model, nhead, d_hid, nlayers, dropout, pre_norm),
        "decoder": ComponentRef(
            name="scgpt.affine_expr_decoder",
            config={
                "d_model": d_model,
                "explicit_zero_prob": explicit_zero_prob,
                "activation": decoder_activation,
                "adaptive_bias": decoder_adaptive_bias,
            },
        ),
        "cls_decoder": ComponentRef(
            name="scgpt.cls_decoder", config={"d_model": d_model, "n_cls": n_cls, "nlayers": nlayers_cls}
        ),
    }
    if do_mvc:
        components["mvc_decoder"] = ComponentRef(
            name="scgpt.mvc_decoder",
            config={"d_model": d_model, "arch_style": mvc_decoder_style, "explicit_zero_prob": explicit_zero_prob},
        )
    arch = ComponentRef(
        name=GENERATOR,
        config={
            "pad_token_id": pad_token_id,
            "pad_value": pad_value,
            "n_input_bins": n_input_bins,
            "cell_emb_style": cell_emb_style,
            "ecs_threshold": ecs_threshold,
            "explicit_zero_prob": explicit_zero_prob,
        },
    )
    return arch, components


def manifest_data(model_id: str, arch: ComponentRef, components: dict[str, ComponentRef], **extra: Any) -> dict:
    """A manifest dict (weights and the rest filled in by the caller)."""
    return {
        "format_version": 1,
        "id": model_id,
        "architecture": arch.model_dump(mode="json"),
        "components": {slot: ref.model_dump(mode="json") for slot, ref in components.items()},
        **extra,
    }


def build(kind: str = "model", device: str = "cpu", **kwargs: Any):
    """Build an scGPT model from reference-style keyword arguments (random init on ``device``)."""
    from biozoo.assembly import assemble
    from biozoo.manifest.io import parse_manifest

    arch, comps = (model_components if kind == "model" else generator_components)(**kwargs)
    data = manifest_data("scgpt/adhoc", arch, comps, conversion={"converter": "scgpt"})
    return assemble(parse_manifest(data), device=device)
