"""Shared fixtures: an isolated biozoo cache and registry per test, the local Hub server."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.support.hub_fixture", "tests.support.fake_plugins"]


@pytest.fixture(autouse=True)
def _isolated_biozoo(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test gets its own hash memo and a freshly discovered registry."""
    from biozoo.registry import reset_registry

    monkeypatch.setenv("BIOZOO_CACHE", str(tmp_path_factory.mktemp("biozoo-cache")))
    for var in ("BIOZOO_STRICT", "BIOZOO_PLUGINS", "BIOZOO_DISABLE_PLUGINS", "BIOZOO_ATTENTION"):
        monkeypatch.delenv(var, raising=False)
    reset_registry()
    yield
    reset_registry()
