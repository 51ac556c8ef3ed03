"""Plugin discovery: lazy, fault-tolerant, version-checked, conflict-aware."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.fake_plugins import FakePlugins

from biozoo.errors import DuplicateNameError, PluginError, UnknownNameError
from biozoo.registry import get_registry

GOOD = """
from biozoo.plugins import ComponentDecl, ProcessorDecl, hookimpl

@hookimpl
def biozoo_components():
    return [ComponentDecl("good.head", "head", "fake_good_models:Head", "a head")]

@hookimpl
def biozoo_attention_processors():
    return [ProcessorDecl("good-kernel", "biozoo.attention.processors:EagerProcessor", "eager again", priority=-5)]
"""
GOOD_MODELS = """
import sys
sys.modules[__name__].IMPORTED = True
raise RuntimeError("model code must not be imported while listing")
"""


def _statuses() -> dict[str, object]:
    return get_registry().plugins


def test_healthy_plugin_is_listed_without_importing_its_model_code(fake_plugins: FakePlugins) -> None:
    fake_plugins.add("good", GOOD)
    (fake_plugins.root / "fake_good_models.py").write_text(GOOD_MODELS)
    registry = get_registry()
    assert registry.plugins["good"].status == "ok"
    assert registry.plugins["good"].version == "1.2.3"
    assert registry.plugins["good"].core_range == "<1,>=0.1"
    assert registry.component_decl("good.head").description == "a head"
    assert "good-kernel" in registry.processors.names()
    assert "fake_good_models" not in sys.modules
    with pytest.raises(PluginError, match="cannot import 'fake_good_models:Head'"):
        registry.component_class("good.head")  # importing happens on use, and its failure is explained


def test_broken_import_is_quarantined(fake_plugins: FakePlugins) -> None:
    fake_plugins.add("broken", "import this_module_does_not_exist\n")
    fake_plugins.add("good", GOOD)
    statuses = _statuses()
    assert statuses["broken"].status == "broken"
    assert "ModuleNotFoundError" in statuses["broken"].reason
    assert "this_module_does_not_exist" in statuses["broken"].reason
    assert statuses["good"].status == "ok"
    assert get_registry().model_entry("core/tiny-transformer")  # everything else keeps working


def test_hook_that_raises_is_quarantined(fake_plugins: FakePlugins) -> None:
    fake_plugins.add(
        "raiser",
        """
from biozoo.plugins import hookimpl
@hookimpl
def biozoo_components():
    raise ValueError("boom in hook")
""",
    )
    status = _statuses()["raiser"]
    assert status.status == "broken" and "boom in hook" in status.reason


def test_bad_hook_signature_and_bad_declarations(fake_plugins: FakePlugins) -> None:
    fake_plugins.add(
        "sig",
        """
from biozoo.plugins import hookimpl
@hookimpl
def biozoo_components(unexpected_argument):
    return []
""",
    )
    fake_plugins.add(
        "ns",
        """
from biozoo.plugins import ComponentDecl, hookimpl
@hookimpl
def biozoo_components():
    return [ComponentDecl("other.thing", "head", "x:y")]
""",
    )
    statuses = _statuses()
    assert statuses["sig"].status == "broken" and "unexpected_argument" in statuses["sig"].reason
    assert statuses["ns"].status == "broken" and "outside the plugin's namespace" in statuses["ns"].reason


def test_incompatible_core_range_is_reported_before_import(fake_plugins: FakePlugins) -> None:
    module = fake_plugins.add("future", "raise SystemExit('must not be imported')\n", requires="biozoo>=9.0")
    status = _statuses()["future"]
    assert status.status == "incompatible"
    assert "supports biozoo>=9.0" in status.reason and "this is biozoo 0.1.0" in status.reason
    assert module not in sys.modules


def test_unknown_component_of_incompatible_plugin_explains(fake_plugins: FakePlugins) -> None:
    fake_plugins.add("future", "raise SystemExit(1)\n", requires="biozoo>=9.0")
    with pytest.raises(UnknownNameError, match=r"plugin 'future' \(biozoo-future 1.2.3\) is incompatible"):
        get_registry().component_decl("future.encoder")


def test_two_distributions_claiming_one_plugin_name(fake_plugins: FakePlugins) -> None:
    fake_plugins.add("twin", GOOD.replace("good.", "twin."), dist="biozoo-twin-a")
    fake_plugins.add("twin", GOOD.replace("good.", "twin."), dist="biozoo-twin-b")
    statuses = [s for s in _statuses().values() if s.name == "twin"]
    assert len(statuses) == 2
    for status in statuses:
        assert status.status == "broken"
        assert "biozoo-twin-a" in status.reason and "biozoo-twin-b" in status.reason


def test_two_plugins_claiming_one_processor_name(fake_plugins: FakePlugins) -> None:
    fake_plugins.add("one", GOOD.replace("good.", "one."))
    fake_plugins.add("two", GOOD.replace("good.", "two."))
    registry = get_registry()
    with pytest.raises(DuplicateNameError) as info:
        registry.processor("good-kernel")
    assert "'one'" in str(info.value) and "'two'" in str(info.value)
    registry.processor("sdpa")  # other names unaffected


def test_two_plugins_claiming_one_model_id(fake_plugins: FakePlugins, tmp_path: Path) -> None:
    from tests.support.models import write_model

    folder = write_model(tmp_path / "m")
    manifest = (folder / "manifest.yaml").read_text().replace("test/tiny", "core/tiny-transformer")
    (folder / "manifest.yaml").write_text(manifest)
    fake_plugins.add(
        "shadow",
        f"""
