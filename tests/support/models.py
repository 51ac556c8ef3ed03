"""Helpers that write small, real model folders for tests (manifest + safetensors)."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

D, VOCAB, CLASSES = 16, 11, 3


def tiny_manifest(**overrides: Any) -> dict[str, Any]:
    """A valid manifest for a tiny core.sequence_classifier (weights list filled in by write_model)."""
    data: dict[str, Any] = {
        "format_version": 1,
        "id": "test/tiny",
        "description": "tiny test model",
        "architecture": {"name": "core.sequence_classifier"},
        "components": {
            "embedding": {"name": "core.token_embedding", "config": {"vocab_size": VOCAB, "d_model": D}},
            "encoder": {
                "name": "core.transformer_encoder",
                "config": {"d_model": D, "num_layers": 1, "num_heads": 2, "dim_feedforward": 32, "dropout": 0.0},
            },
            "head": {"name": "core.pooled_classifier", "config": {"d_model": D, "num_classes": CLASSES}},
        },
        "weights": {"source": ".", "files": [{"path": "model.safetensors", "sha256": "0" * 64}]},
        "license": "MIT",
    }
    data.update(copy.deepcopy(overrides))
    return data


def random_state(manifest: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """Real random weights for the manifest's model, built with normal init on CPU."""
    from biozoo.assembly import assemble
    from biozoo.manifest.io import parse_manifest

    torch.manual_seed(seed)
    model = assemble(parse_manifest(manifest), device="cpu")
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_model(
    folder: Path,
    manifest: dict[str, Any] | None = None,
    state: dict[str, torch.Tensor] | None = None,
    *,
    fix_hashes: bool = True,
) -> Path:
    """Write manifest.yaml + model.safetensors into ``folder``; hashes are filled in unless told not to."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = manifest or tiny_manifest()
    state = state if state is not None else random_state(manifest)
    weights = folder / "model.safetensors"
    save_file(state, weights)
    if fix_hashes:
        manifest = copy.deepcopy(manifest)
        manifest["weights"]["files"] = [{"path": "model.safetensors", "sha256": sha256(weights)}]
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return folder


def with_nan_weights(model: torch.nn.Module, submodule: str) -> torch.nn.Module:
    """A copy of ``model`` whose first parameter under ``submodule`` is NaN (what a corrupted weights file gives)."""
    broken = copy.deepcopy(model)
    with torch.no_grad():
        next(iter(broken.get_submodule(submodule).parameters())).fill_(float("nan"))
    return broken


# A small BERT-order masked LM (tests/test_bert_blocks.py, tests/test_tied_weights.py).
BERT_SIZES = {"vocab": 97, "d": 32, "heads": 4, "ff": 64, "layers": 2, "positions": 40}


def masked_lm_manifest(
    model_id: str = "test/bert-mlm", *, dropout: float = 0.0, tie: dict[str, str] | None = None
) -> dict[str, Any]:
    """``core.bert_embedding`` -> ``core.transformer_encoder`` (post-norm, GELU) -> ``core.mlm_head``."""
    z = BERT_SIZES
    data: dict[str, Any] = {
        "format_version": 1,
        "id": model_id,
        "architecture": {"name": "core.masked_lm"},
        "components": {
            "embedding": {"name": "core.bert_embedding", "config": {
                "vocab_size": z["vocab"], "d_model": z["d"], "max_positions": z["positions"], "padding_idx": 0,
                "dropout": dropout}},
            "encoder": {"name": "core.transformer_encoder", "config": {
                "d_model": z["d"], "num_layers": z["layers"], "num_heads": z["heads"], "dim_feedforward": z["ff"],
                "activation": "gelu", "layer_norm_eps": 1e-12, "dropout": dropout}},
            "head": {"name": "core.mlm_head", "config": {"d_model": z["d"], "vocab_size": z["vocab"]}},
        },
        "weights": {"source": ".", "files": [{"path": "model.safetensors", "sha256": "0" * 64}]},
        "license": "MIT",
    }  # fmt: skip
    if tie is not None:
        data["tie"] = dict(tie)
    return data
