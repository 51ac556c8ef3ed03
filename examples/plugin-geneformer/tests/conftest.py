"""The core's checks and fixtures (biozoo_hub, tiny_anndata, tiny_h5ad) for this suite, and a private hash memo."""

import pytest

pytest_plugins = ["biozoo.testing"]


@pytest.fixture(autouse=True)
def _own_biozoo_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verified sha256 are memoised in BIOZOO_CACHE: keep the tests' out of the user's ~/.cache/biozoo."""
    monkeypatch.setenv("BIOZOO_CACHE", str(tmp_path_factory.mktemp("biozoo-cache")))
