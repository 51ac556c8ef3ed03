"""Hugging Face Hub sources (``hf://ORG/NAME@REVISION``): fetch, publish, model cards.

All network access goes through the stock ``huggingface_hub`` client, so
``HF_ENDPOINT`` (a mirror or an in-house hub), ``HF_HUB_OFFLINE``, ``HF_TOKEN``,
the shared cache and its progress bars behave as users expect. Files are
fetched one by one (only what the manifest names) into the cache's snapshot
folder for the resolved commit, and their sha256 is checked on first use by
:mod:`biozoo.weights`. A failed network check never deletes a cached file.

The endpoint is not trusted (docs/security.md): what it announces for a file (commit, ETag, size) is checked
before the client writes anything, because huggingface_hub turns the ETag and the commit into file names.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biozoo.errors import HubError, ManifestError
from biozoo.manifest.io import MANIFEST_NAME, LocatedManifest, read_manifest
from biozoo.manifest.schema import COMMIT_RE, HF_SOURCE_RE, Manifest, WeightsSpec, hf_source_problem
from biozoo.utils.atomic import DISK_FULL

CARD_NAME = "README.md"
BLOB_ID_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")  # git sha1 (regular file) or sha256 (LFS file)


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    revision: str | None

    @classmethod
    def parse(cls, uri: str) -> HubRef:
        match = HF_SOURCE_RE.match(uri)
        if not match:
            raise HubError(
                hf_source_problem(uri) or f"{uri!r} is not a Hub reference",
                "write it as hf://ORG/NAME@REVISION (revision optional: a commit, branch or tag)",
            )
        return cls(match["repo"], match["revision"])

    @property
    def pinned(self) -> bool:
        return bool(self.revision and COMMIT_RE.match(self.revision))

    def __str__(self) -> str:
        return f"hf://{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@dataclass(frozen=True)
class FileCheck:
    """What the manifest promises about a file, checked against what the endpoint announces before downloading."""

    sha256: str | None = None
    size: int | None = None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP library's own errors (a dropped connection, a bad redirect): not OSError, so caught by name.

    huggingface_hub 2.x talks through ``httpx2``, 1.x through ``httpx``; whichever is installed is used.
    """
    import importlib

    found: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _cache_root() -> Path:
    """The Hub cache huggingface_hub writes to, as configured right now (HF_HUB_CACHE / HF_HOME)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


@contextmanager
def _translate(ref: HubRef, what: str) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into errors that name the problem and the fix."""
    from huggingface_hub import errors

    transport = _transport_errors()
    try:
        yield
    except errors.RevisionNotFoundError:
        raise HubError(
            f"revision {ref.revision!r} does not exist in {ref.repo_id} on {endpoint()}",
            f"check the commit, branch or tag: `hf repos tag list {ref.repo_id}` lists the tags; the repository's "
            "page on the Hub (or huggingface_hub.HfApi().list_repo_refs) lists branches, and its history the commits",
        ) from None
    except errors.RepositoryNotFoundError:
        raise HubError(
            f"repository {ref.repo_id} not found on {endpoint()} (or it is private and no token is set)",
            "check the name; for private repositories set HF_TOKEN",
        ) from None
    except errors.LocalEntryNotFoundError as exc:
        offline = _offline()
        reason = "offline mode is on (HF_HUB_OFFLINE=1)" if offline else f"cannot reach {endpoint()}"
        raise HubError(
            f"{reason} and there is no cached copy of {what} from {ref}",
            "connect to the network (or set HF_ENDPOINT to a reachable mirror) and run the command again once; "
            "after that it works offline" + ("" if ref.pinned else "; pin a commit (@<40 hex>) for offline use"),
        ) from exc
    except errors.EntryNotFoundError:
        raise HubError(
            f"{ref} has no file {what!r}", "is this a biozoo model repository? it needs manifest.yaml"
        ) from None
    except errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise HubError(
                f"the Hub at {endpoint()} refused {ref} ({status}): {exc}",
                "set HF_TOKEN to a token with access to this repository (write access to publish)",
            ) from None
        raise HubError(f"the Hub at {endpoint()} answered with an error for {ref}: {exc}") from None
    except OSError as exc:  # connection refused, DNS, timeouts surfaced as OSError subclasses; or the local disk
        if exc.errno in DISK_FULL:
            raise HubError(
                f"the disk holding the Hub cache {_cache_root()} is full ({exc.strerror or exc}) "
                f"while downloading {what} from {ref}",
                "free some space there (`zoo cache rm ORG/NAME` removes cached models) or set HF_HUB_CACHE "
                "to a folder on a disk with room, then run the command again",
            ) from None
        if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
            raise HubError(
                f"cannot write {what} from {ref} into the Hub cache {_cache_root()}: {exc.strerror or exc}",
                "make the folder writable or set HF_HUB_CACHE to a writable folder",
            ) from None
        raise HubError(f"cannot reach {endpoint()} for {ref}: {exc}", "check the network or HF_ENDPOINT") from None
    except transport as exc:  # not OSError: the connection broke mid-answer, or the endpoint misbehaved
        if type(exc).__name__ in ("ConnectError", "ConnectTimeout"):
            raise HubError(f"cannot reach {endpoint()} for {ref}: {exc}", "check the network or HF_ENDPOINT") from None
        raise HubError(
            f"the connection to {endpoint()} broke while downloading {what} from {ref} ({type(exc).__name__}: {exc})",
            "run the command again; if it keeps failing, check the network or HF_ENDPOINT",
        ) from None


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _normalize_etag(etag: str | None) -> str | None:
    """The ETag as huggingface_hub uses it: without a weak ``W/`` prefix and quotes."""
    return etag.removeprefix("W/").strip('"') if etag is not None else None


