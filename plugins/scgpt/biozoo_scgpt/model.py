"""scGPT's ``TransformerModel`` and ``TransformerGenerator`` as biozoo architectures.

Same inputs, same output dict, same parameter names as scGPT 0.2.4 (attention
aside: the core's attention keeps q/k/v projections separate, which the
converter splits out of ``in_proj_weight``/``Wqkv``). The transformer is the
core's encoder, so every attention processor works here too. Two deliberate
differences, both matching what the reference computes at inference:

* outputs at padded positions are zero (PyTorch's encoder fast path does this
  in eval mode; the reference's training path does not), so ``avg-pool`` and
  ``w-pool`` cell embeddings no longer depend on the execution path;
* domain-specific batch norm normalises each sample with its own domain (the
  reference uses the first sample's domain for the whole batch).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli

from biozoo.components.base import Architecture, Slot
from biozoo.components.ports import Port
from biozoo.nn.precision import cast_to, upcast
from biozoo.plugins.declarations import ComponentKind
from biozoo_scgpt.modules import (
    CELL_EMB,
    GENE_IDS,
    VALUES,
    DomainSpecificBatchNorm1d,
    Similarity,
)

K = ComponentKind
CELL_EMB_STYLES = ("cls", "avg-pool", "w-pool")
INPUT_STYLES = ("continuous", "category", "scaling")


def generate_square_subsequent_mask(size: int) -> torch.Tensor:
    """Float causal mask ``[size, size]``: 0 on and below the diagonal, -inf above (the reference helper)."""
    return torch.triu(torch.full((size, size), float("-inf")), diagonal=1)


class _ScGPTBase(Architecture):
    """What TransformerModel and TransformerGenerator share: cell embedding, decoders, auxiliary losses."""

    d_model: int
    cell_emb_style: str
    explicit_zero_prob: bool
    ecs_threshold: float

    def _check_styles(self) -> None:
        if self.cell_emb_style not in CELL_EMB_STYLES:
            styles = ", ".join(CELL_EMB_STYLES)
            raise ValueError(f"unknown cell_emb_style {self.cell_emb_style!r}; choose from {styles}")

    def cell_embedding(self, hidden: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """``cls``: first token; ``avg-pool``: mean over all positions (as the reference); ``w-pool``: weighted sum.

        Pooling sums over up to thousands of tokens: in half precision it is computed in float32 and
        the result cast back to the hidden states' dtype (the heads that read it run in that dtype).
        """
        if self.cell_emb_style == "cls":
            return hidden[:, 0, :]
        if self.cell_emb_style == "avg-pool":
            return upcast(hidden).mean(dim=1).to(hidden.dtype)
        if weights is None or weights.dim() != 2:
            raise ValueError("w-pool needs the 2-D input values as weights")
        pooled = (upcast(hidden) * upcast(weights).unsqueeze(2)).sum(dim=1)
        return F.normalize(pooled, p=2, dim=1).to(hidden.dtype)

    def _sampled(self, out: dict[str, torch.Tensor], do_sample: bool) -> torch.Tensor:
        if self.explicit_zero_prob and do_sample:
            return Bernoulli(probs=out["zero_probs"]).sample() * out["pred"]
        return out["pred"]

    def _ecs_loss(self, cell_emb: torch.Tensor) -> torch.Tensor:
        normed = F.normalize(upcast(cell_emb), p=2, dim=1)  # a loss: float32 whatever the weights
        sim = (normed @ normed.t()).masked_fill(torch.eye(len(normed), dtype=torch.bool, device=normed.device), 0.0)
        return torch.mean(1 - (F.relu(sim) - self.ecs_threshold) ** 2)

    def _cls_and_mvc(
        self,
        output: dict[str, torch.Tensor],
        cell_emb: torch.Tensor,
        mvc_cell_emb: torch.Tensor,
        gene_embs: torch.Tensor,
        CLS: bool,
        MVC: bool,
        ECS: bool,
        do_sample: bool,
    ) -> None:
        if CLS:
            if self.cls_decoder is None:
                raise ValueError("CLS=True needs a cls_decoder component (pretrained checkpoints have none: fine-tune)")
            output["cls_output"] = self.cls_decoder(cell_emb)
        if MVC:
            if self.mvc_decoder is None:
                raise ValueError("MVC=True needs an mvc_decoder component (do_mvc=True)")
            mvc = self.mvc_decoder(mvc_cell_emb, gene_embs)
            output["mvc_output"] = self._sampled(mvc, do_sample)
            if self.explicit_zero_prob:
                output["mvc_zero_probs"] = mvc["zero_probs"]
        if ECS:
            output["loss_ecs"] = self._ecs_loss(cell_emb)


class ScGPTModel(_ScGPTBase):
    """scGPT's ``TransformerModel`` (registered as ``scgpt.transformer_model``)."""

    slots: ClassVar[dict[str, Slot]] = {
        "encoder": Slot(K.ENCODER, description="gene token ids -> embeddings (GeneEncoder)"),
        "value_encoder": Slot(K.ENCODER, description="expression values -> embeddings (continuous/category/scaling)"),
        "batch_encoder": Slot(K.ENCODER, required=False, description="batch labels -> embedding"),
        "transformer_encoder": Slot(K.ENCODER, description="the transformer (core.transformer_encoder)"),
        "decoder": Slot(K.DECODER, description="expression decoder (ExprDecoder)"),
        "cls_decoder": Slot(K.HEAD, required=False, description="cell embedding -> class logits"),
        "mvc_decoder": Slot(K.DECODER, required=False, description="masked value prediction from the cell"),
        "grad_reverse_discriminator": Slot(K.HEAD, required=False, description="adversarial batch discriminator"),
    }

    def __init__(
        self,
        *,
        encoder: nn.Module,
        value_encoder: nn.Module,
        transformer_encoder: nn.Module,
        decoder: nn.Module,
        cls_decoder: nn.Module | None = None,
        batch_encoder: nn.Module | None = None,
        mvc_decoder: nn.Module | None = None,
        grad_reverse_discriminator: nn.Module | None = None,
        pad_token_id: int = 0,
        pad_value: float = 0,
        cell_emb_style: str = "cls",
        domain_spec_batchnorm: bool | str = False,
        num_batch_labels: int | None = None,
        ecs_threshold: float = 0.3,
        explicit_zero_prob: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = transformer_encoder.d_model
        self.pad_token_id, self.pad_value = pad_token_id, pad_value
        self.cell_emb_style, self.ecs_threshold = cell_emb_style, ecs_threshold
        self.explicit_zero_prob = explicit_zero_prob
        self._check_styles()
        self.input_emb_style = getattr(value_encoder, "style", "continuous")
        self.use_batch_labels = batch_encoder is not None
        self.domain_spec_batchnorm = domain_spec_batchnorm
        self.do_dab = grad_reverse_discriminator is not None
        self.encoder, self.value_encoder, self.batch_encoder = encoder, value_encoder, batch_encoder
        if domain_spec_batchnorm in (True, "dsbn", "do_affine"):
            if not num_batch_labels:
                raise ValueError("domain_spec_batchnorm needs num_batch_labels")
            self.dsbn = DomainSpecificBatchNorm1d(
                self.d_model, num_batch_labels, eps=6.1e-5, affine=domain_spec_batchnorm == "do_affine"
            )
        elif domain_spec_batchnorm == "batchnorm":
            self.bn = nn.BatchNorm1d(self.d_model, eps=6.1e-5)
        elif domain_spec_batchnorm not in (False, None):
            raise ValueError(
                "domain_spec_batchnorm must be False, 'dsbn', 'do_affine' or 'batchnorm', "
                f"not {domain_spec_batchnorm!r}"
            )
        self.transformer_encoder = transformer_encoder
        self.decoder, self.cls_decoder, self.mvc_decoder = decoder, cls_decoder, mvc_decoder
        self.grad_reverse_discriminator = grad_reverse_discriminator
        self.sim = Similarity(temp=0.5)

    def model_inputs(self) -> tuple[Port, ...]:
        inputs = [
            Port("src", GENE_IDS, ("B", "T")),
            Port("values", VALUES, ("B", "T")),
            Port("src_key_padding_mask", "padding-mask", ("B", "T")),
        ]
        if self.use_batch_labels or self.domain_spec_batchnorm:
            inputs.append(Port("batch_labels", "batch-labels", ("B",)))
        return tuple(inputs)

    def derived_ports(self) -> tuple[Port, ...]:
        return (Port("cell_emb", CELL_EMB, ("B", self.d_model)),)

    def _check_batch_labels(self, batch_labels: torch.Tensor | None) -> None:
        needed = self.use_batch_labels or bool(self.domain_spec_batchnorm)
        if needed and batch_labels is None:
            raise ValueError("this model needs batch_labels (it uses batch labels or domain-specific batch norm)")
        if not needed and batch_labels is not None:
            raise ValueError("batch_labels given, but this model uses neither batch labels nor domain-specific norm")

    def _embed_inputs(
        self, src: torch.Tensor, values: torch.Tensor | None, batch_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gene_embs = self.encoder(src)
        if values is None:
            total = gene_embs
        elif self.input_emb_style == "scaling":  # float32 values scale the embeddings in their own dtype
            total = gene_embs * cast_to(self.value_encoder(values), gene_embs.dtype).unsqueeze(2)
        else:
            total = gene_embs + self.value_encoder(values)
        if getattr(self, "dsbn", None) is not None:
            total = self.dsbn(total.permute(0, 2, 1), batch_labels).permute(0, 2, 1)
        elif getattr(self, "bn", None) is not None:
            total = self.bn(total.permute(0, 2, 1)).permute(0, 2, 1)
        return total, gene_embs

    def encode(
        self,
        src: torch.Tensor,
        values: torch.Tensor,
        src_key_padding_mask: torch.Tensor,
        batch_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Transformer outputs ``[B, T, d]`` (the reference's ``_encode``)."""
        self._check_batch_labels(batch_labels)
        total, _ = self._embed_inputs(src, values, batch_labels)
        return self.transformer_encoder(total, padding_mask=src_key_padding_mask)

    def _decode(self, hidden: torch.Tensor, batch_emb: torch.Tensor | None) -> dict[str, torch.Tensor]:
        if batch_emb is not None:
            hidden = torch.cat([hidden, batch_emb.unsqueeze(1).expand(-1, hidden.shape[1], -1)], dim=2)
        return self.decoder(hidden)

    def forward(
        self,
        src: torch.Tensor,
        values: torch.Tensor,
        src_key_padding_mask: torch.Tensor,
        batch_labels: torch.Tensor | None = None,
        CLS: bool = False,
        CCE: bool = False,
        MVC: bool = False,
        ECS: bool = False,
        do_sample: bool = False,
    ) -> dict[str, torch.Tensor]:
        """The reference's outputs: mlm_output, mlm_zero_probs, cell_emb, cls_output, loss_cce, mvc_output,
        mvc_zero_probs, loss_ecs, dab_output (each when its flag or option is on)."""
        self._check_batch_labels(batch_labels)
        total, gene_embs = self._embed_inputs(src, values, batch_labels)
        hidden = self.transformer_encoder(total, padding_mask=src_key_padding_mask)
        batch_emb = self.batch_encoder(batch_labels) if self.use_batch_labels else None
        mlm = self._decode(hidden, batch_emb)
        output = {"mlm_output": self._sampled(mlm, do_sample)}
        if self.explicit_zero_prob:
            output["mlm_zero_probs"] = mlm["zero_probs"]
        cell_emb = self.cell_embedding(hidden, values)
        output["cell_emb"] = cell_emb
        if CCE:
            second = self.cell_embedding(self.encode(src, values, src_key_padding_mask, batch_labels), values)
            sim = self.sim(cell_emb.unsqueeze(1), second.unsqueeze(0))
            output["loss_cce"] = F.cross_entropy(upcast(sim), torch.arange(len(sim), device=sim.device))
        mvc_cell = cell_emb if batch_emb is None else torch.cat([cell_emb, batch_emb], dim=1)
        self._cls_and_mvc(output, cell_emb, mvc_cell, gene_embs, CLS, MVC, ECS, do_sample)
        if self.do_dab:
            output["dab_output"] = self.grad_reverse_discriminator(cell_emb)
        return output

    def generate(
        self,
        cell_emb: torch.Tensor,
        src: torch.Tensor,
        values: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        gen_iters: int = 1,
        batch_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Expression predicted from a given cell embedding placed at position 0 (the reference's ``generate``)."""
        if (self.use_batch_labels or self.domain_spec_batchnorm) and batch_labels is None:
            raise ValueError("this model needs batch_labels to generate (the reference silently used zeros)")
        total, _ = self._embed_inputs(src, values, batch_labels)
        total = total.clone()
        total[:, 0, :] = cell_emb
        if src_key_padding_mask is None:
            src_key_padding_mask = torch.zeros(total.shape[:2], dtype=torch.bool, device=total.device)
        hidden = self.transformer_encoder(total, padding_mask=src_key_padding_mask)
        batch_emb = self.batch_encoder(batch_labels) if self.use_batch_labels else None
        return self._decode(hidden, batch_emb)["pred"]

    @torch.no_grad()
    def encode_batch(
        self,
        src: torch.Tensor,
        values: torch.Tensor,
        src_key_padding_mask: torch.Tensor,
        batch_size: int,
        batch_labels: torch.Tensor | None = None,
        output_to_cpu: bool = True,
        time_step: int | None = None,
        return_np: bool = False,
    ) -> torch.Tensor:
        """Encode in chunks of ``batch_size``; ``time_step=0`` returns only the CLS position."""
        chunks = []
        for start in range(0, src.shape[0], batch_size):
            part = slice(start, start + batch_size)
            hidden = self.encode(
                src[part],
                values[part],
                src_key_padding_mask[part],
                batch_labels[part] if batch_labels is not None else None,
            )
            if time_step is not None:
                hidden = hidden[:, time_step, :]
            chunks.append(hidden.cpu() if output_to_cpu else hidden)
        out = torch.cat(chunks)
        return out.numpy() if return_np else out


class ScGPTGenerator(_ScGPTBase):
    """scGPT's ``TransformerGenerator`` for perturbation prediction (``scgpt.transformer_generator``)."""

    slots: ClassVar[dict[str, Slot]] = {
        "encoder": Slot(K.ENCODER, description="gene token ids -> embeddings"),
        "value_encoder": Slot(K.ENCODER, description="continuous expression values -> embeddings"),
        "pert_encoder": Slot(K.ENCODER, description="perturbation flags -> embeddings"),
        "transformer_encoder": Slot(K.ENCODER, description="the transformer (core.transformer_encoder)"),
        "decoder": Slot(K.DECODER, description="affine expression decoder"),
        "cls_decoder": Slot(K.HEAD, description="cell embedding -> class logits"),
        "mvc_decoder": Slot(K.DECODER, required=False, description="masked value prediction"),
    }

    def __init__(
        self,
        *,
        encoder: nn.Module,
        value_encoder: nn.Module,
        pert_encoder: nn.Module,
        transformer_encoder: nn.Module,
        decoder: nn.Module,
        cls_decoder: nn.Module,
        mvc_decoder: nn.Module | None = None,
        pad_token_id: int = 0,
        pad_value: float = 0,
        n_input_bins: int = 0,
        cell_emb_style: str = "cls",
        ecs_threshold: float = 0.3,
        explicit_zero_prob: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = transformer_encoder.d_model
        self.pad_token_id, self.pad_value, self.n_input_bins = pad_token_id, pad_value, n_input_bins
        self.cell_emb_style, self.ecs_threshold = cell_emb_style, ecs_threshold
        self.explicit_zero_prob = explicit_zero_prob
        self._check_styles()
        self.encoder, self.value_encoder, self.pert_encoder = encoder, value_encoder, pert_encoder
        self.transformer_encoder, self.decoder = transformer_encoder, decoder
        self.cls_decoder, self.mvc_decoder = cls_decoder, mvc_decoder

    def model_inputs(self) -> tuple[Port, ...]:
        return (
            Port("src", GENE_IDS, ("B", "T")),
            Port("values", VALUES, ("B", "T")),
            Port("input_pert_flags", "perturbation-flags", ("B", "T")),
            Port("src_key_padding_mask", "padding-mask", ("B", "T")),
        )

    def derived_ports(self) -> tuple[Port, ...]:
        return (Port("cell_emb", CELL_EMB, ("B", self.d_model)),)

    def _binned(self, values: torch.Tensor) -> torch.Tensor:
        """Per-row binning before encoding, as the reference does when ``n_input_bins > 0``.

        Ties are drawn from numpy's global RNG like the reference's ``binning()``; the result is
        cast back to the values' float dtype (the reference feeds int64 to a float layer and fails).
        """
        if self.n_input_bins <= 0:
            return values
        from biozoo.singlecell.binning import bin_values_collator_style

        rows = [bin_values_collator_style(row, self.n_input_bins, mode="reference") for row in values.cpu().numpy()]
        return torch.as_tensor(np.stack(rows), device=values.device, dtype=values.dtype)

    def encode(
        self,
        src: torch.Tensor,
        values: torch.Tensor,
        input_pert_flags: torch.Tensor,
        src_key_padding_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gene_embs = self.encoder(src)
        total = gene_embs + self.value_encoder(values) + self.pert_encoder(input_pert_flags)
        return self.transformer_encoder(total, padding_mask=src_key_padding_mask), gene_embs

    def forward(
        self,
        src: torch.Tensor,
        values: torch.Tensor,
        input_pert_flags: torch.Tensor,
        src_key_padding_mask: torch.Tensor,
        CLS: bool = False,
        CCE: bool = False,
        MVC: bool = False,
        ECS: bool = False,
        do_sample: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Outputs mlm_output (+ mlm_zero_probs), cls_output, mvc_output, loss_ecs; sampling is forced in eval
        mode with explicit zero probabilities, as in the reference. ``CCE`` is accepted and ignored there too."""
        if self.explicit_zero_prob and not self.training:
            do_sample = True
        hidden, gene_embs = self.encode(src, self._binned(values), input_pert_flags, src_key_padding_mask)
        mlm = self.decoder(hidden, values)
        output = {"mlm_output": self._sampled(mlm, do_sample)}
        if self.explicit_zero_prob:
            output["mlm_zero_probs"] = mlm["zero_probs"]
        cell_emb = self.cell_embedding(hidden, values)
        self._cls_and_mvc(output, cell_emb, cell_emb, gene_embs, CLS, MVC, ECS, do_sample)
        return output
