"""Sampling whole cells from a ``next_token`` model, one gene (then its bin) at a time.

Each step picks the next gene from the gene head (never a special token, never a gene the cell
already has) and then its expression bin from the bin head conditioned on that gene (never bin 0:
tokens are expressed genes). A cell ends at ``<eos>`` or ``max_length``, and a finished cell leaves
the batch (and the cache), so no work is spent on it. With ``use_cache`` each
step feeds only the newest token and reuses every earlier key and value (``KVCache``); without
it every step re-runs the whole prefix. Both draw the same random numbers in the same order, so
they give the same cells for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import TYPE_CHECKING

import torch

from biozoo.errors import InvalidArgumentError
from biozoo.nn.attention import KVCache
from biozoo.nn.sampling import check_sampling, sample_logits
from biozoo.singlecell.checks import refuse_non_finite

if TYPE_CHECKING:
    from biozoo_autoregressive.model import AutoregressiveTransformer


@dataclass(frozen=True)
class GeneratedCells:
    """Sampled cells: ``gene_ids[i, :lengths[i]]`` with ``bin_ids`` alongside (CLS and EOS not included)."""

    gene_ids: torch.Tensor  #: int64 [N, L], pad id after the end
    bin_ids: torch.Tensor  #: int64 [N, L], 0 after the end
    lengths: torch.Tensor  #: int64 [N], genes per cell
    ended: torch.Tensor  #: bool [N], True where the model chose to stop (EOS) before max_length
    steps: int  #: model calls made


def generate(
    model: AutoregressiveTransformer,
    n_cells: int,
    *,
    max_length: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    bin_temperature: float | None = None,
    seed: int | None = 0,
    use_cache: bool = True,
    min_length: int = 1,
) -> GeneratedCells:
    """Sample ``n_cells`` cells in one batch. ``max_length`` counts genes (default: as many as fit).

    ``temperature``/``top_k``/``top_p`` shape the gene choice; the bin choice uses
    ``bin_temperature`` (default: ``temperature``) with no top-k/top-p. ``seed=None`` draws from
    torch's global generator.
    """
    if model.objective != "next_token":
        raise InvalidArgumentError(
            "this model was trained with scModelForge's objective (no next-gene targets), so it cannot generate",
            "generate with a model trained with objective='next_token', e.g. autoregressive/pbmc-small",
        )
    check_sampling(temperature, top_k, top_p, n=n_cells)
    if bin_temperature is not None:
        check_sampling(bin_temperature, None, None)
    n_genes = model.vocab_size - len(set(model.special_token_ids) | {model.eos_token_id} - {None})
    limit = min(n_genes, model.max_seq_len - 1 if model.positional == "learned" else n_genes)
    max_length = limit if max_length is None else max_length
    if isinstance(max_length, bool) or not isinstance(max_length, Integral) or not 1 <= max_length <= limit:
        raise InvalidArgumentError(
            f"max_length {max_length} is out of range: this model can generate 1..{limit} genes per cell "
            f"(max_seq_len {model.max_seq_len} includes the CLS token; {n_genes} genes in the vocabulary)",
            f"pass --max-length N with 1 <= N <= {limit}, or leave it out for up to {limit} (max_length= in Python)",
        )
    if not 0 <= min_length <= max_length:
        raise InvalidArgumentError(
            f"min_length must be in 0..max_length ({max_length}), got {min_length}", "e.g. min_length=1"
        )
    device = next(model.parameters()).device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    bin_temperature = temperature if bin_temperature is None else bin_temperature

    banned = torch.zeros(n_cells, model.vocab_size, dtype=torch.bool, device=device)
    banned[:, list(model.special_token_ids)] = True
    eos = model.eos_token_id
    if eos is not None:
        banned[:, eos] = False
    pad = model.pad_token_id
    active = torch.arange(n_cells, device=device)  # output row of each cell still being generated
    ids = torch.full((n_cells, 1), model.cls_token_id, dtype=torch.long, device=device)
    bins = torch.zeros_like(ids)
    out_ids = torch.full((n_cells, max_length), pad, dtype=torch.long, device=device)
    out_bins = torch.zeros_like(out_ids)
    ended = torch.zeros(n_cells, dtype=torch.bool, device=device)
    cache = KVCache() if use_cache else None
    steps = 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for t in range(max_length):
                hidden = _last_hidden(model, ids, bins, cache, t)
                steps += 1
                logits = model.gene_head(hidden).float()
                refuse_non_finite(logits, model, "gene logits")
                logits = logits.masked_fill(banned, float("-inf"))
                if eos is not None and t < min_length:
                    logits[:, eos] = float("-inf")
                gene = sample_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
                stop = gene == eos if eos is not None else torch.zeros_like(gene, dtype=torch.bool)
                gene = gene.masked_fill(stop, pad)
                bin_logits = model.next_bin_logits(hidden, gene).float()
                refuse_non_finite(bin_logits, model, "expression-bin logits")
                bin_logits[:, 0] = float("-inf")
                binned = sample_logits(bin_logits, temperature=bin_temperature, generator=generator)
                binned = binned.masked_fill(stop, 0)
                out_ids[active, t], out_bins[active, t] = gene, binned
                ended[active[stop]] = True
                banned[torch.arange(active.numel(), device=device), gene] = True
                banned[:, pad] = True
                ids = torch.cat([ids, gene[:, None]], dim=1)
                bins = torch.cat([bins, binned[:, None]], dim=1)
                if bool(stop.any()):  # finished cells leave the batch (and the cache): no work on them
                    keep = ~stop
                    if not bool(keep.any()):
                        break
                    active, ids, bins, banned = active[keep], ids[keep], bins[keep], banned[keep]
                    if cache is not None:
                        cache.layers = {key: (k[keep], v[keep]) for key, (k, v) in cache.layers.items()}
    finally:
        model.train(was_training)
    genes, gene_bins = out_ids[:, :steps], out_bins[:, :steps]
    lengths = (genes != pad).sum(dim=1)
    return GeneratedCells(genes, gene_bins, lengths, ended, steps)


def _last_hidden(
    model: AutoregressiveTransformer, ids: torch.Tensor, bins: torch.Tensor, cache: KVCache | None, t: int
) -> torch.Tensor:
    """The final layer's state at the newest position ``[N, H]``."""
    expression = bins if model.use_expression_values else None
    if cache is None:  # re-run the whole prefix
        x = model.embedding(ids, bin_ids=expression)
        return model.encoder(x, rotary=model.rotary, causal=True)[:, -1]
    newest = slice(t, t + 1)
    x = model.embedding(ids[:, newest], bin_ids=None if expression is None else expression[:, newest], offset=t)
    return model.encoder(x, rotary=model.rotary, causal=True, cache=cache, position_offset=t)[:, -1]