_HOSTILE = "the Hub endpoint {} is broken or hostile"
_HOSTILE_HINT = "do not use this endpoint: check HF_ENDPOINT and the network (see docs/security.md)"


def check_commit(ref: HubRef, filename: str, commit: str | None) -> None:
    """The commit an endpoint says it served: a 40-hex id (it becomes a folder name), the pinned one if pinned."""
    if commit is None or not COMMIT_RE.match(commit):
        said = "sent no commit (X-Repo-Commit)" if commit is None else f"names commit {commit!r}, not a 40-hex id,"
        raise HubError(f"{_HOSTILE.format(endpoint())}: it {said} for {filename} of {ref}", _HOSTILE_HINT)
    if ref.pinned and commit != ref.revision:
        raise HubError(
            f"{ref.repo_id} is pinned to commit {ref.revision}, but {endpoint()} served commit {commit} for {filename}",
            "the endpoint does not honour pinned commits; do not use it (check HF_ENDPOINT)",
        )


def check_served(
    ref: HubRef, filename: str, commit: str | None, etag: str | None, size: int | None, check: FileCheck
) -> None:
    """Refuse what an endpoint announces for ``filename`` unless it is safe and matches the manifest.

    Why: huggingface_hub 2.4 writes the download to ``blobs/<ETag>`` without checking the ETag, so an ETag like
    ``../../x`` writes anywhere (docs/security.md), and it files the commit as a folder name; only a blob hash and
    a commit id are safe file names. A pinned commit must be the one served, and a manifest's sha256/size must match the
    announcement, so a wrong or oversized file is never downloaded at all.
    """
    if etag is None:
        raise HubError(f"{_HOSTILE.format(endpoint())}: it sent no ETag for {filename} of {ref}", _HOSTILE_HINT)
    check_commit(ref, filename, commit)
    if not BLOB_ID_RE.match(etag):
        raise HubError(
            f"{_HOSTILE.format(endpoint())}: its ETag for {filename} of {ref} is {etag!r}, not a blob hash "
            "(40 or 64 hex digits); huggingface_hub would use it as a file name in the cache",
            _HOSTILE_HINT,
        )
    if check.sha256 and len(etag) == 64 and etag != check.sha256:
        raise HubError(
            f"{ref} serves {filename} with sha256 {etag}, but the manifest says {check.sha256}",
            "the repository does not hold the file its manifest names; nothing was downloaded",
        )
    if check.size is not None and size != check.size:
        announced = "does not announce its size" if size is None else f"is {size} bytes"
        raise HubError(
            f"{filename} of {ref} {announced} on {endpoint()}, but the manifest says {check.size} bytes; "
            "refusing to download it",
            "the repository does not hold the file its manifest names; nothing was downloaded",
        )


