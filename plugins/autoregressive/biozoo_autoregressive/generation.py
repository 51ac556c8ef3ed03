"""Sampling whole cells from a ``next_token`` model, one gene (then its bin) at a time.

Each step picks the next gene from the gene head (never a special token, never a gene the cell
already has) and then its expression bin from the bin head conditioned on that gene (never bin 0:
tokens are expressed genes). A cell ends at ``<eos>`` or ``max_length``. With ``use_cache`` each
step feeds only the newest token and reuses every earlier key and value (a static ``KVCache``:
buffers allocated once, written in place); without it every step re-runs the whole prefix. Both
draw the same random numbers in the same order, so they give the same cells for a seed.

The loop is shaped for GPUs: token ids and bins live in preallocated buffers, sampling stays on
the device, and the host looks at the device only every ``sync_every`` steps (to refuse NaN
logits, stop when every cell has ended, and drop ended cells from the batch and the cache). On
CPU that is every step with ``torch.multinomial``, so a seed gives exactly the cells earlier
versions gave; on CUDA it is every 16 steps with a sync-free draw (ended cells ride along, ignored,
until the next check), which samples from the same distribution with other random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from numbers import Integral
from typing import TYPE_CHECKING

import torch

from biozoo.errors import InvalidArgumentError
from biozoo.nn.attention import KVCache
from biozoo.nn.sampling import check_sampling, sample_logits
from biozoo.singlecell.checks import refuse_non_finite

if TYPE_CHECKING:
    from collections.abc import Callable

    from biozoo_autoregressive.model import AutoregressiveTransformer

CUDA_SYNC_EVERY = 16  # steps between host checks on GPUs: ~6% wasted steps at most for a 260-step cell


@dataclass(frozen=True)
class GeneratedCells:
    """Sampled cells: ``gene_ids[i, :lengths[i]]`` with ``bin_ids`` alongside (CLS and EOS not included)."""

    gene_ids: torch.Tensor  #: int64 [N, L], pad id after the end
    bin_ids: torch.Tensor  #: int64 [N, L], 0 after the end
    lengths: torch.Tensor  #: int64 [N], genes per cell
    ended: torch.Tensor  #: bool [N], True where the model chose to stop (EOS) before max_length
    steps: int  #: decoding steps the batch needed (the longest cell, its EOS included)


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
    sync_every: int | None = None,
    compile: bool = False,
) -> GeneratedCells:
    """Sample ``n_cells`` cells in one batch. ``max_length`` counts genes (default: as many as fit).

    ``temperature``/``top_k``/``top_p`` shape the gene choice; the bin choice uses
    ``bin_temperature`` (default: ``temperature``) with no top-k/top-p. ``seed=None`` draws from
    torch's global generator. ``sync_every``: steps between host checks (default 1 on CPU, which
    reproduces earlier versions' cells, and 16 elsewhere). ``compile``: run each step's model call
    through ``torch.compile`` (the first batch pays the compilation).
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
    if sync_every is None:
        sync_every = 1 if device.type == "cpu" else CUDA_SYNC_EVERY
    if isinstance(sync_every, bool) or not isinstance(sync_every, Integral) or sync_every < 1:
        raise InvalidArgumentError(f"sync_every must be an integer >= 1, got {sync_every!r}", "e.g. sync_every=16")
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    bin_temperature = temperature if bin_temperature is None else bin_temperature
    # torch.multinomial waits for the GPU; on CPU it keeps the draws earlier versions made
    draw = partial(sample_logits, generator=generator, sync_free=device.type != "cpu")

    banned = torch.zeros(n_cells, model.vocab_size, dtype=torch.bool, device=device)
    banned[:, list(model.special_token_ids)] = True
    eos = model.eos_token_id
    if eos is not None:
        banned[:, eos] = False
    pad = model.pad_token_id
    rows = torch.arange(n_cells, device=device)  # output row of each cell still in the batch
    ids = torch.full((n_cells, max_length), pad, dtype=torch.long, device=device)  # the model's input tokens
    ids[:, 0] = model.cls_token_id
    bins = torch.zeros_like(ids)
    out_ids = torch.full((n_cells, max_length), pad, dtype=torch.long, device=device)
    out_bins = torch.zeros_like(out_ids)
    ended = torch.zeros(n_cells, dtype=torch.bool, device=device)
    alive = torch.ones(n_cells, dtype=torch.bool, device=device)  # not ended yet (ended cells may ride along)
    worst = torch.zeros(2, device=device)  # largest |logit| so far (genes, bins): NaN or inf once one was
    cache = KVCache(max_length=max_length) if use_cache else None
    step = _step_function(model, cache, compile)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for t in range(max_length):
                hidden = step(ids[:, : t + 1], bins[:, : t + 1], t)
                logits = _checked(model.gene_head(hidden).float(), worst[0])
                logits = logits.masked_fill(banned, float("-inf"))
                if eos is not None and t < min_length:
                    logits[:, eos] = float("-inf")
                gene = draw(logits, temperature=temperature, top_k=top_k, top_p=top_p)
                stop = gene == eos if eos is not None else torch.zeros_like(gene, dtype=torch.bool)
                done = stop | ~alive
                gene = gene.masked_fill(done, pad)
                bin_logits = _checked(model.next_bin_logits(hidden, gene).float(), worst[1])
                bin_logits[:, 0] = float("-inf")
                binned = draw(bin_logits, temperature=bin_temperature)
                binned = binned.masked_fill(done, 0)
                out_ids[rows, t], out_bins[rows, t] = gene, binned
                ended[rows] |= stop & alive
                alive &= ~stop
                banned.scatter_(1, gene[:, None], True)  # a scalar put by index (`[...] = True`) syncs on CUDA
                if t == 0:
                    banned[:, pad] = True
                if t + 1 < max_length:
                    ids[:, t + 1], bins[:, t + 1] = gene, binned
                if (t + 1) % sync_every and t + 1 < max_length:
                    continue
                refuse_non_finite(worst[:1], model, "gene logits")
                refuse_non_finite(worst[1:], model, "expression-bin logits")
                if eos is None or bool(alive.all()):
                    continue
                if not bool(alive.any()):
                    break
                keep = alive  # ended cells leave the batch (and the cache): no more work on them
                rows, ids, bins, banned, alive = rows[keep], ids[keep], bins[keep], banned[keep], alive[keep]
                if cache is not None:
                    cache.select(keep)
    finally:
        model.train(was_training)
    lengths = (out_ids != pad).sum(dim=1)
    steps = int((lengths + ended).max())
    return GeneratedCells(out_ids[:, :steps], out_bins[:, :steps], lengths, ended, steps)


def _checked(logits: torch.Tensor, worst: torch.Tensor) -> torch.Tensor:
    """Fold ``max |logits|`` into ``worst`` (it turns NaN/inf for good once one logit is) and return
    the logits with non-finite values zeroed, so the draw itself never fails before the check."""
    torch.maximum(worst, logits.abs().amax(), out=worst)
    return logits.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)


def _step_function(
    model: AutoregressiveTransformer, cache: KVCache | None, compile: bool
) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
    """``(ids [N, t+1], bins [N, t+1], t) -> [N, H]``: the final layer's state at the newest position."""

    def step(ids: torch.Tensor, bins: torch.Tensor, t: int) -> torch.Tensor:
        return _last_hidden(model, ids, bins, cache, t)

    if not compile:
        return step
    return torch.compile(step, dynamic=True)


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
