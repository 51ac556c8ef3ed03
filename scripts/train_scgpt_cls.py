"""Train ``scgpt/cls``: an scGPT cell-type classifier on scanpy's bundled pbmc68k_reduced.

Data: 700 PBMCs (10x "Fresh 68k PBMCs, donor A", Zheng et al. 2017) as shipped
inside scanpy; raw UMI counts for its 765 genes are recovered exactly as
``round(expm1(raw.X) * n_counts / 1e4)``. Labels: ``bulk_labels`` (10 classes,
silver standard). A stratified 20% test split (seed 0) is held out and written
to ``examples/pbmc68k_test.h5ad`` (it is also the README demo's input).

Model: an scGPT ``TransformerModel`` (continuous value encoder, 51 bins, CLS
cell embedding) initialised at random over the 765-gene vocabulary, then
trained with ``zoo finetune``'s code. Baseline: logistic regression on
log1p-normalised expression, same split. Run (needs scanpy):
``python scripts/train_scgpt_cls.py`` (about 5 minutes on 2 CPU cores).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "registry" / "scgpt" / "cls"
TEST = ROOT / "examples" / "pbmc68k_test.h5ad"
SEED = 0
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pbmc_data import load_counts, train_test_split  # noqa: E402


def base_model(folder: Path, genes: list[str]) -> Path:
    """A randomly initialised scGPT model folder over ``genes`` (the starting point for fine-tuning)."""
    from safetensors.torch import save_file

    from biozoo.manifest.io import parse_manifest, write_manifest
    from biozoo.singlecell.vocab import GeneVocabulary
    from biozoo.utils.hashing import sha256_file
    from biozoo_scgpt.reference_config import build, manifest_data, model_components

    vocab = GeneVocabulary.from_tokens(genes).with_specials()
    options = dict(
        ntoken=len(vocab),
        d_model=128,
        nhead=4,
        d_hid=128,
        nlayers=4,
        pad_token_id=vocab["<pad>"],
        dropout=0.1,
        pad_value=-2,
    )
    torch.manual_seed(SEED)
    model = build(**options)
    arch, comps = model_components(**options)
    comps.pop("cls_decoder")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("cls_decoder.")}
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
    vocab.to_json(folder / "vocab.json")
    data = manifest_data("scgpt/pbmc-base", arch, comps)
    data.update(
        {
            "description": "randomly initialised scGPT over pbmc68k_reduced's genes",
            "weights": {
                "source": ".",
                "files": [{"path": "model.safetensors", "sha256": sha256_file(folder / "model.safetensors")}],
            },
            "preprocessing": {
                "name": "scgpt.preprocessor",
                "files": {"vocabulary": "vocab.json"},
                "config": {
                    "n_bins": 51,
                    "max_seq_len": 1200,
                    "pad_value": -2,
                    "cls_value": -2,
                    "normalize_total": 1e4,
                    "gene_column": "index",
                },
            },
            "license": "MIT",
        }
    )
    write_manifest(parse_manifest(data), folder)
    return folder


def main(train_model: bool = True) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    import biozoo
    from biozoo.singlecell.anndata_io import write_h5ad_atomic
    from biozoo_scgpt.finetune import finetune
    from biozoo_scgpt.tasks import class_probabilities

    adata = load_counts()
    train, test = train_test_split(adata)
    work = Path(tempfile.mkdtemp())
    report: dict = {}
    try:
        TEST.parent.mkdir(exist_ok=True)
        write_h5ad_atomic(test, TEST, compression="gzip")
        if not train_model:
            raise _Skip
        write_h5ad_atomic(train, work / "train.h5ad")
        base = biozoo.load(base_model(work / "base", list(adata.var_names)))
        if OUT.exists():
            shutil.rmtree(OUT)
        report = finetune(
            base,
            work / "train.h5ad",
            OUT,
            label_column="bulk_labels",
            epochs=60,
            lr=3e-4,
            batch_size=32,
            val_fraction=0.15,
            patience=8,
            seed=SEED,
            model_id="scgpt/cls",
        )
    except _Skip:
        pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
    model = biozoo.load(OUT)
    probs, labels = class_probabilities(model, test, progress=False)
    pred = [labels[i] for i in probs.argmax(1)]
    truth = list(test.obs["bulk_labels"])

    from biozoo.singlecell.normalize import log1p, normalize_total

    def features(a):
        return log1p(normalize_total(a.X, 1e4)).toarray()

    baseline = LogisticRegression(max_iter=5000, random_state=SEED).fit(features(train), train.obs["bulk_labels"])
    base_pred = baseline.predict(features(test))
    rows = {
        "scgpt/cls": (accuracy_score(truth, pred), f1_score(truth, pred, average="macro")),
        "logistic regression (log1p-normalised, 765 genes)": (
            accuracy_score(truth, base_pred),
            f1_score(truth, base_pred, average="macro"),
        ),
    }
    result = {
        "test_cells": len(truth),
        "train_report": {
            k: v for k, v in (report or model.zoo.manifest.metadata.get("finetune", {})).items() if k != "history"
        },
        "test": {k: {"accuracy": a, "macro_f1": f} for k, (a, f) in rows.items()},
    }
    print(json.dumps(result, indent=2))
    print("\n| model | accuracy | macro-F1 |\n|---|---|---|")
    for name, (acc, f1) in rows.items():
        print(f"| {name} | {acc:.3f} | {f1:.3f} |")
    sys.stdout.flush()


class _Skip(Exception):
    """--evaluate: use the model already in registry/scgpt/cls."""


if __name__ == "__main__":
    main(train_model="--evaluate" not in sys.argv)
