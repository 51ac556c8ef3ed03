"""Pytest fixtures that point the *stock* ``huggingface_hub`` client at an in-process :class:`HubServer`.

Load with ``pytest_plugins = ["tests.support.hub_fixture"]`` in the top-level ``tests/conftest.py``.

Why so much patching: ``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``
etc. once, at import time, into ``huggingface_hub.constants`` (and a few modules copy them again with
``from ..constants import X``; the module-level ``HfApi`` behind ``huggingface_hub.model_info`` & co. copies the
endpoint when it is built). Setting the environment variables alone therefore has no effect once the package is
imported, so :func:`point_client_at` patches every captured copy (:func:`biozoo.testing.point_hub_client`), and
also sets the env vars for subprocesses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, constants

from biozoo.testing import point_hub_client
from tests.support.hub_server import HubServer

__all__ = [
    "HubClientEnv",
    "MakeHubClient",
    "hub",
    "hub_offline",
    "hub_server",
    "make_hub_client",
    "offline_mode",
    "point_client_at",
]


@contextmanager
def offline_mode() -> Iterator[None]:
    """``HF_HUB_OFFLINE=1`` for a block: every client HTTP call raises, downloads must come from the cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        yield


@dataclass
class HubClientEnv:
    """What a test needs to talk to the test hub: its URL, the server, and the client's private cache."""

    url: str
    server: HubServer
    cache_dir: Path
    home: Path
    token: str | None = None

    @property
    def api(self) -> HfApi:
        """A stock ``HfApi`` bound to the test hub (same as ``HfApi()`` inside the test, made explicit)."""
        return HfApi(endpoint=self.url, token=self.token)

    def create_model_repo(self, repo_id: str, files: dict[str, bytes], message: str = "add files") -> str:
        """Create (or reuse) ``repo_id`` and commit ``files`` to ``main`` with the stock client; returns the sha."""
        api = self.api
        api.create_repo(repo_id, exist_ok=True)
        ops = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
        return api.create_commit(repo_id, operations=ops, commit_message=message).oid

    def offline(self) -> AbstractContextManager[None]:
        """``with hub.offline(): ...`` -> HF_HUB_OFFLINE=1 inside the block (client refuses any HTTP call)."""
        return offline_mode()

    def outage(self) -> AbstractContextManager[None]:
        """``with hub.outage(): ...`` -> the server is down (connection refused), then comes back with its data."""
        return self.server.outage()


def point_client_at(mp: pytest.MonkeyPatch, server: HubServer, tmp: Path, token: str | None = None) -> HubClientEnv:
    """Point the stock client at ``server`` with a fresh cache/home under ``tmp`` (undone by ``mp``).

    The patching itself is :func:`biozoo.testing.point_hub_client`, which plugin authors' suites use too.
    """
    token = token if token is not None else server.token
    cache = point_hub_client(mp, server.url, tmp, token)
    return HubClientEnv(url=server.url, server=server, cache_dir=cache, home=cache.parent, token=token)


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """One started, token-less :class:`HubServer` for the whole session (tests must use distinct repo ids)."""
    with HubServer(tmp_path_factory.mktemp("hub-server")) as server:
        yield server


@pytest.fixture
def hub(hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubClientEnv]:
    """The stock client pointed at ``hub_server`` for one test, with a fresh, test-private cache."""
    env = point_client_at(monkeypatch, hub_server, tmp_path)
    yield env
    hub_server.start()  # in case the test left the server in an outage


MakeHubClient = Callable[..., HubClientEnv]


@pytest.fixture
def make_hub_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MakeHubClient:
    """``make_hub_client(server, token=None)``: point the client at *another* server (e.g. one with a token)."""
    counter = iter(range(1_000_000))

    def make(server: HubServer, token: str | None = None) -> HubClientEnv:
        return point_client_at(monkeypatch, server, tmp_path / f"hf-client-{next(counter)}", token=token)

    return make


@pytest.fixture
def hub_offline(hub: HubClientEnv) -> Callable[[], AbstractContextManager[None]]:
    """Factory for ``with hub_offline(): ...`` (same as ``hub.offline()``)."""
    return hub.offline
