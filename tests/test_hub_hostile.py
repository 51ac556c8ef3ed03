"""A broken or hostile Hub endpoint must not write outside the cache, swap commits, or bury the user in tracebacks.

Every test runs the stock huggingface_hub client against the local test Hub switched into one misbehaviour
(``HubServer.misbehave``, see ``tests/support/hub_server.py``); see docs/security.md for the threat model.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import biozoo
from biozoo import hub as biozoo_hub
from biozoo.errors import HubError, ManifestError
from tests.support.models import random_state, tiny_manifest, write_model

# From <cache>/models--lab--x/{blobs,refs,.locks/models--lab--x}/ four '..' reach the test's tmp_path
# (cache = tmp_path/hf_home/hub), so a write that escapes lands where the test can see it, never in a real folder.
UP = "../../../.."


def _publish(tmp_path: Path, repo: str, *, with_size: bool = False, description: str = "tiny") -> tuple[Path, str]:
    folder = write_model(tmp_path / f"model-{description}", tiny_manifest(description=description))
    if with_size:
        manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
        manifest["weights"]["files"][0]["size"] = (folder / "model.safetensors").stat().st_size
        (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    return folder, biozoo.publish(folder, repo)


def _outside(tmp_path: Path, name: str) -> list[Path]:
    """Files named ``name*`` that an escaping write would have created next to the cache."""
    return sorted(tmp_path.glob(name + "*"))


def _gets(server, since: int, filename: str) -> list[str]:
    return [path for method, path, _ in server.request_log[since:] if method == "GET" and path.endswith(filename)]


def test_etag_that_climbs_out_of_the_cache_is_refused_before_anything_is_written(hub, tmp_path: Path) -> None:
    """C5b: huggingface_hub writes the download to blobs/<ETag>; biozoo checks the ETag first."""
    _, commit = _publish(tmp_path, "lab/hostile-etag")
    with hub.server.misbehave(etag={"model.safetensors": f"{UP}/ETAG_OWNED"}), pytest.raises(HubError) as info:
        biozoo.load(f"hf://lab/hostile-etag@{commit}")
    assert "broken or hostile" in str(info.value) and "not a blob hash" in str(info.value)
    assert _outside(tmp_path, "ETAG_OWNED") == []


def test_etag_lie_after_an_honest_answer_is_refused(hub, tmp_path: Path) -> None:
    """The client's own metadata request is checked too, not only biozoo's earlier one (no check-then-use gap)."""
    _, commit = _publish(tmp_path, "lab/hostile-etag-later")
    lie = {"etag": {"model.safetensors": f"{UP}/LATE_OWNED"}, "honest_heads": 1}
    with hub.server.misbehave(**lie), pytest.raises(HubError, match="not a blob hash"):
        biozoo.load(f"hf://lab/hostile-etag-later@{commit}")
    assert _outside(tmp_path, "LATE_OWNED") == []


def test_lfs_etag_must_equal_the_manifest_sha256(hub, tmp_path: Path) -> None:
    _, commit = _publish(tmp_path, "lab/hostile-sha")
    since = len(hub.server.request_log)
    with hub.server.misbehave(etag={"model.safetensors": "f" * 64}), pytest.raises(HubError) as info:
        biozoo.load(f"hf://lab/hostile-sha@{commit}")
    assert f"sha256 {'f' * 64}, but the manifest says" in str(info.value)
    assert _gets(hub.server, since, "model.safetensors") == []  # refused before downloading


def test_pinned_commit_must_be_the_one_served(hub, tmp_path: Path) -> None:
    """C2a / item 11: asked for commit A, the endpoint serves B -> refused, and B is not filed in the cache."""
    _, first = _publish(tmp_path, "lab/hostile-pin", description="good")
    _, second = _publish(tmp_path, "lab/hostile-pin", description="EVIL VERSION")
    with hub.server.misbehave(serve_commit={first: second}), pytest.raises(HubError) as info:
        biozoo.load(f"hf://lab/hostile-pin@{first}")
    assert f"pinned to commit {first}, but {hub.url} served commit {second}" in str(info.value)
    assert not (hub.cache_dir / "models--lab--hostile-pin" / "snapshots" / second).exists()
    assert biozoo.info(f"hf://lab/hostile-pin@{first}")["manifest"]["description"] == "good"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (f"hf://lab/hostile-rev@{UP}/REF_OWNED", "'..' part"),
        (f"hf://lab/hostile-rev@main/../{UP}/REF_OWNED", "'..' part"),
        ("hf://lab/hostile-rev@main//x", "empty"),
        ("hf://lab/hostile-rev@./main", "'.'"),
        ("hf://lab/hostile-rev@main\\..\\x", "may not"),
        ("hf://lab/a..b", "'..' or '--'"),
        ("hf://lab/a--b", "'..' or '--'"),
        ("hf://lab/tiny.git", "'.git'"),
    ],
)
def test_revision_and_repo_id_that_could_leave_the_cache_are_refused(
    hub, tmp_path: Path, source: str, reason: str
) -> None:
    """C5a / C5: the revision becomes refs/<revision>; a lenient endpoint would answer any of these."""
    _publish(tmp_path, "lab/hostile-rev")
    with hub.server.misbehave(any_revision=True), pytest.raises(HubError) as info:
        biozoo.load(source)
    assert reason in str(info.value) and "hint:" in str(info.value)
    assert _outside(tmp_path, "REF_OWNED") == []


@pytest.mark.parametrize("revision", ["/etc/x", "/", "", "main/", "a/./b", ".hidden", "-x", "x.lock", "x."])
def test_revision_that_is_absolute_or_not_a_git_ref_is_refused_without_any_request(revision: str) -> None:
    """Checked by parsing alone (no server): an absolute revision would make refs/<revision> any file."""
    with pytest.raises(HubError, match="not a valid Hub reference"):
        biozoo_hub.HubRef.parse(f"hf://lab/x@{revision}")


def test_manifest_weights_source_with_a_climbing_revision_is_refused(hub, tmp_path: Path) -> None:
    _publish(tmp_path, "lab/hostile-manifest")
    local = tmp_path / "registry-entry"
    local.mkdir()
    data = tiny_manifest()
    data["weights"]["source"] = f"hf://lab/hostile-manifest@{UP}/FROM_MANIFEST"
    (local / "manifest.yaml").write_text(yaml.safe_dump(data))
    with hub.server.misbehave(any_revision=True), pytest.raises(ManifestError, match="weights.source.*'..' part"):
        biozoo.load(local)
    assert _outside(tmp_path, "FROM_MANIFEST") == []


def test_dropped_connection_is_a_one_line_error_and_a_retry_works(hub, tmp_path: Path) -> None:
    """C3: the connection dies half-way through the weights (every time, also when the client resumes)."""
    _, commit = _publish(tmp_path, "lab/hostile-drop")
    with hub.server.misbehave(drop_after={"model.safetensors": 100}), pytest.raises(HubError) as info:
        biozoo.load(f"hf://lab/hostile-drop@{commit}")
    assert "\n" not in info.value.message
    assert f"the connection to {hub.url} broke while downloading model.safetensors" in info.value.message
    assert "run the command again" in str(info.value.hint)
    assert biozoo.load(f"hf://lab/hostile-drop@{commit}").zoo.report.parameters > 0


def test_cli_reports_a_dropped_connection_without_a_traceback(hub, tmp_path: Path) -> None:
    """What the adversary saw as a 468-line traceback, through `zoo load` itself."""
    _, commit = _publish(tmp_path, "lab/hostile-drop-cli")
    with hub.server.misbehave(drop_after={"model.safetensors": 100}):
        proc = subprocess.run(
            [sys.executable, "-m", "biozoo.cli.app", "load", f"hf://lab/hostile-drop-cli@{commit}"],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ),
        )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error: the connection to" in proc.stderr and "broke while downloading model.safetensors" in proc.stderr


def test_announced_size_bigger_than_the_manifest_stops_the_download(hub, tmp_path: Path) -> None:
    """C6: the manifest's size is compared with the announced size before downloading; nothing big is cached."""
    folder, commit = _publish(tmp_path, "lab/hostile-big", with_size=True)
    size = (folder / "model.safetensors").stat().st_size
    since = len(hub.server.request_log)
    with hub.server.misbehave(extra_bytes={"model.safetensors": 1 << 20}), pytest.raises(HubError) as info:
        biozoo.load(f"hf://lab/hostile-big@{commit}")
    assert f"is {size + (1 << 20)} bytes" in str(info.value) and f"the manifest says {size} bytes" in str(info.value)
    assert _gets(hub.server, since, "model.safetensors") == []
    cached = [p for p in hub.cache_dir.rglob("*") if p.is_file() and not p.is_symlink()]
    assert all(p.stat().st_size <= size for p in cached)


