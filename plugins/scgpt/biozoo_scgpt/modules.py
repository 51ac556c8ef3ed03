"""scGPT's building blocks as biozoo components, with the reference's parameter names.

Each class reproduces the module of the same name in scGPT 0.2.4
(``scgpt/model/model.py``, ``dsbn.py``, ``grad_reverse.py``,
``generation_model.py``) so that converted checkpoints load key for key. Where
the reference crashes (the "concat query" and "sum query" MVC decoders return a
bare tensor) these return the same dict as the working style.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from biozoo.components.base import Component
from biozoo.components.ports import Port, Ports
from biozoo.nn.precision import cast_to, upcast
from biozoo.plugins.declarations import ComponentKind

#: Activations a manifest may name for the affine decoder: parameter-free element-wise torch.nn modules.
#: A list, not ``getattr(nn, name)``, so a manifest string can never instantiate an arbitrary torch.nn attribute.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    cls.__name__: cls
    for cls in (
        nn.ReLU,
        nn.LeakyReLU,
        nn.Sigmoid,
        nn.Tanh,
        nn.GELU,
        nn.ELU,
        nn.SELU,
        nn.CELU,
        nn.SiLU,
        nn.Mish,
        nn.Softplus,
        nn.Softsign,
        nn.Hardtanh,
        nn.Hardsigmoid,
        nn.Hardswish,
        nn.ReLU6,
        nn.Identity,
    )
}

GENE_IDS, VALUES, HIDDEN = "gene-token-ids", "expression-values", "hidden"
CELL_EMB, GENE_EMB, BATCH_EMB = "cell-embedding", "gene-embedding", "batch-embedding"


def _hidden(d: int) -> Port:
    return Port("hidden", HIDDEN, ("B", "T", d))


class _EmbeddingNorm(Component):
    """``LayerNorm(Embedding(x))`` with the reference's names (``embedding``, ``enc_norm``)."""

    kind = ComponentKind.ENCODER

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None) -> None:
        super().__init__()
        self.d = embedding_dim
        self.embedding = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.enc_norm = nn.LayerNorm(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc_norm(self.embedding(x.long()))


class GeneEncoder(_EmbeddingNorm):
    """Gene token ids -> ``LayerNorm(Embedding(ids))``."""

    def ports(self) -> Ports:
        return Ports(
            inputs=(Port("src", GENE_IDS, ("B", "T")),),
            outputs=(_hidden(self.d), Port("gene_embs", GENE_EMB, ("B", "T", self.d))),
        )


class ContinuousValueEncoder(Component):
    """Expression values -> ``Dropout(LN(Linear(ReLU(Linear(clamp(v, max))))))`` (the reference order)."""

    kind = ComponentKind.ENCODER
    style = "continuous"

    def __init__(self, d_model: int, dropout: float = 0.1, max_value: int = 512) -> None:
        super().__init__()
        self.d, self.max_value = d_model, max_value
        self.dropout = nn.Dropout(p=dropout)
        self.linear1 = nn.Linear(1, d_model)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)

    def ports(self) -> Ports:
        return Ports(inputs=(Port("values", VALUES, ("B", "T")),), outputs=(_hidden(self.d),))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # values arrive as float32 whatever the weights are: cast where they enter (after clamping in float32)
        x = cast_to(torch.clamp(x.unsqueeze(-1), max=self.max_value), self.linear1.weight.dtype)
        x = self.linear2(self.activation(self.linear1(x)))
        return self.dropout(self.norm(x))


class CategoryValueEncoder(_EmbeddingNorm):
    """Binned expression values (integers) -> ``LN(Embedding(bins))``."""

    style = "category"

    def ports(self) -> Ports:
        return Ports(inputs=(Port("values", VALUES, ("B", "T")),), outputs=(_hidden(self.d),))


