"""``zoo finetune``: train an scGPT cell-type classifier and write a publishable model folder.

As in scGPT's annotation tutorial: a classification head on the CLS cell
embedding, cross-entropy, Adam, gradient clipping at 1.0; here with a
stratified train/validation split, early stopping on the validation loss (the
best epoch's weights are kept) and a progress bar. The output folder holds the
manifest (with the class names in the head's config), safetensors weights, the
vocabulary and test vectors, and appears whole or not at all.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from biozoo.errors import BiozooError
from biozoo.manifest.io import parse_manifest, write_manifest
from biozoo.nn.precision import OptimizerStep, dtype_name, param_dtype, training_precision, upcast
from biozoo.singlecell.anndata_io import read_h5ad, refuse_empty_anndata
from biozoo.singlecell.checks import check_training, refuse_non_finite
from biozoo.singlecell.errors import DataError
from biozoo.singlecell.tokenize import pad_cells
from biozoo.utils.atomic import atomic_directory
from biozoo.utils.hashing import sha256_file
from biozoo_scgpt.cells import InputContract, prepare
from biozoo_scgpt.modules import ClsDecoder


def _labels(adata: Any, column: str) -> tuple[np.ndarray, list[str]]:
    if column not in adata.obs.columns:
        raise DataError(f"obs has no column {column!r}", hint=f"available: {', '.join(map(str, adata.obs.columns))}")
    series = adata.obs[column]
    if series.isna().any():
        raise DataError(f"{int(series.isna().sum())} cells have no {column!r} label", hint="drop or label them first")
    classes = sorted(series.astype(str).unique())
    if len(classes) < 2:
        raise DataError(f"{column!r} has a single class ({classes[0]!r}); a classifier needs at least two")
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[v] for v in series.astype(str)], dtype=np.int64), classes


def split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation indices (plain random when a class has a single cell)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    stratify = y if np.bincount(y).min() >= 2 else None
    train, val = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(val)


def finetune(
    model: torch.nn.Module,
    input_path: Path,
    output_dir: Path,
    *,
    label_column: str,
    epochs: int = 30,
    lr: float = 1e-4,
    batch_size: int = 32,
    val_fraction: float = 0.15,
    patience: int = 5,
    seed: int = 0,
    var_column: str | None = None,
    layer: str | None = None,
    model_id: str | None = None,
    head_layers: int = 3,
    progress: bool = True,
    dtype: str | torch.dtype | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` (weights copied into memory) on labelled cells; returns the training report.

    Weights and optimizer state are float32 whatever ``model`` was loaded in. ``dtype`` bfloat16 or
    float16 trains with mixed precision (forward passes under ``torch.autocast``, a gradient scaler
    for float16); None trains in float32, or mixed in the model's own dtype when it was loaded in half.
    """
    from sklearn.metrics import accuracy_score, f1_score
    from tqdm.auto import tqdm

    check_training(epochs=epochs, lr=lr, batch_size=batch_size, patience=patience, val_fraction=val_fraction)
    amp = training_precision(param_dtype(model), dtype)
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise BiozooError(f"{output_dir} already exists", "choose a new output folder (nothing is overwritten)")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    contract = InputContract.of(model)
    adata = read_h5ad(input_path)
    refuse_empty_anndata(adata, "train on")
    y, classes = _labels(adata, label_column)
    prepared = prepare(adata, contract, var_column=var_column, layer=layer, seed=seed)
    train_idx, val_idx = split(y, val_fraction, seed)

    model = copy.deepcopy(model).float().train()  # float32 master weights
    for param in model.parameters():  # the loaded weights are a read-only file mapping
        param.data = param.data.clone()
    device = next(model.parameters()).device
    d_model = model.d_model
    model.cls_decoder = ClsDecoder(d_model, len(classes), nlayers=head_layers, labels=classes).to(device)
    step = OptimizerStep(model, torch.optim.Adam(model.parameters(), lr=lr), amp)
    pad_id = contract.vocabulary[contract.pad_token]

    def batch(indices: np.ndarray) -> dict[str, torch.Tensor]:
        b = pad_cells(
            prepared.cells, indices, pad_id=pad_id, pad_value=contract.pad_value, max_len=contract.max_seq_len, seed=rng
        )
        return {
            "src": torch.from_numpy(b.genes).to(device),
            "values": torch.from_numpy(b.values).to(device),
            "src_key_padding_mask": torch.from_numpy(b.padding_mask).to(device),
        }

    def logits_of(indices: np.ndarray) -> torch.Tensor:
        """Class logits in float32 (the forward pass under autocast when training mixed)."""
        with step.forward():
            return upcast(model(**batch(indices), CLS=True)["cls_output"])

    def labels(indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y[indices]).to(device)

    def evaluate(indices: np.ndarray) -> tuple[float, np.ndarray]:
        was_training = model.training
        model.eval()
        losses, preds = [], []
        with torch.no_grad():
            for start in range(0, len(indices), 128):
                part = indices[start : start + 128]
                logits = logits_of(part)
                losses.append(F.cross_entropy(logits, labels(part), reduction="sum").item())
                preds.append(logits.argmax(-1).cpu().numpy())
        model.train(was_training)
        return sum(losses) / len(indices), np.concatenate(preds)

    best = (float("inf"), -1, copy.deepcopy(model.state_dict()))
    history = []
    start_time = time.perf_counter()
    bar = tqdm(range(epochs), desc="fine-tuning", unit="epoch", disable=not progress)
    for epoch in bar:
        order = rng.permutation(train_idx)
        total = 0.0
        for start in range(0, len(order), batch_size):
            part = order[start : start + batch_size]
            loss = F.cross_entropy(logits_of(part), labels(part))
            refuse_non_finite(loss.detach(), model, "training loss")
            step(loss)
            total += loss.item() * len(part)
        val_loss, val_pred = evaluate(val_idx)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": total / len(order),
                "val_loss": val_loss,
                "val_accuracy": float(accuracy_score(y[val_idx], val_pred)),
            }
        )
        bar.set_postfix(train=f"{total / len(order):.3f}", val=f"{val_loss:.3f}")
        if val_loss < best[0]:
            best = (val_loss, epoch + 1, copy.deepcopy(model.state_dict()))
        elif epoch + 1 - best[1] >= patience:
            break
    model.load_state_dict(best[2])
    model.eval()
    _, val_pred = evaluate(val_idx)
    report = {
        "classes": classes,
        "train_cells": len(train_idx),
        "val_cells": len(val_idx),
        "epochs_run": len(history),
        "best_epoch": best[1],
        "best_val_loss": best[0],
        "val_accuracy": float(accuracy_score(y[val_idx], val_pred)),
        "val_macro_f1": float(f1_score(y[val_idx], val_pred, average="macro")),
        "seconds": time.perf_counter() - start_time,
        "precision": {"weights": "float32", "autocast": dtype_name(amp)},
        "history": history,
    }
    _write_folder(model, contract, output_dir, model_id, batch(val_idx[:8]), report, label_column)
    return report


