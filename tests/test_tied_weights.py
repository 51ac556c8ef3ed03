"""Tied weights declared in the manifest (``tie: {alias: source}``): assembled as one Parameter, saved once,
loaded tied, through ``zoo verify`` and a Hub round trip; bad ties fail with the field named."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

import biozoo
from biozoo.assembly import assemble
from biozoo.errors import AssemblyError, ManifestError, WeightsError
from biozoo.manifest.io import parse_manifest
from biozoo.ties import savable_state, tie_parameters
from biozoo.weights import read_header
from tests.support.models import BERT_SIZES, masked_lm_manifest, sha256, write_model

V, P = BERT_SIZES["vocab"], BERT_SIZES["positions"]
ALIAS, SOURCE = "head.decoder.weight", "embedding.word_embeddings.weight"
TIE = {ALIAS: SOURCE}
IDS = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]])


def _manifest(tie: dict[str, str] | None = None) -> dict[str, Any]:
    return masked_lm_manifest("test/tied-mlm", tie=TIE if tie is None else tie)


def _tied_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = assemble(parse_manifest(_manifest()), device="cpu")
    return savable_state(model, TIE)


def _untied(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The same numbers in a model without the tie (the decoder holds its own copy)."""
    model = assemble(parse_manifest(_manifest(tie={})), device="cpu")
    model.load_state_dict({**state, ALIAS: state[SOURCE].clone()}, strict=True)
    return model.eval()


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS, padding_mask=IDS.eq(0))["logits"]


def _assert_tied(model: torch.nn.Module) -> None:
    alias, source = model.get_parameter(ALIAS), model.get_parameter(SOURCE)
    assert alias is source
    with torch.no_grad():  # the tie holds: a change to one is a change to the other
        saved = source[3, 0].item()
        source[3, 0] = 1234.5
        assert model.get_parameter(ALIAS)[3, 0].item() == 1234.5
        source[3, 0] = saved


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_assembly_makes_the_alias_the_same_parameter(device: str) -> None:
    model = assemble(parse_manifest(_manifest()), device=device)
    assert model.head.decoder.weight is model.embedding.word_embeddings.weight
    assert len(list(model.parameters())) == len(dict(model.named_parameters(remove_duplicate=False))) - 1


def test_a_folder_saves_the_tensor_once_and_loads_tied_with_the_untied_outputs(tmp_path: Path) -> None:
    state = _tied_state()
    assert ALIAS not in state and SOURCE in state
    folder = write_model(tmp_path / "m", _manifest(), state)
    header = read_header(folder / "model.safetensors")
    assert SOURCE in header and ALIAS not in header  # stored once
    model = biozoo.load(folder)
    _assert_tied(model)
    assert torch.equal(_logits(model), _logits(_untied(state)))
    # what was loaded saves back to the same tensors
    again = savable_state(model, TIE)
    assert set(again) == set(state) and all(torch.equal(again[k], state[k]) for k in state)