from pathlib import Path
from biozoo.plugins import hookimpl
@hookimpl
def biozoo_manifests():
    return [Path({str(folder)!r})]
""",
    )
    import biozoo

    # A first-party model id stays first-party (it used to become unusable for everyone), and the clash is shown.
    row = next(r for r in biozoo.list_models() if r["id"] == "core/tiny-transformer")
    assert row["available"] is True
    registry = get_registry()
    assert registry.model_entry("core/tiny-transformer").path != folder / "manifest.yaml"
    assert "model 'core/tiny-transformer' also claimed by core; the core's is used, this one never runs" in (
        registry.plugin_warnings("shadow")
    )


def test_two_third_party_plugins_claiming_one_model_id(fake_plugins: FakePlugins, tmp_path: Path) -> None:
    from tests.support.models import write_model

    folder = write_model(tmp_path / "m")
    for name in ("shadow", "umbra"):
        fake_plugins.add(
            name,
            f"""
from pathlib import Path
from biozoo.plugins import hookimpl
@hookimpl
def biozoo_manifests():
    return [Path({str(folder)!r})]
""",
        )
    import biozoo

    row = next(r for r in biozoo.list_models() if r["id"] == "test/tiny")
    assert row["available"] is False and "shadow and umbra" in row["reason"]
    with pytest.raises(DuplicateNameError, match="model 'test/tiny' is claimed by both plugins"):
        get_registry().model_entry("test/tiny")


SLICED_AGAIN = """
from biozoo.plugins import ProcessorDecl, hookimpl

@hookimpl
def biozoo_attention_processors():
    return [ProcessorDecl("sliced", "biozoo.attention.processors:EagerProcessor", "not sliced", priority=99)]
"""


def test_a_third_party_cannot_take_a_first_party_plugins_processor(fake_plugins: FakePlugins) -> None:
    """Declaring `sliced` used to make the attention plugin's kernel unusable for every model."""
    pytest.importorskip("biozoo_attention")
    from biozoo_attention.kernels.sliced import SlicedProcessor

    fake_plugins.add("dup", SLICED_AGAIN)
    registry = get_registry()
    assert isinstance(registry.processor("sliced"), SlicedProcessor)
    assert "attention processor 'sliced' also claimed by attention; the first-party attention's is used, " in (
        " ".join(registry.plugin_warnings("dup"))
    )
    assert "sliced" not in registry.processor_problems if hasattr(registry, "processor_problems") else True


def test_a_third_party_distribution_cannot_take_a_first_party_plugin_name(fake_plugins: FakePlugins) -> None:
    """A distribution whose entry point says `scgpt` used to break the real scgpt plugin too."""
    pytest.importorskip("biozoo_scgpt")
    fake_plugins.add("scgpt", "x = 1\n", dist="scgpt-impostor")
    registry = get_registry()
    assert registry.plugins["scgpt"].distribution == "biozoo-scgpt" and registry.plugins["scgpt"].healthy
    impostor = registry.plugins["scgpt (scgpt-impostor)"]
    assert impostor.status == "broken" and "belongs to biozoo-scgpt" in impostor.reason
    assert registry.model_entry("scgpt/cls").plugin == "scgpt"  # attributed by architecture, not to `core`


