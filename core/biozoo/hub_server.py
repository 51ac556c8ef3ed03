"""A small Hugging Face Hub-compatible HTTP server (stdlib only): ``zoo hub serve`` and the tests' Hub.

Why: air-gapped labs and CI need somewhere to ``zoo publish`` to and ``zoo load hf://ORG/NAME@REV`` from
(``HF_ENDPOINT=http://host:port``), with the *stock* ``huggingface_hub`` client; and biozoo's own tests must
exercise that client without mocks or internet. One server serves both. It speaks the subset of the Hub API the
client uses for create/upload/list/download. Deliberate choices, each forced by the 2.x client:

* preupload always answers ``uploadMode: "regular"``: any "lfs" answer makes a client with ``hf_xet`` installed
  upload through xet, which this server does not speak. Files therefore travel base64-encoded in the NDJSON commit
  (so one commit is held in memory while it is applied; ``max_upload`` bounds it).
* Files whose suffix is listed in the initial ``.gitattributes`` are still *reported* as LFS files (sha256,
  pointer blob id, ``X-Linked-Etag``), like on the real Hub; they are simply not *uploaded* through LFS.
* No ``X-Xet-Hash`` / ``xetHash`` is ever sent, so downloads stay on plain HTTP.
* Responses use HTTP/1.0 (one request per connection), so after :meth:`HubServer.stop` no pooled keep-alive
  connection can keep talking to a "stopped" server: the URL really refuses connections.

State (repos, refs, commits) is kept in memory and mirrored to ``root/state.json`` after every change; file
contents are stored once under ``root/blobs/<sha256>``. Names sent by clients (repositories, revisions, file
paths) never become file names: only the sha256 of uploaded content does. A new server on the same root sees the
previous data; two servers on one root at once are refused (a lock file).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import hmac
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, unquote, urlsplit

from biozoo.errors import BiozooError
from biozoo.manifest.paths import check_relative_path

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack", ".gguf", ".npy", ".npz")
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()
INVALID_TOKEN = "Invalid credentials in Authorization header"  # the client maps exactly this text to a plain 401
NEEDS_TOKEN = "This Hub requires a token: set HF_TOKEN to the token `zoo hub serve --token` was given"
MAX_JSON_BODY = 8 * 1024 * 1024  # create/preupload/paths-info bodies: a few KiB in practice
MAX_DISCARD = 64 * 2**20  # a refused body up to this size is read and dropped, so its sender gets the 413
DEFAULT_MAX_UPLOAD = 4 * 1024**3  # one commit's body (files base64-encoded inside)
MAX_PATH_CHARS = 1000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
FileEntry = dict[str, Any]  # {"sha256", "size", "gitOid" (git sha1 of the content), "lfs": bool}
Repo = dict[str, Any]  # {"type", "id", "private", "createdAt", "branches", "tags", "commits"}


class HubServeError(BiozooError):
    """The server cannot start: the root is unusable or taken, or the port is in use."""


def git_sha1(data: bytes) -> str:
    """Git blob id of ``data`` (what the Hub reports as ``oid``/``blobId`` for non-LFS files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file whose git blob id the Hub reports for LFS files."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class ApiError(Exception):
    """An HTTP error answer; ``code`` becomes ``X-Error-Code``, which the client maps to its exception classes."""

    def __init__(self, status: int, message: str, code: str | None = None, **headers: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers


def check_repo_id(repo_id: str) -> None:
    """Refuse a repository id the real Hub would refuse (``..``, ``--``, non-ASCII, ...): 400."""
    from biozoo.manifest.schema import hf_source_problem

    if hf_source_problem(f"hf://{repo_id}"):
        raise ApiError(400, f"Invalid repo id {repo_id!r}: use ORG/NAME with ASCII letters, digits, '_', '-', '.'")


def check_ref_name(name: str) -> None:
    """Refuse a branch or tag name git would refuse (empty, '.', '..' parts, '.lock' endings, ...): 400."""
    from biozoo.manifest.schema import hf_source_problem

    if not name or hf_source_problem(f"hf://a/b@{name}"):
        raise ApiError(400, f"Invalid branch or tag name {name!r}")


def check_file_path(path: str) -> str:
    """A file path in a repository: relative, '/'-separated, no empty/'.'/'..' parts, no control characters."""
    try:
        check_relative_path(path)
    except ValueError as exc:
        raise ApiError(400, f"Invalid path in commit: {exc}") from None
    if len(path) > MAX_PATH_CHARS or any(p in ("", ".", "..") for p in path.split("/")) or not path.isprintable():
        raise ApiError(400, f"Invalid path in commit: {path!r}")
    return path


@dataclass
class FileAnswer:
    """What ``/resolve/`` answers for one file: the commit, the stored entry, the announced size and ETag."""

    commit: str
    entry: FileEntry
    size: int
    etag: str
    stop_after: int | None = None  # send at most this many bytes of the body, then close (only a test hub does)


class HubServer:
    """Git-like Hub: repos with commits, branches and tags under ``root``, served on ``host:port`` from a thread.

    ``token``: required (``Authorization: Bearer``) for every write, and for reads too with ``protect_reads``;
    a wrong token is always refused. ``log``: a stream for one access line per request (``zoo hub serve``).
    """

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        username: str = "local",
        *,
        protect_reads: bool = False,
        max_upload: int = DEFAULT_MAX_UPLOAD,
        log: IO[str] | None = None,
    ) -> None:
        self.root, self.host, self.port, self.token, self.username = Path(root), host, port, token, username
        self.protect_reads, self.max_upload, self.log = protect_reads, max_upload, log
        if protect_reads and not token:
            raise HubServeError("protecting reads needs a token", "give one with --token")
        if self.root.exists() and not self.root.is_dir():
            raise HubServeError(f"the root {self.root} is not a folder", "give a folder (new or used before) to --root")
        self.blobs = self.root / "blobs"
        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problem = f"cannot create {self.blobs}: {exc.strerror or exc}"
            raise HubServeError(problem, "choose a writable --root") from None
        self._lock = threading.RLock()
        self._counter = 0
        self._repos: dict[str, Repo] = self._load()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._root_lock: IO[bytes] | None = None

    # ----------------------------------------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> HubServer:
        """Serve in a daemon thread. After :meth:`stop` it restarts on the same port (simulates recovery)."""
        if self._httpd is not None:
            return self
        self._take_root()
        try:
            server_class = _IPv6Server if ":" in self.host else ThreadingHTTPServer
            httpd = server_class((self.host, self.port), _Handler)
        except OSError as exc:
            self._release_root()
            if exc.errno == errno.EADDRINUSE:
                raise HubServeError(
                    f"port {self.port} on {self.host} is in use", "choose another --port, or --port 0 for a free one"
                ) from None
            problem = f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            raise HubServeError(problem, "check --host and --port") from None
        httpd.daemon_threads = True
        httpd.hub = self  # type: ignore[attr-defined]
        self.port = httpd.server_address[1]
        self._repos = self._load()  # what the previous server on this root left
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket: the URL then refuses connections (an outage)."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None
        self._release_root()

    def wait(self) -> None:
        """Block until the server stops; Ctrl-C (KeyboardInterrupt) interrupts the wait (short joins keep it so)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """Refuse connections inside the block, then come back on the same URL with the same data."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _take_root(self) -> None:
        """One live server per root: two would overwrite each other's ``state.json``."""
        handle = open(self.root / ".lock", "ab")  # noqa: SIM115 - held open while serving
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no fcntl (Windows): unguarded
            pass
        except OSError:
            handle.close()
            raise HubServeError(
                f"another hub server is serving {self.root}", "stop it, or give this one another --root"
            ) from None
        self._root_lock = handle

    def _release_root(self) -> None:
        if self._root_lock is not None:
            self._root_lock.close()  # closing releases the flock
            self._root_lock = None

    # ------------------------------------------------------------------------------------------------ storage
    def _load(self) -> dict[str, Repo]:
        state = self.root / "state.json"
        if not state.exists():
            return {}
        try:
            data = json.loads(state.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            hint = "restore it from a backup, or use a new --root"
            raise HubServeError(f"{state} is unreadable: {exc}", hint) from None
        if not isinstance(data, dict):
            raise HubServeError(f"{state} is not a hub state", "use a new --root")
        return data

    def _save(self) -> None:
        from biozoo.utils.atomic import atomic_write_text

        atomic_write_text(self.root / "state.json", json.dumps(self._repos))

    def _put_blob(self, path: str, data: bytes) -> FileEntry:
        sha = hashlib.sha256(data).hexdigest()
        target = self.blobs / sha
        if not target.exists():
            tmp = self.blobs / f"{sha}.{threading.get_ident()}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return {"sha256": sha, "size": len(data), "gitOid": git_sha1(data), "lfs": path.endswith(LFS_SUFFIXES)}

    def read_file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bytes:
        """Server-side view of a file (for assertions that do not go through the client)."""
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            entry = repo["commits"][self._resolve(repo, revision)]["files"][path]
        return (self.blobs / entry["sha256"]).read_bytes()

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self._repos.get(f"{repo_type}:{repo_id}")
        if repo is None:
            raise ApiError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _resolve(self, repo: Repo, rev: str) -> str:
        """Branch, tag, ``refs/heads|tags/...``, full commit id or an unambiguous >=7-char prefix -> commit id."""
        for prefix, table in (("refs/heads/", repo["branches"]), ("refs/tags/", repo["tags"])):
            if rev.startswith(prefix) and rev[len(prefix) :] in table:
                return table[rev[len(prefix) :]]
        if rev in repo["branches"]:
            return repo["branches"][rev]
        if rev in repo["tags"]:
            return repo["tags"][rev]
        if rev in repo["commits"]:
            return rev
        matches = [c for c in repo["commits"] if len(rev) >= 7 and c.startswith(rev.lower())]
        if len(matches) == 1:
            return matches[0]
        raise ApiError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def _new_commit(self, repo: Repo, parent: str | None, files: dict[str, FileEntry], title: str, msg: str) -> str:
        self._counter += 1
        date = _now()
        seed = json.dumps([repo["id"], parent, files, title, msg, date, self._counter, os.urandom(8).hex()])
        cid = hashlib.sha1(seed.encode()).hexdigest()
        repo["commits"][cid] = {"parent": parent, "title": title, "message": msg, "date": date, "files": files}
        return cid

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{URL_PREFIXES[repo_type]}{repo_id}"

    # ------------------------------------------------------------------------------------ API implementations
    def create_repo(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        repo_type = body.get("type") or "model"
        name, namespace = str(body.get("name") or ""), str(body.get("organization") or self.username)
        if repo_type not in URL_PREFIXES:
            raise ApiError(400, f"Invalid repo type: {repo_type!r}")
        repo_id = f"{namespace}/{name}"
        check_repo_id(repo_id)
        answer = {"url": self.repo_url(repo_type, repo_id), "name": repo_id, "id": repo_id}
        with self._lock:
            key = f"{repo_type}:{repo_id}"
            if key in self._repos:  # the body must still carry "url": create_repo(exist_ok=True) reads it
                return 409, {"error": "You already created this repo", **answer}
            private = bool(body.get("private")) or body.get("visibility") == "private"
            repo: Repo = dict(type=repo_type, id=repo_id, private=private, createdAt=_now(), branches={}, tags={})
            repo["commits"] = {}
            files = {".gitattributes": self._put_blob(".gitattributes", GITATTRIBUTES)}
            repo["branches"]["main"] = self._new_commit(repo, None, files, "initial commit", "")
            self._repos[key] = repo
            self._save()
        return 200, answer

    def delete_repo(self, body: dict[str, Any]) -> None:
        repo_id = f"{body.get('organization') or self.username}/{body.get('name')}"
        with self._lock:
            self._repo(body.get("type") or "model", repo_id)
            del self._repos[f"{body.get('type') or 'model'}:{repo_id}"]
            self._save()

    def commit(self, repo: Repo, rev: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
        """Apply an NDJSON commit (header, file, lfsFile, deletedFile, deletedFolder) on top of a branch."""
        branch = rev.removeprefix("refs/heads/")
        with self._lock:
            if branch not in repo["branches"]:
                self._resolve(repo, rev)  # RevisionNotFound if unknown, else it is a tag/commit:
                raise ApiError(400, f"Can only commit to a branch, not to {rev!r}")
            head = repo["branches"][branch]
            header = next((ln["value"] for ln in lines if ln.get("key") == "header"), {})
            parent = header.get("parentCommit")
            if parent and parent != head:
                raise ApiError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo["commits"][head]["files"])
            for line in lines:
                key, value = line.get("key"), line.get("value") or {}
                if key == "header":
                    continue
                path = check_file_path(str(value.get("path", "")).strip("/"))
                if key == "file":
                    files[path] = self._put_blob(path, base64.b64decode(value["content"], validate=True))
                elif key == "lfsFile":  # only for content the server already has (e.g. CommitOperationCopy)
                    oid = str(value.get("oid"))
                    blob = self.blobs / oid if _SHA256.match(oid) else None  # never a client-chosen file name
                    if blob is None or not blob.is_file():
                        raise ApiError(400, f"LFS object {oid!r} was never uploaded (uploads are regular)")
                    files[path] = self._put_blob(path, blob.read_bytes())
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise ApiError(404, f"File {path} does not exist", "EntryNotFound")
                elif key == "deletedFolder":
                    files = {p: f for p, f in files.items() if not p.startswith(path + "/")}
                else:
                    raise ApiError(400, f"Unknown commit operation {key!r}")
            cid = self._new_commit(
                repo, head, files, str(header.get("summary", "")), str(header.get("description", ""))
            )
            repo["branches"][branch] = cid
            self._save()
        url = f"{self.repo_url(repo['type'], repo['id'])}/commit/{cid}"
        return {"success": True, "commitOid": cid, "commitUrl": url, "pullRequestUrl": None}

    def info(self, repo: Repo, cid: str, blobs: bool) -> dict[str, Any]:
        commit = repo["commits"][cid]
        siblings = []
        for path, f in sorted(commit["files"].items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=f["size"], blobId=_blob_id(f))
                if f["lfs"]:
                    sibling["lfs"] = {"sha256": f["sha256"], "size": f["size"], "pointerSize": _pointer_size(f)}
            siblings.append(sibling)
        info = {"id": repo["id"], "author": repo["id"].split("/")[0], "sha": cid, "private": repo["private"]}
        return {**info, "createdAt": repo["createdAt"], "lastModified": commit["date"], "siblings": siblings}

    def tree(self, files: dict[str, FileEntry], prefix: str, recursive: bool) -> list[dict[str, Any]]:
        """Tree listing below ``prefix``; directories are derived from file paths (git has no empty dirs)."""
        base = f"{prefix}/" if prefix else ""
        below = {p: f for p, f in files.items() if p.startswith(base)}
        if prefix and not below:
            raise ApiError(404, f"{prefix} does not exist or is not a directory", "EntryNotFound")
        dirs: set[str] = set()
        out_files: list[str] = []
        for path in below:
            parts = path[len(base) :].split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                dirs.add(base + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                out_files.append(path)
        return [_dir_entry(files, d) for d in sorted(dirs)] + [_file_entry(p, files[p]) for p in sorted(out_files)]

    def refs(self, repo: Repo) -> dict[str, Any]:
        def fmt(kind: str, table: dict[str, str]) -> list[dict[str, str]]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": c} for n, c in sorted(table.items())]

        branches, tags = fmt("heads", repo["branches"]), fmt("tags", repo["tags"])
        return {"branches": branches, "tags": tags, "converts": [], "pullRequests": []}

    def history(self, repo: Repo, cid: str | None) -> list[dict[str, Any]]:
        out = []
        while cid is not None:
            c = repo["commits"][cid]
            fields = {k: c[k] for k in ("title", "message", "date")}
            out.append({"id": cid, **fields, "authors": [{"user": self.username, "avatar": None}]})
            cid = c["parent"]
        return out

    def set_ref(self, repo: Repo, kind: str, name: str, target: str | None) -> None:
        """Create (``target`` set) or delete (``target`` None) a branch or tag; 409 / 404 like the Hub."""
        table = repo["branches" if kind == "branch" else "tags"]
        with self._lock:
            if target is None:
                if name not in table:
                    raise ApiError(404, f"{kind} {name} not found", "RevisionNotFound")
                if kind == "branch" and name == "main":
                    raise ApiError(403, "Cannot delete the default branch")
                del table[name]
            else:
                check_ref_name(name)
                if name in table:
                    raise ApiError(409, f"{kind} {name!r} already exists")
                table[name] = self._resolve(repo, target)
            self._save()

    def file_answer(self, method: str, repo: Repo, rev: str, path: str) -> FileAnswer:
        """What ``/resolve/{rev}/{path}`` serves (a test hub overrides this to misbehave)."""
        cid = self._resolve(repo, rev)
        entry = repo["commits"][cid]["files"].get(path)
        if entry is None:  # X-Repo-Commit lets the client cache the non-existence
            raise ApiError(404, f"Entry {path} not found", "EntryNotFound", **{"X-Repo-Commit": cid})
        return FileAnswer(cid, entry, entry["size"], entry["sha256"] if entry["lfs"] else entry["gitOid"])

    def check_auth(self, method: str, segs: list[str], header: str | None) -> None:
        """With a token configured: a wrong bearer token is always 401, a missing one on writes (reads: if asked)."""
        if self.token is None:
            return
        if header is not None and not hmac.compare_digest(header.encode(), f"Bearer {self.token}".encode()):
            raise ApiError(401, INVALID_TOKEN)
        read_only_post = segs[:2] == ["api", "validate-yaml"] or segs[4:5] == ["paths-info"]
        writing = method in ("POST", "PUT", "DELETE") and not read_only_post
        if header is None and (writing or self.protect_reads):
            raise ApiError(401, f"You must be authenticated to perform this {'write ' if writing else ''}operation. "
                           + NEEDS_TOKEN)

    def record(self, method: str, path: str, status: int) -> None:
        """One access line per request on ``log`` (control characters escaped: a path cannot drive the terminal)."""
        if self.log is not None:
            with contextlib.suppress(OSError, ValueError):
                self.log.write(f"{_now()} {method} {_printable(path)} {status}\n")
                self.log.flush()


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _blob_id(f: FileEntry) -> str:
    return git_sha1(lfs_pointer(f["sha256"], f["size"])) if f["lfs"] else f["gitOid"]


def _pointer_size(f: FileEntry) -> int:
    return len(lfs_pointer(f["sha256"], f["size"]))


def _file_entry(path: str, f: FileEntry) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "oid": _blob_id(f), "size": f["size"], "path": path}
    if f["lfs"]:
        entry["lfs"] = {"oid": f["sha256"], "size": f["size"], "pointerSize": _pointer_size(f)}
    return entry


def _dir_entry(files: dict[str, FileEntry], path: str) -> dict[str, Any]:
    inner = sorted((p, _blob_id(f)) for p, f in files.items() if p.startswith(path + "/"))
    return {"type": "directory", "oid": hashlib.sha1(json.dumps(inner).encode()).hexdigest(), "size": 0, "path": path}


def _printable(text: str) -> str:
    """``text`` with control and non-ASCII characters escaped: safe in a header (no CR/LF) and on a terminal."""
    return "".join(c if c.isprintable() and c.isascii() else f"\\x{ord(c):02x}" for c in text)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to :class:`HubServer`; HTTP/1.0 so every connection closes after one response."""

    server_version = "biozoo-hub/1.0"
    timeout = 120  # seconds a silent client may hold a connection (and a thread)

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request goes through HubServer.record instead

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.hub.record(self.command, self.path, int(code) if isinstance(code, int) else 0)

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _discard(self, length: int) -> None:
        """Read and drop a refused body of up to ``MAX_DISCARD`` bytes; a larger one closes the connection."""
        if length > MAX_DISCARD:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)

    def _body(self, limit: int = MAX_JSON_BODY) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ApiError(400, "Negative Content-Length")
        if length > limit:
            self._discard(length)  # a client still sending would get a broken pipe instead of this answer
            raise ApiError(413, f"The request body is {length:,} bytes; this hub accepts at most {limit:,}")
        return self.rfile.read(length)

    def _json_body(self) -> dict[str, Any]:
        body = self._body()
        return json.loads(body) if body.strip() else {}

    def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        # Split *before* unquoting: revisions arrive quoted with safe="" ("refs%2Fpr%2F1" is one segment).
        segs = [unquote(s) for s in url.path.split("/")[1:]]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            self.hub.check_auth(self.command, segs, self.headers.get("Authorization"))
            self._route(self.command, segs, query)
        except ApiError as err:
            headers = {"X-Error-Message": _printable(err.message), **err.headers}
            if err.code:  # the client maps RepoNotFound / RevisionNotFound / EntryNotFound to its exceptions
                headers["X-Error-Code"] = err.code
            self._send(err.status, {"error": err.message}, headers)
        except (ValueError, KeyError, TypeError, IndexError) as err:  # malformed requests (binascii.Error too)
            self._send(400, {"error": f"Bad request: {err!r}"})
        except ConnectionError:  # the client went away: nobody to answer
            return
        except OSError as err:  # the disk under --root (full, read-only): say so rather than drop the connection
            self._send(507, {"error": f"The hub cannot store this: {err.strerror or err}"})
        except Exception as err:  # a server bug: answer (the client retries 5xx) rather than drop the connection
            self._send(500, {"error": f"biozoo hub bug: {err!r}"})

    def _route(self, method: str, segs: list[str], query: dict[str, str]) -> None:
        hub = self.hub
        if segs[:1] != ["api"]:
            return self._resolve_file(method, segs)
        if segs == ["api", "whoami-v2"]:
            if self.headers.get("Authorization") is None:
                raise ApiError(401, INVALID_TOKEN)
            auth = {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}
            return self._send(200, {"type": "user", "name": hub.username, "fullname": hub.username, "auth": auth})
        if segs == ["api", "validate-yaml"]:
            self._body()
            return self._send(200, {"errors": [], "warnings": []})
        if segs == ["api", "repos", "create"] and method == "POST":
            return self._send(*hub.create_repo(self._json_body()))
        if segs == ["api", "repos", "delete"] and method == "DELETE":
            hub.delete_repo(self._json_body())
            return self._send(200, {})
        if len(segs) < 4 or segs[1] not in REPO_TYPES:
            raise ApiError(404, f"Unknown endpoint {self.path}")
        repo_type, repo_id, rest = REPO_TYPES[segs[1]], f"{segs[2]}/{segs[3]}", segs[4:]
        with hub._lock:
            repo = hub._repo(repo_type, repo_id)
            op = rest[0] if rest else ""
            if method in ("GET", "HEAD") and op in ("", "revision") and len(rest) <= 2:
                cid = hub._resolve(repo, rest[1] if rest else "main")
                return self._send(200, hub.info(repo, cid, _truthy(query.get("blobs"))))
            if op == "refs" and method == "GET":
                return self._send(200, hub.refs(repo))
            if op == "commits" and method == "GET" and len(rest) == 2:
                return self._send(200, hub.history(repo, hub._resolve(repo, rest[1])))
            if op == "tree" and method == "GET" and len(rest) >= 2:
                files = repo["commits"][hub._resolve(repo, rest[1])]["files"]
                return self._send(200, hub.tree(files, "/".join(rest[2:]).strip("/"), _truthy(query.get("recursive"))))
            if op == "paths-info" and method == "POST" and len(rest) == 2:
                files = repo["commits"][hub._resolve(repo, rest[1])]["files"]
                form = parse_qs(self._body().decode())
                wanted = [p.strip("/") for p in form.get("paths", [])]
                listing = {e["path"]: e for e in hub.tree(files, "", recursive=True)}
                return self._send(200, [listing[p] for p in wanted if p in listing])
            if op == "preupload" and method == "POST" and len(rest) == 2:
                files = repo["commits"][hub._resolve(repo, rest[1])]["files"]
                # Always "regular" (see module docstring); "oid" lets the client skip unchanged files.
                answer = [
                    {"path": p, "uploadMode": "regular", "shouldIgnore": False, "oid": files.get(p, {}).get("gitOid")}
                    for p in (f["path"] for f in self._json_body().get("files", []))
                ]
                return self._send(200, {"files": answer})
        # Writes below take the (re-entrant) lock themselves; they may read the body without holding it.
        if op == "commit" and method == "POST" and len(rest) == 2:
            if _truthy(query.get("create_pr")):
                raise ApiError(501, "Pull requests are not supported by the biozoo hub")
            lines = [json.loads(line) for line in self._body(hub.max_upload).splitlines() if line.strip()]
            return self._send(200, hub.commit(repo, rest[1], lines))
        if op in ("branch", "tag") and len(rest) == 2 and method in ("POST", "DELETE"):
            body = self._json_body() if method == "POST" else {}
            if method == "DELETE":
                name, target = rest[1], None
            elif op == "tag":  # POST .../tag/{revision} {"tag": name}
                name, target = body.get("tag", ""), rest[1]
            else:  # POST .../branch/{name} {"startingPoint": revision}
                name, target = rest[1], body.get("startingPoint") or "main"
            hub.set_ref(repo, op, name, target)
            return self._send(200, {})
        raise ApiError(501, f"{method} {self.path} is not implemented by the biozoo hub")

    def _resolve_file(self, method: str, segs: list[str]) -> None:
        """``/{datasets/|spaces/}{ns}/{name}/resolve/{rev}/{path}`` with the headers hf_hub_download insists on."""
        repo_type = "model"
        if segs[:1] in (["datasets"], ["spaces"]):
            repo_type, segs = REPO_TYPES[segs[0]], segs[1:]
        if len(segs) < 5 or segs[2] != "resolve" or method not in ("GET", "HEAD"):
            raise ApiError(404, f"Unknown endpoint {self.path}")
        with self.hub._lock:
            repo = self.hub._repo(repo_type, f"{segs[0]}/{segs[1]}")
            answer = self.hub.file_answer(method, repo, segs[3], "/".join(segs[4:]))
        stored, size, etag = answer.entry["size"], answer.size, answer.etag
        headers = {"X-Repo-Commit": answer.commit, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"}
        if answer.entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(size)})
        start, end, status = 0, size - 1, 200
        spec = self.headers.get("Range", "")
        if spec.startswith("bytes=") and "," not in spec:
            first, _, last = spec[6:].partition("-")
            start, end = (size - int(last), size - 1) if not first else (int(first), int(last) if last else size - 1)
            start, end, status = max(start, 0), min(end, size - 1), 206
            if start >= size or start > end:
                raise ApiError(416, "Range not satisfiable", **{"Content-Range": f"bytes */{size}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(end - start + 1 if size else 0))
        self.end_headers()
        if method == "GET" and size:
            if answer.stop_after is not None:  # then the connection closes (HTTP/1.0)
                end = min(end, answer.stop_after - 1)
            with open(self.hub.blobs / answer.entry["sha256"], "rb") as fh:
                fh.seek(min(start, stored))
                remaining = min(end, stored - 1) - start + 1
                while remaining > 0 and (chunk := fh.read(min(remaining, 1 << 20))):
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
            padding = end - max(start, stored) + 1  # announced past the stored content (a test hub): zeros
            while padding > 0:
                self.wfile.write(bytes(min(padding, 1 << 20)))
                padding -= 1 << 20
