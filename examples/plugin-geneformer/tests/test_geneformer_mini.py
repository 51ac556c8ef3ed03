"""The example plugin's own tests, as a third-party author would write them.

Parity is against a reference, never against our own earlier output: ``transformers``' ``BertForMaskedLM`` (the
model Geneformer is) on the same weights, renamed by :mod:`biozoo_geneformer_mini.weights`. The rest runs the
commands a user runs (``zoo plugins --check``, ``zoo verify``, ``zoo embed``, ``zoo load hf://...``) in fresh
processes, and the core's checks through ``biozoo.testing``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from biozoo.singlecell.anndata_io import write_h5ad_atomic
from biozoo.testing import assert_kernels_conform, assert_plugin_ok
from biozoo_geneformer_mini.make_model import FOLDER, MAX_LEN, MODEL_ID, VOCAB_SIZE, reference_model, write_model

transformers = pytest.importorskip("transformers")

PLUGIN = "geneformer_mini"
DATA = Path(__file__).resolve().parents[2] / "pbmc68k_test.h5ad"


def zoo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``zoo ARGS`` in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "biozoo.cli.app", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def masked_reference(hf: torch.nn.Module, ids: torch.Tensor, keep: torch.Tensor, types: torch.Tensor | None = None):
    with torch.no_grad():
        return hf(input_ids=ids, attention_mask=keep.long(), token_type_ids=types, output_hidden_states=True)


def padded_batch(lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    keep = torch.arange(width)[None] < torch.tensor(lengths)[:, None]
    ids = torch.randint(2, VOCAB_SIZE, (len(lengths), width), generator=g).masked_fill(~keep, 0)
    return ids, keep


def test_matches_bert_for_masked_lm_with_padding_and_token_types() -> None:
    """Logits, every hidden state and the cell embedding equal transformers' on the same weights (1e-5)."""
    import biozoo

    hf, ours = reference_model(seed=0), biozoo.load(MODEL_ID)
    ids, keep = padded_batch([40, 17, 5, 1], seed=1)
    types = (torch.arange(ids.shape[1])[None] >= 9).long().expand(ids.shape[0], -1).contiguous()
    want = masked_reference(hf, ids, keep, types)
    with torch.no_grad():
        got = ours(ids, padding_mask=~keep, token_type_ids=types)
        states = ours.hidden_states(ids, padding_mask=~keep, token_type_ids=types)
    valid = keep[..., None]
    assert float(((got["logits"] - want.logits) * valid).abs().max()) < 1e-5
    assert len(states) == len(want.hidden_states) == 3
    for mine, theirs in zip(states, want.hidden_states, strict=True):
        assert float(((mine - theirs) * valid).abs().max()) < 1e-5
    mean = (want.hidden_states[-1] * valid).sum(1) / valid.sum(1)
    assert float((got["cell_embedding"] - mean).abs().max()) < 1e-5
    assert float(got["logits"].masked_select(~valid).abs().max()) == 0.0  # padding: defined as zero


def test_embedding_layer_picks_the_hidden_state_geneformer_reads() -> None:
    """``embedding_layer: -2`` (Geneformer's default) averages the second-to-last layer of the reference."""
    import biozoo

    hf, ours = reference_model(seed=0), biozoo.load(MODEL_ID)
    ids, keep = padded_batch([12, 30, 3], seed=2)
    want = masked_reference(hf, ids, keep).hidden_states[-2]
    ours.embedding_layer = -2
    with torch.no_grad():
        got = ours.embed_cells(ids, padding_mask=~keep)
    valid = keep[..., None]
    assert float((got - (want * valid).sum(1) / valid.sum(1)).abs().max()) < 1e-5


def test_the_tied_decoder_is_stored_once_and_loaded_tied() -> None:
    from safetensors import safe_open

    import biozoo

    model = biozoo.load(MODEL_ID)
    assert model.head.decoder.weight is model.embedding.word_embeddings.weight
    with safe_open(str(FOLDER / "model.safetensors"), "pt") as f:
        assert "head.decoder.weight" not in set(f.keys())


def test_the_core_checks_pass() -> None:
    """`zoo plugins --check geneformer_mini`, in-process: imports, kinds, manifest on meta, test vectors."""
    report = assert_plugin_ok(PLUGIN)
    assert any(c.check == "test vectors" and c.status == "ok" for c in report.checks)


