"""The tests' Hub: the supported server (:mod:`biozoo.hub_server`, ``zoo hub serve``) plus what only tests need.

Why a subclass and not a copy: the tests must exercise the very server users run. What is added here is test-only:
a log of every request (tests assert on traffic) and switchable misbehaviour of the file endpoint
(:class:`Hostile`), which a supported server must never have.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from biozoo.hub_server import ApiError, FileAnswer, Repo, git_sha1, lfs_pointer
from biozoo.hub_server import HubServer as _Server

__all__ = ["Hostile", "HubServer", "git_sha1", "lfs_pointer"]


@dataclass
class Hostile:
    """Switchable misbehaviour of the file endpoint (``/resolve/``), all off by default.

    Why: biozoo must refuse a broken or hostile endpoint (docs/security.md), and only a server that really
    misbehaves proves it does, without mocking the client. Keys are file paths in the repository.
    """

    etag: dict[str, str] = field(default_factory=dict)  # announce this ETag (and X-Linked-Etag) instead of the hash
    honest_heads: int = 0  # answer this many HEADs per file truthfully before lying (a server that changes its mind)
    serve_commit: dict[str, str] = field(default_factory=dict)  # asked for revision K, serve commit V (content too)
    any_revision: bool = False  # an unknown revision is served as main instead of 404 (a lenient mirror)
    drop_after: dict[str, int] = field(default_factory=dict)  # GET: stop after N bytes of the file, drop the line
    extra_bytes: dict[str, int] = field(default_factory=dict)  # announce and stream N zero bytes more than stored


class HubServer(_Server):
    """:class:`biozoo.hub_server.HubServer` with a request log and :meth:`misbehave`; quiet, user ``tester``."""

    def __init__(
        self, root: Path, host: str = "127.0.0.1", port: int = 0, token: str | None = None, username: str = "tester"
    ) -> None:
        super().__init__(root, host, port, token, username)
        self.request_log: list[tuple[str, str, int]] = []  # (method, path, status): lets tests assert traffic
        self.hostile = Hostile()
        self._heads: dict[str, int] = {}  # HEADs seen per file while misbehaving (for Hostile.honest_heads)

    def record(self, method: str, path: str, status: int) -> None:
        self.request_log.append((method, path, status))

    @contextmanager
    def misbehave(self, **behaviour: Any) -> Iterator[Hostile]:
        """``with server.misbehave(etag={"model.safetensors": "../x"}): ...`` (see :class:`Hostile`), then behave."""
        unknown = set(behaviour) - {f.name for f in fields(Hostile)}
        if unknown:
            raise TypeError(f"unknown hostile behaviour(s): {sorted(unknown)}")
        self.hostile, self._heads = Hostile(**behaviour), {}
        try:
            yield self.hostile
        finally:
            self.hostile, self._heads = Hostile(), {}

    def file_answer(self, method: str, repo: Repo, rev: str, path: str) -> FileAnswer:
        hostile = self.hostile
        rev = hostile.serve_commit.get(rev, rev)
        try:
            answer = super().file_answer(method, repo, rev, path)
        except ApiError as err:
            if not (hostile.any_revision and err.code == "RevisionNotFound"):
                raise
            answer = super().file_answer(method, repo, repo["branches"]["main"], path)
        if method == "HEAD":
            self._heads[path] = self._heads.get(path, 0) + 1
        lying = self._heads.get(path, 0) > hostile.honest_heads
        answer.size += hostile.extra_bytes.get(path, 0)
        if path in hostile.etag and lying:
            answer.etag = hostile.etag[path]
        answer.stop_after = hostile.drop_after.get(path)
        return answer
