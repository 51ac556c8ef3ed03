"""Any dtype end to end: bfloat16 / float16 weights, or autocast, checked against float32 on the same weights.

Documented tolerances (docs/scgpt.md and docs/autoregressive.md, "Precision"), all on CPU:

* L2-normalised cell embeddings: max |diff| vs float32 <= 2e-2 for bfloat16 (weights or autocast),
  <= 2e-3 for float16 (3 more mantissa bits than bfloat16, so about 8x finer);
* class probabilities (softmax of the classifier): <= 5e-2 for bfloat16, <= 5e-3 for float16.

Measured (this file's models): bfloat16 1e-3..6e-3, float16 1e-4..8e-4 on embeddings.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from biozoo.errors import InvalidArgumentError
from biozoo.nn import precision
from biozoo.nn.heads import pool

ROOT = Path(__file__).resolve().parents[1]
CELLS = ROOT / "examples" / "pbmc68k_test.h5ad"
SCGPT = importlib.util.find_spec("biozoo_scgpt") is not None
AUTOREGRESSIVE = importlib.util.find_spec("biozoo_autoregressive") is not None
needs_scgpt = pytest.mark.skipif(not SCGPT, reason="needs the scgpt plugin")
needs_ar = pytest.mark.skipif(not AUTOREGRESSIVE, reason="needs the autoregressive plugin")

#: max |diff| of L2-normalised cell embeddings vs float32 on the same weights
EMB_TOL = {torch.bfloat16: 2e-2, torch.float16: 2e-3}
#: max |diff| of class probabilities vs float32
PROB_TOL = {torch.bfloat16: 5e-2, torch.float16: 5e-3}
HALVES = (torch.bfloat16, torch.float16)
#: (weights dtype, autocast dtype): half weights, or float32 weights under autocast
MODES = [(h, None) for h in HALVES] + [(torch.float32, h) for h in HALVES]
MODE_IDS = ["bf16-weights", "fp16-weights", "autocast-bf16", "autocast-fp16"]


def _tolerance(weights: torch.dtype, amp: torch.dtype | None, table: dict) -> float:
    return table[amp or weights]


def _normalised(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return F.normalize(torch.as_tensor(x).double(), dim=-1)


def _max_diff(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    return float((_normalised(a) - _normalised(b)).abs().max())


def _run(model: torch.nn.Module, amp: torch.dtype | None, fn):
    with torch.no_grad(), precision.autocast("cpu", amp):
        return fn(model)


# -- the core helpers --------------------------------------------------------------------------------------------


def test_dtype_names_parse_and_bad_ones_name_the_flag() -> None:
    assert precision.parse_dtype("bf16") is torch.bfloat16 and precision.parse_dtype("BFloat16") is torch.bfloat16
    assert precision.parse_dtype("fp16") is torch.float16 and precision.parse_dtype("float32") is torch.float32
    assert precision.parse_dtype(None) is None and precision.parse_dtype(torch.float64) is torch.float64
    with pytest.raises(InvalidArgumentError, match="unknown dtype 'int8'") as bad:
        precision.parse_dtype("int8")
    assert "--dtype" in (bad.value.hint or "")
    with pytest.raises(InvalidArgumentError, match="not a floating-point"):
        precision.parse_dtype(torch.int64)


def test_autocast_runs_in_the_half_dtype_asked_for_or_the_devices() -> None:
    assert precision.autocast_dtype("cpu", None, enabled=False) is None
    assert precision.autocast_dtype("cpu", torch.bfloat16, enabled=False) is None  # half weights, no autocast
    assert precision.autocast_dtype("cpu", None, enabled=True) is torch.bfloat16
    assert precision.autocast_dtype("cpu", torch.float32, enabled=True) is torch.bfloat16
    assert precision.autocast_dtype("cpu", torch.float16, enabled=True) is torch.float16
    with precision.autocast("cpu", torch.bfloat16):
        assert precision.current_autocast("cpu") is torch.bfloat16
        assert torch.nn.Linear(2, 2)(torch.ones(1, 2)).dtype is torch.bfloat16
    with precision.autocast("cpu", torch.float32):  # not a half type: no autocast at all
        assert precision.current_autocast("cpu") is None


def test_training_precision_keeps_float32_master_weights() -> None:
    assert precision.training_precision(torch.float32, None) is None
    assert precision.training_precision(torch.bfloat16, None) is torch.bfloat16  # a model loaded in half
    assert precision.training_precision(torch.bfloat16, "float32") is None  # asked for: plain float32
    assert precision.training_precision(torch.float32, "fp16") is torch.float16
    with pytest.raises(InvalidArgumentError, match="float64 is not supported"):
        precision.training_precision(torch.float32, torch.float64)


@pytest.mark.parametrize("dtype", HALVES)
def test_mean_pooling_sums_in_float32_and_keeps_the_dtype(dtype: torch.dtype) -> None:
    """4,096 tokens of half values: the pooled mean is the float64 mean rounded once."""
    g = torch.Generator().manual_seed(0)
    hidden = (torch.randn(2, 4096, 8, generator=g) + 3).to(dtype)
    padding = torch.zeros(2, 4096, dtype=torch.bool)
    padding[1, 1000:] = True
    got = pool(hidden, padding, "mean")
    assert got.dtype == dtype
    want = torch.stack([hidden[0].double().mean(0), hidden[1, :1000].double().mean(0)]).to(dtype)
    torch.testing.assert_close(got, want, atol=0, rtol=0)


# -- scGPT on random weights: every input and cell-embedding style ----------------------------------------------

NTOKEN, D, N_BATCH = 60, 64, 3
STYLES = list(itertools.product(["continuous", "category", "scaling"], ["cls", "avg-pool", "w-pool"]))


def _scgpt(**options):
    from biozoo_scgpt.reference_config import build

    torch.manual_seed(0)
    common = dict(ntoken=NTOKEN, d_model=D, nhead=4, d_hid=128, nlayers=4, n_cls=5, pad_token_id=0, dropout=0.1)
    return build("model", **common, **options).eval()


def _scgpt_inputs(style: str, batch: int = 8, length: int = 200):
    g = torch.Generator().manual_seed(1)
    src = torch.randint(2, NTOKEN, (batch, length), generator=g)
    src[:, 0] = 1
    lengths = torch.randint(length // 4, length + 1, (batch,), generator=g)
    lengths[0] = length
    mask = torch.arange(length)[None] >= lengths[:, None]
    if style == "category":
        values = torch.randint(1, 51, (batch, length), generator=g).float().masked_fill(mask, 0)
    else:
        values = (torch.rand(batch, length, generator=g) * 6).masked_fill(mask, -2)
    return src.masked_fill(mask, 0), values, mask


def _as(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    return model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)


@needs_scgpt
@pytest.mark.parametrize(("weights", "amp"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize(("style", "cell"), STYLES, ids=[f"{s}-{c}" for s, c in STYLES])
def test_scgpt_encode_is_within_tolerance_of_float32(style: str, cell: str, weights, amp) -> None:
    pad_value = 0 if style == "category" else -2
    model = _scgpt(input_emb_style=style, cell_emb_style=cell, n_input_bins=51, pad_value=pad_value)
    src, values, mask = _scgpt_inputs(style)

    def embed(m: torch.nn.Module) -> torch.Tensor:
        hidden = m.encode(src, values, mask)
        return m.cell_embedding(hidden, values)

    want = _run(model, None, embed)
    got = _run(_as(model, weights), amp, embed)
    assert got.dtype == (weights if amp is None else got.dtype) and torch.isfinite(got).all()
    assert _max_diff(got, want) <= _tolerance(weights, amp, EMB_TOL)


SCGPT_OPTIONS = [
    dict(do_mvc=True, explicit_zero_prob=True, cell_emb_style="avg-pool"),
    dict(use_batch_labels=True, num_batch_labels=N_BATCH, do_mvc=True, mvc_decoder_style="concat query"),
    dict(domain_spec_batchnorm=True, num_batch_labels=N_BATCH),
    dict(domain_spec_batchnorm="batchnorm", num_batch_labels=N_BATCH, do_dab=True),
]


@needs_scgpt
@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("options", SCGPT_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_scgpt_forward_with_every_output_runs_in_half_weights(options: dict, dtype: torch.dtype) -> None:
    """CLS, MVC, ECS and CCE outputs: finite, cell embeddings within tolerance, losses computed in float32."""
    model = _scgpt(pad_value=-2, **options)
    src, values, mask = _scgpt_inputs("continuous")
    labels = torch.arange(len(src)) % N_BATCH
    needs_labels = options.get("use_batch_labels") or options.get("domain_spec_batchnorm")
    kwargs = dict(batch_labels=labels if needs_labels else None, CLS=True, CCE=True, ECS=True)
    kwargs["MVC"] = bool(options.get("do_mvc"))
    want = _run(model, None, lambda m: m(src, values, mask, **kwargs))
    got = _run(_as(model, dtype), None, lambda m: m(src, values, mask, **kwargs))
    assert set(got) == set(want)
    assert all(torch.isfinite(v).all() for v in got.values())
    assert _max_diff(got["cell_emb"], want["cell_emb"]) <= EMB_TOL[dtype]
    for loss in ("loss_ecs", "loss_cce"):
        assert got[loss].dtype == torch.float32, loss
        assert abs(float(got[loss]) - float(want[loss])) <= 5e-2 * max(1.0, abs(float(want[loss]))), loss


@needs_scgpt
@pytest.mark.parametrize("dtype", HALVES)
def test_scgpt_perturbation_model_runs_in_half_weights(dtype: torch.dtype) -> None:
    from biozoo_scgpt.reference_config import build

    torch.manual_seed(0)
    model = build(
        "generator", ntoken=NTOKEN, d_model=D, nhead=4, d_hid=128, nlayers=2, nlayers_cls=3, n_cls=1, pad_token_id=0
    )
    model.eval()
    src, values, mask = _scgpt_inputs("continuous", length=40)
    flags = (torch.arange(40)[None].expand(len(src), -1) % 7 == 0).long()
    want = _run(model, None, lambda m: m(src, values.clamp(min=0), flags, mask, CLS=True))
    got = _run(_as(model, dtype), None, lambda m: m(src, values.clamp(min=0), flags, mask, CLS=True))
    assert torch.isfinite(got["mlm_output"]).all() and torch.isfinite(got["cls_output"]).all()
    scale = float(want["mlm_output"][~mask].abs().max())
    assert float((got["mlm_output"].double() - want["mlm_output"].double())[~mask].abs().max()) <= 5e-2 * scale


# -- the registry's small models on real cells ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cells():
    import anndata as ad

    return ad.read_h5ad(CELLS)[:64].copy()


@needs_scgpt
@pytest.mark.parametrize(("weights", "amp"), MODES, ids=MODE_IDS)
def test_scgpt_cls_embeddings_and_probabilities_match_float32(cells, weights, amp) -> None:
    import biozoo
    from biozoo_scgpt import tasks

    def both(model: torch.nn.Module):
        with precision.autocast("cpu", amp):
            emb, _ = tasks.cell_embeddings(model, cells, progress=False)
            probs, _ = tasks.class_probabilities(model, cells, progress=False)
        return emb, probs

    want_emb, want_probs = both(biozoo.load("scgpt/cls"))
    emb, probs = both(biozoo.load("scgpt/cls", dtype=weights))
    assert _max_diff(emb, want_emb) <= _tolerance(weights, amp, EMB_TOL)
    assert np.abs(probs - want_probs).max() <= _tolerance(weights, amp, PROB_TOL)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)  # softmax in float32


@needs_scgpt
def test_float16_overflow_is_refused_with_a_hint_to_use_bfloat16(cells) -> None:
    """float16 tops out at 65,504: a model whose activations pass it gives inf, which is refused by name."""
    import biozoo
    from biozoo.errors import ModelOutputError
    from biozoo_scgpt import tasks

    model = biozoo.load("scgpt/cls", dtype="float16")
    with torch.no_grad():
        model.value_encoder.linear2.weight.mul_(1e4)  # fine in float32 (LayerNorm follows), inf in float16
    with pytest.raises(ModelOutputError, match="in float16") as refused:
        tasks.cell_embeddings(model, cells, progress=False)
    assert "--dtype bfloat16" in (refused.value.hint or "")
    fine = biozoo.load("scgpt/cls", dtype="bfloat16")
    with torch.no_grad():
        fine.value_encoder.linear2.weight.mul_(1e4)
    emb, _ = tasks.cell_embeddings(fine, cells, progress=False)
    assert np.isfinite(emb).all()


@needs_ar
@pytest.mark.parametrize(("weights", "amp"), MODES, ids=MODE_IDS)
def test_autoregressive_pbmc_small_embeddings_match_float32(cells, weights, amp) -> None:
    import biozoo
    from biozoo_autoregressive import tasks

    def embed(model: torch.nn.Module) -> np.ndarray:
        with precision.autocast("cpu", amp):
            return tasks.cell_embeddings(model, cells)[0]

    want = embed(biozoo.load("autoregressive/pbmc-small"))
    got = embed(biozoo.load("autoregressive/pbmc-small", dtype=weights))
    assert _max_diff(got, want) <= _tolerance(weights, amp, EMB_TOL)


# -- the autoregressive model on random weights -----------------------------------------------------------------


def _autoregressive(objective: str = "next_token", positional: str = "rotary"):
    from biozoo_autoregressive.model import AutoregressiveTransformer

    torch.manual_seed(0)
    model = AutoregressiveTransformer(
        vocab_size=60, n_bins=11, hidden_dim=32, num_layers=2, num_heads=4, max_seq_len=80, dropout=0.1,
        objective=objective, positional=positional, eos_token_id=4, special_token_ids=(0, 1, 2, 3),
    )  # fmt: skip
    return model.eval()


def _ar_inputs(batch: int = 6, length: int = 64):
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(5, 60, (batch, length), generator=g)
    ids[:, 0] = 3
    lengths = torch.randint(8, length + 1, (batch,), generator=g)
    attention = (torch.arange(length)[None] < lengths[:, None]).long()
    bins = torch.randint(1, 11, (batch, length), generator=g) * attention
    values = torch.rand(batch, length, generator=g) * 4 * attention
    return dict(input_ids=ids * attention, attention_mask=attention, bin_ids=bins, values=values)


@needs_ar
@pytest.mark.parametrize(("weights", "amp"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize(("objective", "positional"), [("next_token", "rotary"), ("next_token", "learned"),
                                                       ("scmodelforge", "learned")])  # fmt: skip
def test_autoregressive_encode_and_loss_are_within_tolerance(objective: str, positional: str, weights, amp) -> None:
    model = _autoregressive(objective, positional)
    inputs = _ar_inputs()

    def run(m: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        return m.encode(**inputs), m(**inputs, labels=inputs["input_ids"]).loss

    want_emb, want_loss = _run(model, None, run)
    emb, loss = _run(_as(model, weights), amp, run)
    assert _max_diff(emb, want_emb) <= _tolerance(weights, amp, EMB_TOL)
    assert loss.dtype == torch.float32  # cross-entropy in float32 whatever the logits
    assert abs(float(loss) - float(want_loss)) <= 10 * _tolerance(weights, amp, EMB_TOL) * float(want_loss)


@needs_ar
@pytest.mark.parametrize("dtype", HALVES)
def test_autoregressive_generates_valid_cells_in_half_weights(dtype: torch.dtype) -> None:
    model = _as(_autoregressive(), dtype)
    for use_cache in (True, False):
        cells = model.generate(5, max_length=12, seed=0, use_cache=use_cache)
        for row, n in zip(cells.gene_ids, cells.lengths, strict=True):
            genes = row[: int(n)]
            assert (genes >= 5).all() and len(set(genes.tolist())) == int(n)  # no specials, no repeats
        assert ((cells.bin_ids >= 1) | (cells.gene_ids == model.pad_token_id)).all()


@needs_ar
@pytest.mark.parametrize("dtype", HALVES)
def test_autoregressive_training_is_mixed_precision_on_float32_weights(dtype: torch.dtype) -> None:
    from biozoo.singlecell.tokenize import TokenizedCells
    from biozoo.singlecell.vocab import GeneVocabulary
    from biozoo_autoregressive.cells import CellContract
    from biozoo_autoregressive.training import train

    model = _autoregressive()
    vocab = GeneVocabulary({**{t: i for i, t in enumerate(["<pad>", "<unk>", "<mask>", "<cls>", "<eos>"])},
                            **{f"g{i}": i for i in range(5, 60)}})  # fmt: skip
    contract = CellContract(vocab, max_len=40, bin_edges=np.linspace(0, 5, 11), eos_token="<eos>", n_specials=5)
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 30, 24)
    genes = [np.concatenate([[3], rng.choice(np.arange(5, 60), n - 1, replace=False)]) for n in lengths]
    cells = TokenizedCells(
        gene_ids=np.concatenate(genes).astype(np.int64), values=rng.random(int(lengths.sum())).astype(np.float32) * 4,
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), has_cls=True,
    )  # fmt: skip
    before = copy.deepcopy(model.state_dict())
    report = train(model, cells, cells, contract, epochs=1, batch_size=8, dtype=dtype, log=False)
    assert np.isfinite(report.best_val_loss) and report.epochs_run == 1
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(InvalidArgumentError, match="float32 weights"):
        train(_as(model, dtype), cells, cells, contract, epochs=1)


# -- the CLI end to end -----------------------------------------------------------------------------------------


def _zoo_ok(*args: str):
    from tests.support.cli import zoo

    proc = zoo(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@needs_scgpt
def test_zoo_embed_and_annotate_with_dtype_and_autocast(tmp_path: Path) -> None:
    import anndata as ad

    import biozoo
    from biozoo_scgpt import tasks

    full = ad.read_h5ad(CELLS)
    fp32 = biozoo.load("scgpt/cls")
    want_emb, _ = tasks.cell_embeddings(fp32, full, progress=False)
    want_probs, _ = tasks.class_probabilities(fp32, full, progress=False)
    for flags, weights, amp in ((["--dtype", "bfloat16"], "bfloat16", "off"), (["--autocast"], "float32", "bfloat16")):
        out = tmp_path / f"embedded-{weights}.h5ad"
        _zoo_ok("embed", "scgpt/cls", str(CELLS), "-o", str(out), *flags)
        result = ad.read_h5ad(out)
        assert dict(result.uns["biozoo"]["X_scGPT"]["precision"]) == {"dtype": weights, "autocast": amp}
        assert result.obsm["X_scGPT"].dtype == np.float32
        assert _max_diff(result.obsm["X_scGPT"], want_emb) <= EMB_TOL[torch.bfloat16]
    out = tmp_path / "annotated.h5ad"
    _zoo_ok("annotate", "scgpt/cls", str(CELLS), "-o", str(out), "--dtype", "float16")
    obs = ad.read_h5ad(out).obs
    best = want_probs.max(axis=1)
    assert np.abs(obs["scgpt_cls_confidence"].to_numpy() - best).max() <= PROB_TOL[torch.float16]


@needs_scgpt
def test_zoo_finetune_in_bfloat16_keeps_float32_weights_and_verifies(tmp_path: Path) -> None:
    from safetensors import safe_open

    import biozoo

    out = tmp_path / "mine"
    args = ("finetune", "scgpt/cls", str(CELLS), "-o", str(out), "-l", "bulk_labels", "--epochs", "1")
    _zoo_ok(*args, "--dtype", "bfloat16")
    meta = biozoo.info(out)["manifest"]["metadata"]["finetune"]
    assert meta["precision"] == {"weights": "float32", "autocast": "bfloat16"}
    with safe_open(out / "model.safetensors", "pt") as f:
        names = f.keys()
        assert {f.get_slice(k).get_dtype() for k in names} == {"F32"}
    _zoo_ok("verify", str(out))  # its test vectors are float32 outputs of the float32 weights it saved


@needs_ar
def test_zoo_generate_and_embed_autoregressive_in_half(tmp_path: Path) -> None:
    import anndata as ad

    import biozoo
    from biozoo_autoregressive import tasks

    for flags, weights, amp in ((["--dtype", "bf16"], "bfloat16", "off"), (["--autocast"], "float32", "bfloat16")):
        out = tmp_path / f"generated-{weights}.h5ad"
        _zoo_ok("generate", "autoregressive/pbmc-small", "-n", "3", "--max-length", "12", "-o", str(out), *flags)
        result = ad.read_h5ad(out)
        assert result.n_obs == 3 and (result.obs["n_genes"] >= 1).all() and (result.obs["n_genes"] <= 12).all()
        assert dict(result.uns["biozoo"]["generate"]["precision"]) == {"dtype": weights, "autocast": amp}
    out = tmp_path / "embedded.h5ad"
    _zoo_ok("embed", "autoregressive/pbmc-small", str(CELLS), "-o", str(out), "--dtype", "bfloat16")
    want, _ = tasks.cell_embeddings(biozoo.load("autoregressive/pbmc-small"), ad.read_h5ad(CELLS))
    assert _max_diff(ad.read_h5ad(out).obsm["X_autoregressive"], want) <= EMB_TOL[torch.bfloat16]


# -- on a GPU (skipped without CUDA) ----------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@needs_scgpt
@pytest.mark.parametrize(("weights", "amp"), MODES, ids=MODE_IDS)
def test_scgpt_cls_on_cuda_matches_float32_on_cpu(cells, weights, amp) -> None:
    import biozoo
    from biozoo_scgpt import tasks

    want, _ = tasks.cell_embeddings(biozoo.load("scgpt/cls"), cells, progress=False)
    model = biozoo.load("scgpt/cls", dtype=weights, device="cuda")
    with precision.autocast("cuda", amp):
        got, _ = tasks.cell_embeddings(model, cells, progress=False)
    assert _max_diff(got, want) <= _tolerance(weights, amp, EMB_TOL)


@needs_cuda
@needs_scgpt
def test_zoo_finetune_and_generate_on_cuda_in_bfloat16(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    ft = ("finetune", "scgpt/cls", str(CELLS), "-o", str(out), "-l", "bulk_labels", "--epochs", "1")
    _zoo_ok(*ft, "--dtype", "bfloat16", "--device", "cuda")
    _zoo_ok("verify", str(out))
    _zoo_ok("annotate", str(out), str(CELLS), "-o", str(tmp_path / "a.h5ad"), "--dtype", "bfloat16", "--device", "cuda")
    if AUTOREGRESSIVE:
        gen = ("generate", "autoregressive/pbmc-small", "-n", "8", "-o", str(tmp_path / "g.h5ad"))
        _zoo_ok(*gen, "--dtype", "bfloat16", "--device", "cuda")
