"""``biozoo.testing``: the core's checks and fixtures, for a plugin's own test suite (a pytest plugin).

Why: a plugin author's CI should fail for the reasons ``zoo plugins --check`` would, before users see them,
and should test Hub round trips and single-cell inputs without writing a Hub server or a data set. Enable it
in the plugin's ``tests/conftest.py``::

    pytest_plugins = ["biozoo.testing"]

or with ``pytest -p biozoo.testing``. It is not loaded by an entry point: its fixtures would then appear in
every pytest run of every project on a machine where biozoo is installed.

* :func:`assert_plugin_ok` runs ``zoo plugins --check NAME`` (imports, kinds, manifests assembled on meta, test
  vectors) and fails the test with the report;
* :func:`assert_kernels_conform` runs the attention conformance suite (from ``biozoo-attention``; the test is
  skipped without it) on every kernel the plugin declares;
* fixtures: ``biozoo_hub`` (the ``HF_ENDPOINT`` of a local Hub, ``zoo hub serve``'s server on a free port),
  ``tiny_anndata`` and ``tiny_h5ad`` (raw counts; skipped without anndata).

Importing this module imports neither torch nor anndata; the functions and fixtures that need them do.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from anndata import AnnData

    from biozoo.hub_server import HubServer
    from biozoo.plugins.check import PluginReport

__all__ = [
    "assert_kernels_conform",
    "assert_plugin_ok",
    "biozoo_hub",
    "biozoo_hub_server",
    "make_tiny_anndata",
    "point_hub_client",
    "tiny_anndata",
    "tiny_h5ad",
]

# -- the core's checks ------------------------------------------------------------------------------------------


def assert_plugin_ok(name: str, *, vectors: bool = True) -> PluginReport:
    """Run every check of ``zoo plugins --check NAME`` on an installed plugin; fail the test with the report.

    ``vectors=False`` leaves the test vectors out (only imports, kinds and assembly on the meta device).
    Skipped checks (weights not on this machine, no test vectors) do not fail the test.
    """
    from biozoo.errors import BiozooError
    from biozoo.plugins.check import check_plugin

    try:
        report = check_plugin(name, vectors=vectors)
    except BiozooError as exc:
        pytest.fail(_said(exc), pytrace=False)
    if not report.ok:
        rows = "\n".join(f"  {c.subject} [{c.check}]: {c.cause}" for c in report.failures)
        pytest.fail(f"{report.label}: {len(report.failures)} check(s) failed\n{rows}", pytrace=False)
    return report


def assert_kernels_conform(
    name: str, *, dtypes: Sequence[str] | None = None, device: str = "cpu"
) -> list[Any]:
    """Run the attention conformance suite on every attention processor plugin ``name`` declares.

    Skips the test when ``biozoo-attention`` (which holds the suite) is not installed, when the plugin
    declares no processor, or when none of its kernels can run here (each says why); fails it with the
    failed checks of any kernel that does not conform. Returns the reports (``ConformanceReport``).
    """
    conformance = pytest.importorskip(
        "biozoo_attention.conformance",
        reason="the attention conformance suite comes with biozoo-attention (pip install biozoo-attention)",
    )
    from biozoo.registry import get_registry

    registry = get_registry()
    status = registry.plugin_status(name)
    if status is None:
        pytest.fail(f"no plugin named {name!r} is installed (installed: {', '.join(registry.plugins)})", pytrace=False)
    if not status.healthy or status.spec is None:
        pytest.fail(f"{status.label} is {status.status}: {status.reason}", pytrace=False)
    if not status.spec.processors:
        pytest.skip(f"{status.label} declares no attention processor")
    options = {"device": device} | ({} if dtypes is None else {"dtypes": tuple(dtypes)})
    reports = [
        conformance.check_kernel(registry.processor_instance(decl, status.name), **options)
        for decl in status.spec.processors
    ]
    failed = [r for r in reports if r.failures]
    if failed:
        pytest.fail("\n".join(str(r) for r in failed), pytrace=False)
    if not any(r.available for r in reports):
        pytest.skip("; ".join(f"{r.kernel} is unavailable here: {r.reason}" for r in reports))
    return reports


def _said(exc: Any) -> str:
    """A biozoo error as the CLI prints it: the message, then the hint."""
    return exc.message + (f"\nhint: {exc.hint}" if exc.hint else "")


# -- a local Hub ------------------------------------------------------------------------------------------------


def point_hub_client(mp: pytest.MonkeyPatch, url: str, folder: Path, token: str | None = None) -> Path:
    """Point the stock ``huggingface_hub`` client at ``url`` with a fresh home and cache under ``folder``.

    Why more than environment variables: the client reads ``HF_ENDPOINT``, ``HF_HUB_CACHE`` & co. once, when it
    is imported, into ``huggingface_hub.constants`` (and a few modules copy them again), so each copy is patched
    too; the variables are set as well, for subprocesses (``zoo ...``). Everything is undone by ``mp``. Returns
    the cache folder (``HF_HUB_CACHE``).
    """
    import huggingface_hub.hf_api
    from huggingface_hub import constants

    home, cache = folder / "hf_home", folder / "hf_home" / "hub"
    cache.mkdir(parents=True, exist_ok=True)
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
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {urlsplit(url).hostname or ""},  # same-host redirects keep auth
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
    # copies made with ``from ..constants import X`` or when an object was built
    mp.setattr(huggingface_hub.hf_api.api, "endpoint", url)
    copies = {
        "huggingface_hub.utils._cache_manager": {"HF_HUB_CACHE": str(cache)},
        "huggingface_hub.utils._cache_assets": {"HF_ASSETS_CACHE": str(home / "assets")},
        "huggingface_hub.utils._git_credential": {"ENDPOINT": url},
        "huggingface_hub.cli.auth": {"ENDPOINT": url},
    }
    for module_name, attrs in copies.items():
        module = sys.modules.get(module_name)
        for attr, value in attrs.items():
            if module is not None and hasattr(module, attr):
                mp.setattr(module, attr, value)
    return cache


@pytest.fixture(scope="session")
def biozoo_hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """``zoo hub serve``'s server on a free local port with a temporary root, for the whole session.

    Tests share it, so each should publish to repository ids of its own.
    """
    from biozoo.hub_server import HubServer

    with HubServer(tmp_path_factory.mktemp("biozoo-hub")) as server:
        yield server


@pytest.fixture
def biozoo_hub(biozoo_hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ``HF_ENDPOINT`` URL of a local Hub, set for this test with a fresh ``HF_HUB_CACHE``.

    ``biozoo.publish(folder, "lab/name")`` then ``biozoo.load("hf://lab/name@COMMIT")`` (or ``zoo publish`` /
    ``zoo load`` in a subprocess) go to it, with the stock client.
    """
    point_hub_client(monkeypatch, biozoo_hub_server.url, tmp_path / "biozoo-hub-client")
    return biozoo_hub_server.url


