"""Converting official scGPT folders: safe unpickling, every key accounted for, reference outputs kept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import biozoo
from biozoo.errors import WeightsError
from biozoo_scgpt.convert import convert_checkpoint
from tests.support.scgpt_reference import load_reference_models

NTOKEN_GENES, D, HEADS, LAYERS = 50, 32, 4, 2
ARGS = {
    "embsize": D,
    "nheads": HEADS,
    "d_hid": D,
    "nlayers": LAYERS,
    "n_layers_cls": 3,
    "dropout": 0.2,
    "pad_token": "<pad>",
    "pad_value": -2,
    "input_emb_style": "continuous",
    "n_bins": 51,
    "max_seq_len": 1200,
    "MVC": True,
    "fast_transformer": True,
}


class Vocab(dict):
    pass


def official_folder(tmp: Path, ref, flash_names: bool = True) -> tuple[Path, torch.nn.Module]:
    """A folder shaped like the published whole-human one: args.json, vocab.json (no specials), best_model.pt."""
    genes = {f"GENE{i}": i for i in range(NTOKEN_GENES)}
    vocab = Vocab({**genes, "<pad>": NTOKEN_GENES, "<cls>": NTOKEN_GENES + 1, "<eoc>": NTOKEN_GENES + 2})
    torch.manual_seed(0)
    model = ref.model.TransformerModel(
        len(vocab), D, HEADS, D, LAYERS, vocab=vocab, dropout=0.2, pad_value=-2, do_mvc=True
    ).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("cls_decoder.")}  # as published
    if flash_names:
        state = {k.replace("self_attn.in_proj_", "self_attn.Wqkv."): v for k, v in state.items()}
    folder = tmp / "scGPT_human"
    folder.mkdir()
    (folder / "args.json").write_text(json.dumps(ARGS))
    (folder / "vocab.json").write_text(json.dumps(genes, indent=2))
    torch.save(state, folder / "best_model.pt")
    return folder, model


def _cells(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, NTOKEN_GENES, (5, 9), generator=g)
    src[:, 0] = NTOKEN_GENES + 1  # <cls>
    values = torch.randint(1, 51, (5, 9), generator=g).float()
    values[:, 0] = -2
    mask = torch.arange(9)[None] >= torch.tensor([9, 7, 4, 9, 2])[:, None]
    return src.masked_fill(mask, NTOKEN_GENES), values.masked_fill(mask, -2), mask


@pytest.mark.parametrize("flash_names", [True, False], ids=["flash-attn keys", "pytorch keys"])
def test_converted_model_reproduces_reference_cell_embeddings(tmp_path: Path, flash_names: bool) -> None:
    ref = load_reference_models()
    folder, reference = official_folder(tmp_path, ref, flash_names)
    out = convert_checkpoint(folder, tmp_path / "converted", model_id="scgpt/test-human")
    vocab = json.loads((out / "vocab.json").read_text())
    assert [vocab[t] for t in ("<pad>", "<cls>", "<eoc>")] == [NTOKEN_GENES, NTOKEN_GENES + 1, NTOKEN_GENES + 2]
    model = biozoo.load(out)
    assert model.cls_decoder is None and model.mvc_decoder is not None
    src, values, mask = _cells()
    with torch.no_grad():
        # what scgpt.tasks.embed_data computes: the CLS position of _encode, L2-normalised
        want = F.normalize(reference._encode(src, values, mask)[:, 0, :], dim=1)
        got = F.normalize(model.encode(src, values, mask)[:, 0, :], dim=1)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        full_want, full_got = reference(src, values, mask, MVC=True), model(src, values, mask, MVC=True)
    for key in ("mlm_output", "mvc_output"):
        torch.testing.assert_close(full_got[key][~mask], full_want[key][~mask], atol=1e-5, rtol=0)


def test_extra_or_missing_keys_are_errors_not_silently_dropped(tmp_path: Path) -> None:
    ref = load_reference_models()
    folder, _ = official_folder(tmp_path, ref)
    state = torch.load(folder / "best_model.pt", weights_only=True)
    state["transformer_encoder.layers.0.surprise"] = torch.zeros(3)
    del state["decoder.fc.4.bias"]
    torch.save(state, folder / "best_model.pt")
    with pytest.raises(WeightsError) as info:
        convert_checkpoint(folder, tmp_path / "out")
    text = str(info.value)
    assert "missing from the weights (1):\n    decoder.fc.4.bias" in text
    assert "transformer_encoder.layers.0.surprise" in text
    assert not (tmp_path / "out").exists()  # nothing half-written
    assert not list(tmp_path.glob(".out.*"))


def test_vocabulary_that_does_not_fit_the_checkpoint(tmp_path: Path) -> None:
    ref = load_reference_models()
    folder, _ = official_folder(tmp_path, ref)
    genes = json.loads((folder / "vocab.json").read_text())
    genes["EXTRA"] = len(genes)
    (folder / "vocab.json").write_text(json.dumps(genes))
    with pytest.raises(WeightsError, match="embeds 53 tokens but vocab.json .with specials. has 54"):
        convert_checkpoint(folder, tmp_path / "out")


def test_pickles_with_code_are_refused(tmp_path: Path) -> None:
    ref = load_reference_models()
    folder, _ = official_folder(tmp_path, ref)

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"encoder.embedding.weight": torch.zeros(1), "evil": Payload()}, folder / "best_model.pt")
    with pytest.raises(WeightsError, match="cannot be read safely"):
        convert_checkpoint(folder, tmp_path / "out")


def test_missing_files_and_existing_output(tmp_path: Path) -> None:
    ref = load_reference_models()
    folder, _ = official_folder(tmp_path, ref)
    (tmp_path / "taken").mkdir()
    with pytest.raises(WeightsError, match="already exists"):
        convert_checkpoint(folder, tmp_path / "taken")
    (folder / "args.json").unlink()
    with pytest.raises(WeightsError, match="has no args.json"):
        convert_checkpoint(folder, tmp_path / "out")


def test_zoo_convert_command(tmp_path: Path) -> None:
    ref = load_reference_models()
    folder, _ = official_folder(tmp_path, ref)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "biozoo.cli.app",
            "convert",
            "scgpt",
            str(folder),
            "-o",
            str(tmp_path / "out"),
            "--id",
            "scgpt/mine",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    load = subprocess.run(
        [sys.executable, "-m", "biozoo.cli.app", "load", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert load.returncode == 0 and "scgpt/mine" in load.stdout, load.stderr
