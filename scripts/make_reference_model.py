"""Build ``registry/core/tiny-transformer``: weights and test vectors from torch.nn itself.

Provenance of the stored expected outputs: they are computed here by a model
composed only of PyTorch's own modules (``nn.Embedding``,
``nn.TransformerEncoder`` post-norm, masked mean pooling, ``nn.Linear``), not
by biozoo. The weights of that reference are then renamed to biozoo's keys
(``in_proj_weight`` split into ``q_proj``/``k_proj``/``v_proj``). So
``zoo verify core/tiny-transformer`` checks biozoo's assembly, weight loading
and attention processors against PyTorch's reference implementation.

Run: ``python scripts/make_reference_model.py`` (deterministic: seed 0).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file
from torch import nn

VOCAB, D, HEADS, LAYERS, FF, CLASSES = 32, 64, 4, 2, 128, 5
OUT = Path(__file__).resolve().parents[1] / "registry" / "core" / "tiny-transformer"


class TorchReference(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, D, padding_idx=0)
        layer = nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.out = nn.Linear(D, CLASSES)

    def forward(self, ids: torch.Tensor, pad: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.encoder(self.embedding(ids), src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        emb = (h * keep).sum(1) / keep.sum(1)
        return {"embedding": emb, "logits": self.out(emb)}


def to_biozoo_keys(ref: TorchReference) -> dict[str, torch.Tensor]:
    sd = ref.state_dict()
    out = {
        "embedding.embedding.weight": sd["embedding.weight"],
        "head.out.weight": sd["out.weight"],
        "head.out.bias": sd["out.bias"],
    }
    for i in range(LAYERS):
        p, q = f"encoder.layers.{i}.", f"encoder.layers.{i}."
        w, b = sd[p + "self_attn.in_proj_weight"].chunk(3), sd[p + "self_attn.in_proj_bias"].chunk(3)
        for j, name in enumerate("qkv"):
            out[q + f"self_attn.{name}_proj.weight"] = w[j]
            out[q + f"self_attn.{name}_proj.bias"] = b[j]
        for name in (
            "self_attn.out_proj.weight",
            "self_attn.out_proj.bias",
            "linear1.weight",
            "linear1.bias",
            "linear2.weight",
            "linear2.bias",
            "norm1.weight",
            "norm1.bias",
            "norm2.weight",
            "norm2.bias",
        ):
            out[q + name] = sd[p + name]
    return {k: v.contiguous().clone() for k, v in out.items()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    torch.manual_seed(0)
    ref = TorchReference().eval()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (4, 12), generator=gen)
    lengths = torch.tensor([12, 9, 5, 1])
    pad = torch.arange(12)[None, :] >= lengths[:, None]
    ids = ids.masked_fill(pad, 0)
    with torch.no_grad():
        expected = ref(ids, pad)
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(to_biozoo_keys(ref), OUT / "model.safetensors", metadata={"format": "pt"})
    save_file(
        {
            "input.input_ids": ids,
            "input.padding_mask": pad,
            "output.embedding": expected["embedding"],
            "output.logits": expected["logits"],
        },
        OUT / "test_vectors.safetensors",
    )
    manifest = {
        "format_version": 1,
        "id": "core/tiny-transformer",
        "description": "Tiny random-weight transformer classifier whose test vectors come from torch.nn itself; "
        "for smoke tests and Hub round trips, not for biology.",
        "architecture": {"name": "core.sequence_classifier"},
        "components": {
            "embedding": {
                "name": "core.token_embedding",
                "config": {"vocab_size": VOCAB, "d_model": D, "padding_idx": 0},
            },
            "encoder": {
                "name": "core.transformer_encoder",
                "config": {
                    "d_model": D,
                    "num_layers": LAYERS,
                    "num_heads": HEADS,
                    "dim_feedforward": FF,
                    "dropout": 0.0,
                },
            },
            "head": {
                "name": "core.pooled_classifier",
                "config": {"d_model": D, "num_classes": CLASSES, "pooling": "mean"},
            },
        },
        "weights": {
            "source": ".",
            "files": [
                {
                    "path": "model.safetensors",
                    "sha256": sha256(OUT / "model.safetensors"),
                    "size": (OUT / "model.safetensors").stat().st_size,
                }
            ],
        },
        "test_vectors": {
            "file": "test_vectors.safetensors",
            "sha256": sha256(OUT / "test_vectors.safetensors"),
            "tolerance": {"atol": 1e-5, "rtol": 1e-5},
            "provenance": "torch.nn reference (nn.Embedding, nn.TransformerEncoder, masked mean, nn.Linear), "
            f"torch {torch.__version__}, seed 0; scripts/make_reference_model.py",
        },
        "license": "Apache-2.0",
        "authors": ["biozoo developers"],
        "tags": ["demo", "reference"],
    }
    (OUT / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