def test_zoo_plugins_check_and_verify_exit_0() -> None:
    for args in (["plugins", "--check", PLUGIN], ["verify", MODEL_ID], ["verify", MODEL_ID, "--processor", "eager"]):
        done = zoo(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    assert "reproduces its test vectors" in done.stdout


def test_the_attention_kernel_conforms_and_reproduces_the_vectors() -> None:
    import biozoo

    assert_kernels_conform(PLUGIN)
    checks = biozoo.verify(MODEL_ID, processor="geneformer-chunked")
    assert {c.name for c in checks} == {"hidden", "logits", "cell_embedding"}


def test_zoo_embed_writes_the_reference_cell_embeddings(tmp_path: Path) -> None:
    """`zoo embed` writes obsm['X_geneformer_mini'] with provenance; the values are transformers' (same tokens)."""
    import anndata

    import biozoo
    from biozoo_geneformer_mini.cells import GeneformerCells

    out = tmp_path / "out.h5ad"
    done = zoo("embed", MODEL_ID, str(DATA), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "obsm['X_geneformer_mini']" in done.stdout
    result = anndata.read_h5ad(out)
    emb = result.obsm["X_geneformer_mini"]
    assert emb.shape == (140, 32) and np.isfinite(emb).all()
    provenance = result.uns["biozoo"]["X_geneformer_mini"]
    assert provenance["model"] == MODEL_ID and provenance["plugin"].startswith("biozoo-geneformer-mini ")

    cells = GeneformerCells(biozoo.load(MODEL_ID))
    prepared = cells.prepare(anndata.read_h5ad(DATA), var_column=None, layer=None, seed=0)
    assert int(prepared.cells.lengths.max()) == MAX_LEN  # long cells were cut to their top genes, short ones padded
    lengths = prepared.cells.lengths
    idx = np.array([*np.argsort(lengths, kind="stable")[:3], int(np.argmax(lengths))])  # padded ones and a full one
    assert lengths[idx[0]] < MAX_LEN
    (order, batch), *rest = cells.batches(prepared, batch_size=140, max_tokens=None, seed=0, progress=False)
    assert not rest  # one batch: all cells, longest first
    ids, pad = torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["padding_mask"])
    rows = [int(np.flatnonzero(order == i)[0]) for i in idx]
    want = masked_reference(reference_model(seed=0), ids[rows], ~pad[rows]).hidden_states[-1]
    valid = (~pad[rows])[..., None]
    np.testing.assert_allclose(emb[idx], ((want * valid).sum(1) / valid.sum(1)).numpy(), atol=1e-5, rtol=1e-5)


def test_log_normalised_input_is_refused_with_a_hint(tmp_path: Path) -> None:
    """Ranks must come from unlogged values: `zoo embed` on log1p data stops with error:/hint:, no traceback."""
    import anndata

    adata = anndata.read_h5ad(DATA)
    adata.X = adata.X.log1p()
    logged = tmp_path / "logged.h5ad"
    write_h5ad_atomic(adata, logged)  # the core's writer: plain write_h5ad fails on pandas 3's string columns
    done = zoo("embed", MODEL_ID, str(logged), "-o", str(tmp_path / "out.h5ad"))
    assert done.returncode == 1
    assert "error:" in done.stderr and "hint:" in done.stderr and "Traceback" not in done.stderr
    assert "log" in done.stderr and not (tmp_path / "out.h5ad").exists()


def test_publish_and_load_from_a_hub(biozoo_hub: str, tmp_path: Path) -> None:
    """Publish the model folder to a local Hub; `zoo load hf://...@COMMIT` loads it in a fresh process."""
    import biozoo

    commit = biozoo.publish(FOLDER, "lab/geneformer-mini-tiny")
    done = zoo("load", f"hf://lab/geneformer-mini-tiny@{commit}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert commit in done.stdout
    remote, local = biozoo.load(f"hf://lab/geneformer-mini-tiny@{commit}"), biozoo.load(MODEL_ID)
    assert remote.head.decoder.weight is remote.embedding.word_embeddings.weight  # the tie survives the trip
    for key, value in local.state_dict().items():
        assert torch.equal(remote.state_dict()[key], value), key
    assert biozoo.verify(f"hf://lab/geneformer-mini-tiny@{commit}")


def test_make_model_writes_a_folder_that_verifies(tmp_path: Path) -> None:
    import biozoo

    folder = write_model(tmp_path / "tiny", seed=1)
    assert biozoo.verify(folder)
    assert (folder / "gene_medians.json").is_file() and (folder / "vocab.json").is_file()