# -- tiny single-cell data --------------------------------------------------------------------------------------


def make_tiny_anndata(
    n_cells: int = 64, n_genes: int = 300, *, genes: Sequence[str] | None = None, seed: int = 0
) -> AnnData:
    """Raw counts (sparse float32, as in most .h5ad files) of ``n_cells`` cells, every cell with some counts.

    ``genes`` names the genes (``var_names``), e.g. some of your model's vocabulary; by default ``GENE0000``,
    ... ``obs`` has a ``cell_type`` (3 types) and a ``batch`` column, ``var`` a ``gene_ids`` column.
    """
    anndata = pytest.importorskip("anndata", reason="needs anndata (pip install anndata)")
    import numpy as np
    import pandas as pd
    from scipy import sparse

    names = list(genes) if genes is not None else [f"GENE{i:04d}" for i in range(n_genes)]
    rng = np.random.default_rng(seed)
    counts = rng.negative_binomial(1, 0.3, size=(n_cells, len(names))) * (rng.random((n_cells, len(names))) < 0.4)
    counts[np.arange(n_cells), rng.integers(0, len(names), n_cells)] += 1  # no empty cell
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(["T cell", "B cell", "monocyte"], n_cells)),
            "batch": pd.Categorical(rng.choice(["a", "b"], n_cells)),
        },
        index=[f"cell{i:04d}" for i in range(n_cells)],
    )
    var = pd.DataFrame({"gene_ids": [f"ID{i:06d}" for i in range(len(names))]}, index=names)
    return anndata.AnnData(sparse.csr_matrix(counts.astype(np.float32)), obs=obs, var=var)


@pytest.fixture
def tiny_anndata() -> AnnData:
    """A fresh :func:`make_tiny_anndata` (64 cells x 300 genes of raw counts); skipped without anndata."""
    return make_tiny_anndata()


@pytest.fixture
def tiny_h5ad(tiny_anndata: AnnData, tmp_path: Path) -> Path:
    """``tiny_anndata`` written to an .h5ad file, for CLI tests (``zoo embed MODEL FILE -o OUT``)."""
    from biozoo.singlecell.anndata_io import write_h5ad_atomic  # pandas 3's string columns written readably

    return write_h5ad_atomic(tiny_anndata, tmp_path / "tiny.h5ad")
