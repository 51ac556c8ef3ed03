"""Pytest fixtures that point the *stock* ``huggingface_hub`` client at an in-process :class:`HubServer`.

Load with ``pytest_plugins = ["tests.support.hub_fixture"]`` in the top-level ``tests/conftest.py``.

Why so much patching: ``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``
etc. once, at import time, into ``huggingface_hub.constants`` (and a few modules copy them again with
``from ..constants import X``; the module-level ``HfApi`` behind ``huggingface_hub.model_info`` & co. copies the
endpoint when it is built). Setting the environment variables alone therefore has no effect once the package is
imported, so :func:`point_client_at` patches every captured copy, and also sets the env vars for subprocesses.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub.hf_api
import pytest
from huggingface_hub import CommitOperationAdd, HfApi, constants

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
    """Point the stock client at ``server`` with a fresh cache/home under ``tmp`` (undone by ``mp``)."""
    url = server.url
    home, cache = tmp / "hf_home", tmp / "hf_home" / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    token = token if token is not None else server.token
    env = {"HF_ENDPOINT": url, "HF_HOME": str(home), "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_TELEMETRY": "1"}
    for key, value in env.items():
        mp.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_XET_CACHE"):
        mp.delenv(key, raising=False)
    if token:
        mp.setenv("HF_TOKEN", token)
    else:
        mp.delenv("HF_TOKEN", raising=False)
    patches = {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {server.host},  # same-host redirects keep auth
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HUGGINGFACE_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),  # never pick up the developer's real token file
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
    }
    for name, value in patches.items():
        mp.setattr(constants, name, value)
    # Copies made with ``from ..constants import X`` / at construction time.
    mp.setattr(huggingface_hub.hf_api.api, "endpoint", url)
    copies = {
        "huggingface_hub.utils._cache_manager": {"HF_HUB_CACHE": str(cache)},
        "huggingface_hub.utils._cache_assets": {"HF_ASSETS_CACHE": str(home / "assets")},
        "huggingface_hub.utils._git_credential": {"ENDPOINT": url},
        "huggingface_hub.cli.auth": {"ENDPOINT": url},
    }
    for module_name, attrs in copies.items():
        module = sys.modules.get(module_name)
        for name, value in attrs.items():
            if module is not None and hasattr(module, name):
                mp.setattr(module, name, value)
    return HubClientEnv(url=url, server=server, cache_dir=cache, home=home, token=token)


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
