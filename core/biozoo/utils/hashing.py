"""sha256 of files, remembered per (path, size, mtime, ctime, inode) so big files are hashed once.

The ctime is what makes the memo trustworthy: anyone who can write a file can
restore its mtime (``os.utime``), but the kernel sets the ctime on every write
and every ``utime``, and user space cannot set it back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from biozoo.utils.atomic import atomic_write_text

_CHUNK = 8 * 1024 * 1024


def cache_dir() -> Path:
    """biozoo's own small cache (hash memo); Hub files live in the Hugging Face cache."""
    root = os.environ.get("BIOZOO_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "biozoo"
    )
    return Path(root)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _signature(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"


class HashMemo:
    """Remembers files already verified, so a second load does not re-read them."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / "verified-sha256.json"
        self._data: dict[str, dict[str, str]] | None = None

    def _load(self) -> dict[str, dict[str, str]]:
        if self._data is None:
            try:
                self._data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self._data = {}
        return self._data

    def known(self, path: Path, sha256: str, checks: tuple[str, ...] = ()) -> bool:
        """Whether ``path`` is unchanged since it hashed to ``sha256`` and passed every one of ``checks``."""
        entry = self._load().get(str(path.resolve()))
        return (
            bool(entry)
            and entry.get("sha256") == sha256
            and entry.get("sig") == _signature(path)
            and set(checks) <= set(entry.get("checks", ()))
        )

    def digest(self, path: Path) -> str:
        """The file's sha256, from memory when the file is unchanged since it was last hashed."""
        entry = self._load().get(str(path.resolve()))
        if entry and entry.get("sig") == _signature(path) and entry.get("sha256"):
            return entry["sha256"]
        sha256 = sha256_file(path)
        self.remember(path, sha256)
        return sha256

    def remember(self, path: Path, sha256: str, checks: tuple[str, ...] = ()) -> None:
        """Record the file's hash and the content checks it passed (e.g. ``"finite"``)."""
        data = self._load()
        data[str(path.resolve())] = {"sha256": sha256, "sig": _signature(path), "checks": sorted(checks)}
        with contextlib.suppress(OSError):  # a read-only cache only costs a re-hash next time
            atomic_write_text(self.path, json.dumps(data))
