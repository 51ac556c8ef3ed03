"""`zoo hub serve`: the supported local Hub, run as users run it (a subprocess), driven by the stock client.

Publishing and loading go through the real `zoo publish` / `zoo load` with ``HF_ENDPOINT`` set, as in an
air-gapped lab or CI; names that would leave the root, and writes without the token, are refused.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

TINY = Path(__file__).resolve().parents[1] / "registry" / "core" / "tiny-transformer"
ZOO = [sys.executable, "-m", "biozoo.cli.app"]


@contextmanager
def serving(root: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run `zoo hub serve --root ROOT --port 0 ARGS` until the block ends (Ctrl-C); yields the HF_ENDPOINT."""
    log = root.parent / f"{root.name}-serve.log"
    with open(log, "a") as stderr:
        proc = subprocess.Popen(
            [*ZOO, "hub", "serve", "--root", str(root), "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, **(env or {})},
        )
    try:
        url = None
        assert proc.stdout is not None
        for line in proc.stdout:  # ends when the process exits: a server that cannot start fails the test
            if match := re.fullmatch(r"export HF_ENDPOINT=(http://\S+)", line.strip()):
                url = match[1]
                break
        assert url, f"no HF_ENDPOINT line; stderr:\n{log.read_text()}"
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 130, log.read_text()
    assert "stopped; the repositories stay in" in log.read_text()


def client_env(tmp_path: Path, url: str, token: str | None = None) -> dict[str, str]:
    """A fresh client environment pointed at ``url`` (own cache, no token unless given)."""
    home = tmp_path / f"hf-{len(list(tmp_path.glob('hf-*')))}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env |= {"HF_ENDPOINT": url, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub")}
    env |= {"HF_HUB_DISABLE_TELEMETRY": "1", "BIOZOO_CACHE": str(home / "biozoo")}
    env |= {"HF_TOKEN": token} if token else {}
    return env


def zoo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ZOO, *args], capture_output=True, text=True, timeout=300, env=env)


def publish(tmp_path: Path, url: str, repo: str, token: str | None = None) -> str:
    proc = zoo(client_env(tmp_path, url, token), "publish", str(TINY), "--repo", repo)
    assert proc.returncode == 0, proc.stderr
    return re.search(r"at commit ([0-9a-f]{40})", proc.stdout)[1]