class ScalingValueEncoder(Component):
    """The "scaling" input style: values multiply the gene embeddings (no parameters)."""

    kind = ComponentKind.ENCODER
    style = "scaling"

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d = d_model

    def ports(self) -> Ports:
        return Ports(inputs=(Port("values", VALUES, ("B", "T")),))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class BatchLabelEncoder(_EmbeddingNorm):
    """Batch labels ``[B]`` -> ``LN(Embedding(labels))`` ``[B, d]``."""

    def ports(self) -> Ports:
        return Ports(
            inputs=(Port("batch_labels", "batch-labels", ("B",)),),
            outputs=(Port("batch_emb", BATCH_EMB, ("B", self.d)),),
        )


class DomainSpecificBatchNorm(nn.Module):
    """One batch norm per domain (``bns.{i}``); each sample is normalised by its own domain's.

    The reference normalises the whole mini-batch with the domain of its first
    sample (so its batches must be domain-sorted); on such batches the two agree.
    """

    def __init__(
        self,
        num_features: int,
        num_domains: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dims: int = 1,
    ) -> None:
        super().__init__()
        norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dims]
        self.num_domains, self.dims = num_domains, dims
        self.bns = nn.ModuleList(
            norm(num_features, eps, momentum, affine, track_running_stats) for _ in range(num_domains)
        )

    def forward(self, x: torch.Tensor, domain_labels: torch.Tensor | int) -> torch.Tensor:
        labels = torch.as_tensor(domain_labels, device=x.device).reshape(-1)
        if int(labels.max()) >= self.num_domains or int(labels.min()) < 0:
            raise ValueError(f"domain labels must be in [0, {self.num_domains}); got {labels.tolist()[:8]}")
        if labels.numel() == 1:
            return self.bns[int(labels)](x)
        out = torch.empty_like(x)
        for domain in labels.unique().tolist():
            rows = (labels == domain).nonzero().squeeze(1)
            out[rows] = self.bns[domain](x[rows])
        return out


class DomainSpecificBatchNorm1d(DomainSpecificBatchNorm):
    def __init__(self, num_features: int, num_domains: int, **kwargs: object) -> None:
        super().__init__(num_features, num_domains, dims=1, **kwargs)


class DomainSpecificBatchNorm2d(DomainSpecificBatchNorm):
    def __init__(self, num_features: int, num_domains: int, **kwargs: object) -> None:
        super().__init__(num_features, num_domains, dims=2, **kwargs)


def _mlp_to_scalar(d_in: int, d_model: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, d_model), nn.LeakyReLU(), nn.Linear(d_model, d_model), nn.LeakyReLU(), nn.Linear(d_model, 1)
    )


class ExprDecoder(Component):
    """Hidden states -> expression ``pred`` (and ``zero_probs``, P(non-zero), when explicit)."""

    kind = ComponentKind.DECODER

    def __init__(self, d_model: int, explicit_zero_prob: bool = False, use_batch_labels: bool = False) -> None:
        super().__init__()
        self.d, self.use_batch_labels, self.explicit_zero_prob = d_model, use_batch_labels, explicit_zero_prob
        d_in = 2 * d_model if use_batch_labels else d_model
        self.fc = _mlp_to_scalar(d_in, d_model)
        if explicit_zero_prob:
            self.zero_logit = _mlp_to_scalar(d_in, d_model)

    def ports(self) -> Ports:
        inputs = (_hidden(self.d),) + ((Port("batch_emb", BATCH_EMB, ("B", self.d)),) if self.use_batch_labels else ())
        return Ports(inputs=inputs, outputs=(Port("mlm_output", "expression", ("B", "T")),))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"pred": self.fc(x).squeeze(-1)}
        if self.explicit_zero_prob:
            out["zero_probs"] = torch.sigmoid(self.zero_logit(x).squeeze(-1))
        return out


