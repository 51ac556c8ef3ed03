"""Manifest validation: every bad input names the offending field and the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from biozoo.errors import ManifestError
from biozoo.manifest.io import json_schema, parse_manifest, read_manifest, resolve_inside
from tests.support.models import tiny_manifest


def test_valid_manifest_parses() -> None:
    manifest = parse_manifest(tiny_manifest())
    assert manifest.id == "test/tiny"
    assert manifest.architecture.name == "core.sequence_classifier"
    assert manifest.plugins == {"core"}


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"id": "NoSlash"}, "id", "namespace/name"),
        ({"architecture": {"name": "not a name"}}, "architecture.name", "plugin.component"),
        ({"format_version": 7}, "format_version", "1"),
        ({"unknown_key": 1}, "unknown_key", "Extra inputs"),
        ({"weights": {"source": ".", "files": [{"path": "model.bin", "sha256": "0" * 64}]}}, "weights", "pickle"),
        ({"weights": {"source": ".", "files": [{"path": "m.safetensors", "sha256": "xyz"}]}}, "sha256", "pattern"),
        (
            {"weights": {"source": "s3://bucket/x", "files": [{"path": "m.safetensors", "sha256": "0" * 64}]}},
            "weights.source",
            "hf://",
        ),
        (
            {"weights": {"source": "hf://just-a-name", "files": [{"path": "m.safetensors", "sha256": "0" * 64}]}},
            "weights.source",
            "hf://ORG/NAME",
        ),
        ({"weights": {"source": ".", "files": []}}, "weights.files", "at least 1"),
        ({"weights": None}, "(top level)", "conversion"),
    ],
)
def test_invalid_fields_are_named(change: dict, field: str, words: str) -> None:
    data = tiny_manifest(**change)
    with pytest.raises(ManifestError) as info:
        parse_manifest(data, "m.yaml")
    text = str(info.value)
    assert field in text
    assert words in text


@pytest.mark.parametrize(
    "bad",
    [
        "../outside.safetensors",
        "/etc/passwd.safetensors",
        "a/../../b.safetensors",
        "C:/x.safetensors",
        "a\\b.safetensors",
    ],
)
def test_paths_cannot_escape_the_model_folder(bad: str) -> None:
    data = tiny_manifest(weights={"source": ".", "files": [{"path": bad, "sha256": "0" * 64}]})
    with pytest.raises(ManifestError) as info:
        parse_manifest(data)
    assert "weights.files.0.path" in str(info.value)


def test_test_vector_and_preprocessing_paths_are_checked_too() -> None:
    with pytest.raises(ManifestError, match="test_vectors.file"):
        parse_manifest(tiny_manifest(test_vectors={"file": "../x.safetensors", "sha256": "0" * 64}))
    with pytest.raises(ManifestError, match="preprocessing.files.vocab"):
        parse_manifest(tiny_manifest(preprocessing={"name": "core.x", "files": {"vocab": "/abs/vocab.json"}}))


def test_symlink_pointing_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(b"x")
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(outside, folder / "model.safetensors")
    with pytest.raises(ManifestError, match="outside the model folder"):
        resolve_inside(folder, "model.safetensors")


def test_malformed_yaml_file(tmp_path: Path) -> None:
    (tmp_path / "manifest.yaml").write_text("id: [unclosed\n  - x: :\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        read_manifest(tmp_path)


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "manifest.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ManifestError, match="must be a mapping"):
        read_manifest(tmp_path)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(tmp_path)


def test_yaml_cannot_construct_python_objects(tmp_path: Path) -> None:
    """A manifest never runs code: YAML tags that build Python objects are rejected."""
    (tmp_path / "manifest.yaml").write_text("id: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        read_manifest(tmp_path)


def test_index_must_be_listed_with_a_hash() -> None:
    data = tiny_manifest(
        weights={
            "source": ".",
            "index": "model.safetensors.index.json",
            "files": [{"path": "a.safetensors", "sha256": "0" * 64}],
        }
    )
    with pytest.raises(ManifestError, match="index"):
        parse_manifest(data)


def test_json_schema_exports_and_matches_docs() -> None:
    schema = json.loads(json_schema())
    assert schema["title"] == "Manifest"
    assert {"id", "architecture", "weights", "test_vectors"} <= set(schema["properties"])
    docs = Path(__file__).resolve().parents[1] / "docs" / "manifest.schema.json"
    assert docs.read_text() == json_schema(), "docs/manifest.schema.json is stale: run scripts/export_schema.py"