def raw(url: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> int:
    """One HTTP request without the client (which refuses bad names itself); returns the status."""
    request = urllib.request.Request(url + path, data=body or None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_publish_load_pinned_and_survive_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "hub"
    with serving(root) as url:
        commit = publish(tmp_path, url, "lab/tiny")
        assert HfApi(endpoint=url, token=False).model_info("lab/tiny").sha == commit
        loaded = zoo(client_env(tmp_path, url), "load", f"hf://lab/tiny@{commit}")
        assert loaded.returncode == 0 and "loaded core/tiny-transformer" in loaded.stdout, loaded.stderr
        assert "sha256 ok" in loaded.stdout
    with serving(root) as url:  # a new process on the same root, a new port; a client with an empty cache
        env = client_env(tmp_path, url)
        assert not Path(env["HF_HUB_CACHE"]).exists()
        again = zoo(env, "verify", f"hf://lab/tiny@{commit}")
        assert again.returncode == 0 and "reproduces its test vectors" in again.stdout, again.stderr
        assert HfApi(endpoint=url, token=False).list_repo_commits("lab/tiny")[0].commit_id == commit


def test_token_is_required_for_writes(tmp_path: Path) -> None:
    with serving(tmp_path / "hub", env={"BIOZOO_HUB_TOKEN": "s3cret"}) as url:
        refused = zoo(client_env(tmp_path, url), "publish", str(TINY), "--repo", "lab/tiny")
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert refused.stderr.startswith("error: ") and "401" in refused.stderr
        assert "HF_TOKEN" in refused.stderr and "zoo hub serve --token" in refused.stderr
        assert "\nhint: " in refused.stderr, refused.stderr
        wrong = zoo(client_env(tmp_path, url, "guess"), "publish", str(TINY), "--repo", "lab/tiny")
        assert wrong.returncode == 1 and "401" in wrong.stderr
        commit = publish(tmp_path, url, "lab/tiny", token="s3cret")
        assert HfApi(endpoint=url, token=False).model_info("lab/tiny").sha == commit  # reads stay open


def test_protected_reads_need_the_token(tmp_path: Path) -> None:
    with serving(tmp_path / "hub", "--token", "s3cret", "--protect-reads") as url:
        commit = publish(tmp_path, url, "lab/tiny", token="s3cret")
        with pytest.raises(HfHubHTTPError) as refused:
            HfApi(endpoint=url, token=False).model_info("lab/tiny")
        assert refused.value.response.status_code == 401
        loaded = zoo(client_env(tmp_path, url, "s3cret"), "load", f"hf://lab/tiny@{commit}")
        assert loaded.returncode == 0, loaded.stderr


def _commit(url: str, repo: str, *lines: dict) -> int:
    body = "\n".join(json.dumps(line) for line in [{"key": "header", "value": {"summary": "x"}}, *lines])
    return raw(url, "POST", f"/api/models/{repo}/commit/main", body.encode(), {"Content-Type": "application/x-ndjson"})


def test_names_that_leave_the_root_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "hub"
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the hub")
    with serving(root) as url:
        HfApi(endpoint=url, token=False).create_repo("lab/box")
        for org, name in (("..", "x"), ("lab", ".."), ("lab", "a/../../b"), ("lab--x", "y"), ("lab", "x.git")):
            body = json.dumps({"organization": org, "name": name, "type": "model"}).encode()
            assert raw(url, "POST", "/api/repos/create", body, {"Content-Type": "application/json"}) == 400, name
        content = base64.b64encode(b"x").decode()
        for path in ("../../escape.txt", "/../x", "C:/x", "a/./b", "a\\..\\b", "a//b", "a\x1bb"):
            assert _commit(url, "lab/box", {"key": "file", "value": {"path": path, "content": content}}) == 400, path
        for oid in ("../state.json", str(secret), "../../secret.txt"):  # names a file of the server's: never read
            assert _commit(url, "lab/box", {"key": "lfsFile", "value": {"path": "s.txt", "oid": oid}}) == 400, oid
        assert raw(url, "POST", "/api/models/lab/box/branch/..%2F..%2Fx", b"{}") == 400
        assert raw(url, "POST", "/api/models/lab/box/tag/main", b'{"tag": "v1.lock"}') == 400
        files = HfApi(endpoint=url, token=False).list_repo_files("lab/box")
    assert files == [".gitattributes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub", "hub-serve.log", "secret.txt"]
    assert {p.name for p in root.iterdir()} <= {"blobs", "state.json", ".lock"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", p.name) for p in (root / "blobs").iterdir())


def test_bodies_over_the_limit_are_refused(tmp_path: Path) -> None:
    with serving(tmp_path / "hub", "--max-upload-mb", "1") as url:
        HfApi(endpoint=url, token=False).create_repo("lab/big")
        big = base64.b64encode(bytes(2 * 2**20)).decode()
        assert _commit(url, "lab/big", {"key": "file", "value": {"path": "big.bin", "content": big}}) == 413
        small = base64.b64encode(b"fits").decode()
        assert _commit(url, "lab/big", {"key": "file", "value": {"path": "small.bin", "content": small}}) == 200


def test_one_server_per_root(tmp_path: Path) -> None:
    with serving(tmp_path / "hub"):
        second = zoo(dict(os.environ), "hub", "serve", "--root", str(tmp_path / "hub"), "--port", "0")
    assert second.returncode == 1 and "another hub server is serving" in second.stderr, second.stderr
    assert "hint: " in second.stderr