class AffineExprDecoder(Component):
    """``pred = coeff(x) * values + bias(x)`` from two expression decoders (the perturbation model)."""

    kind = ComponentKind.DECODER

    def __init__(
        self,
        d_model: int,
        explicit_zero_prob: bool = False,
        activation: str | None = None,
        adaptive_bias: bool = False,
    ) -> None:
        super().__init__()
        self.d, self.explicit_zero_prob, self.adaptive_bias = d_model, explicit_zero_prob, adaptive_bias
        self.coeff_decoder = ExprDecoder(d_model, explicit_zero_prob=explicit_zero_prob)
        self.bias_decoder = ExprDecoder(d_model, explicit_zero_prob=explicit_zero_prob)
        if activation is not None and activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: use one of {', '.join(sorted(ACTIVATIONS))}")
        self.activation = ACTIVATIONS[activation]() if activation else None

    def ports(self) -> Ports:
        return Ports(
            inputs=(_hidden(self.d), Port("values", VALUES, ("B", "T"))),
            outputs=(Port("mlm_output", "expression", ("B", "T")),),
        )

    def forward(self, x: torch.Tensor, values: torch.Tensor) -> dict[str, torch.Tensor]:
        coeff, bias = self.coeff_decoder(x), self.bias_decoder(x)
        if self.activation is not None:
            coeff["pred"], bias["pred"] = self.activation(coeff["pred"]), self.activation(bias["pred"])
        if self.adaptive_bias:
            bias["pred"] = bias["pred"] * (values.sum(1, keepdim=True) / (values != 0).sum(1, keepdim=True))
        out = {"pred": coeff["pred"] * values + bias["pred"]}
        if self.explicit_zero_prob:
            out["zero_probs"] = coeff["zero_probs"]
        return out


