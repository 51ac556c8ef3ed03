"""Read an scModelForge ``save_pretrained`` folder as it is: ``config.json`` + ``model.safetensors``.

The folder is described as an ordinary in-memory manifest (architecture config from
``model_config``, the weights file with its sha256, the gene vocabulary and tokenizer settings),
so loading, verification and tasks work on it like on any registered model. No torch and no
model code are needed to read it (``zoo info`` stays fast). Pickled ``model.pt`` folders are
refused: biozoo never unpickles outside a converter.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from biozoo.errors import ManifestError
from biozoo.manifest.io import LocatedManifest

ARCHITECTURE = "autoregressive.transformer"
TOKENIZER = "autoregressive.scmodelforge_tokenizer"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
VOCAB = "gene_vocab.json"
SPECIALS = {"<pad>": 0, "<unk>": 1, "<mask>": 2, "<cls>": 3}

#: ModelConfig fields the AutoregressiveTransformer reads (everything else belongs to other architectures).
MODEL_KEYS = [
    "vocab_size",
    "n_bins",
    "hidden_dim",
    "num_layers",
    "num_heads",
    "ffn_dim",
    "dropout",
    "max_seq_len",
    "pooling",
    "activation",
    "use_expression_values",
    "gene_loss_weight",
    "expression_loss_weight",
]
_TOKENIZER_KEYS = ("strategy", "max_genes", "prepend_cls", "n_bins", "binning_method")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path.parent} has no {path.name} ({what})") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path} is not readable JSON: {exc}", f"is it really scModelForge's {what}?") from None


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors header (8-byte length + JSON), without reading the data."""
    try:
        with open(path, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            if size > 100_000_000:
                raise ValueError("header larger than 100 MB")
            header = json.loads(handle.read(size))
    except (OSError, ValueError, struct.error) as exc:
        raise ManifestError(
            f"{path} is not a valid safetensors file: {exc}", "re-export it with save_pretrained"
        ) from None
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def _check_vocabulary(folder: Path, vocab_size: int, shapes: dict[str, list[int]]) -> int | None:
    """The vocabulary file, config and weights must agree on the number of tokens."""
    rows = shapes.get("embedding.gene_embedding.weight", [None])[0]
    if rows is not None and rows != vocab_size:
        raise ManifestError(
            f"{folder}: config.json says vocab_size {vocab_size}, but the weights' gene embedding has {rows} rows",
            "the config and model.safetensors come from different models; re-export the folder with save_pretrained",
        )
    if not (folder / VOCAB).exists():
        return None
    genes = _read_json(folder / VOCAB, "gene vocabulary")
    if not isinstance(genes, dict) or not all(isinstance(v, int) for v in genes.values()):
        raise ManifestError(f"{folder / VOCAB} must map gene names to integer ids")
    needed = max(genes.values(), default=len(SPECIALS) - 1) + 1
    if needed != vocab_size or len(genes) + len(SPECIALS) != vocab_size:
        raise ManifestError(
            f"{folder}: {VOCAB} has {len(genes)} genes (ids up to {needed - 1}) + {len(SPECIALS)} special tokens, "
            f"but the model's vocab_size is {vocab_size}",
            "use the gene_vocab.json saved with these weights (vocab_size = genes + 4)",
        )
    return len(genes)


def read_folder(folder: Path) -> LocatedManifest:
    """Describe an scModelForge folder as a manifest (the ``scmodelforge`` folder format's target)."""
    from biozoo.manifest.schema import ComponentRef, Manifest, Preprocessing, WeightFile, WeightsSpec
    from biozoo.utils.hashing import HashMemo

    folder = Path(folder)
    config = _read_json(folder / CONFIG, "config.json")
    model_config = config.get("model_config")
    if not isinstance(model_config, dict) or model_config.get("vocab_size") is None:
        raise ManifestError(
            f"{folder / CONFIG} has no model_config.vocab_size", "save the model with scModelForge's save_pretrained"
        )
    weights = folder / WEIGHTS
    if not weights.exists():
        pickled = (folder / "model.pt").exists()
        raise ManifestError(
            f"{folder} has no {WEIGHTS}" + (" (only a pickled model.pt)" if pickled else ""),
            "biozoo loads safetensors only; re-save with save_pretrained(..., safe_serialization=True)",
        )
    vocab_size = int(model_config["vocab_size"])
    n_genes = _check_vocabulary(folder, vocab_size, safetensors_shapes(weights))
    arch_config: dict[str, Any] = {k: model_config[k] for k in MODEL_KEYS if model_config.get(k) is not None}
    arch_config["objective"] = "scmodelforge"
    tokenizer = config.get("tokenizer_config") or {}
    pre_config = {k: tokenizer[k] for k in _TOKENIZER_KEYS if k in tokenizer}
    pre_config.setdefault("n_bins", arch_config.get("n_bins", 51))
    name = re.sub(r"[^a-z0-9_.\-]+", "-", folder.resolve().name.lower()).strip("-.") or "model"
    manifest = Manifest(
        id=f"scmodelforge/{name}",
        description=f"scModelForge AutoregressiveTransformer read from {folder} (scModelForge "
        f"{config.get('scmodelforge_version', '?')} save_pretrained folder)",
        architecture=ComponentRef(name=ARCHITECTURE, config=arch_config),
        weights=WeightsSpec(
            files=[WeightFile(path=WEIGHTS, sha256=HashMemo().digest(weights), size=weights.stat().st_size)]
        ),
        preprocessing=Preprocessing(
            name=TOKENIZER, files={"vocabulary": VOCAB} if n_genes is not None else {}, config=pre_config
        ),
        tags=["single-cell", "scmodelforge"],
        metadata={"scmodelforge_version": config.get("scmodelforge_version"), "format": "scmodelforge"},
    )
    return LocatedManifest(manifest, folder.absolute(), folder / CONFIG)
