"""The next_token objective: shifted targets, causal embeddings, and generation with a KV cache.

There is no reference for this mode (scModelForge has no generation), so the tests check the
defining properties directly: the loss is next-token cross-entropy, position i never sees
position i+1, a model that has learned a cell regenerates it, and cached decoding equals
full re-computation.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import biozoo
from biozoo_autoregressive.model import AutoregressiveTransformer, InputError

V, BINS = 24, 6  # specials 0..3 (pad, unk, mask, cls), eos 4, genes 5..23
EOS = 4


def _model(**overrides) -> AutoregressiveTransformer:
    torch.manual_seed(0)
    options = dict(hidden_dim=32, num_layers=2, num_heads=4, ffn_dim=64, dropout=0.0, max_seq_len=24, eos_token_id=EOS)
    options.update(overrides)
    return AutoregressiveTransformer(V, BINS, **options).eval()


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[3, 9, 7, 12, 4, 0], [3, 15, 6, 4, 0, 0], [3, 20, 11, 8, 5, 4]])
    bins = torch.tensor([[0, 5, 3, 1, 0, 0], [0, 2, 2, 0, 0, 0], [0, 4, 4, 3, 1, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "bin_ids": bins}


def test_loss_is_next_gene_then_next_bin_cross_entropy() -> None:
    model = _model()
    b = _batch()
    out = model(**b, labels=b["input_ids"])
    targets = b["input_ids"][:, 1:].masked_fill(b["attention_mask"][:, 1:] == 0, -100)
    gene = F.cross_entropy(out.logits[:, :-1].reshape(-1, V), targets.reshape(-1), ignore_index=-100)
    bin_targets = b["bin_ids"][:, 1:].masked_fill((targets == -100) | (targets == EOS), -100)
    hidden = out.hidden_states[-1][:, :-1]
    bin_logits = model.expression_head(hidden + model.embedding.gene_embedding(targets.clamp(min=0)))
    expr = F.cross_entropy(bin_logits.reshape(-1, BINS), bin_targets.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, gene + expr)


def test_no_position_sees_the_future() -> None:
    model = _model()
    b = _batch()
    changed = {k: v.clone() for k, v in b.items()}
    changed["input_ids"][:, 3] = 13
    changed["bin_ids"][:, 3] = 2
    with torch.no_grad():
        a, c = model(**b).logits, model(**changed).logits
    torch.testing.assert_close(a[:, :3], c[:, :3])
    assert (a[:, 3:] - c[:, 3:]).abs().amax() > 1e-3


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_embeddings_differ_between_cells_and_encode_matches_training(pooling: str) -> None:
    model = _model(pooling=pooling)
    b = _batch()
    with torch.no_grad():
        emb = model(**b).embeddings
        enc = model.encode(**b)
    assert torch.cdist(emb, emb)[~torch.eye(3, dtype=torch.bool)].min() > 1e-3
    torch.testing.assert_close(enc, emb)


def _train_on(model: AutoregressiveTransformer, batch: dict[str, torch.Tensor], steps: int = 200) -> float:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


@pytest.mark.parametrize("positional", ["learned", "rotary"])
def test_a_memorised_cell_is_regenerated_greedily_with_and_without_cache(positional: str) -> None:
    model = _model(positional=positional)
    ids = torch.tensor([[3, 9, 7, 12, 18, 4]])
    bins = torch.tensor([[0, 5, 3, 3, 1, 0]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "bin_ids": bins}
    assert _train_on(model, batch) < 0.05
    for use_cache in (True, False):
        cells = model.generate(2, temperature=0.0, use_cache=use_cache)
        assert cells.gene_ids[0, :4].tolist() == [9, 7, 12, 18]
        assert cells.bin_ids[0, :4].tolist() == [5, 3, 3, 1]
        assert cells.lengths.tolist() == [4, 4] and cells.ended.all()


@pytest.mark.parametrize("positional", ["learned", "rotary"])
def test_cached_and_uncached_sampling_draw_the_same_cells(positional: str) -> None:
    model = _model(positional=positional)
    kwargs = dict(temperature=1.3, top_k=8, top_p=0.95, seed=11, max_length=12)
    a = model.generate(5, use_cache=True, **kwargs)
    b = model.generate(5, use_cache=False, **kwargs)
    assert torch.equal(a.gene_ids, b.gene_ids) and torch.equal(a.bin_ids, b.bin_ids)
    c = model.generate(5, use_cache=True, **{**kwargs, "seed": 12})
    assert not torch.equal(a.gene_ids, c.gene_ids)


def test_generated_cells_are_well_formed() -> None:
    model = _model()
    cells = model.generate(16, seed=3, max_length=10, min_length=2)
    for row, n in zip(cells.gene_ids, cells.lengths, strict=True):
        genes = row[: int(n)].tolist()
        assert len(set(genes)) == len(genes), "a gene appears twice in one cell"
        assert all(5 <= g < V for g in genes), "special token or EOS inside a cell"
        assert (row[int(n) :] == 0).all()
    real = cells.gene_ids != 0
    assert (cells.bin_ids[real] >= 1).all() and (cells.bin_ids[~real] == 0).all()
    assert (cells.lengths >= 2).all() and (cells.lengths <= 10).all()


@pytest.mark.parametrize("processor", ["eager", "sdpa", "sliced", "varlen"])
def test_every_attention_processor_generates_the_same_cells(processor: str) -> None:
    model = _model()
    want = model.generate(4, seed=5, max_length=8)
    biozoo.set_processor(model, processor)
    got = model.generate(4, seed=5, max_length=8)
    assert torch.equal(want.gene_ids, got.gene_ids) and torch.equal(want.bin_ids, got.bin_ids)


def test_bad_generation_and_input_requests_are_named() -> None:
    model = _model()
    with pytest.raises(ValueError, match=r"max_length 40 is out of range: this model can generate 1\.\.19 genes"):
        model.generate(1, max_length=40)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(1, top_p=1.5)
    with pytest.raises(InputError, match="no bin_ids were given"):
        model(torch.tensor([[3, 5]]), torch.ones(1, 2))
    with pytest.raises(InputError, match="bin_ids must be in 0..5"):
        model(torch.tensor([[3, 5]]), torch.ones(1, 2), bin_ids=torch.tensor([[0, 6]]))
    with pytest.raises(ValueError, match="objective"):
        AutoregressiveTransformer(V, objective="gpt")