class _LayerStack(Component):
    """``(Linear, act, LayerNorm) * (nlayers - 1)`` then ``out_layer``: ClsDecoder and the discriminator."""

    kind = ComponentKind.HEAD

    def __init__(self, d_model: int, n_cls: int, nlayers: int, activation: type[nn.Module]) -> None:
        super().__init__()
        self.d, self.n_cls = d_model, n_cls
        self._decoder = nn.ModuleList()
        for _ in range(nlayers - 1):
            self._decoder.extend([nn.Linear(d_model, d_model), activation(), nn.LayerNorm(d_model)])
        self.out_layer = nn.Linear(d_model, n_cls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self._decoder:
            x = layer(x)
        return self.out_layer(x)


class ClsDecoder(_LayerStack):
    """Cell embedding -> class logits; ``labels`` names the classes (kept in the manifest, not the weights)."""

    def __init__(self, d_model: int, n_cls: int, nlayers: int = 3, labels: list[str] | None = None) -> None:
        super().__init__(d_model, n_cls, nlayers, nn.ReLU)
        if labels is not None and len(labels) != n_cls:
            raise ValueError(f"{len(labels)} labels for {n_cls} classes")
        self.labels = list(labels) if labels is not None else None

    def ports(self) -> Ports:
        return Ports(
            inputs=(Port("cell_emb", CELL_EMB, ("B", self.d)),),
            outputs=(Port("cls_output", "class-logits", ("B", self.n_cls)),),
        )


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.neg() * ctx.lambd, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """Identity forward, gradient multiplied by ``-lambd`` backward (domain-adversarial training)."""
    return _GradReverse.apply(x, lambd)


class AdversarialDiscriminator(_LayerStack):
    """Cell embedding -> batch logits, through a gradient-reversal layer (DAB)."""

    def __init__(self, d_model: int, n_cls: int, nlayers: int = 3, reverse_grad: bool = True) -> None:
        super().__init__(d_model, n_cls, nlayers, nn.LeakyReLU)
        self.reverse_grad = reverse_grad

    def ports(self) -> Ports:
        return Ports(
            inputs=(Port("cell_emb", CELL_EMB, ("B", self.d)),),
            outputs=(Port("dab_output", "batch-logits", ("B", self.n_cls)),),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(grad_reverse(x, 1.0) if self.reverse_grad else x)


MVC_STYLES = ("inner product", "inner product, detach", "concat query", "sum query")


class MVCDecoder(Component):
    """Masked value prediction from the cell embedding (four styles, one dict output).

    ``gene_embs`` are the gene encoder's outputs (after its LayerNorm), as in the
    reference. With batch labels the cell embedding is ``[cell_emb, batch_emb]``
    (2d wide); the query styles size their layers for that instead of crashing.
    """

    kind = ComponentKind.DECODER

    def __init__(
        self,
        d_model: int,
        arch_style: str = "inner product",
        explicit_zero_prob: bool = False,
        use_batch_labels: bool = False,
    ) -> None:
        super().__init__()
        if arch_style not in MVC_STYLES:
            raise ValueError(f"unknown MVC arch_style {arch_style!r}; choose from {', '.join(MVC_STYLES)}")
        if explicit_zero_prob and not arch_style.startswith("inner product"):
            raise ValueError(f"explicit_zero_prob is only defined for the inner-product MVC styles, not {arch_style!r}")
        self.d, self.arch_style, self.explicit_zero_prob = d_model, arch_style, explicit_zero_prob
        self.use_batch_labels = use_batch_labels
        self.do_detach = arch_style.endswith("detach")
        d_in = 2 * d_model if use_batch_labels else d_model
        if arch_style.startswith("inner product"):
            self.gene2query = nn.Linear(d_model, d_model)
            self.query_activation = nn.Sigmoid()
            self.W = nn.Linear(d_model, d_in, bias=False)
            if explicit_zero_prob:
                self.W_zero_logit = nn.Linear(d_model, d_in)
        elif arch_style == "concat query":
            self.gene2query = nn.Linear(d_model, 64)
            self.query_activation = nn.Sigmoid()
            self.fc1 = nn.Linear(d_in + 64, 64)
            self.hidden_activation = nn.PReLU()
            self.fc2 = nn.Linear(64, 1)
        else:  # sum query
            self.gene2query = nn.Linear(d_model, d_in)
            self.query_activation = nn.Sigmoid()
            self.fc1 = nn.Linear(d_in, 64)
            self.hidden_activation = nn.PReLU()
            self.fc2 = nn.Linear(64, 1)

    def ports(self) -> Ports:
        inputs = (Port("cell_emb", CELL_EMB, ("B", self.d)), Port("gene_embs", GENE_EMB, ("B", "T", self.d)))
        return Ports(inputs=inputs, outputs=(Port("mvc_output", "expression", ("B", "T")),))

    def forward(self, cell_emb: torch.Tensor, gene_embs: torch.Tensor) -> dict[str, torch.Tensor]:
        gene_embs = gene_embs.detach() if self.do_detach else gene_embs
        query = self.query_activation(self.gene2query(gene_embs))
        if self.arch_style.startswith("inner product"):
            cell = cell_emb.unsqueeze(2)
            out = {"pred": torch.bmm(self.W(query), cell).squeeze(2)}
            if self.explicit_zero_prob:
                out["zero_probs"] = torch.sigmoid(torch.bmm(self.W_zero_logit(query), cell).squeeze(2))
            return out
        if self.arch_style == "concat query":
            cell = cell_emb.unsqueeze(1).expand(-1, gene_embs.shape[1], -1)
            hidden = self.hidden_activation(self.fc1(torch.cat([cell, query], dim=2)))
        else:
            hidden = self.hidden_activation(self.fc1(cell_emb.unsqueeze(1) + query))
        return {"pred": self.fc2(hidden).squeeze(2)}


class Similarity(nn.Module):
    """Cosine similarity divided by a temperature (the contrastive CCE objective)."""

    def __init__(self, temp: float) -> None:
        super().__init__()
        self.temp = temp

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(upcast(x), upcast(y), dim=-1) / self.temp  # feeds a loss: float32


class PerturbationEncoder(nn.Embedding, Component):
    """Perturbation flags (0, 1, pad) -> embedding; an ``nn.Embedding`` so its key is ``pert_encoder.weight``."""

    kind = ComponentKind.ENCODER

    def __init__(self, d_model: int, pert_pad_id: int = 2) -> None:
        nn.Embedding.__init__(self, 3, d_model, padding_idx=pert_pad_id)
        self.d = d_model

    def ports(self) -> Ports:
        return Ports(inputs=(Port("input_pert_flags", "perturbation-flags", ("B", "T")),), outputs=(_hidden(self.d),))
