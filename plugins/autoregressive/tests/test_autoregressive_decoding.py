"""The GPU-shaped decoder (static KV cache, on-device sampling, few host syncs) against recorded cells.

``golden/generation/cells.safetensors`` holds what the decoder sampled before it was rebuilt (see
``golden/generation/PROVENANCE.md``): for fixed seeds, on CPU, every setting must give exactly those
cells again, gene for gene and bin for bin.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from biozoo.errors import InvalidArgumentError, ModelOutputError
from biozoo_autoregressive import tasks
from tests.support.models import with_nan_weights

GOLDEN = Path(__file__).resolve().parent / "golden" / "generation"
sys.path.insert(0, str(GOLDEN))
from make_golden import CASES, models, run  # noqa: E402

sys.path.remove(str(GOLDEN))


@pytest.fixture(scope="module")
def built() -> dict[str, torch.nn.Module]:
    return models()


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(GOLDEN / "cells.safetensors")


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: the shared CPU runner makes multi-threaded small ops crawl (the numbers are the same)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _assert_same(got: dict[str, torch.Tensor], golden: dict[str, torch.Tensor], case: str) -> None:
    for key, value in got.items():
        want = golden[f"{case}.{key}"]
        assert torch.equal(value.cpu(), want), f"{case}: {key} differs from the recorded cells"


@pytest.mark.parametrize(("case", "model_name", "n", "options"), CASES, ids=[c[0] for c in CASES])
def test_same_cells_as_recorded(built, golden, case: str, model_name: str, n: int, options: dict) -> None:
    _assert_same(run(built[model_name], n, options), golden, case)


# -- the GPU-shaped settings, checked on CPU ------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["tiny_noeos", "pbmc_greedy", "pbmc_seed7_nocache"])
def test_checking_every_k_steps_keeps_the_cells_when_no_cell_ends_early(built, golden, case: str) -> None:
    """No early <eos> (or greedy draws): the batch never changes between checks, so the cells are the recorded ones."""
    _, model_name, n, options = next(c for c in CASES if c[0] == case)
    _assert_same(run(built[model_name], n, {**options, "sync_every": 7}), golden, case)


def test_checking_every_k_steps_draws_the_same_until_the_first_cell_ends(built, golden) -> None:
    """Ended cells ride along until the next check, so the draws agree up to the step where the first one ended."""
    case, model_name, n, options = next(c for c in CASES if c[0] == "tiny_default")
    got = built[model_name].generate(n, **options, sync_every=5)
    first_end = int((golden[f"{case}.lengths"] + golden[f"{case}.ended"]).min())  # the step that drew the first <eos>
    assert torch.equal(got.gene_ids[:, :first_end], golden[f"{case}.gene_ids"][:, :first_end])
    assert torch.equal(got.bin_ids[:, :first_end], golden[f"{case}.bin_ids"][:, :first_end])
    ids, bins, pad = got.gene_ids, got.bin_ids, built[model_name].pad_token_id
    for row, length in enumerate(got.lengths.tolist()):
        genes = ids[row, :length]
        assert (genes >= 5).all() and genes.unique().numel() == length  # no specials, no <eos>, no repeats
        assert (bins[row, :length] >= 1).all() and (ids[row, length:] == pad).all() and (bins[row, length:] == 0).all()
    assert got.steps == int((got.lengths + got.ended).max())


@pytest.mark.parametrize("sync_every", [1, 6])
def test_nan_logits_are_refused_at_the_next_check(built, sync_every: int) -> None:
    broken = with_nan_weights(built["tiny"], "encoder")
    with pytest.raises(ModelOutputError, match="produced NaN or infinite gene logits"):
        broken.generate(3, seed=0, sync_every=sync_every)


def test_bad_sync_every_is_refused(built) -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgumentError, match="sync_every must be an integer >= 1"):
            built["tiny"].generate(2, sync_every=bad)


def test_zoo_generate_batches_64_cells_on_cpu_by_default(built, tmp_path: Path, monkeypatch) -> None:
    model, sizes = built["pbmc"], []
    original = type(model).generate

    def spy(self, n_cells: int, **options):
        sizes.append(n_cells)
        return original(self, n_cells, **options)

    monkeypatch.setattr(type(model), "generate", spy)
    tasks.generate(model, tmp_path / "cells.h5ad", n_cells=70, max_length=2, progress=False)
    assert sizes == [tasks.GENERATE_BATCH_CPU, 70 - tasks.GENERATE_BATCH_CPU]


# -- CUDA (skipped without a GPU) -----------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_cuda_decoding_waits_for_the_gpu_only_at_checks(built) -> None:
    """``torch.cuda.set_sync_debug_mode`` warns at every host sync: a 32-step run with checks every 16 steps
    may sync at the 2 checks (2 flags + alive each) and at the end, not per step."""
    import warnings

    model = built["pbmc"].cuda()
    try:
        model.generate(64, seed=0, max_length=8)  # warm-up: one-off syncs (allocations, generator) leave the count
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cells = model.generate(64, seed=0, max_length=32, sync_every=16)
        torch.cuda.set_sync_debug_mode("default")
    finally:
        model.cpu()
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    assert cells.gene_ids.shape[0] == 64
    assert len(syncs) <= 12, [str(w.message)[:200] for w in syncs]


@cuda
def test_cuda_compiled_greedy_decoding_gives_the_eager_cells(built) -> None:
    model = built["pbmc"].cuda()
    try:
        want = model.generate(16, seed=0, max_length=24, temperature=0.0)
        got = model.generate(16, seed=0, max_length=24, temperature=0.0, compile=True)
    finally:
        model.cpu()
    assert torch.equal(want.gene_ids, got.gene_ids) and torch.equal(want.bin_ids, got.bin_ids)