def _write_folder(
    model: torch.nn.Module,
    contract: InputContract,
    output_dir: Path,
    model_id: str | None,
    sample: dict[str, torch.Tensor],
    report: dict[str, Any],
    label_column: str,
) -> None:
    from safetensors.torch import save_file

    model.eval()  # test vectors are inference outputs (no dropout)
    base = model.zoo.manifest
    data = base.model_dump(mode="json", exclude_defaults=True)
    data["id"] = model_id or f"{base.id}-finetuned"
    data["components"]["cls_decoder"] = {
        "name": "scgpt.cls_decoder",
        "config": {
            "d_model": model.d_model,
            "n_cls": len(report["classes"]),
            "nlayers": len(model.cls_decoder._decoder) // 3 + 1,
            "labels": report["classes"],
        },
    }
    data.pop("conversion", None)
    data["description"] = (
        f"{base.id} fine-tuned by biozoo to classify cells by {label_column!r} ({len(report['classes'])} classes)"
    )
    with atomic_directory(output_dir) as staging:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, staging / "model.safetensors", metadata={"format": "pt"})
        contract.vocabulary.to_json(staging / "vocab.json")
        with torch.no_grad():
            out = model(**sample, CLS=True)
        vectors = {f"input.{k}": v.cpu() for k, v in sample.items()}
        vectors["input.CLS"] = torch.tensor(True)
        vectors["output.cell_emb"] = out["cell_emb"].cpu().contiguous()
        vectors["output.cls_output"] = out["cls_output"].cpu().contiguous()
        save_file(vectors, staging / "test_vectors.safetensors")
        data["weights"] = {
            "source": ".",
            "files": [{"path": "model.safetensors", "sha256": sha256_file(staging / "model.safetensors")}],
        }
        pre = data.setdefault("preprocessing", {"name": "scgpt.preprocessor", "config": {}})
        pre["files"] = {**pre.get("files", {}), "vocabulary": "vocab.json"}
        data["test_vectors"] = {
            "file": "test_vectors.safetensors",
            "sha256": sha256_file(staging / "test_vectors.safetensors"),
            "tolerance": {"atol": 1e-4, "rtol": 1e-4},
            "provenance": "outputs of this model on 8 validation cells, recorded by zoo finetune when it was written",
        }
        metadata = {k: v for k, v in report.items() if k != "history"}
        data["metadata"] = {**data.get("metadata", {}), "finetune": json.loads(json.dumps(metadata))}
        write_manifest(parse_manifest(data), staging)
