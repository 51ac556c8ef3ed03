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
    assert "pip install biozoo-scgpt_missing" in text


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
    with pytest.raises(AssemblyError, match="components.head.config.*unknown pooling 'median'"):
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