_EXPECTING: ContextVar[tuple[HubRef, str, FileCheck] | None] = ContextVar("biozoo_hub_expecting", default=None)


def _guard_response(response: Any) -> None:
    """Response hook on the client's shared HTTP session: checks the very answer hf_hub_download acts on.

    Why: checking a separate HEAD first leaves a window (a hostile server can answer the next HEAD differently);
    this hook sees the client's own metadata request. It does nothing outside :func:`download`.
    """
    expecting = _EXPECTING.get()
    if expecting is None or response.request.method != "HEAD":
        return
    headers = response.headers
    commit = headers.get("X-Repo-Commit")
    if commit is None:  # not a Hub answer (a CDN redirect target): the client itself refuses a file without one
        return
    ref, filename, check = expecting
    if response.status_code >= 400:  # the client still files the commit as a folder name (``.no_exist/<commit>``)
        return check_commit(ref, filename, commit)
    etag = _normalize_etag(headers.get("X-Linked-Etag") or headers.get("ETag"))
    size = headers.get("X-Linked-Size") or (None if response.is_redirect else headers.get("Content-Length"))
    check_served(ref, filename, commit, etag, _int_or_none(size), check)


@contextmanager
def _guarded(ref: HubRef, filename: str, check: FileCheck) -> Iterator[None]:
    """Install :func:`_guard_response` on the shared session and tell it what this download expects."""
    from huggingface_hub.utils import get_session

    session = get_session()
    hooks = session.event_hooks
    if _guard_response not in hooks["response"]:
        session.event_hooks = {**hooks, "response": [*hooks["response"], _guard_response]}
    token = _EXPECTING.set((ref, filename, check))
    try:
        yield
    finally:
        _EXPECTING.reset(token)


def _cached(ref: HubRef, filename: str) -> Path | None:
    """``filename`` of ``ref`` from the cache only (a branch through the cache's ``refs/``), or None."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(ref.repo_id, filename, revision=ref.revision, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def _from_cache(ref: HubRef, filename: str, problem: str) -> tuple[Path, str]:
    """The Hub cannot be used (``problem``): the cached copy, said so in the origin, or a clear error."""
    path = _cached(ref, filename)
    if path is None:
        raise HubError(
            f"{problem} and there is no cached copy of {filename} from {ref}",
            "connect to the network (or set HF_ENDPOINT to a reachable mirror) and run the command again "
            "once; after that it works offline",
        )
    return path, f"from the cache: {problem}"


def download(ref: HubRef, filename: str, check: FileCheck | None = None) -> tuple[Path, str | None]:
    """One file of ``ref`` into the Hub cache; returns its path and, when it came from the cache because the
    Hub could not be used, a note saying so (the CLI prints it with the origin).

    A pinned commit already in the cache is served without any network call. Otherwise, if the Hub cannot even
    be connected to, fail at once with a clear message instead of the client's ~20 s of retries. Before the
    client downloads, the endpoint's announcement is checked (:func:`check_served`).
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    check = check or FileCheck()
    if ref.pinned and (path := _cached(ref, filename)) is not None:
        return path, None
    if _offline():
        with _translate(ref, filename):
            path = Path(hf_hub_download(ref.repo_id, filename, revision=ref.revision))
        return path, None if ref.pinned else "from the cache: offline mode (HF_HUB_OFFLINE=1)"
    problem = unreachable(endpoint())
    if problem:  # a cached copy of an unpinned revision is still better than nothing
        return _from_cache(ref, filename, f"cannot reach {endpoint()} ({problem})")
    with _translate(ref, filename), _guarded(ref, filename, check):
        try:
            meta = get_hf_file_metadata(hf_hub_url(ref.repo_id, filename, revision=ref.revision))
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status < 500 and status != 429:
                raise
            return _from_cache(ref, filename, f"the Hub at {endpoint()} answered {status}")
        check_served(ref, filename, meta.commit_hash, meta.etag, meta.size, check)
        path = Path(hf_hub_download(ref.repo_id, filename, revision=ref.revision))
    check_commit(ref, filename, path.parents[len(Path(filename).parts) - 1].name)  # the snapshot it landed in
    return path, None


