"""``biozoo.testing``: the pytest plugin a third-party plugin's suite enables (``pytest_plugins = ["biozoo.testing"]``).

Its fixtures are exercised the way an author uses them: a separate pytest run of a small suite that enables the
plugin in its conftest. The check functions are called here directly, on throwaway plugins.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from biozoo.testing import assert_kernels_conform, assert_plugin_ok

SUITE = '''
import os
from pathlib import Path

import biozoo
from biozoo._core_plugin import registry_dir
from biozoo.testing import assert_plugin_ok

TINY = registry_dir() / "core" / "tiny-transformer"


def test_hub_round_trip(biozoo_hub, tmp_path):
    import torch

    assert os.environ["HF_ENDPOINT"] == biozoo_hub
    assert Path(os.environ["HF_HUB_CACHE"]).is_relative_to(tmp_path)
    commit = biozoo.publish(TINY, "lab/tiny")
    remote, local = biozoo.load(f"hf://lab/tiny@{commit}"), biozoo.load("core/tiny-transformer")
    for key, value in local.state_dict().items():
        assert torch.equal(remote.state_dict()[key], value), key
    assert any(Path(os.environ["HF_HUB_CACHE"]).rglob("model.safetensors"))


def test_the_endpoint_is_set_for_each_test_only(biozoo_hub):
    assert os.environ["HF_ENDPOINT"] == biozoo_hub


def test_the_endpoint_is_restored_after_them():
    from huggingface_hub import constants

    assert os.environ["HF_ENDPOINT"] == constants.ENDPOINT == "http://127.0.0.1:1"  # what the outer run set


def test_tiny_anndata_is_raw_counts(tiny_anndata):
    import numpy as np

    from biozoo.singlecell.anndata_io import validate_expression

    assert tiny_anndata.shape == (64, 300)
    assert validate_expression(tiny_anndata) == "counts"
    assert (np.asarray(tiny_anndata.X.sum(axis=1)) > 0).all()
    assert set(tiny_anndata.obs["cell_type"].cat.categories) <= {"T cell", "B cell", "monocyte"}


def test_tiny_h5ad_reads_back(tiny_h5ad):
    import anndata

    assert anndata.read_h5ad(tiny_h5ad).shape == (64, 300)


def test_the_core_passes_its_checks():
    report = assert_plugin_ok("core")
    assert any(c.check == "test vectors" and c.status == "ok" for c in report.checks)
'''


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:1"  # what the fixture must replace, and only inside its tests
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_plugin_suite_gets_the_checks_and_fixtures(tmp_path: Path) -> None:
    """Fixtures and checks, enabled by ``pytest_plugins`` in a conftest as the docs say."""
    pytest.importorskip("anndata")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["biozoo.testing"]\n')
    (tmp_path / "test_suite.py").write_text(SUITE)
    proc = _pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "6 passed" in proc.stdout, proc.stdout[-2000:]


def test_it_is_opt_in_and_loads_with_p(tmp_path: Path) -> None:
    """Not auto-loaded (its fixtures are unknown without it); ``-p biozoo.testing`` enables it."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_one.py").write_text("def test_hub(biozoo_hub):\n    assert biozoo_hub.startswith('http')\n")
    without = _pytest(tmp_path)
    assert without.returncode == 1 and "fixture 'biozoo_hub' not found" in without.stdout, without.stdout[-2000:]
    with_p = _pytest(tmp_path, "-p", "biozoo.testing")
    assert with_p.returncode == 0 and "1 passed" in with_p.stdout, with_p.stdout[-2000:]


def test_importing_it_imports_neither_torch_nor_anndata() -> None:
    code = "import sys, biozoo.testing; print(sorted({'torch', 'anndata'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


BROKEN_TARGET = """
from biozoo.plugins import ComponentDecl, ComponentKind, hookimpl

@hookimpl
def biozoo_components():
    return [ComponentDecl("shaky.head", ComponentKind.HEAD, "shaky_missing_module:Head")]
"""


def test_assert_plugin_ok_fails_with_the_report(fake_plugins) -> None:
    fake_plugins.add("shaky", BROKEN_TARGET)
    with pytest.raises(pytest.fail.Exception) as failed:
        assert_plugin_ok("shaky")
    message = str(failed.value)
    assert "plugin 'shaky' (biozoo-shaky 1.2.3): 1 check(s) failed" in message
    assert "component shaky.head [import, kind]" in message and "shaky_missing_module" in message


def test_assert_plugin_ok_names_an_unknown_plugin() -> None:
    with pytest.raises(pytest.fail.Exception, match="no plugin named 'nosuch' is installed"):
        assert_plugin_ok("nosuch")


KERNELS = """
from biozoo.attention.processors import EagerProcessor
from biozoo.plugins import ProcessorDecl, hookimpl


class Exact(EagerProcessor):
    name = "{name}-exact"


class Tilted(EagerProcessor):
    name = "{name}-tilted"

    def __call__(self, q, k, v, call):
        return super().__call__(q * 1.5, k, v, call)  # wrong on purpose: the queries are scaled


@hookimpl
def biozoo_attention_processors():
    return [ProcessorDecl(f"{name}-{{kind}}", f"{{__name__}}:{{kind.title()}}") for kind in {kinds!r}]
"""


def test_assert_kernels_conform_runs_the_suite_on_the_plugins_kernels(fake_plugins) -> None:
    pytest.importorskip("biozoo_attention.conformance")
    fake_plugins.add("good_kernels", KERNELS.format(name="good", kinds=["exact"]))
    fake_plugins.add("bad_kernels", KERNELS.format(name="bad", kinds=["exact", "tilted"]))
    reports = assert_kernels_conform("good_kernels", dtypes=["float32"])
    assert [(r.kernel, r.passed) for r in reports] == [("good-exact", True)]
    with pytest.raises(pytest.fail.Exception) as failed:
        assert_kernels_conform("bad_kernels", dtypes=["float32"])
    assert "bad-tilted: FAILED" in str(failed.value) and "bad-exact" not in str(failed.value)


def test_assert_kernels_conform_skips_without_kernels_or_without_the_suite(fake_plugins, monkeypatch) -> None:
    fake_plugins.add("shaky", BROKEN_TARGET)
    if "biozoo_attention" in sys.modules or _installed("biozoo_attention"):
        with pytest.raises(pytest.skip.Exception, match="declares no attention processor"):
            assert_kernels_conform("shaky")
    monkeypatch.setitem(sys.modules, "biozoo_attention", None)  # as if biozoo-attention were not installed
    monkeypatch.delitem(sys.modules, "biozoo_attention.conformance", raising=False)
    with pytest.raises(pytest.skip.Exception, match="biozoo-attention"):
        assert_kernels_conform("shaky")


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
