"""Train ``autoregressive/pbmc-small``: a next-gene generative model of human PBMCs, and evaluate its cells.

Data: scanpy's bundled pbmc68k_reduced (765 genes), the same split as ``scgpt/cls``
(``scripts/pbmc_data.py``); the 140 test cells (``examples/pbmc68k_test.h5ad``) are never
trained on. A cell is ``<cls>`` + its expressed genes in rank order (highest first) + ``<eos>``;
each gene carries its log-normalised expression as one of 50 fixed-width bins (0..6.5).

Evaluation (``--evaluate`` re-runs it on the shipped model): 140 sampled cells against the 140
held-out real cells and a shuffled baseline (the held-out cells with their expressed genes
replaced by random genes, values kept), by per-gene mean expression correlation, genes per cell,
and what a logistic-regression classifier trained on the real training cells calls them.
Run (needs scanpy and scikit-learn): ``python scripts/train_autoregressive_pbmc.py`` (~10 min on 2 cores).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pbmc_data import SEED, load_counts, train_test_split  # noqa: E402

OUT = ROOT / "registry" / "autoregressive" / "pbmc-small"
SPECIALS = ["<pad>", "<unk>", "<mask>", "<cls>", "<eos>"]
N_BINS, VALUE_MAX, MAX_LEN = 51, 6.5, 416
ARCH = dict(
    n_bins=N_BINS,
    hidden_dim=128,
    num_layers=4,
    num_heads=4,
    ffn_dim=256,
    dropout=0.2,
    max_seq_len=MAX_LEN,
    pooling="mean",
    positional="rotary",
    objective="next_token",
    pad_token_id=0,
    cls_token_id=3,
    eos_token_id=4,
    special_token_ids=[0, 1, 2, 3],
)


def bin_edges() -> list[float]:
    """50 fixed-width intervals up to VALUE_MAX; with zero_bin, expressed values get bins 1..50, 0 = not expressed."""
    return np.linspace(0.0, VALUE_MAX, N_BINS).round(6).tolist()


def write_model(model: torch.nn.Module, genes: list[str], report: dict) -> None:
    from safetensors.torch import save_file

    from biozoo.manifest.io import parse_manifest, write_manifest
    from biozoo.singlecell.vocab import GeneVocabulary
    from biozoo.utils.atomic import atomic_directory
    from biozoo.utils.hashing import sha256_file

    if OUT.exists():
        shutil.rmtree(OUT)  # re-training replaces the shipped model
    with atomic_directory(OUT) as folder:
        GeneVocabulary.from_tokens([*SPECIALS, *genes]).to_json(folder / "vocab.json")
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, folder / "model.safetensors")
        torch.manual_seed(SEED)
        ids = torch.tensor([[3, *range(5, 45), 4], [3, *range(100, 130), 4, *[0] * 10]])
        bins = torch.where(ids > 4, torch.randint(1, N_BINS, ids.shape), 0)
        inputs = {"input_ids": ids, "attention_mask": (ids != 0).long(), "bin_ids": bins}
        with torch.no_grad():
            out = model(**inputs)
        vectors = {f"input.{k}": v for k, v in inputs.items()}
        vectors.update({"output.logits": out.logits, "output.embeddings": out.embeddings})
        save_file({k: v.contiguous() for k, v in vectors.items()}, folder / "test_vectors.safetensors")
        data = {
            "format_version": 1,
            "id": "autoregressive/pbmc-small",
            "description": (
                "Next-gene generative transformer of human PBMCs (4 layers, d128, rotary), trained by biozoo from "
                "random initialisation on 504 cells (+56 for validation) of scanpy's pbmc68k_reduced (765 genes, "
                "rank-ordered, 50 expression bins). Samples new cells with `zoo generate`. A small demonstration model."
            ),
            "architecture": {"name": "autoregressive.transformer", "config": {"vocab_size": len(genes) + 5, **ARCH}},
            "preprocessing": {
                "name": "autoregressive.cell_tokenizer",
                "files": {"vocabulary": "vocab.json"},
                "config": {
                    "gene_order": "rank",
                    "max_len": MAX_LEN,
                    "bin_edges": bin_edges(),
                    "zero_bin": True,
                    "eos_token": "<eos>",
                    "n_specials": 5,
                    "normalize_total": 1e4,
                },
            },
            "weights": {"files": [{"path": "model.safetensors", "sha256": sha256_file(folder / "model.safetensors")}]},
            "test_vectors": {
                "file": "test_vectors.safetensors",
                "sha256": sha256_file(folder / "test_vectors.safetensors"),
                "tolerance": {"atol": 1e-4, "rtol": 1e-4},
                "provenance": "outputs of this model at training time (regression check); no reference exists",
            },
            "license": "MIT",
            "authors": ["biozoo developers"],
            "tags": ["single-cell", "generative", "pbmc", "demo"],
            "references": ["https://doi.org/10.1038/ncomms14049"],
            "metadata": {"training": report, "data": "scanpy.datasets.pbmc68k_reduced, train split (seed 0)"},
        }
        write_manifest(parse_manifest(data), folder)


def train_model() -> None:
    from biozoo.singlecell.vocab import GeneVocabulary
    from biozoo_autoregressive.cells import CellContract, prepare
    from biozoo_autoregressive.model import AutoregressiveTransformer
    from biozoo_autoregressive.training import train

    train_cells, _ = train_test_split(load_counts())
    genes = list(train_cells.var_names)
    contract = CellContract(
        GeneVocabulary.from_tokens([*SPECIALS, *genes]),
        max_len=MAX_LEN,
        bin_edges=np.array(bin_edges()),
        zero_bin=True,
        eos_token="<eos>",
        n_specials=5,
    )
    rng = np.random.default_rng(SEED)
    order = rng.permutation(train_cells.n_obs)
    n_val = train_cells.n_obs // 10
    val, fit = train_cells[order[:n_val]].copy(), train_cells[order[n_val:]].copy()
    torch.manual_seed(SEED)
    model = AutoregressiveTransformer(len(genes) + 5, **ARCH)
    report = train(
        model,
        prepare(fit, contract).cells,
        prepare(val, contract).cells,
        contract,
        epochs=40,
        lr=2e-3,
        batch_size=16,
        patience=6,
        seed=SEED,
    )
    summary = {k: v for k, v in report.__dict__.items() if k != "history"}
    summary.update(train_cells=fit.n_obs, val_cells=val.n_obs)
    write_model(model, genes, summary)
    print(json.dumps(summary, indent=2))


def evaluate(n_cells: int = 140) -> dict:
    from scipy.stats import pearsonr
    from sklearn.linear_model import LogisticRegression

    import biozoo
    from biozoo.singlecell.normalize import log1p, normalize_total
    from biozoo_autoregressive.cells import CellContract
    from biozoo_autoregressive.tasks import generated_to_anndata

    train, test = train_test_split(load_counts())
    model = biozoo.load(OUT)
    contract = CellContract.of(model)
    cells = model.generate(n_cells, max_length=MAX_LEN - 2, seed=SEED)
    generated = generated_to_anndata(model, cells, contract)[:, list(test.var_names)]

    def lognorm(a):
        return np.asarray(log1p(normalize_total(a.X, 1e4)).toarray())

    real_train, real_test = lognorm(train), lognorm(test)
    gen = np.asarray(generated.X.toarray())
    rng = np.random.default_rng(SEED)
    shuffled = np.zeros_like(real_test)  # same values per cell, landing on random genes
    for i, row in enumerate(real_test):
        nz = np.flatnonzero(row)
        shuffled[i, rng.choice(row.size, nz.size, replace=False)] = row[nz]
    clf = LogisticRegression(max_iter=5000, random_state=SEED).fit(real_train, train.obs["bulk_labels"])

    def summary(x: np.ndarray) -> dict:
        probs = clf.predict_proba(x)
        labels = clf.classes_[probs.argmax(1)]
        counts = {str(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True), strict=True)}
        return {
            "mean_expression_pearson_vs_heldout": float(pearsonr(x.mean(0), real_test.mean(0))[0]),
            "detection_rate_pearson_vs_heldout": float(pearsonr((x > 0).mean(0), (real_test > 0).mean(0))[0]),
            "genes_per_cell_mean": float((x > 0).sum(1).mean()),
            "genes_per_cell_sd": float((x > 0).sum(1).std()),
            "classifier_mean_confidence": float(probs.max(1).mean()),
            "classifier_labels": counts,
        }

    result = {
        "n_cells": n_cells,
        "sampling": "temperature 1.0, no top-k/top-p, seed 0",
        "generated": summary(gen),
        "held-out real (reference point)": summary(real_test),
        "training real": summary(real_train),
        "shuffled baseline": summary(shuffled),
        "generated_ended_by_eos": int(cells.ended.sum()),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    if "--evaluate" not in sys.argv:
        train_model()
    evaluate()
