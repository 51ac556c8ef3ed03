"""Publishing to and loading from a Hub: the stock huggingface_hub client against a local server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import biozoo
from biozoo.errors import HubError, WeightsError
from tests.support.models import tiny_manifest, write_model

INPUTS = {"input_ids": torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])}
INPUTS["padding_mask"] = INPUTS["input_ids"].eq(0)


def _outputs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(**INPUTS)


def _publish(hub, tmp_path: Path, repo: str) -> tuple[Path, str]:
    folder = write_model(tmp_path / "model")
    commit = biozoo.publish(folder, repo)
    return folder, commit


def test_publish_then_load_gives_identical_outputs(hub, tmp_path: Path) -> None:
    folder, commit = _publish(hub, tmp_path, "lab/tiny-roundtrip")
    assert len(commit) == 40
    files = set(hub.api.list_repo_files("lab/tiny-roundtrip", revision=commit))
    assert {"manifest.yaml", "model.safetensors", "README.md"} <= files
    card = hub.server.read_file("lab/tiny-roundtrip", "README.md", commit).decode()
    assert "library_name: biozoo" in card and "license: mit" in card and "# test/tiny" in card
    assert "zoo load hf://lab/tiny-roundtrip@COMMIT" in card and "ORG/NAME" not in card


    local = biozoo.load(folder)
    remote = biozoo.load(f"hf://lab/tiny-roundtrip@{commit}")
    for key, value in _outputs(local).items():
        assert torch.equal(value, _outputs(remote)[key]), key
    assert commit in remote.zoo.report.origin
    assert str(hub.cache_dir) in str(remote.zoo.folder)


def test_load_from_branch_reports_the_resolved_commit(hub, tmp_path: Path) -> None:
    _, commit = _publish(hub, tmp_path, "lab/tiny-branch")
    model = biozoo.load("hf://lab/tiny-branch")
    assert f"commit {commit}" in model.zoo.report.origin


def test_pinned_cached_model_loads_during_an_outage(hub, tmp_path: Path) -> None:
    _, commit = _publish(hub, tmp_path, "lab/tiny-outage")
    first = biozoo.load(f"hf://lab/tiny-outage@{commit}")
    with hub.outage():
        again = biozoo.load(f"hf://lab/tiny-outage@{commit}")
    assert torch.equal(_outputs(first)["logits"], _outputs(again)["logits"])


def test_pinned_cached_model_loads_offline(hub, tmp_path: Path) -> None:
    _, commit = _publish(hub, tmp_path, "lab/tiny-offline")
    biozoo.load(f"hf://lab/tiny-offline@{commit}")
    with hub.offline():
        assert biozoo.load(f"hf://lab/tiny-offline@{commit}").zoo.report.parameters > 0


def test_unreachable_hub_without_cache_fails_fast_and_clearly(hub, tmp_path: Path) -> None:
    _, commit = _publish(hub, tmp_path, "lab/tiny-nocache")
    start = time.perf_counter()
    with hub.outage(), pytest.raises(HubError) as info:
        biozoo.load(f"hf://lab/tiny-nocache@{commit}")
    assert time.perf_counter() - start < 10  # no 20 s of client retries (not a benchmark: a UX bound)
    text = str(info.value)
    assert "cannot reach" in text and "no cached copy of manifest.yaml" in text and "hint:" in text


def test_unpinned_load_during_an_outage_says_it_came_from_the_cache(hub, tmp_path: Path) -> None:
    """A branch served from the cache may be stale: the origin (what `zoo load` prints) must say so."""
    _, commit = _publish(hub, tmp_path, "lab/tiny-stale")
    assert "from the cache" not in biozoo.load("hf://lab/tiny-stale").zoo.report.origin
    with hub.outage():
        origin = biozoo.load("hf://lab/tiny-stale").zoo.report.origin
    assert f"(commit {commit}, from the cache: cannot reach {hub.url}" in origin


def test_offline_without_cache(hub, tmp_path: Path) -> None:
    _, commit = _publish(hub, tmp_path, "lab/tiny-offline-empty")
    with hub.offline(), pytest.raises(HubError, match="offline mode is on"):
        biozoo.load(f"hf://lab/tiny-offline-empty@{commit}")


def test_revision_that_does_not_exist(hub, tmp_path: Path) -> None:
    _publish(hub, tmp_path, "lab/tiny-revs")
    with pytest.raises(HubError, match="revision 'v9.9' does not exist in lab/tiny-revs") as info:
        biozoo.load("hf://lab/tiny-revs@v9.9")
    assert "`hf repos tag list lab/tiny-revs`" in str(info.value.hint)  # a command the installed `hf` has
    assert "repo-refs" not in str(info.value)
    with pytest.raises(HubError, match="revision '0{40}' does not exist"):
        biozoo.load("hf://lab/tiny-revs@" + "0" * 40)


def test_repository_that_does_not_exist(hub) -> None:
    with pytest.raises(HubError, match="repository lab/no-such-model not found"):
        biozoo.load("hf://lab/no-such-model")


def test_manifest_with_weights_on_the_hub(hub, tmp_path: Path) -> None:
    """A registry-style manifest kept locally whose weights live on the Hub at a pinned commit."""
    folder, commit = _publish(hub, tmp_path, "lab/tiny-remote-weights")
    published = yaml.safe_load((folder / "manifest.yaml").read_text())
    local = tmp_path / "registry-entry"
    local.mkdir()
    data = tiny_manifest(weights={**published["weights"], "source": f"hf://lab/tiny-remote-weights@{commit}"})
    (local / "manifest.yaml").write_text(yaml.safe_dump(data))
    model = biozoo.load(local)
    assert torch.equal(_outputs(model)["logits"], _outputs(biozoo.load(folder))["logits"])
    assert "hf://lab/tiny-remote-weights" in model.zoo.report.files["model.safetensors"]

    data["weights"]["files"][0]["sha256"] = "a" * 64
    (local / "manifest.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        biozoo.load(local)


def test_publish_refuses_a_folder_whose_files_do_not_match(hub, tmp_path: Path) -> None:
    folder = write_model(tmp_path / "model")
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    manifest["weights"]["files"][0]["sha256"] = "b" * 64
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        biozoo.publish(folder, "lab/never-created")
    assert not hub.api.repo_exists("lab/never-created")  # nothing half-published


def test_publish_refuses_weights_whose_licence_forbids_sharing(hub, tmp_path: Path) -> None:
    """A converted licence-gated model (e.g. Chroma's) is marked not redistributable; it must not reach the Hub."""
    from biozoo.errors import ManifestError

    folder = write_model(tmp_path / "model")
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    manifest["metadata"] = {"redistributable": False}
    manifest["license"] = "LicenseRef-Chroma-Parameters-License"
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(ManifestError, match="not redistributable"):
        biozoo.publish(folder, "lab/never-shared")
    assert not hub.api.repo_exists("lab/never-shared")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "biozoo.cli.app", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


def test_cli_publish_load_and_cache(hub, tmp_path: Path) -> None:
    folder = write_model(tmp_path / "model")
    proc = _cli("publish", str(folder), "--repo", "lab/tiny-cli")
    assert proc.returncode == 0, proc.stderr
    commit = proc.stdout.split("at commit ")[1].split()[0]
    assert len(commit) == 40
    loaded = _cli("load", f"hf://lab/tiny-cli@{commit}")
    assert loaded.returncode == 0, loaded.stderr
    assert commit in loaded.stdout
    listing = _cli("cache", "ls", "--json")
    rows = yaml.safe_load(listing.stdout)
    row = next(r for r in rows if r["repo"] == "lab/tiny-cli")
    assert row["biozoo"] is True and commit in row["commits"]
    assert _cli("cache", "rm", "lab/tiny-cli").returncode == 0
    assert all(r["repo"] != "lab/tiny-cli" for r in yaml.safe_load(_cli("cache", "ls", "--json").stdout))
    missing = _cli("cache", "rm", "lab/tiny-cli")
    assert missing.returncode == 1 and "not in the cache" in missing.stderr


def test_a_model_card_installs_distributions_by_their_metadata_names(fake_plugins) -> None:
    """A plugin whose namespace (gene_mini) and distribution (biozoo-gene-mini) differ is installed by the latter."""
    from biozoo.hub import model_card
    from biozoo.manifest.schema import Manifest

    fake_plugins.add("gene_mini", "", dist="biozoo-gene-mini")
    manifest = Manifest.model_validate(
        {
            "id": "gene-mini/tiny",
            "architecture": {"name": "gene_mini.bert"},
            "components": {"x": {"name": "gone.x"}},
            "conversion": {"converter": "gene_mini"},
        }
    )
    card = model_card(manifest, "lab/gene")
    assert "pip install biozoo biozoo-gene-mini   # and the package of plugin(s) gone" in card
    assert "biozoo-gene_mini" not in card
