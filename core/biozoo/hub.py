"""Hugging Face Hub sources (``hf://ORG/NAME@REVISION``): fetch, publish, model cards.

All network access goes through the stock ``huggingface_hub`` client, so
``HF_ENDPOINT`` (a mirror or an in-house hub), ``HF_HUB_OFFLINE``, ``HF_TOKEN``,
the shared cache and its progress bars behave as users expect. Files are
fetched one by one (only what the manifest names) into the cache's snapshot
folder for the resolved commit, and their sha256 is checked on first use by
:mod:`biozoo.weights`. A failed network check never deletes a cached file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from biozoo.errors import HubError, ManifestError
from biozoo.manifest.io import MANIFEST_NAME, LocatedManifest, read_manifest
from biozoo.manifest.schema import COMMIT_RE, HF_SOURCE_RE, Manifest

CARD_NAME = "README.md"


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    revision: str | None

    @classmethod
    def parse(cls, uri: str) -> HubRef:
        match = HF_SOURCE_RE.match(uri)
        if not match:
            raise HubError(f"{uri!r} is not a Hub reference", "write it as hf://ORG/NAME@REVISION (revision optional)")
        return cls(match["repo"], match["revision"])

    @property
    def pinned(self) -> bool:
        return bool(self.revision and COMMIT_RE.match(self.revision))

    def __str__(self) -> str:
        return f"hf://{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@contextmanager
def _translate(ref: HubRef, what: str) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into errors that name the problem and the fix."""
    from huggingface_hub import errors

    try:
        yield
    except errors.RevisionNotFoundError:
        raise HubError(
            f"revision {ref.revision!r} does not exist in {ref.repo_id} on {endpoint()}",
            "check the commit, branch or tag (list them with `hf repo-refs` or on the Hub page)",
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
        raise HubError(f"the Hub at {endpoint()} answered with an error for {ref}: {exc}") from None
    except OSError as exc:  # connection refused, DNS, timeouts surfaced as OSError subclasses
        raise HubError(f"cannot reach {endpoint()} for {ref}: {exc}", "check the network or HF_ENDPOINT") from None


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def download(ref: HubRef, filename: str) -> Path:
    """One file of ``ref`` into the Hub cache.

    A pinned commit already in the cache is served without any network call.
    Otherwise, if the Hub cannot even be connected to, fail at once with a clear
    message instead of the client's ~20 s of retries.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if ref.pinned:
        try:
            return Path(hf_hub_download(ref.repo_id, filename, revision=ref.revision, local_files_only=True))
        except LocalEntryNotFoundError:
            pass
    if not _offline():
        problem = unreachable(endpoint())
        if problem:
            try:  # a cached copy of an unpinned revision is still better than nothing
                return Path(hf_hub_download(ref.repo_id, filename, revision=ref.revision, local_files_only=True))
            except LocalEntryNotFoundError:
                raise HubError(
                    f"cannot reach {endpoint()} ({problem}) and there is no cached copy of {filename} from {ref}",
                    "connect to the network (or set HF_ENDPOINT to a reachable mirror) and run the command again "
                    "once; after that it works offline",
                ) from None
    with _translate(ref, filename):
        return Path(hf_hub_download(ref.repo_id, filename, revision=ref.revision))


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


def fetch_model(ref: HubRef, files: bool = True) -> LocatedManifest:
    """Download a published model: its manifest, then (``files``) every file it names, all from one commit."""
    path = download(ref, MANIFEST_NAME)
    located = read_manifest(path, trusted_root=cache_repo_folder(path))
    commit = commit_of(located.folder)
    names = named_files(located.manifest) if files else []
    if names:
        fetch_files(HubRef(ref.repo_id, commit or ref.revision), names)
    return located


def fetch_files(ref: HubRef, filenames: list[str]) -> Path:
    """Download ``filenames`` from one commit; returns the snapshot folder they share."""
    folder: Path | None = None
    for name in filenames:
        path = download(ref, name)
        root = path.parents[len(Path(name).parts) - 1]
        if folder is not None and root != folder:
            raise HubError(f"{ref} changed while downloading (the branch moved)", "pin a commit: hf://ORG/NAME@<sha>")
        folder = root
    assert folder is not None
    return folder


def cache_repo_folder(path: Path) -> Path | None:
    """``models--org--name`` for a file inside a Hub cache snapshot (its links point into ``blobs/``)."""
    parts = path.absolute().parts
    if "snapshots" in parts:
        return Path(*parts[: parts.index("snapshots")])
    return None


def commit_of(folder: Path) -> str | None:
    """The commit a cached snapshot folder belongs to (``.../snapshots/<sha>/``)."""
    parts = folder.absolute().parts
    if "snapshots" in parts:
        candidate = parts[parts.index("snapshots") + 1]
        return candidate if COMMIT_RE.match(candidate) else None
    return None


# -- publishing --------------------------------------------------------------------------------------------------


def named_files(manifest: Manifest) -> list[str]:
    """Every file a manifest names relative to its folder (weights only when they are local)."""
    names = []
    if manifest.weights is not None and not manifest.weights.source.startswith("hf://"):
        prefix = "" if manifest.weights.source == "." else manifest.weights.source.rstrip("/") + "/"
        names += [prefix + f.path for f in manifest.weights.files]
    if manifest.test_vectors:
        names.append(manifest.test_vectors.file)
    if manifest.preprocessing:
        names += list(manifest.preprocessing.files.values())
    return sorted(set(names))


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


def model_card(manifest: Manifest) -> str:
    """A Hub model card: YAML metadata the Hub indexes, then a human summary."""
    import yaml

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
        "pip install biozoo " + " ".join(f"biozoo-{p}" for p in sorted(manifest.plugins) if p != "core"),
        "zoo load hf://ORG/NAME@COMMIT   # this repository",
        "zoo verify hf://ORG/NAME@COMMIT # re-run the stored test vectors",
        "```",
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
    names = files_to_publish(located)
    for item in located.manifest.weights.files if located.manifest.weights else []:
        prefix = "" if located.manifest.weights.source == "." else located.manifest.weights.source.rstrip("/") + "/"
        verify_file(located.file(prefix + item.path), WeightFile(path=item.path, sha256=item.sha256, size=item.size))
    ops = [CommitOperationAdd(path_in_repo=MANIFEST_NAME, path_or_fileobj=str(located.path))]
    ops += [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(located.file(n))) for n in names]
    ops.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=model_card(located.manifest).encode()))
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
