"""scModelForge's ``AutoregressiveTransformer``, exactly, plus a true next-gene generative mode.

Both objectives share one module and PyTorch's state-dict layout (``in_proj_weight``...), so an
scModelForge ``save_pretrained`` folder loads as it is:

* ``objective="scmodelforge"`` reproduces the reference, quirks included: BERT-masked inputs
  under a causal mask, the loss at the label's own position (no shift), continuous values as
  input and bins only as targets, ``cls`` pooling of causal states (the same for every cell), and
  a bidirectional ``encode`` that does not match training.
* ``objective="next_token"`` (the default for new models) is autoregressive: the state at
  position ``i`` predicts the gene at ``i + 1`` and then, given that gene, its expression bin.
  Bins (not values) are the expression input, so sampled cells can be fed back in; ``encode``
  uses the causal attention the model was trained with; ``generate`` samples whole cells with a
  KV cache. Positions can be learned (as the reference) or rotary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from biozoo.components.base import Architecture
from biozoo.components.ports import Port
from biozoo.errors import BiozooError
from biozoo.nn.heads import pool
from biozoo.nn.positional import RotaryPositionalEncoding
from biozoo.nn.precision import upcast
from biozoo.nn.transformer import TransformerEncoder
from biozoo_autoregressive.scmodelforge_folder import MODEL_KEYS

if TYPE_CHECKING:
    from biozoo_autoregressive.generation import GeneratedCells

Objective = Literal["scmodelforge", "next_token"]
OBJECTIVES = ("scmodelforge", "next_token")
IGNORE = -100


class InputError(BiozooError, ValueError):
    """Model inputs that do not fit the model (ids outside the vocabulary, too long, missing bins)."""


@dataclass(frozen=True)
class ModelOutput:
    """What ``forward`` returns; the first four fields are scModelForge's ``ModelOutput``."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  #: gene logits ``[B, S, V]``
    embeddings: torch.Tensor | None = None  #: pooled cell embedding ``[B, H]``
    hidden_states: tuple[torch.Tensor, ...] | None = None  #: the last layer's states ``([B, S, H],)``
    bin_logits: torch.Tensor | None = None  #: next-bin logits ``[B, S-1, n_bins]`` (next_token, with targets)

    # read like a mapping of the outputs that are set (what `zoo verify` and dict-style callers use)
    def __getitem__(self, name: str) -> Any:
        if name not in self:
            raise KeyError(name)
        return getattr(self, name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.__dataclass_fields__ and getattr(self, name) is not None

    def __iter__(self):
        return (name for name in self.__dataclass_fields__ if getattr(self, name) is not None)


class PredictionHead(nn.Module):
    """``decoder(LayerNorm(GELU(dense(h))))``: scModelForge's gene and bin heads."""

    def __init__(self, hidden_dim: int, out_dim: int, layer_norm_eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_dim, hidden_dim)
        self.act = nn.GELU()
        self.layer_norm = nn.LayerNorm(hidden_dim, eps=layer_norm_eps)
        self.decoder = nn.Linear(hidden_dim, out_dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(self.act(self.dense(hidden))))


class CellTokenEmbedding(nn.Module):
    """gene + position (learned; none when rotary) + expression (values or bins) -> LayerNorm -> dropout."""

    def __init__(
        self,
        vocab_size: int,
        hidden_dim: int,
        max_seq_len: int,
        dropout: float,
        *,
        expression: Literal["values", "bins"] | None,
        n_bins: int,
        learned_positions: bool,
        layer_norm_eps: float,
        pad_token_id: int,
    ) -> None:
        super().__init__()
        self.max_seq_len = max_seq_len
        self.gene_embedding = nn.Embedding(vocab_size, hidden_dim, padding_idx=pad_token_id)
        self.position_embedding = nn.Embedding(max_seq_len, hidden_dim) if learned_positions else None
        self.expression_proj = nn.Linear(1, hidden_dim) if expression == "values" else None
        self.bin_embedding = nn.Embedding(n_bins, hidden_dim) if expression == "bins" else None
        self.layer_norm = nn.LayerNorm(hidden_dim, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        input_ids: torch.Tensor,
        values: torch.Tensor | None = None,
        bin_ids: torch.Tensor | None = None,
        offset: int = 0,
    ) -> torch.Tensor:
        emb = self.gene_embedding(input_ids)
        if self.position_embedding is not None:
            positions = torch.arange(offset, offset + input_ids.shape[1], device=input_ids.device)
            emb = emb + self.position_embedding(positions.unsqueeze(0))
        if self.expression_proj is not None and values is not None:
            emb = emb + self.expression_proj(values.unsqueeze(-1).to(emb.dtype))
        if self.bin_embedding is not None and bin_ids is not None:
            emb = emb + self.bin_embedding(bin_ids)
        return self.dropout(self.layer_norm(emb))


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the targets that are not ``IGNORE``, in float32 whatever the logits' dtype."""
    return F.cross_entropy(upcast(logits).reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)


def _init_weights(module: nn.Module) -> None:
    """scModelForge's initialisation: Xavier linears, N(0, 0.02) embeddings (zero padding row), unit norms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class AutoregressiveTransformer(Architecture):
    """A single-cell transformer over ``[<cls>] + genes`` tokens with causal attention (see module docstring)."""

    slots: ClassVar[dict] = {}

    def __init__(
        self,
        vocab_size: int,
        n_bins: int = 51,
        hidden_dim: int = 512,
        num_layers: int = 12,
        num_heads: int = 8,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        max_seq_len: int = 2048,
        pooling: str = "cls",
        activation: str = "gelu",
        *,
        use_expression_values: bool = True,
        layer_norm_eps: float = 1e-12,
        gene_loss_weight: float = 1.0,
        expression_loss_weight: float = 1.0,
        objective: Objective = "next_token",
        positional: Literal["learned", "rotary"] = "learned",
        pad_token_id: int = 0,
        cls_token_id: int = 3,
        eos_token_id: int | None = None,
        special_token_ids: tuple[int, ...] | list[int] = (0, 1, 2, 3),
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose 'next_token' or 'scmodelforge'")
        if positional not in ("learned", "rotary"):
            raise ValueError(f"unknown positional {positional!r}; choose 'learned' or 'rotary'")
        if objective == "scmodelforge" and positional != "learned":
            raise ValueError("objective='scmodelforge' has learned absolute positions only (as the reference)")
        if pooling not in ("cls", "mean", "last"):
            raise ValueError(f"unknown pooling {pooling!r}; choose 'cls', 'mean' or 'last'")
        if eos_token_id is not None and not 0 <= eos_token_id < vocab_size:
            raise ValueError(f"eos_token_id {eos_token_id} is outside the vocabulary (size {vocab_size})")
        self.vocab_size, self.n_bins, self.hidden_dim = vocab_size, n_bins, hidden_dim
        self.max_seq_len, self.objective, self.positional = max_seq_len, objective, positional
        self._pooling_strategy = pooling
        self._gene_loss_weight, self._expression_loss_weight = gene_loss_weight, expression_loss_weight
        self.use_expression_values = use_expression_values
        self.pad_token_id, self.cls_token_id, self.eos_token_id = pad_token_id, cls_token_id, eos_token_id
        self.special_token_ids = tuple(int(i) for i in special_token_ids)
        generative = objective == "next_token"
        self.embedding = CellTokenEmbedding(
            vocab_size,
            hidden_dim,
            max_seq_len,
            dropout,
            expression=("bins" if generative else "values") if use_expression_values else None,
            n_bins=n_bins,
            learned_positions=positional == "learned",
            layer_norm_eps=layer_norm_eps,
            pad_token_id=pad_token_id,
        )
        self.encoder = TransformerEncoder(
            hidden_dim,
            num_layers,
            num_heads,
            ffn_dim or 4 * hidden_dim,
            dropout,
            activation,
            layer_norm_eps,
            norm_first=True,
            final_norm=generative,  # the reference has none; pooled states of a pre-norm stack need one
            causal=True,
            packed_qkv=True,
        )
        self.rotary = RotaryPositionalEncoding(hidden_dim // num_heads, max_seq_len) if positional == "rotary" else None
        self.gene_head = PredictionHead(hidden_dim, vocab_size, layer_norm_eps)
        self.expression_head = PredictionHead(hidden_dim, n_bins, layer_norm_eps)
        self.apply(_init_weights)

    # -- construction ------------------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Any) -> AutoregressiveTransformer:
        """Build from an scModelForge ``ModelConfig`` (object or mapping) or our own config mapping.

        A config with scModelForge's ``architecture`` field (and no ``objective``) builds the exact
        reference model; anything else defaults to ``objective="next_token"``.
        """
        get = config.get if isinstance(config, Mapping) else lambda k, d=None: getattr(config, k, d)
        if get("vocab_size") is None:
            raise ValueError("config.vocab_size must be set (the number of genes + special tokens)")
        ours = ["layer_norm_eps", "positional", "pad_token_id", "cls_token_id", "eos_token_id", "special_token_ids"]
        keys = [k for k in MODEL_KEYS if k != "vocab_size"] + ours
        options = {k: get(k) for k in keys if get(k) is not None}
        is_reference = get("architecture") is not None
        objective = get("objective") or ("scmodelforge" if is_reference else "next_token")
        if is_reference:
            options.pop("layer_norm_eps", None)  # the reference's from_config drops it too: always 1e-12
        return cls(int(get("vocab_size")), objective=objective, **options)

    def num_parameters(self, *, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def model_inputs(self) -> tuple[Port, ...]:
        return (
            Port("input_ids", "gene-ids", ("B", "T")),
            Port("attention_mask", "attention-mask", ("B", "T")),
        )

    # -- checks ------------------------------------------------------------------------------------------------

    def _check_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, offset: int = 0) -> None:
        if input_ids.dim() != 2:
            raise InputError(
                f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}", "add a batch dimension"
            )
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise InputError(
                f"attention_mask {tuple(attention_mask.shape)} does not match input_ids {tuple(input_ids.shape)}",
                "pass one 0/1 entry per token",
            )
        length = offset + input_ids.shape[1]
        if self.positional == "learned" and length > self.max_seq_len:
            raise InputError(
                f"{length} tokens exceed the model's max_seq_len {self.max_seq_len} (learned positions)",
                f"truncate cells to at most {self.max_seq_len} tokens (CLS included)",
            )
        if input_ids.numel():
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= self.vocab_size:
                bad = low if low < 0 else high
                raise InputError(
                    f"token id {bad} is outside the model's vocabulary (0..{self.vocab_size - 1})",
                    "tokenize with the model's own gene vocabulary (gene_vocab.json / vocab.json)",
                )

    def _bins(self, bin_ids: torch.Tensor | None, shape: torch.Size, needed: bool) -> torch.Tensor | None:
        if bin_ids is None:
            if needed:
                raise InputError(
                    "this next_token model reads expression as bins, but no bin_ids were given",
                    "pass bin_ids=[batch, length] (0 for CLS and padding), as the plugin's tokenizer makes",
                )
            return None
        if bin_ids.shape != shape:
            raise InputError(f"bin_ids {tuple(bin_ids.shape)} does not match input_ids {tuple(shape)}")
        if bin_ids.numel() and (int(bin_ids.min()) < 0 or int(bin_ids.max()) >= self.n_bins):
            raise InputError(f"bin_ids must be in 0..{self.n_bins - 1}", "bin with the model's own n_bins")
        return bin_ids

    # -- forward -----------------------------------------------------------------------------------------------

    def _hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        values: torch.Tensor | None,
        bin_ids: torch.Tensor | None,
        *,
        causal: bool,
    ) -> torch.Tensor:
        padding = None if attention_mask is None else attention_mask == 0
        x = self.embedding(input_ids, values=values, bin_ids=bin_ids)
        return self.encoder(x, padding, rotary=self.rotary, causal=causal)

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        how = self._pooling_strategy
        padding = None if attention_mask is None else attention_mask == 0
        if self.objective == "next_token" and how in ("cls", "last"):
            # under a causal mask only the last real token has read the whole cell
            if attention_mask is None:
                return hidden[:, -1]
            last = (attention_mask.sum(dim=1) - 1).clamp(min=0)
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        if how == "last":
            raise ValueError("pooling='last' is for objective='next_token'")
        return pool(hidden, padding, how)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> ModelOutput:
        """Gene logits, pooled embeddings and (with ``labels``) the loss.

        ``bin_ids=`` (keyword, as scModelForge's training loop passes it) are the bin targets in
        ``scmodelforge`` mode and the expression input (and next-bin targets) in ``next_token``
        mode. In ``next_token`` mode ``labels`` are the tokens themselves (``input_ids`` with -100
        where no loss is wanted); the shift happens here.
        """
        self._check_inputs(input_ids, attention_mask)
        generative = self.objective == "next_token"
        bin_ids = self._bins(kwargs.get("bin_ids"), input_ids.shape, generative and self.use_expression_values)
        hidden = self._hidden(input_ids, attention_mask, values, bin_ids if generative else None, causal=True)
        embeddings = self._pool(hidden, attention_mask)
        logits = self.gene_head(hidden)
        loss, bin_logits = None, None
        if labels is not None:
            if generative:
                loss, bin_logits = self._next_token_loss(hidden, logits, labels, attention_mask, bin_ids)
            else:
                loss = self._reference_loss(hidden, logits, labels, kwargs.get("bin_ids"))
        return ModelOutput(
            loss=loss, logits=logits, embeddings=embeddings, hidden_states=(hidden,), bin_logits=bin_logits
        )

    def _reference_loss(
        self, hidden: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, bin_ids: torch.Tensor | None
    ) -> torch.Tensor:
        """scModelForge's loss: each position scored against its own label (no shift)."""
        loss = self._gene_loss_weight * _cross_entropy(logits, labels)
        if bin_ids is not None:
            bin_logits = self.expression_head(hidden)
            bin_labels = bin_ids.clone()
            bin_labels[labels == IGNORE] = IGNORE
            loss = loss + self._expression_loss_weight * _cross_entropy(bin_logits, bin_labels)
        return loss

    def next_bin_logits(self, hidden: torch.Tensor, next_genes: torch.Tensor) -> torch.Tensor:
        """Logits of the next gene's bin, given the state before it and which gene it is."""
        genes = next_genes.clamp(min=0).masked_fill(next_genes == IGNORE, self.pad_token_id)
        return self.expression_head(hidden + self.embedding.gene_embedding(genes))

    def _next_token_loss(
        self,
        hidden: torch.Tensor,
        logits: torch.Tensor,
        labels: torch.Tensor,
        attention_mask: torch.Tensor | None,
        bin_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        targets = labels[:, 1:]
        if attention_mask is not None:
            targets = targets.masked_fill(attention_mask[:, 1:] == 0, IGNORE)
        loss = self._gene_loss_weight * _cross_entropy(logits[:, :-1], targets)
        bin_logits = None
        if bin_ids is not None and self._expression_loss_weight:
            bin_logits = self.next_bin_logits(hidden[:, :-1], targets)
            no_bin = targets == IGNORE
            if self.eos_token_id is not None:
                no_bin |= targets == self.eos_token_id
            bin_targets = bin_ids[:, 1:].masked_fill(no_bin, IGNORE)
            loss = loss + self._expression_loss_weight * _cross_entropy(bin_logits, bin_targets)
        return loss, bin_logits

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        values: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Cell embeddings ``[B, H]``: bidirectional in ``scmodelforge`` mode (as the reference), causal
        (as trained) in ``next_token`` mode."""
        self._check_inputs(input_ids, attention_mask)
        generative = self.objective == "next_token"
        bin_ids = self._bins(kwargs.get("bin_ids"), input_ids.shape, generative and self.use_expression_values)
        hidden = self._hidden(input_ids, attention_mask, values, bin_ids if generative else None, causal=generative)
        return self._pool(hidden, attention_mask)

    # -- generation --------------------------------------------------------------------------------------------

    def generate(self, n_cells: int, **options: Any) -> GeneratedCells:
        """Sample ``n_cells`` cells gene by gene; see :func:`biozoo_autoregressive.generation.generate`."""
        from biozoo_autoregressive.generation import generate

        return generate(self, n_cells, **options)

    def extra_repr(self) -> str:
        return f"objective={self.objective}, positional={self.positional}, pooling={self._pooling_strategy}"