def unreachable(url: str, timeout: float = 5.0) -> str | None:
    """Why a TCP connection to the Hub's host fails, or None if it connects."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"


def fetch_model(ref: HubRef, files: bool = True) -> tuple[LocatedManifest, str]:
    """Download a published model: its manifest, then (``files``) every file it names, all from one commit.

    Returns the manifest and its origin (``hf://... (commit ...)``, saying when it came from the cache).
    """
    path, note = download(ref, MANIFEST_NAME)
    located = read_manifest(path, trusted_root=cache_repo_folder(path))
    commit = commit_of(located.folder)
    checks = file_checks(located.manifest) if files else {}
    if checks:
        fetch_files(HubRef(ref.repo_id, commit or ref.revision), checks)
    return located, origin(ref, located.folder, note)


def fetch_files(ref: HubRef, files: Mapping[str, FileCheck]) -> tuple[Path, str]:
    """Download ``files`` (name -> what the manifest says about it) from one commit.

    Returns the snapshot folder they share and its origin.
    """
    folder: Path | None = None
    notes = []
    for name, check in files.items():
        path, note = download(ref, name, check)
        notes.append(note)
        root = path.parents[len(Path(name).parts) - 1]
        if folder is not None and root != folder:
            raise HubError(f"{ref} changed while downloading (the branch moved)", "pin a commit: hf://ORG/NAME@<sha>")
        folder = root
    assert folder is not None
    return folder, origin(ref, folder, next((n for n in notes if n), None))


def origin(ref: HubRef, folder: Path, note: str | None = None) -> str:
    """``hf://ORG/NAME@REV (commit SHA[, from the cache: why])``: what ``zoo load`` prints as the origin."""
    return f"{ref} (commit {commit_of(folder) or '?'}" + (f", {note})" if note else ")")


def _snapshot(folder: Path) -> tuple[Path, str] | None:
    """(``models--org--name`` folder, commit) when ``folder`` is in a snapshot of the real Hub cache, else None.

    Why: only the cache huggingface_hub manages may link a model's files elsewhere (into its ``blobs/``); any
    other folder, even one under a directory named ``snapshots``, must keep its links inside itself.
    """
    root = _cache_root().resolve()
    try:
        parts = folder.absolute().resolve().relative_to(root).parts
    except (ValueError, OSError):
        return None
    if len(parts) >= 3 and parts[0].startswith("models--") and parts[1] == "snapshots" and COMMIT_RE.match(parts[2]):
        return root / parts[0], parts[2]
    return None


def cache_repo_folder(path: Path) -> Path | None:
    """``models--org--name`` for a file inside a snapshot of the Hub cache (its links point into ``blobs/``)."""
    found = _snapshot(Path(path).absolute().parent)
    return found[0] if found else None


def commit_of(folder: Path) -> str | None:
    """The commit a cached snapshot folder belongs to (``<HF_HUB_CACHE>/models--*/snapshots/<sha>/``)."""
    found = _snapshot(Path(folder))
    return found[1] if found else None


# -- publishing --------------------------------------------------------------------------------------------------


def _weights_prefix(spec: WeightsSpec) -> str:
    """The weights' folder relative to the manifest, as a prefix for their file names."""
    return "" if spec.source == "." else spec.source.rstrip("/") + "/"


def named_files(manifest: Manifest) -> list[str]:
    """Every file a manifest names relative to its folder (weights only when they are local)."""
    names = []
    if manifest.weights is not None and not manifest.weights.source.startswith("hf://"):
        prefix = _weights_prefix(manifest.weights)
        names += [prefix + f.path for f in manifest.weights.files]
    if manifest.test_vectors:
        names.append(manifest.test_vectors.file)
    if manifest.preprocessing:
        names += list(manifest.preprocessing.files.values())
    return sorted(set(names))


def file_checks(manifest: Manifest) -> dict[str, FileCheck]:
    """:func:`named_files` with what the manifest says about each (sha256, size) where it says anything."""
    checks = {name: FileCheck() for name in named_files(manifest)}
    if manifest.weights is not None and not manifest.weights.source.startswith("hf://"):
        prefix = _weights_prefix(manifest.weights)
        checks.update({prefix + f.path: FileCheck(f.sha256, f.size) for f in manifest.weights.files})
    if manifest.test_vectors:
        checks[manifest.test_vectors.file] = FileCheck(manifest.test_vectors.sha256)
    return checks


def files_to_publish(located: LocatedManifest) -> list[str]:
    """Every file the manifest names; the weights must be in the folder, not on the Hub."""
    manifest = located.manifest
    if manifest.weights is None:
        raise ManifestError("the manifest has no weights to publish", "convert the model first (`zoo convert`)")
    if manifest.weights.source.startswith("hf://"):
        raise ManifestError(
            "the manifest's weights point at the Hub, not at this folder",
            "set weights.source to '.' and put the files next to manifest.yaml",
        )
    return named_files(manifest)


def install_line(manifest: Manifest) -> str:
    """``pip install biozoo DIST...`` for the plugins a model needs, with distribution names read from the
    installed plugins' metadata (``biozoo-geneformer-mini``), never guessed from a plugin's namespace."""
    from biozoo.registry import get_registry

    registry = get_registry()
    dists, unknown = [], []
    for plugin in sorted(manifest.plugins - {"core"}):
        status = registry.plugin_status(plugin)
        (dists if status is not None else unknown).append(status.distribution if status is not None else plugin)
    line = " ".join(["pip install biozoo", *sorted(set(dists))])
    return line + (f"   # and the package of plugin(s) {', '.join(unknown)}" if unknown else "")


def model_card(manifest: Manifest, repo_id: str | None = None) -> str:
    """A Hub model card: YAML metadata the Hub indexes, then a human summary; ``repo_id`` fills its commands."""
    import yaml

    repo = repo_id or "ORG/NAME"
    meta = {
        "library_name": "biozoo",
        "license": _hub_license(manifest.license),
        "tags": sorted({"biozoo", *manifest.tags, *(p for p in manifest.plugins if p != "core")}),
    }
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {manifest.id}",
        "",
        manifest.description.strip() or "A biozoo model.",
        "",
        "## Use",
        "",
        "```bash",
        install_line(manifest),
        f"zoo load hf://{repo}@COMMIT",
        f"zoo verify hf://{repo}@COMMIT   # re-run the stored test vectors",
        "```",
        "",
        "COMMIT is the id of the commit you use (the Hub lists them under *Files and versions*): a pinned",
        "commit is checked on every load and never changes under you.",
        "",
        "## Model",
        "",
        f"- architecture: `{manifest.architecture.name}`",
        *[f"- {slot}: `{ref.name}`" for slot, ref in manifest.components.items()],
        f"- licence: {manifest.license}",
    ]
    if manifest.citation:
        lines += ["", "## Citation", "", "```", manifest.citation.strip(), "```"]
    return "\n".join(lines) + "\n"


