"""`zoo plugins --check`, BIOZOO_STRICT=1, and errors that name the plugin at fault (issue 12, item 2).

Each test builds small broken plugins the way tests/test_plugins.py does (throwaway
distributions on sys.path) and fails on the code before the check existed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from biozoo.errors import PluginError, UnknownNameError
from biozoo.registry import get_registry, reset_registry
from tests.support.cli import zoo

if TYPE_CHECKING:
    from tests.support.fake_plugins import FakePlugins

GOOD = """
from biozoo.plugins import ComponentDecl, hookimpl

@hookimpl
def biozoo_components():
    return [ComponentDecl("good.head", "head", "fake_good_models:Head", "a head")]
"""
BROKEN_MODEL_CODE = "import torch\nfrom this_module_does_not_exist import Thing\n"
HEAD = """
from biozoo.components.base import Component
from biozoo.plugins import ComponentKind

class Head(Component):
    kind = ComponentKind.HEAD

    def __init__(self, d_model: int) -> None:
        super().__init__()
"""
SHIPS = """
from pathlib import Path
from biozoo.plugins import hookimpl

@hookimpl
def biozoo_manifests():
    return [Path({folder!r})]
"""


def _cli(fake_plugins: FakePlugins, *args: str, **env: str) -> subprocess.CompletedProcess:
    return zoo(*args, path=str(fake_plugins.root), **{"COLUMNS": "400", **env})


def _tiny_copy(folder: Path, model_id: str) -> Path:
    """The core's tiny reference model (weights and test vectors) as a plugin's own model ``model_id``."""
    from biozoo._core_plugin import registry_dir

    shutil.copytree(registry_dir() / "core" / "tiny-transformer", folder)
    manifest = folder / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("id: core/tiny-transformer", f"id: {model_id}"))
    return folder


def _by_subject(report) -> dict[tuple[str, str], object]:
    return {(c.subject, c.check): c for c in report.checks}


# -- pluggy's check_pending: a misspelt hook is an error --------------------------------------------------------


def test_a_misspelt_hook_makes_the_plugin_broken(fake_plugins: FakePlugins) -> None:
    """`biozoo_component` (no s) used to load as `ok` with nothing declared."""
    fake_plugins.add(
        "typo",
        """
from biozoo.plugins import ComponentDecl, hookimpl

@hookimpl
def biozoo_component():
    return [ComponentDecl("typo.head", "head", "x:y")]
""",
    )
    fake_plugins.add("good", GOOD)
    statuses = get_registry().plugins
    assert statuses["typo"].status == "broken"
    assert "unknown hook 'biozoo_component'" in statuses["typo"].reason
    assert "did you mean 'biozoo_components'" in statuses["typo"].reason
    assert statuses["good"].status == "ok"  # the shared plugin manager does not blame the next plugin


def test_a_hook_without_the_hookimpl_marker_makes_the_plugin_broken(fake_plugins: FakePlugins) -> None:
    fake_plugins.add(
        "unmarked",
        """
from biozoo.plugins import ComponentDecl

def biozoo_components():
    return [ComponentDecl("unmarked.head", "head", "x:y")]
