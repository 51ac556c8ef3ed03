"""Record what ``generate`` samples for fixed seeds, so a faster decoder can be held to the same cells.

Run from the repository root: ``.venv/bin/python plugins/autoregressive/tests/golden/generation/make_golden.py``.
It writes ``tiny_model.safetensors`` (the tiny random model's weights, so the golden does not depend on
torch's init order) and ``cells.safetensors`` (``<case>.gene_ids``, ``.bin_ids``, ``.lengths``, ``.ended``
and ``.steps`` for every case in ``CASES``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
TINY = dict(hidden_dim=16, num_layers=2, num_heads=2, ffn_dim=32, dropout=0.0, max_seq_len=24, eos_token_id=4)
VARIANTS = {"tiny": {}, "tiny_noeos": {"eos_token_id": None}, "tiny_rotary": {"positional": "rotary"}}

# (name, model, n_cells, generate options); "pbmc" is the registry's autoregressive/pbmc-small
CASES: list[tuple[str, str, int, dict]] = [
    ("pbmc_default", "pbmc", 6, dict(seed=0, max_length=40)),
    ("pbmc_seed7_nocache", "pbmc", 5, dict(seed=7, max_length=30, use_cache=False)),
    ("pbmc_topk", "pbmc", 6, dict(seed=1, max_length=40, temperature=0.8, top_k=20)),
    ("pbmc_topp", "pbmc", 6, dict(seed=2, max_length=40, top_p=0.9, bin_temperature=0.5)),
    ("pbmc_minlen", "pbmc", 6, dict(seed=3, max_length=25, min_length=12, temperature=1.3)),
    ("pbmc_greedy", "pbmc", 3, dict(seed=4, max_length=20, temperature=0.0)),
    ("pbmc_full", "pbmc", 8, dict(seed=11)),  # up to the model's 414 genes: cells end by <eos> at many lengths
    ("pbmc_full_topk", "pbmc", 6, dict(seed=12, top_k=50, top_p=0.95, min_length=20)),
    ("tiny_default", "tiny", 9, dict(seed=0)),
    ("tiny_nocache", "tiny", 7, dict(seed=5, use_cache=False, min_length=3)),
    ("tiny_topk_topp", "tiny", 8, dict(seed=6, top_k=5, top_p=0.8, temperature=0.7, max_length=15)),
    ("tiny_minlen_max", "tiny", 8, dict(seed=8, min_length=19, max_length=19)),
    ("tiny_noeos", "tiny_noeos", 5, dict(seed=9, max_length=12)),
    ("tiny_rotary", "tiny_rotary", 6, dict(seed=10, top_p=0.95)),
]


def models() -> dict[str, torch.nn.Module]:
    """The models the cases name (the tiny ones from the stored weights)."""
    import biozoo

    weights = load_file(HERE / "tiny_model.safetensors")
    built = {}
    for name in VARIANTS:
        model = _tiny(name)
        model.load_state_dict({k.removeprefix(name + "."): v for k, v in weights.items() if k.startswith(name + ".")})
        built[name] = model.eval()
    built["pbmc"] = biozoo.load("autoregressive/pbmc-small")
    return built


def run(model: torch.nn.Module, n: int, options: dict) -> dict[str, torch.Tensor]:
    cells = model.generate(n, **options)
    return {
        "gene_ids": cells.gene_ids,
        "bin_ids": cells.bin_ids,
        "lengths": cells.lengths,
        "ended": cells.ended,
        "steps": torch.tensor(cells.steps),
    }


def _tiny(name: str) -> torch.nn.Module:
    from biozoo_autoregressive.model import AutoregressiveTransformer

    return AutoregressiveTransformer(24, 6, **{**TINY, **VARIANTS[name]})


def make_tiny_weights() -> None:
    tensors = {}
    for i, name in enumerate(VARIANTS):
        torch.manual_seed(100 + i)
        model = _tiny(name)
        with torch.no_grad():  # move every parameter off its init value, so no row is special
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        tensors |= {f"{name}.{k}": v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, HERE / "tiny_model.safetensors")


def main() -> None:
    make_tiny_weights()
    built = models()
    out = {}
    for case, model_name, n, options in CASES:
        for key, value in run(built[model_name], n, options).items():
            out[f"{case}.{key}"] = value.contiguous()
        print(case, out[f"{case}.lengths"].tolist(), file=sys.stderr)
    save_file(out, HERE / "cells.safetensors")


if __name__ == "__main__":
    main()
