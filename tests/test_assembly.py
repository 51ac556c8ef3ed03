"""Assembly: components that don't fit fail before any weights load, saying why."""

from __future__ import annotations

import pytest
import torch

from biozoo.assembly import assemble
from biozoo.errors import AssemblyError, UnknownNameError
from biozoo.manifest.io import parse_manifest
from tests.support.models import D, tiny_manifest


def _components(**changes: dict) -> dict:
    comps = tiny_manifest()["components"]
    comps.update(changes)
    return comps


def test_assembles_on_meta_without_memory() -> None:
    model = assemble(parse_manifest(tiny_manifest()))
    assert all(p.is_meta for p in model.parameters())
    assert {name.split(".")[0] for name, _ in model.named_children()} == {"embedding", "encoder", "head"}


def test_unknown_component_of_missing_plugin_says_what_to_install() -> None:
    data = tiny_manifest(components=_components(encoder={"name": "scgpt_missing.encoder", "config": {}}))
    with pytest.raises(UnknownNameError) as info:
        assemble(parse_manifest(data))
    text = str(info.value)
    assert "components.encoder" in text
    assert "pip install biozoo-scgpt_missing" in text  # not installed: installing is the fix


def test_unknown_component_of_installed_plugin_suggests_names() -> None:
    data = tiny_manifest(components=_components(encoder={"name": "core.transformer_encodr", "config": {}}))
    with pytest.raises(UnknownNameError, match="did you mean core.transformer_encoder"):
        assemble(parse_manifest(data))


def test_wrong_kind_in_slot() -> None:
    data = tiny_manifest(
        components=_components(head={"name": "core.token_embedding", "config": {"vocab_size": 4, "d_model": D}})
    )
    with pytest.raises(AssemblyError, match=r"components.head: 'core.token_embedding' is a encoder.*needs a head"):
        assemble(parse_manifest(data))


def test_unknown_config_key_lists_accepted_keys() -> None:
    comps = _components()
    comps["encoder"]["config"]["n_layers"] = 3
    with pytest.raises(AssemblyError) as info:
        assemble(parse_manifest(tiny_manifest(components=comps)))
    assert "components.encoder.config" in str(info.value)
    assert "'n_layers'" in str(info.value)
    assert "num_layers" in str(info.value)  # the hint lists what it accepts


def test_missing_required_config() -> None:
    comps = _components(head={"name": "core.pooled_classifier", "config": {"d_model": D}})
    with pytest.raises(AssemblyError, match="needs 'num_classes'"):
        assemble(parse_manifest(tiny_manifest(components=comps)))


def test_port_mismatch_names_both_sides_and_sizes() -> None:
    comps = _components(head={"name": "core.pooled_classifier", "config": {"d_model": 2 * D, "num_classes": 3}})
    with pytest.raises(AssemblyError) as info:
        assemble(parse_manifest(tiny_manifest(components=comps)))
    text = str(info.value)
    assert "components.head" in text and "components.encoder" in text
    assert f"size {D} offered, size {2 * D} wanted" in text


def test_missing_required_slot_and_unknown_slot() -> None:
    comps = _components()
    del comps["head"]
    with pytest.raises(AssemblyError, match="components.head: core.sequence_classifier needs a head"):
        assemble(parse_manifest(tiny_manifest(components=comps)))
    with pytest.raises(AssemblyError, match="has no slot.*'decoder'"):
        assemble(parse_manifest(tiny_manifest(components=_components(decoder=comps["encoder"]))))


def test_component_rejecting_its_config_is_reported() -> None:
    comps = _components(
        head={"name": "core.pooled_classifier", "config": {"d_model": D, "num_classes": 3, "pooling": "median"}}
    )
    with pytest.raises(AssemblyError, match="components.head.config.pooling must be one of cls, mean, max, got 'med"):
        assemble(parse_manifest(tiny_manifest(components=comps)))


def test_cpu_assembly_initialises_real_values() -> None:
    model = assemble(parse_manifest(tiny_manifest()), device="cpu")
    weight = model.embedding.embedding.weight
    assert not weight.is_meta and torch.isfinite(weight).all() and weight.std() > 0.1


def test_attention_settings_from_manifest_apply_per_module() -> None:
    data = tiny_manifest(attention={"processor": "eager", "overrides": {"encoder.layers.0.*": "sdpa"}})
    model = assemble(parse_manifest(data))
    assert model.encoder.layers[0].self_attn.default_processor_name == "sdpa"
    bad = tiny_manifest(attention={"processor": "warp-drive"})
    with pytest.raises(AssemblyError, match="attention: no attention processor named 'warp-drive'"):
        assemble(parse_manifest(bad))


@pytest.mark.parametrize(
    ("slot", "key", "value", "words"),
    [
        ("encoder", "num_heads", 0, "components.encoder.config.num_heads must be >= 1, got 0"),
        ("encoder", "num_heads", -4, "components.encoder.config.num_heads must be >= 1, got -4"),  # used to load
        ("encoder", "num_heads", 3, "components.encoder.config.num_heads must divide embed_dim (16), got 3"),
        ("encoder", "d_model", -64, "components.encoder.config.d_model must be >= 1, got -64"),
        ("encoder", "num_layers", -1, "components.encoder.config.num_layers must be >= 0, got -1"),
        ("encoder", "dropout", float("nan"), "components.encoder.config.dropout must be a number between 0 and 1"),
        ("encoder", "dropout", 1.5, "components.encoder.config.dropout must be a number between 0 and 1"),
        ("encoder", "num_kv_heads", -2, "components.encoder.config.num_kv_heads must be >= 1, got -2"),
        ("encoder", "layer_norm_eps", -1.0, "components.encoder.config.layer_norm_eps must be a finite number > 0"),
        ("embedding", "padding_idx", 10**6, r"components.embedding.config.padding_idx must be an index into vocab"),
        ("embedding", "vocab_size", 0, "components.embedding.config.vocab_size must be >= 1, got 0"),
        ("embedding", "d_model", True, "components.embedding.config.d_model must be an integer, got True"),
        ("head", "num_classes", -3, "components.head.config.num_classes must be >= 1, got -3"),
        ("head", "dropout", -0.1, "components.head.config.dropout must be a number between 0 and 1"),
    ],
)
def test_sizes_out_of_range_name_the_field(slot: str, key: str, value: object, words: str) -> None:
    comps = _components()
    comps[slot]["config"][key] = value
    with pytest.raises(AssemblyError, match=words.replace("(", r"\(").replace(")", r"\)")):
        assemble(parse_manifest(tiny_manifest(components=comps)))


def test_any_constructor_failure_is_an_assembly_error(fake_plugins) -> None:
    """A plugin's constructor that fails the way torch does (no field named) is still reported, not a traceback."""
    fake_plugins.add(
        "odd",
        """
from biozoo.plugins import ComponentDecl, hookimpl

@hookimpl
def biozoo_components():
    return [ComponentDecl("odd.encoder", "encoder", "fake_odd_model:Encoder")]
""",
    )
    (fake_plugins.root / "fake_odd_model.py").write_text(
        """
import torch
from biozoo.components.base import Component

class Encoder(Component):
    kind = "encoder"

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(width, 4 % (width + 4)))
"""
    )
    for width, error in ((-8, "RuntimeError"), (-4, "ZeroDivisionError")):
        comps = _components(encoder={"name": "odd.encoder", "config": {"width": width}})
        with pytest.raises(AssemblyError, match=f"components.encoder.config: odd.encoder rejected its config: {error}"):
            assemble(parse_manifest(tiny_manifest(components=comps)))