def test_loading_with_a_dtype_keeps_the_tie(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m", _manifest(), _tied_state())
    model = biozoo.load(folder, dtype="float64")
    assert model.get_parameter(ALIAS).dtype == torch.float64
    _assert_tied(model)


def test_a_file_that_also_holds_the_alias_must_hold_the_same_values(tmp_path: Path) -> None:
    state = _tied_state()
    same = write_model(tmp_path / "same", _manifest(), {**state, ALIAS: state[SOURCE].clone()})
    _assert_tied(biozoo.load(same))
    other = {**state, ALIAS: state[SOURCE] + 1.0}
    with pytest.raises(WeightsError, match="head.decoder.weight' with values different") as info:
        biozoo.load(write_model(tmp_path / "other", _manifest(), other))
    assert "tie.head.decoder.weight" in info.value.hint
    alias_only = {k: v for k, v in state.items() if k != SOURCE} | {ALIAS: state[SOURCE]}
    with pytest.raises(WeightsError, match="but not 'embedding.word_embeddings.weight'"):
        biozoo.load(write_model(tmp_path / "alias-only", _manifest(), alias_only))


def test_without_the_tie_the_alias_is_missing_from_the_file(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m", _manifest(tie={}), _tied_state())
    with pytest.raises(WeightsError, match="missing from the weights"):
        biozoo.load(folder)


def _with_test_vectors(folder: Path, expected: torch.Tensor) -> None:
    import yaml

    vectors = folder / "test_vectors.safetensors"
    save_file({"input.input_ids": IDS, "input.padding_mask": IDS.eq(0), "output.logits": expected}, vectors)
    data = yaml.safe_load((folder / "manifest.yaml").read_text())
    data["test_vectors"] = {"file": vectors.name, "sha256": sha256(vectors), "provenance": "the untied model"}
    (folder / "manifest.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def test_verify_and_a_hub_round_trip_keep_the_tie(hub, tmp_path: Path) -> None:
    state = _tied_state(seed=3)
    folder = write_model(tmp_path / "m", _manifest(), state)
    _with_test_vectors(folder, _logits(_untied(state)))
    assert all(check.ok for check in biozoo.verify(folder))
    commit = biozoo.publish(folder, "lab/tied-mlm")
    source = f"hf://lab/tied-mlm@{commit}"
    remote = biozoo.load(source)
    _assert_tied(remote)
    assert torch.equal(_logits(remote), _logits(biozoo.load(folder)))
    assert all(check.ok for check in biozoo.verify(source))


def test_savable_state_refuses_a_model_whose_tie_was_broken() -> None:
    model = assemble(parse_manifest(_manifest()), device="cpu")
    model.head.decoder.weight = torch.nn.Parameter(model.head.decoder.weight.detach().clone())
    with pytest.raises(WeightsError, match="two different parameters"):
        savable_state(model, TIE)


@pytest.mark.parametrize(
    ("tie", "message", "hint"),
    [
        ({"head.decoder.weigth": SOURCE}, "tie.head.decoder.weigth: the model has no parameter", "head.decoder.weight"),
        ({ALIAS: "embedding.words.weight"}, "no parameter 'embedding.words.weight'", "did you mean"),
        ({"head.dense.weight": SOURCE}, r"tie.head.dense.weight: head.dense.weight is \[32, 32\]", "equal shape"),
    ],
)
def test_a_tie_the_model_cannot_hold_names_the_field(tie: dict[str, str], message: str, hint: str) -> None:
    with pytest.raises(AssemblyError, match=message) as info:
        assemble(parse_manifest(_manifest(tie=tie)))
    assert hint in info.value.hint


def test_a_buffer_cannot_be_tied() -> None:
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(4), torch.nn.BatchNorm1d(4))
    with pytest.raises(AssemblyError, match="tie.1.weight: '0.running_mean' is a buffer") as info:
        tie_parameters(model, {"1.weight": "0.running_mean"})
    assert "only parameters" in info.value.hint


@pytest.mark.parametrize(
    ("tie", "message"),
    [
        ({ALIAS: ALIAS}, "tied to itself"),
        ({ALIAS: SOURCE, SOURCE: "head.dense.weight"}, "tie 'head.decoder.weight' to 'head.dense.weight' directly"),
        ({"head/decoder": SOURCE}, "not a parameter name"),
        ({ALIAS: "../x"}, "not a parameter name"),
    ],
)
def test_a_malformed_tie_is_a_manifest_error(tie: dict[str, str], message: str) -> None:
    with pytest.raises(ManifestError, match=message) as info:
        parse_manifest(_manifest(tie=tie))
    assert "tie" in str(info.value)


def test_matches_bert_for_masked_lm_with_tied_word_embeddings(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tests.test_bert_blocks import _hf_model, _renamed

    hf = _hf_model()
    assert hf.config.tie_word_embeddings
    assert hf.cls.predictions.decoder.weight is hf.bert.embeddings.word_embeddings.weight
    state = {k: v.detach().clone().contiguous() for k, v in _renamed(hf.state_dict()).items() if k != ALIAS}
    model = biozoo.load(write_model(tmp_path / "m", _manifest(), state))
    _assert_tied(model)
    keep = IDS.ne(0)
    with torch.no_grad():
        want = hf(input_ids=IDS, attention_mask=keep.long()).logits
    got = _logits(model)
    assert float(((got - want) * keep[..., None]).abs().max()) < 1e-5


def test_the_manifest_without_tie_is_unchanged() -> None:
    manifest = parse_manifest({k: v for k, v in _manifest().items() if k != "tie"})
    assert manifest.tie == {}
    assert "tie" not in manifest.json_for_card()
    assert copy.deepcopy(manifest) == manifest


def test_the_cli_reports_a_bad_tie_without_a_traceback(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    folder = write_model(tmp_path / "m", _manifest(tie={ALIAS: "embedding.words.weight"}), _tied_state())
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run(
        [sys.executable, "-m", "biozoo.cli.app", "load", str(folder)], capture_output=True, text=True, timeout=300,
        env=env,
    )  # fmt: skip
    assert done.returncode == 1
    assert "error: tie.head.decoder.weight: the model has no parameter 'embedding.words.weight'" in done.stderr
    assert "hint: did you mean" in done.stderr and "Traceback" not in done.stderr
