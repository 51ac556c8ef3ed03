"""Every manifest shipped in registry/ is valid, pinned, and (when its weights are here) verifiable."""

from __future__ import annotations

from pathlib import Path

import pytest

import biozoo
from biozoo._core_plugin import registry_dir
from biozoo.manifest.io import read_manifest
from biozoo.manifest.schema import COMMIT_RE

MANIFESTS = sorted(registry_dir().rglob("manifest.yaml"))


def test_registry_is_not_empty() -> None:
    assert MANIFESTS


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.parent.relative_to(registry_dir())))
def test_manifest_is_valid_and_pinned(path: Path) -> None:
    located = read_manifest(path)
    manifest = located.manifest
    folder = str(path.parent.relative_to(registry_dir()))
    if folder.endswith("/design"):  # a model's design network (chroma's converter layout): id <parent id>-design
        folder = folder.removesuffix("/design") + "-design"
    assert folder == manifest.id, "folder must match the model id"
    if manifest.weights and manifest.weights.hf_repo:
        _, revision = manifest.weights.hf_repo
        assert revision and COMMIT_RE.match(revision), f"{manifest.id}: hf:// sources in the registry pin a commit"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.parent.relative_to(registry_dir())))
def test_local_models_reproduce_their_test_vectors(path: Path) -> None:
    manifest = read_manifest(path).manifest
    if manifest.weights is None or manifest.weights.source.startswith("hf://") or manifest.test_vectors is None:
        pytest.skip("weights not shipped here or no test vectors")
    if not biozoo.list_models(manifest.id)[0]["available"]:
        pytest.skip("its plugin is not installed")
    assert all(check.ok for check in biozoo.verify(manifest.id))
