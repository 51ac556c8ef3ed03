"""Write registry/scgpt/<name>/manifest.yaml for the published scGPT checkpoints.

Their weights are pickles on Google Drive, so each entry is marked as needing
conversion (``zoo convert scgpt DIR -o OUT``); the architecture recorded here is
what is known about each checkpoint (see the ``metadata.hyperparameters`` note).
Run: ``python scripts/make_scgpt_registry.py``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from biozoo_scgpt.reference_config import manifest_data, model_components

UPSTREAM = "https://github.com/bowang-lab/scGPT#pretrained-scgpt-model-zoo"
CHECKPOINTS = {
    # id: (description, vocabulary size or None, what is known)
    "whole-human": (
        "scGPT whole-human: pretrained on 33M normal human cells (CELLxGENE census, May 2023); "
        "the recommended starting point.",
        60697,
        "verified: args.json (embsize 512, nheads 8, d_hid 512, nlayers 12, n_bins 51, max_seq_len 1200), "
        "vocab 60,697 tokens, MVC decoder present",
    ),
    "continual-pretrained": (
        "scGPT continual-pretrained: whole-human further trained with Tabula Sapiens cell-type "
        "supervision, for zero-shot cell embedding.",
        60697,
        "same architecture and vocabulary as whole-human (loaded unchanged by embed_data)",
    ),
    "blood": (
        "scGPT blood: pretrained on 10.3M blood and bone-marrow cells.",
        36574,
        "vocabulary 36,574 tokens, 512 wide, 12 layers (reference tutorial load log)",
    ),
    "brain": ("scGPT brain: pretrained on 13.2M brain cells.", None, "unverified"),
    "heart": ("scGPT heart: pretrained on 1.8M heart cells.", None, "unverified"),
    "lung": ("scGPT lung: pretrained on 2.1M lung cells.", None, "unverified"),
    "kidney": ("scGPT kidney: pretrained on 814k kidney cells.", None, "unverified"),
    "pan-cancer": ("scGPT pan-cancer: pretrained on 5.7M cells of several cancer types.", None, "unverified"),
}


def main() -> None:
    root = Path(__file__).resolve().parents[1] / "registry" / "scgpt"
    for name, (description, vocab, known) in CHECKPOINTS.items():
        arch, comps = model_components(
            ntoken=vocab or 60697,
            d_model=512,
            nhead=8,
            d_hid=512,
            nlayers=12,
            pad_token_id=(vocab or 60697) - 3,
            dropout=0.2,
            pad_value=-2,
            do_mvc=True,
        )
        comps.pop("cls_decoder")
        data = manifest_data(f"scgpt/{name}", arch, comps)
        data.update(
            {
                "description": description,
                "conversion": {
                    "converter": "scgpt",
                    "instructions": f"download the official {name} folder (args.json, vocab.json, best_model.pt) from "
                    f"the scGPT model zoo, then run: zoo convert scgpt DIR -o OUT --id scgpt/{name}",
                    "upstream": UPSTREAM,
                },
                "license": "MIT",
                "authors": [
                    "Haotian Cui",
                    "Chloe Wang",
                    "Hassaan Maan",
                    "Kuan Pang",
                    "Fengning Luo",
                    "Nan Duan",
                    "Bo Wang",
                ],
                "citation": "Cui H. et al. scGPT: toward building a foundation model for single-cell multi-omics using "
                "generative AI. Nature Methods 21, 1470-1480 (2024).",
                "tags": ["scgpt", "single-cell", "pretrained", "needs-conversion"],
                "metadata": {
                    "hyperparameters": known + ("" if vocab else "; the converter reads the real ones from args.json")
                },
            }
        )
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "manifest.yaml").write_text(yaml.safe_dump(data, sort_keys=False, width=100))
        print(f"wrote {folder / 'manifest.yaml'}")


if __name__ == "__main__":
    main()
