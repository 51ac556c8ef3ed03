"""scModelForge compatibility: its save_pretrained folders load as they are and reproduce its outputs.

Expected values are golden files made by running the reference (scModelForge at commit ac29af1;
see golden/PROVENANCE.md and scripts/make_scmodelforge_golden.py), never by our code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import biozoo
from biozoo.errors import ManifestError
from biozoo_autoregressive.model import AutoregressiveTransformer, InputError

GOLDEN = Path(__file__).parent / "golden"
MODELS = ["scmodelforge-cls", "scmodelforge-mean"]
# The reference ran PyTorch's fused encoder fast path; its own non-fused path differs by up to 1.5e-6.
TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture(params=MODELS)
def golden(request: pytest.FixtureRequest) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    folder = GOLDEN / request.param
    return biozoo.load(folder), load_file(folder / "golden.safetensors")


@pytest.mark.parametrize("processor", ["eager", "sdpa"])
def test_outputs_match_the_reference(golden, processor: str) -> None:
    model, g = golden
    biozoo.set_processor(model, processor)
    valid = g["attention_mask"].bool()
    with torch.no_grad():
        out = model(g["input_ids"], g["attention_mask"], g["values"])
        torch.testing.assert_close(out.logits[valid], g["forward.logits"][valid], **TOL)
        torch.testing.assert_close(out.embeddings, g["forward.embeddings"], **TOL)
        assert out.loss is None
        full = model(g["input_ids"], g["attention_mask"], g["values"], g["labels"], bin_ids=g["bin_ids"])
        torch.testing.assert_close(full.loss, g["loss.full"], **TOL)
        gene_only = model(g["input_ids"], g["attention_mask"], g["values"], g["labels"])
        torch.testing.assert_close(gene_only.loss, g["loss.gene_only"], **TOL)
        torch.testing.assert_close(model.encode(g["input_ids"], g["attention_mask"], g["values"]), g["encode"], **TOL)
        no_values = model(g["input_ids"], g["attention_mask"])
        torch.testing.assert_close(no_values.logits[valid], g["forward_novalues.logits"][valid], **TOL)
        torch.testing.assert_close(model.encode(g["input_ids"], g["attention_mask"]), g["encode_novalues"], **TOL)


def test_reference_quirk_cls_pooling_is_the_same_for_every_cell() -> None:
    """Documented flaw, reproduced on purpose in scmodelforge mode: causal CLS sees only itself."""
    model = biozoo.load(GOLDEN / "scmodelforge-cls")
    g = load_file(GOLDEN / "scmodelforge-cls" / "golden.safetensors")
    with torch.no_grad():
        emb = model(g["input_ids"], g["attention_mask"], g["values"]).embeddings
    torch.testing.assert_close(emb[0], emb[1])
    torch.testing.assert_close(g["forward.embeddings"][0], g["forward.embeddings"][2])


def test_folder_is_described_by_a_manifest_without_torch_work() -> None:
    info = biozoo.info(GOLDEN / "scmodelforge-mean")
    arch = info["manifest"]["architecture"]
    assert arch["name"] == "autoregressive.transformer"
    assert arch["config"]["objective"] == "scmodelforge"
    assert arch["config"]["pooling"] == "mean" and arch["config"]["gene_loss_weight"] == 0.7
    assert info["manifest"]["id"] == "scmodelforge/scmodelforge-mean"


def test_from_config_and_num_parameters_follow_the_reference() -> None:
    config = json.loads((GOLDEN / "scmodelforge-cls" / "config.json").read_text())["model_config"]
    model = AutoregressiveTransformer.from_config(config)
    assert model.objective == "scmodelforge"
    weights = load_file(GOLDEN / "scmodelforge-cls" / "model.safetensors")
    model.load_state_dict(weights, strict=True)  # the reference's own key names, no mapping
    assert model.num_parameters() == sum(t.numel() for t in weights.values())
    with pytest.raises(ValueError, match="vocab_size"):
        AutoregressiveTransformer.from_config({"hidden_dim": 8})
    with pytest.raises(TypeError):
        model.num_parameters(False)  # keyword-only, as the reference


def _copy(tmp_path: Path, name: str = "scmodelforge-cls") -> Path:
    folder = tmp_path / "model"
    shutil.copytree(GOLDEN / name, folder)
    return folder


def test_wrong_vocabulary_size_in_config_is_named(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["model_config"]["vocab_size"] = 70
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ManifestError, match="vocab_size 70, but the weights' gene embedding has 64 rows"):
        biozoo.load(folder)


def test_vocabulary_file_that_does_not_fit_is_named(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    genes = json.loads((folder / "gene_vocab.json").read_text())
    genes["EXTRA"] = 64
    (folder / "gene_vocab.json").write_text(json.dumps(genes))
    with pytest.raises(ManifestError, match="61 genes .* but the model's vocab_size is 64"):
        biozoo.load(folder)


def test_pickled_only_folder_is_refused(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "model.safetensors").rename(folder / "model.pt")
    with pytest.raises(ManifestError, match=r"only a pickled model.pt") as info:
        biozoo.load(folder)
    assert "safe_serialization=True" in info.value.hint


def test_bad_inputs_are_named() -> None:
    model = biozoo.load(GOLDEN / "scmodelforge-cls")
    ids = torch.full((1, 5), 4)
    with pytest.raises(InputError, match="token id 64 is outside the model's vocabulary"):
        model(torch.tensor([[3, 64]]), torch.ones(1, 2))
    with pytest.raises(InputError, match="33 tokens exceed the model's max_seq_len 32"):
        model(torch.full((1, 33), 4), torch.ones(1, 33))
    with pytest.raises(InputError, match="does not match"):
        model(ids, torch.ones(1, 4))
    with pytest.raises(ValueError, match="cannot generate"):
        model.generate(2)


def test_tokenizer_settings_come_from_the_folder(tmp_path: Path) -> None:
    from biozoo_autoregressive.cells import CellContract

    contract = CellContract.of(biozoo.load(GOLDEN / "scmodelforge-cls"))
    assert contract.gene_order == "var" and contract.max_len == 32 and len(contract.vocabulary) == 64
    assert contract.vocabulary["GENE0"] == 4 and contract.bin_edges is not None and contract.bin_edges.size == 52
    folder = _copy(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["tokenizer_config"]["binning_method"] = "quantile"  # edges fitted on training data, not saved
    (folder / "config.json").write_text(json.dumps(config))
    assert CellContract.of(biozoo.load(folder)).bin_edges is None
