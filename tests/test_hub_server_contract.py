"""Contract tests: the stock ``huggingface_hub`` client (no mocks) against ``tests.support.hub_server``.

If the client changes its wire protocol (it did in 1.20, when xet uploads became unconditional), these tests are
the ones that should fail first.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import httpx2
import huggingface_hub
import pytest
import torch
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_session
from safetensors.torch import load_file, save_file

from tests.support.hub_server import HubServer, git_sha1

if TYPE_CHECKING:  # not imported at runtime: the module is loaded as a pytest plugin (assert rewriting)
    from tests.support.hub_fixture import HubClientEnv, MakeHubClient

README = b"---\nlicense: apache-2.0\nlibrary_name: biozoo\ntags:\n- biology\n---\n\n# tiny model\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    return sha256(Path(path).read_bytes())


def snapshot_hashes(folder: str | Path) -> dict[str, str]:
    root = Path(folder)
    return {p.relative_to(root).as_posix(): file_sha256(p) for p in root.rglob("*") if p.is_file()}


def test_client_is_pointed_at_test_hub(hub: HubClientEnv) -> None:
    assert HfApi().endpoint == hub.url
    assert hub.url == huggingface_hub.constants.ENDPOINT
    assert huggingface_hub.hf_hub_url("org/x", "a b.txt", revision="refs/pr/1").startswith(hub.url + "/org/x/")
    assert str(hub.cache_dir) == huggingface_hub.constants.HF_HUB_CACHE
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False


def test_full_round_trip(hub: HubClientEnv, tmp_path: Path) -> None:
    api = HfApi()
    repo_id = "biozoo-test/tiny-model"

    # create_repo, again with exist_ok (the 409 body must carry "url"), and a plain 409 without it
    url = api.create_repo(repo_id)
    assert url == f"{hub.url}/{repo_id}"
    assert url.repo_id == repo_id
    assert api.create_repo(repo_id, exist_ok=True).repo_id == repo_id
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(repo_id)
    assert conflict.value.response.status_code == 409

    # commit 1: upload_folder with a real ~1 MiB safetensors file, config.json and a README with front matter
    folder = tmp_path / "upload"
    folder.mkdir()
    weights = torch.randn(256, 1024, generator=torch.Generator().manual_seed(0))
    save_file({"w": weights, "b": torch.arange(7, dtype=torch.int64)}, folder / "model.safetensors")
    (folder / "config.json").write_bytes(json.dumps({"d_model": 1024, "version": 1}).encode())
    (folder / "README.md").write_bytes(README)
    assert (folder / "model.safetensors").stat().st_size > 1_000_000
    v1_files = snapshot_hashes(folder)
    c1 = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="commit one").oid
    assert len(c1) == 40

    # re-uploading unchanged files is skipped thanks to preupload's remote oid: no new commit
    assert api.upload_folder(repo_id=repo_id, folder_path=folder).oid == c1

    # commit 2: change config.json, add a nested file, on top of an explicit parent commit
    config2 = json.dumps({"d_model": 1024, "version": 2}).encode()
    extra = b'{"max_length": 32}'
    c2 = api.create_commit(
        repo_id,
        operations=[
            CommitOperationAdd("config.json", config2),
            CommitOperationAdd("generation/generation_config.json", extra),
        ],
        commit_message="commit two",
        commit_description="second change",
        parent_commit=c1,
    ).oid
    assert c2 != c1
    v2_files = {**v1_files, "config.json": sha256(config2), "generation/generation_config.json": sha256(extra)}

    # refs
    api.create_branch(repo_id, branch="dev", revision=c1)
    api.create_branch(repo_id, branch="dev", revision=c1, exist_ok=True)
    api.create_tag(repo_id, tag="v1", revision=c1, tag_message="first release")
    refs = api.list_repo_refs(repo_id)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": c2, "dev": c1}
    assert {t.name: (t.ref, t.target_commit) for t in refs.tags} == {"v1": ("refs/tags/v1", c1)}

    # history, newest first, back to the initial commit made by create_repo
    commits = api.list_repo_commits(repo_id)
    assert [c.commit_id for c in commits[:2]] == [c2, c1]
    assert [c.title for c in commits] == ["commit two", "commit one", "initial commit"]
    assert commits[0].message == "second change"
    assert [c.commit_id for c in api.list_repo_commits(repo_id, revision="v1")] == [c.commit_id for c in commits[1:]]

    # files at both commits (.gitattributes comes from repo creation, like on the Hub)
    assert sorted(api.list_repo_files(repo_id)) == sorted([".gitattributes", *v2_files])
    assert sorted(api.list_repo_files(repo_id, revision=c1)) == sorted([".gitattributes", *v1_files])
    tree = {e.path: e for e in api.list_repo_tree(repo_id)}
    assert set(tree) == {".gitattributes", "README.md", "config.json", "model.safetensors", "generation"}
    assert isinstance(tree["generation"], huggingface_hub.hf_api.RepoFolder)

    # model_info at main and with files metadata at c1 (sizes, git blob ids, LFS sha256 for weights)
    assert api.model_info(repo_id).sha == c2
    assert huggingface_hub.model_info(repo_id, revision="dev").sha == c1  # module-level helper is patched too
    info = api.model_info(repo_id, revision=c1, files_metadata=True)
    assert info.sha == c1
    siblings = {s.rfilename: s for s in info.siblings or []}
    safetensors_bytes = (folder / "model.safetensors").read_bytes()
    assert siblings["model.safetensors"].size == len(safetensors_bytes)
    assert siblings["model.safetensors"].lfs is not None
    assert siblings["model.safetensors"].lfs.sha256 == v1_files["model.safetensors"]
    assert siblings["README.md"].lfs is None
    assert siblings["README.md"].blob_id == git_sha1(README)
    paths_info = api.get_paths_info(repo_id, ["config.json", "generation", "missing.txt"])
    assert [p.path for p in paths_info] == ["config.json", "generation"]
    assert paths_info[0].blob_id == git_sha1(config2)

    # hf_hub_download at a commit sha, branch, tag, with sha256 checks
    for revision, expected in [(c1, v1_files), ("main", v2_files), ("v1", v1_files), ("dev", v1_files), (c2, v2_files)]:
        path = hf_hub_download(repo_id, "config.json", revision=revision)
        assert file_sha256(path) == expected["config.json"], revision
        assert Path(path).is_relative_to(hub.cache_dir)
    weights_path = hf_hub_download(repo_id, "model.safetensors")
    assert file_sha256(weights_path) == v1_files["model.safetensors"]
    assert torch.equal(load_file(weights_path)["w"], weights)

    # snapshot_download, every file checked
    main_dir = snapshot_download(repo_id)
    assert Path(main_dir).name == c2
    assert snapshot_hashes(main_dir) == {**v2_files, ".gitattributes": snapshot_hashes(main_dir)[".gitattributes"]}
    assert snapshot_hashes(snapshot_download(repo_id, revision="v1")) == {
        **v1_files,
        ".gitattributes": snapshot_hashes(main_dir)[".gitattributes"],
    }

    # offline re-read from the cache: no request may reach the server
    requests_before = len(hub.server.request_log)
    with hub.offline():
        assert huggingface_hub.constants.is_offline_mode()
        assert file_sha256(hf_hub_download(repo_id, "config.json")) == sha256(config2)
        assert file_sha256(hf_hub_download(repo_id, "config.json", revision="v1")) == v1_files["config.json"]
        assert snapshot_hashes(snapshot_download(repo_id, revision="v1"))["model.safetensors"] == sha256(
            safetensors_bytes
        )
        with pytest.raises(LocalEntryNotFoundError):
            hf_hub_download(repo_id, "never-downloaded.txt")
    assert len(hub.server.request_log) == requests_before
    assert not huggingface_hub.constants.is_offline_mode()


def test_not_found_errors(hub: HubClientEnv) -> None:
    repo_id = "biozoo-test/errors"
    sha = hub.create_model_repo(repo_id, {"config.json": b"{}"})
    api = hub.api
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "config.json", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files(repo_id, revision="0" * 40)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("biozoo-test/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("biozoo-test/does-not-exist", "config.json")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.bin")
    # the 404 carried X-Repo-Commit, so the client cached the non-existence under that commit
    assert (hub.cache_dir / "models--biozoo-test--errors" / ".no_exist" / sha / "missing.bin").exists()
    assert api.file_exists(repo_id, "config.json") and not api.file_exists(repo_id, "missing.bin")
    assert api.repo_exists(repo_id) and not api.repo_exists("biozoo-test/does-not-exist")
    assert api.revision_exists(repo_id, sha[:10]) and not api.revision_exists(repo_id, "nope")


def test_stale_parent_commit_is_rejected(hub: HubClientEnv) -> None:
    repo_id = "biozoo-test/concurrent"
    first = hub.create_model_repo(repo_id, {"a.txt": b"1"})
    hub.create_model_repo(repo_id, {"a.txt": b"2"})
    with pytest.raises(HfHubHTTPError) as err:
        hub.api.create_commit(repo_id, [CommitOperationAdd("a.txt", b"3")], commit_message="x", parent_commit=first)
    assert err.value.response.status_code == 412
    assert hub.server.read_file(repo_id, "a.txt") == b"2"


def test_deletes_tree_and_ref_management(hub: HubClientEnv) -> None:
    api, repo_id = hub.api, "biozoo-test/deletes"
    files = {"weights/a.safetensors": b"A" * 10, "weights/sub/b.bin": b"B", "notes.txt": b"n", "keep.txt": b"k"}
    sha = hub.create_model_repo(repo_id, files)
    top = {e.path: type(e).__name__ for e in api.list_repo_tree(repo_id)}
    assert top == {
        ".gitattributes": "RepoFile",
        "keep.txt": "RepoFile",
        "notes.txt": "RepoFile",
        "weights": "RepoFolder",
    }
    nested = sorted(e.path for e in api.list_repo_tree(repo_id, "weights", recursive=True))
    assert nested == ["weights/a.safetensors", "weights/sub", "weights/sub/b.bin"]
    ops = [CommitOperationDelete("weights/"), CommitOperationDelete("notes.txt")]
    api.create_commit(repo_id, operations=ops, commit_message="delete")
    assert sorted(api.list_repo_files(repo_id)) == [".gitattributes", "keep.txt"]
    assert len(api.list_repo_files(repo_id, revision=sha)) == 5

    api.create_branch(repo_id, branch="feature/x", revision=sha)  # slash in a branch name arrives URL-quoted
    assert file_sha256(hf_hub_download(repo_id, "notes.txt", revision="feature/x")) == sha256(b"n")
    api.create_tag(repo_id, tag="old", revision=sha)
    with pytest.raises(HfHubHTTPError) as dup:
        api.create_tag(repo_id, tag="old")
    assert dup.value.response.status_code == 409
    api.delete_tag(repo_id, tag="old")
    api.delete_branch(repo_id, branch="feature/x")
    refs = api.list_repo_refs(repo_id)
    assert [b.name for b in refs.branches] == ["main"] and refs.tags == []
    with pytest.raises(RevisionNotFoundError):
        api.delete_branch(repo_id, branch="feature/x")

    api.delete_repo(repo_id)
    assert not api.repo_exists(repo_id)
    api.delete_repo(repo_id, missing_ok=True)


def test_dataset_repo_and_range_requests(hub: HubClientEnv) -> None:
    api, repo_id = hub.api, "biozoo-test/cells"
    payload = bytes(range(256)) * 40
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_file(path_or_fileobj=payload, path_in_repo="data/x.npy", repo_id=repo_id, repo_type="dataset")
    assert api.dataset_info(repo_id).id == repo_id
    path = hf_hub_download(repo_id, "data/x.npy", repo_type="dataset")
    assert file_sha256(path) == sha256(payload)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo_id)  # same id, wrong repo type

    url = huggingface_hub.hf_hub_url(repo_id, "data/x.npy", repo_type="dataset")
    head = get_session().head(url)
    assert head.status_code == 200
    assert head.headers["X-Linked-Etag"].strip('"') == sha256(payload)  # .npy is an LFS suffix
    assert int(head.headers["Content-Length"]) == len(payload)
    assert "X-Xet-Hash" not in head.headers  # would switch the client to xet downloads
    part = get_session().get(url, headers={"Range": "bytes=100-"})
    assert part.status_code == 206 and part.content == payload[100:]
    assert part.headers["Content-Range"] == f"bytes 100-{len(payload) - 1}/{len(payload)}"
    assert get_session().get(url, headers={"Range": "bytes=-5"}).content == payload[-5:]


def test_outage_falls_back_to_cache_then_recovers(hub: HubClientEnv) -> None:
    repo_id = "biozoo-test/outage"
    hub.create_model_repo(repo_id, {"config.json": b'{"a": 1}'})
    cached = hf_hub_download(repo_id, "config.json")
    snapshot = snapshot_download(repo_id)
    with hub.outage():
        with pytest.raises(httpx2.ConnectError):  # the client's transport error: nothing is listening
            hub.api.model_info(repo_id)
        assert hf_hub_download(repo_id, "config.json") == cached
        assert snapshot_download(repo_id) == snapshot
        # (an *uncached* file would be retried by the client for ~23 s of backoff before failing: not tested here)
    assert hub.api.model_info(repo_id).sha == Path(snapshot).name


def test_token_protected_server(tmp_path: Path, make_hub_client: MakeHubClient) -> None:
    with HubServer(tmp_path / "server", token="s3cret") as server:
        make_hub_client(server, token="wrong-token")
        with pytest.raises(HfHubHTTPError) as wrong:
            HfApi().create_repo("biozoo-test/private")
        assert wrong.value.response.status_code == 401
        assert not isinstance(wrong.value, RepositoryNotFoundError)
        with pytest.raises(HfHubHTTPError) as missing:
            HfApi(token=False).create_repo("biozoo-test/private")
        assert missing.value.response.status_code == 401
        with pytest.raises(HfHubHTTPError):
            HfApi().whoami()

        api = HfApi(token="s3cret")
        assert api.whoami()["name"] == server.username
        api.create_repo("biozoo-test/private")
        api.upload_file(path_or_fileobj=b"secret", path_in_repo="a.txt", repo_id="biozoo-test/private")
        assert server.read_file("biozoo-test/private", "a.txt") == b"secret"
        assert [r[2] for r in server.request_log if r[0] == "POST" and "/repos/create" in r[1]] == [401, 401, 200]


def test_state_survives_restart_on_same_root(tmp_path: Path, make_hub_client: MakeHubClient) -> None:
    with HubServer(tmp_path / "server") as first:
        api = make_hub_client(first).api
        api.create_repo("biozoo-test/persist")
        sha = api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="biozoo-test/persist").oid
    with HubServer(tmp_path / "server") as second:
        assert HfApi(endpoint=second.url).model_info("biozoo-test/persist").sha == sha
        assert second.read_file("biozoo-test/persist", "x.txt") == b"x"