""",
    )
    status = get_registry().plugins["unmarked"]
    assert status.status == "broken" and "biozoo_components is not marked as a hook" in status.reason


def test_strict_mode_fails_on_a_misspelt_hook(fake_plugins: FakePlugins, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_plugins.add("typo", "from biozoo.plugins import hookimpl\n@hookimpl\ndef biozoo_manifest():\n    return []\n")
    monkeypatch.setenv("BIOZOO_STRICT", "1")
    with pytest.raises(PluginError, match="unknown hook 'biozoo_manifest'"):
        get_registry()


# -- an import error in model code: invisible to listing, found by the check and by strict mode -------------------


def test_check_finds_an_import_error_in_model_code_that_listing_cannot_see(fake_plugins: FakePlugins) -> None:
    from biozoo.plugins.check import check_plugin

    fake_plugins.add("good", GOOD)
    (fake_plugins.root / "fake_good_models.py").write_text(BROKEN_MODEL_CODE)
    assert get_registry().plugins["good"].status == "ok"  # listing stays cheap: it imports no model code
    report = check_plugin("good")
    assert not report.ok
    row = _by_subject(report)[("component good.head", "import, kind")]
    assert row.status == "failed"
    assert "this_module_does_not_exist" in row.cause
    assert "fake_good_models.py:2" in row.cause  # the line of plugin code that failed


def test_check_passes_a_healthy_plugin_and_checks_kinds(fake_plugins: FakePlugins) -> None:
    from biozoo.plugins.check import check_plugin

    fake_plugins.add("good", GOOD)
    (fake_plugins.root / "fake_good_models.py").write_text(HEAD)
    assert check_plugin("good").ok
    (fake_plugins.root / "fake_good_models.py").write_text(HEAD.replace("ComponentKind.HEAD", "ComponentKind.ENCODER"))
    sys.modules.pop("fake_good_models", None)
    reset_registry()
    row = _by_subject(check_plugin("good"))[("component good.head", "import, kind")]
    assert row.status == "failed" and "declared as head but its class says encoder" in row.cause


def test_strict_mode_makes_broken_model_code_an_error_when_listing(
    fake_plugins: FakePlugins, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_plugins.add("good", GOOD)
    (fake_plugins.root / "fake_good_models.py").write_text(BROKEN_MODEL_CODE)
    monkeypatch.setenv("BIOZOO_STRICT", "1")
    with pytest.raises(PluginError) as info:
        get_registry()
    assert "plugin 'good' (biozoo-good 1.2.3)" in info.value.message
    assert "this_module_does_not_exist" in info.value.message
    assert "zoo plugins --check good" in (info.value.hint or "")
    proc = _cli(fake_plugins, "list", BIOZOO_STRICT="1")
    assert proc.returncode == 1 and "this_module_does_not_exist" in proc.stderr and "Traceback" not in proc.stderr


def test_strict_mode_passes_with_healthy_plugins(fake_plugins: FakePlugins, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_plugins.add("good", GOOD)
    (fake_plugins.root / "fake_good_models.py").write_text(HEAD)
    monkeypatch.setenv("BIOZOO_STRICT", "1")
    monkeypatch.setenv("BIOZOO_PLUGINS", "good")  # the repository's own plugins are checked by their own tests
    assert get_registry().plugins["good"].status == "ok"


def test_a_load_time_import_error_names_the_plugin_and_its_distribution(fake_plugins: FakePlugins) -> None:
    """`zoo load` used to say only "reinstall it (see `zoo plugins`)", where the plugin shows `ok`."""
    fake_plugins.add("good", GOOD, dist="biozoo-good-heads")
    (fake_plugins.root / "fake_good_models.py").write_text(BROKEN_MODEL_CODE)
    with pytest.raises(PluginError) as info:
        get_registry().component_class("good.head")
    assert "plugin 'good' (biozoo-good-heads 1.2.3)" in info.value.message
    assert "this_module_does_not_exist" in info.value.message
    hint = info.value.hint or ""
    assert "zoo plugins --check good" in hint and "biozoo-good-heads" in hint


# -- models that vanish with their plugin ---------------------------------------------------------------------


def test_a_missing_model_names_the_plugin_that_failed_to_load(fake_plugins: FakePlugins) -> None:
    """Used to be just "no model named 'gene-mini/tiny'"."""
    fake_plugins.add("gene_mini", "raise ImportError('declarations are broken on purpose')\n", dist="biozoo-gene-mini")
    with pytest.raises(UnknownNameError) as info:
        get_registry().model_entry("gene-mini/tiny")
    message = info.value.message
    assert "plugin 'gene_mini' (biozoo-gene-mini 1.2.3)" in message and "is broken" in message
    assert "declarations are broken on purpose" in message
    assert "pip install" not in str(info.value)
    proc = _cli(fake_plugins, "load", "gene-mini/tiny")
    assert proc.returncode == 1 and "declarations are broken on purpose" in proc.stderr
    assert "plugin 'gene_mini'" in proc.stderr and "Traceback" not in proc.stderr


def test_a_missing_model_mentions_every_plugin_that_did_not_load(fake_plugins: FakePlugins) -> None:
    fake_plugins.add("other", "raise ImportError('nope')\n")
    with pytest.raises(UnknownNameError) as info:
        get_registry().model_entry("somebody/model")
    assert "plugin 'other' (biozoo-other 1.2.3) (broken)" in info.value.message
    assert "zoo plugins" in (info.value.hint or "")


def test_a_missing_model_without_unloaded_plugins_reads_as_before() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_registry().model_entry("nope/missing")
    assert info.value.message == "no model named 'nope/missing'"


# -- hints that send the author the right way ------------------------------------------------------------------


@pytest.mark.parametrize("why", ["incompatible", "disabled"])
def test_an_unusable_plugin_with_a_hyphenated_name_is_not_told_to_install_it(
    fake_plugins: FakePlugins, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    """A manifest names `gene_mini.*`, the entry point is `gene-mini`: it used to read "not installed: install it"."""
    source = GOOD.replace("good.", "gene_mini.")
    if why == "incompatible":
        fake_plugins.add("gene-mini", source, requires="biozoo>=99")
    else:
        fake_plugins.add("gene-mini", source)
        monkeypatch.setenv("BIOZOO_DISABLE_PLUGINS", "gene-mini")
        reset_registry()
    registry = get_registry()
    problem = registry.plugin_problem("gene_mini") or ""
    fix = registry.plugin_fix("gene_mini")
    assert f"plugin 'gene-mini' (biozoo-gene-mini 1.2.3) is {why}" in problem
    assert "install it" not in fix and "pip install" not in fix
    assert ("upgrade biozoo-gene-mini" if why == "incompatible" else "BIOZOO_DISABLE_PLUGINS") in fix
    with pytest.raises(UnknownNameError) as info:
        registry.component_decl("gene_mini.head")
    assert "pip install" not in str(info.value)


def test_a_hyphenated_entry_point_gets_a_rename_hint_that_the_next_check_accepts(fake_plugins: FakePlugins) -> None:
    """It used to say "rename it to 'gene-mini.head'", a name ComponentDecl then rejects."""
    from biozoo.plugins import ComponentDecl

    fake_plugins.add("gene-mini", GOOD.replace("good.", "gene_mini."), module="fake_gene_mini_plugin")
    reason = get_registry().plugins["gene-mini"].reason
    assert "'gene-mini.head'" not in reason
    assert "rename the entry point to 'gene_mini'" in reason and "'gene_mini.NAME'" in reason
    ComponentDecl("gene_mini.head", "head", "m:A")  # what the hint says is accepted
    fake_plugins.add("gene_mini", GOOD.replace("good.", "gene_mini."), dist="biozoo-gene-mini-fixed")
    assert get_registry().plugins["gene_mini"].status == "ok"  # following the hint works


def test_a_hyphenated_component_namespace_gets_a_hint_that_the_next_check_accepts() -> None:
    from biozoo.plugins import ComponentDecl

    with pytest.raises(PluginError) as info:
        ComponentDecl("gene-mini.head", "head", "m:A")
    hint = info.value.hint or ""
    assert "'gene_mini.head'" in hint and "entry point 'gene_mini'" in hint
    ComponentDecl("gene_mini.head", "head", "m:A")


# -- manifests: assembled on meta, test vectors run where the weights are -----------------------------------------


def test_check_assembles_the_plugins_models_and_runs_their_test_vectors(
    fake_plugins: FakePlugins, tmp_path: Path
) -> None:
    from biozoo.plugins.check import check_plugin

    folder = _tiny_copy(tmp_path / "models" / "tiny", "shipper/tiny")
    fake_plugins.add("shipper", SHIPS.format(folder=str(tmp_path / "models")))
    rows = _by_subject(check_plugin("shipper"))
    assert rows[("model shipper/tiny", "assemble (meta)")].status == "ok"
    vectors = rows[("model shipper/tiny", "test vectors")]
    assert vectors.status == "ok" and "within tolerance" in vectors.cause

    # weights that no longer reproduce the outputs: the test vectors fail, with zoo verify's cause
    from safetensors.torch import load_file, save_file

    from tests.support.models import sha256

    state = load_file(folder / "model.safetensors")
    first = next(iter(state))
    state[first] = state[first] + 1.0
    save_file(state, folder / "model.safetensors")
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    manifest["weights"]["files"][0] = {"path": "model.safetensors", "sha256": sha256(folder / "model.safetensors")}
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    report = check_plugin("shipper")
    vectors = _by_subject(report)[("model shipper/tiny", "test vectors")]
    assert vectors.status == "failed" and "does not reproduce its test vectors" in vectors.cause
    assert not report.ok


def test_check_reports_a_manifest_that_does_not_assemble(fake_plugins: FakePlugins, tmp_path: Path) -> None:
    from biozoo.plugins.check import check_plugin

    folder = _tiny_copy(tmp_path / "models" / "tiny", "shipper/tiny")
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    manifest["components"]["head"]["config"]["d_modle"] = 3
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    fake_plugins.add("shipper", SHIPS.format(folder=str(tmp_path / "models")))
    rows = _by_subject(check_plugin("shipper"))
    row = rows[("model shipper/tiny", "assemble (meta)")]
    assert row.status == "failed" and "components.head.config" in row.cause and "'d_modle'" in row.cause
    assert ("model shipper/tiny", "test vectors") not in rows  # nothing to run on a model that cannot be built


def test_check_skips_test_vectors_whose_weights_are_not_here(fake_plugins: FakePlugins, tmp_path: Path) -> None:
    from biozoo.plugins.check import check_plugin

    folder = _tiny_copy(tmp_path / "models" / "tiny", "shipper/tiny")
    (folder / "model.safetensors").unlink()
    fake_plugins.add("shipper", SHIPS.format(folder=str(tmp_path / "models")))
    report = check_plugin("shipper")
    row = _by_subject(report)[("model shipper/tiny", "test vectors")]
    assert row.status == "skipped" and "model.safetensors" in row.cause
    assert report.ok


def test_check_fails_a_plugin_that_declares_nothing_or_a_missing_manifest_folder(
    fake_plugins: FakePlugins, tmp_path: Path
) -> None:
    from biozoo.plugins.check import check_plugin

    fake_plugins.add("empty", "from biozoo.plugins import hookimpl\n@hookimpl\ndef biozoo_tasks():\n    return []\n")
    fake_plugins.add("lost", SHIPS.format(folder=str(tmp_path / "no-such-folder")))
    empty = check_plugin("empty")
    assert not empty.ok and "declares nothing" in empty.failures[0].cause
    lost = check_plugin("lost")
    assert not lost.ok and any("does not exist" in c.cause for c in lost.failures)


def test_check_of_an_unhealthy_or_unknown_plugin(fake_plugins: FakePlugins) -> None:
    from biozoo.plugins.check import check_plugin

    fake_plugins.add("broken", "import nope_nope\n")
    report = check_plugin("broken")
    assert not report.ok and "nope_nope" in report.failures[0].cause
    with pytest.raises(UnknownNameError, match="no plugin named 'absent'"):
        check_plugin("absent")


def test_check_of_the_core_passes() -> None:
    from biozoo.plugins.check import check_plugin

    report = check_plugin("core")
    assert report.ok, report.failures
    rows = _by_subject(report)
    assert rows[("model core/tiny-transformer", "test vectors")].status == "ok"
    assert rows[("component core.sequence_classifier", "import, kind")].status == "ok"


# -- the command ------------------------------------------------------------------------------------------------


def test_cli_check_prints_each_cause_and_exits_non_zero(fake_plugins: FakePlugins) -> None:
    fake_plugins.add("good", GOOD)
    (fake_plugins.root / "fake_good_models.py").write_text(BROKEN_MODEL_CODE)
    plain = _cli(fake_plugins, "plugins", "good")  # without --check: as cheap as ever, and `ok`
    assert plain.returncode == 0 and "ok" in plain.stdout
    proc = _cli(fake_plugins, "plugins", "--check", "good")
    assert proc.returncode == 1, proc.stderr
    assert "component good.head" in proc.stdout and "failed" in proc.stdout
    assert "this_module_does_not_exist" in proc.stdout
    assert "error: 1 check(s) failed: plugin 'good' (biozoo-good 1.2.3)" in proc.stderr
    assert "Traceback" not in proc.stderr
    as_json = _cli(fake_plugins, "plugins", "--check", "good", "--json")
    assert as_json.returncode == 1
    [report] = json.loads(as_json.stdout)
    assert report["plugin"] == "good" and report["ok"] is False
    failed = [c for c in report["checks"] if c["status"] == "failed"]
    assert failed and "this_module_does_not_exist" in failed[0]["cause"]


def test_cli_check_of_healthy_plugins_exits_zero(fake_plugins: FakePlugins) -> None:
    fake_plugins.add("good", GOOD)
    (fake_plugins.root / "fake_good_models.py").write_text(HEAD)
    proc = _cli(fake_plugins, "plugins", "--check", "--json", BIOZOO_PLUGINS="good")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reports = {r["plugin"]: r for r in json.loads(proc.stdout)}
    assert reports["good"]["ok"] and reports["core"]["ok"]
    unknown = _cli(fake_plugins, "plugins", "--check", "absent")
    assert unknown.returncode == 1 and "no plugin named 'absent'" in unknown.stderr
