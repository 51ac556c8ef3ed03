"""Manifest validation: every bad input names the offending field and the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from biozoo.errors import ManifestError
from biozoo.manifest.io import json_schema, parse_manifest, read_manifest, read_raw, resolve_inside
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


def _write_manifest_text(folder: Path, text: str) -> Path:
    (folder / "manifest.yaml").write_text(text)
    return folder / "manifest.yaml"


def _valid_yaml() -> str:
    import yaml

    return yaml.safe_dump(tiny_manifest(), sort_keys=False)


def test_yaml_alias_bomb_is_refused_without_expanding_it(tmp_path: Path) -> None:
    """Nine levels of ten aliases stand for 10**9 leaves: refused at the first alias, not expanded."""
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    bomb = "metadata:\n" + "\n".join(f"  {line}" for line in levels) + "\n"
    path = _write_manifest_text(tmp_path, _valid_yaml() + bomb)
    with pytest.raises(ManifestError, match=r"may not use YAML aliases"):
        read_manifest(path)
    assert "aliases" in read_raw(path)["_error"]  # what `zoo list` sees: an unreadable manifest, promptly


def test_any_yaml_alias_is_refused(tmp_path: Path) -> None:
    text = _valid_yaml().replace("license: MIT", "license: &lic MIT\nauthors: [*lic]")
    with pytest.raises(ManifestError, match="aliases"):
        read_manifest(_write_manifest_text(tmp_path, text))


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    """The first `weights:` block is what a reviewer reads; the loader would have used the last."""
    text = _valid_yaml() + "weights:\n  files: [{path: model.safetensors, sha256: " + "1" * 64 + "}]\n"
    with pytest.raises(ManifestError, match="duplicate key 'weights'"):
        read_manifest(_write_manifest_text(tmp_path, text))
    nested = _valid_yaml().replace("license: MIT", "license: MIT\nmetadata: {a: 1, a: 2}")
    with pytest.raises(ManifestError, match="duplicate key 'a'"):
        read_manifest(_write_manifest_text(tmp_path, nested))


def test_oversized_manifest_is_refused_before_parsing(tmp_path: Path) -> None:
    from biozoo.manifest.io import MAX_MANIFEST_BYTES

    text = _valid_yaml() + "description: " + "x" * MAX_MANIFEST_BYTES + "\n"
    path = _write_manifest_text(tmp_path, text)
    with pytest.raises(ManifestError, match="a manifest may hold at most"):
        read_manifest(path)
    assert "at most" in read_raw(path)["_error"]