def test_full_disk_while_downloading_is_reported_as_a_full_disk(hub) -> None:
    """C7 / item 16: ENOSPC inside a download names the cache folder and HF_HUB_CACHE, not the network."""
    ref = biozoo_hub.HubRef("lab/x", None)
    assert errno.ENOSPC in biozoo_hub.DISK_FULL and errno.EFBIG in biozoo_hub.DISK_FULL
    for code in biozoo_hub.DISK_FULL:
        with pytest.raises(HubError) as info, biozoo_hub._translate(ref, "model.safetensors"):
            raise OSError(code, os.strerror(code))
        text = str(info.value)
        assert "is full" in text and str(hub.cache_dir) in text and "HF_HUB_CACHE" in text
        assert "cannot reach" not in text and "network" not in text


@pytest.mark.parametrize("layout", ["snapshots/m1", "models--lab--x/snapshots/" + "a" * 40])
@pytest.mark.parametrize("same_content", [True, False])
def test_folder_under_a_snapshots_directory_is_not_trusted_as_hub_cache(
    tmp_path: Path, layout: str, same_content: bool
) -> None:
    """A2s: a local folder that merely looks like a Hub snapshot keeps its links inside itself, and a refused link
    reveals nothing (size, sha256) about the file it points to."""
    folder = write_model(tmp_path / "a2" / layout)
    snapshots = next(p for p in folder.parents if p.name == "snapshots")
    secret = snapshots.parent / "secret" / "model.safetensors"  # beside snapshots/: what was trusted before
    secret.parent.mkdir()
    shutil.move(folder / "model.safetensors", secret)
    if not same_content:
        from safetensors.torch import save_file

        save_file(random_state(tiny_manifest(), seed=1), secret)
    (folder / "model.safetensors").symlink_to(secret)
    with pytest.raises(ManifestError, match="outside the model folder") as info:
        biozoo.load(folder)
    text = str(info.value)
    assert hashlib.sha256(secret.read_bytes()).hexdigest() not in text
    assert str(secret.stat().st_size) not in text