def _hub_license(spdx: str) -> str:
    return spdx.lower() if re.match(r"^[A-Za-z0-9.\-]+$", spdx) else "other"


def publish(
    folder: Path | str, repo_id: str, *, revision: str | None = None, private: bool = False, message: str | None = None
) -> str:
    """Upload a model folder (manifest, files it names, a generated card); returns the commit id."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from biozoo.manifest.schema import WeightFile
    from biozoo.weights import verify_file

    located = read_manifest(folder)
    if located.manifest.metadata.get("redistributable") is False:
        raise ManifestError(
            f"{located.manifest.id} is marked not redistributable (licence: {located.manifest.license}); "
            "publishing it would share weights its licence does not let you share",
            "keep it local; others can convert their own copy (see the model's conversion instructions)",
        )
    names = files_to_publish(located)
    for item in located.manifest.weights.files if located.manifest.weights else []:
        prefix = _weights_prefix(located.manifest.weights)
        verify_file(located.file(prefix + item.path), WeightFile(path=item.path, sha256=item.sha256, size=item.size))
    ops = [CommitOperationAdd(path_in_repo=MANIFEST_NAME, path_or_fileobj=str(located.path))]
    ops += [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(located.file(n))) for n in names]
    card = model_card(located.manifest, repo_id).encode()
    ops.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card))
    ref = HubRef(repo_id, revision)
    api = HfApi()
    with _translate(ref, "the upload"):
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(
            repo_id,
            operations=ops,
            commit_message=message or f"Publish {located.manifest.id} with biozoo",
            revision=revision,
        )
    return info.oid
