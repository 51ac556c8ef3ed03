"""`zoo info COMPONENT`: a component's config arguments, slots and parameter names, for plugin authors mapping keys."""

from __future__ import annotations

import json

from safetensors import safe_open

from biozoo._core_plugin import registry_dir
from tests.support.cli import zoo

TINY = registry_dir() / "core" / "tiny-transformer" / "model.safetensors"


def _stored(prefix: str) -> dict[str, list[int]]:
    """Names and shapes in the tiny model's weights file (written by scripts/make_reference_model.py)."""
    with safe_open(TINY, "pt") as f:
        return {k[len(prefix) :]: list(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith(prefix)}  # noqa: SIM118


def test_a_components_parameters_are_the_names_its_slot_has_in_stored_weights() -> None:
    result = zoo("info", "core.transformer_encoder", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["kind"] == "encoder" and data["plugin"] == "core" and data["target"].endswith(":TransformerEncoder")
    example = data["example"]
    assert example["slot"] == "encoder"
    assert example["parameters"] == _stored("encoder.")  # what a converter must map a checkpoint's keys to
    config = {row["name"]: row for row in data["config"]}
    assert config["num_layers"]["default"] == "(required)" and "d_model" in config


def test_an_architecture_shows_its_slots_and_human_output_reads_as_a_table() -> None:
    data = json.loads(zoo("info", "core.sequence_classifier", "--json").stdout)
    assert data["slots"]["positional"] == {"kind": "positional_encoding", "required": False}
    assert data["slots"]["head"]["required"] is True
    assert data["example"]["parameters"] == _stored("")  # the whole model's state dict
    text = zoo("info", "core.transformer_encoder", COLUMNS="200").stdout
    assert "parameters in core/tiny-transformer (slot encoder)" in text and "layers.0.self_attn.q_proj.weight" in text


def test_a_misspelt_component_name_gets_a_suggestion_not_a_model_path_error() -> None:
    result = zoo("info", "core.transformer_encodr")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no model or component named 'core.transformer_encodr'" in result.stderr
    assert "did you mean core.transformer_encoder" in result.stderr


def test_models_are_still_shown_as_before() -> None:
    result = zoo("info", "core/tiny-transformer", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["manifest"]["id"] == "core/tiny-transformer"