def test_strict_mode_fails_loudly(fake_plugins: FakePlugins, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_plugins.add("broken", "import nope_nope\n")
    monkeypatch.setenv("BIOZOO_STRICT", "1")
    with pytest.raises(PluginError, match=r"plugin 'broken' \(biozoo-broken 1.2.3\) failed to import"):
        get_registry()


def test_allow_and_deny_lists(fake_plugins: FakePlugins, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_plugins.add("good", GOOD)
    fake_plugins.add("broken", "import nope_nope\n")
    monkeypatch.setenv("BIOZOO_DISABLE_PLUGINS", "broken")
    assert _statuses()["broken"].status == "disabled"
    from biozoo.registry import reset_registry

    reset_registry()
    monkeypatch.setenv("BIOZOO_PLUGINS", "")
    statuses = _statuses()
    assert statuses["good"].status == "disabled" and statuses["core"].status == "ok"


def test_cli_survives_a_broken_plugin(fake_plugins: FakePlugins) -> None:
    fake_plugins.add("broken", "raise ImportError('this plugin is broken on purpose')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake_plugins.root), *sys.path])}
    for args in (["list"], ["plugins"], ["list", "--json"]):
        proc = subprocess.run(
            [sys.executable, "-m", "biozoo.cli.app", *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
    assert (
        "broken on purpose"
        in subprocess.run(
            [sys.executable, "-m", "biozoo.cli.app", "plugins", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    )


FOREIGN = """
from biozoo.plugins import FolderFormatDecl, hookimpl

@hookimpl
def biozoo_folder_formats():
    return [
        FolderFormatDecl(
            "otherlib",
            marker="config.json",
            match={"model_type": "tiny", "otherlib_version": None},
            target="fake_foreign_reader:read",
            description="otherlib save_pretrained folders",
        )
    ]
"""
FOREIGN_READER = """
import json
import shutil
from pathlib import Path
from biozoo.manifest.io import read_manifest

def read(folder):
    # describe the foreign folder with the tiny-transformer manifest, to prove the hand-off
    config = json.loads((folder / "config.json").read_text())
    return read_manifest(Path(config["manifest_for_test"]))
"""


def test_foreign_folder_is_recognised_by_data_and_read_by_its_plugin(fake_plugins: FakePlugins, tmp_path: Path) -> None:
    import json

    from biozoo import api
    from biozoo.errors import ManifestError

    (fake_plugins.root / "fake_foreign_reader.py").write_text(FOREIGN_READER)
    fake_plugins.add("otherlib", FOREIGN)
    tiny = Path(api.resolve("core/tiny-transformer")[0].path)
    folder = tmp_path / "saved"
    folder.mkdir()

    (folder / "config.json").write_text(json.dumps({"model_type": "other"}))
    with pytest.raises(ManifestError, match="no installed plugin recognises it") as info:
        api.resolve(folder)
    assert "otherlib (config.json with model_type='tiny', otherlib_version)" in info.value.hint
    assert "fake_foreign_reader" not in sys.modules  # a folder that does not match imports nothing

    (folder / "config.json").write_text(
        json.dumps({"model_type": "tiny", "otherlib_version": "0.1", "manifest_for_test": str(tiny)})
    )
    located, origin = api.resolve(folder)
    assert located.manifest.id == "core/tiny-transformer" and "folder format" in origin
    assert api.info(folder)["manifest"]["id"] == "core/tiny-transformer"


def test_folder_format_declarations_are_checked(fake_plugins: FakePlugins) -> None:
    from biozoo.plugins import FolderFormatDecl

    with pytest.raises(PluginError, match="JSON file"):
        FolderFormatDecl("x", marker="../config.json", match={"a": 1}, target="m:f")
    with pytest.raises(PluginError, match="at least one"):
        FolderFormatDecl("x", marker="config.json", match={}, target="m:f")


@pytest.mark.parametrize("raised", ["SystemExit(3)", "KeyboardInterrupt()", "GeneratorExit()"])
def test_plugin_raising_any_base_exception_is_quarantined(fake_plugins: FakePlugins, raised: str) -> None:
    fake_plugins.add("exits", f"raise {raised}\n")
    fake_plugins.add(
        "hookexits",
        f"""
from biozoo.plugins import hookimpl

@hookimpl
def biozoo_components():
    raise {raised}
""",
    )
    fake_plugins.add("good", GOOD)
    statuses = _statuses()
    name = raised.split("(")[0]
    assert statuses["exits"].status == "broken" and name in statuses["exits"].reason
    assert statuses["hookexits"].status == "broken" and name in statuses["hookexits"].reason
    assert statuses["good"].status == "ok"


def test_component_module_raising_system_exit_is_a_plugin_error(fake_plugins: FakePlugins) -> None:
    fake_plugins.add("good", GOOD)
    (fake_plugins.root / "fake_good_models.py").write_text("raise SystemExit(3)\n")
    with pytest.raises(PluginError, match="cannot import 'fake_good_models:Head': SystemExit"):
        get_registry().component_class("good.head")


def _cli(fake_plugins: FakePlugins, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake_plugins.root), *sys.path]), "COLUMNS": "300"}
    return subprocess.run(
        [sys.executable, "-m", "biozoo.cli.app", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_survives_a_plugin_that_exits_at_import(fake_plugins: FakePlugins) -> None:
    fake_plugins.add("exits", "raise SystemExit(3)\n")
    listed = _cli(fake_plugins, "list")
    assert listed.returncode == 0, listed.stderr
    assert "core/tiny-transformer" in listed.stdout
    proc = _cli(fake_plugins, "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    row = next(r for r in json.loads(proc.stdout) if r["name"] == "exits")
    assert row["status"] == "broken" and "SystemExit: 3" in row["reason"]


SDPA_AGAIN = """
from biozoo.plugins import ComponentDecl, ConverterDecl, ProcessorDecl, hookimpl

@hookimpl
def biozoo_attention_processors():
    return [ProcessorDecl("sdpa", "biozoo.attention.processors:EagerProcessor", "not sdpa", priority=99, auto=True)]

@hookimpl
def biozoo_converters():
    return [ConverterDecl("scgpt", "fake_nothing:convert", "a second scgpt converter")]
"""


def test_a_plugin_claiming_a_core_processor_name_changes_nothing_and_is_shown(fake_plugins: FakePlugins) -> None:
    """A plugin declaring `sdpa` used to make `auto` switch every model to another kernel, silently."""
    import torch

    from biozoo.assembly import assemble
    from biozoo.attention import explain
    from biozoo.attention.processors import SdpaProcessor
    from biozoo.manifest.io import parse_manifest
    from tests.support.models import tiny_manifest

    fake_plugins.add("dup", SDPA_AGAIN)
    registry = get_registry()
    assert registry.plugins["dup"].status == "ok"
    assert isinstance(registry.processor("sdpa"), SdpaProcessor)  # named: still the core's
    model = assemble(parse_manifest(tiny_manifest()), device="cpu").eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        model(input_ids=ids)
    for row in explain(model):  # `zoo explain` says the clash was seen
        assert "name clash: 'sdpa' claimed by core and dup: the core's kernel is used" in row["reason"]
    assert "attention processor 'sdpa' also claimed by core; the core's is used, this one never runs" in (
        registry.plugin_warnings("dup")
    )


def test_auto_choice_is_the_same_with_and_without_a_clashing_plugin(fake_plugins: FakePlugins) -> None:
    import torch

    from biozoo.assembly import assemble
    from biozoo.attention import explain
    from biozoo.manifest.io import parse_manifest
    from biozoo.registry import reset_registry
    from tests.support.models import tiny_manifest

    def ran() -> set[str]:
        model = assemble(parse_manifest(tiny_manifest()), device="cpu").eval()
        with torch.no_grad():
            model(input_ids=torch.tensor([[1, 2, 3, 4]]))
        return {row["ran"] for row in explain(model)}

    before = ran()
    fake_plugins.add("dup", SDPA_AGAIN)
    reset_registry()
    assert ran() == before


def test_cli_lists_every_claimant_and_marks_the_conflict(fake_plugins: FakePlugins) -> None:
    fake_plugins.add("dup", SDPA_AGAIN)
    rows = json.loads(_cli(fake_plugins, "list", "--kind", "processors", "--json").stdout)
    sdpa = {r["plugin"]: r for r in rows if r["name"] == "sdpa"}
    assert set(sdpa) >= {"core", "dup"}
    assert "also claimed by dup" in sdpa["core"]["conflict"]
    assert "also claimed by core" in sdpa["dup"]["conflict"]
    assert all(r["conflict"] == "" for r in rows if r["name"] != "sdpa")
    converters = json.loads(_cli(fake_plugins, "list", "--kind", "converters", "--json").stdout)
    assert {r["plugin"] for r in converters if r["name"] == "scgpt"} >= {"dup"}
    table = _cli(fake_plugins, "list", "--kind", "processors").stdout
    assert "conflict" in table and table.count("sdpa") >= 2
    plugins = json.loads(_cli(fake_plugins, "plugins", "--json").stdout)
    dup = next(r for r in plugins if r["name"] == "dup")
    assert dup["status"] == "ok"
    assert "attention processor 'sdpa' also claimed by core" in dup["warnings"][0]
    assert "also claimed by core" in _cli(fake_plugins, "plugins").stdout


def test_three_plugins_claiming_a_processor_name_are_all_listed(fake_plugins: FakePlugins) -> None:
    fake_plugins.add("twin", GOOD.replace("good.", "twin."), dist="biozoo-twin-a")
    fake_plugins.add("one", GOOD.replace("good.", "one."))
    fake_plugins.add("two", GOOD.replace("good.", "two."))
    rows = json.loads(_cli(fake_plugins, "list", "--kind", "processors", "--json").stdout)
    kernel = [r for r in rows if r["name"] == "good-kernel"]
    assert {r["plugin"] for r in kernel} == {"one", "two", "twin"}
    assert all("unusable until one is removed" in r["conflict"] for r in kernel)


def test_the_fix_for_an_unusable_plugin_depends_on_why(fake_plugins: FakePlugins, monkeypatch) -> None:
    """'install it' helps only a plugin that is not installed; disabled, incompatible and broken ones need else."""
    from biozoo.registry import reset_registry

    fake_plugins.add("good", GOOD)
    fake_plugins.add("future", GOOD.replace("good.", "future."), requires="biozoo>=99")
    fake_plugins.add("broken", "import this_module_does_not_exist\n")
    monkeypatch.setenv("BIOZOO_DISABLE_PLUGINS", "good")
    reset_registry()
    registry = get_registry()
    fixes = {name: registry.plugin_fix(name) for name in ("good", "future", "broken", "absent")}
    assert "BIOZOO_DISABLE_PLUGINS" in fixes["good"] and "pip install" not in fixes["good"]
    assert "upgrade" in fixes["future"] and "pip install" not in fixes["future"]
    assert "zoo plugins" in fixes["broken"] and "pip install" not in fixes["broken"]
    assert "pip install biozoo-absent" in fixes["absent"]
    with pytest.raises(UnknownNameError) as info:
        registry.component_decl("good.head")
    assert "disabled" in info.value.message and "BIOZOO_DISABLE_PLUGINS" in (info.value.hint or "")


def test_an_unknown_converter_does_not_invent_a_package_to_install() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_registry().converter("nosuch")
    assert "pip install" not in str(info.value) and "zoo list --kind converters" in (info.value.hint or "")


def test_a_plugin_filter_naming_nothing_installed_is_said_not_silent() -> None:
    env = {**os.environ, "BIOZOO_PLUGINS": "nosuch"}
    proc = subprocess.run(
        [sys.executable, "-m", "biozoo.cli.app", "list", "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0
    assert "warning: BIOZOO_PLUGINS names 'nosuch', which is not installed" in proc.stderr
    json.loads(proc.stdout)  # the machine-readable output stays clean


def test_one_table_drives_every_hook() -> None:
    """A hook is its function, its declaration class and one HOOKS row: nothing else may be left out."""
    import dataclasses
    import inspect

    from biozoo.plugins import hookspecs
    from biozoo.plugins.check import _TARGET_CHECKS
    from biozoo.plugins.declarations import PluginSpec

    specs = {name for name, fn in vars(hookspecs).items() if inspect.isfunction(fn) and name.startswith("biozoo_")}
    assert {hook.name for hook in hookspecs.HOOKS} == specs
    assert {hook.field for hook in hookspecs.HOOKS} == {f.name for f in dataclasses.fields(PluginSpec)} - {"name"}
    assert set(_TARGET_CHECKS) == {hook.field for hook in hookspecs.HOOKS}
    registry = get_registry()
    for hook in hookspecs.HOOKS:
        if hook.key is not None:
            assert registry.table(hook.field) in registry._tables()


def test_a_hook_returning_the_wrong_type_breaks_only_its_plugin(fake_plugins) -> None:
    fake_plugins.add(
        "wrongtype",
        "from biozoo.plugins import hookimpl\n@hookimpl\ndef biozoo_tasks():\n    return ['embed']\n",
    )
    status = get_registry().plugins["wrongtype"]
    assert status.status == "broken"
    assert "biozoo_tasks() returned str where a TaskDecl was expected" in status.reason
    assert get_registry().plugins["core"].healthy
