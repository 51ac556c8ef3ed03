"""Renaming without breaking published manifests: former names of components, processors and models still
resolve, with a deprecation warning that names the current one."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from biozoo.errors import BiozooDeprecationWarning, DuplicateNameError, PluginError
from biozoo.plugins import ComponentDecl, ProcessorDecl
from biozoo.registry import get_registry
from tests.support.cli import zoo

if TYPE_CHECKING:
    from tests.support.fake_plugins import FakePlugins

RENAMED = """
from pathlib import Path
from biozoo.plugins import ComponentDecl, ProcessorDecl, hookimpl

@hookimpl
def biozoo_components():
    return [ComponentDecl("renamed.head", "head", "fake_renamed_models:Head", aliases=("renamed.old_head",))]

@hookimpl
def biozoo_attention_processors():
    return [ProcessorDecl("quick", "biozoo.attention.processors:SdpaProcessor", aliases=("fast-old",))]

@hookimpl
def biozoo_manifests():
    return [Path({folder!r})]
"""
HEAD = """
from biozoo.components.base import Component
from biozoo.plugins import ComponentKind

class Head(Component):
    kind = ComponentKind.HEAD

    def __init__(self, d_model: int = 4) -> None:
        super().__init__()
"""


def _renamed_model(folder: Path) -> Path:
    """The core's tiny model, renamed: its id is renamed/tiny-v2 and its former id renamed/tiny an alias."""
    from biozoo._core_plugin import registry_dir

    shutil.copytree(registry_dir() / "core" / "tiny-transformer", folder)
    manifest = folder / "manifest.yaml"
    text = manifest.read_text().replace("id: core/tiny-transformer", "id: renamed/tiny-v2\naliases: [renamed/tiny]")
    manifest.write_text(text)
    return folder


@pytest.fixture
def renamed(fake_plugins: FakePlugins, tmp_path: Path) -> FakePlugins:
    (fake_plugins.root / "fake_renamed_models.py").write_text(HEAD)
    fake_plugins.add("renamed", RENAMED.format(folder=str(_renamed_model(tmp_path / "models"))))
    return fake_plugins


def test_a_former_component_name_resolves_with_a_warning_naming_the_current_one(renamed: FakePlugins) -> None:
    registry = get_registry()
    with pytest.warns(BiozooDeprecationWarning, match="'renamed.old_head' is now called 'renamed.head'"):
        decl = registry.component_decl("renamed.old_head")
    assert decl.name == "renamed.head"
    with pytest.warns(BiozooDeprecationWarning):
        assert registry.component_class("renamed.old_head") is registry.component_class("renamed.head")
    assert "renamed.old_head" not in registry.components.names()  # listings show current names only


def test_a_former_processor_name_resolves_with_a_warning(renamed: FakePlugins) -> None:
    with pytest.warns(BiozooDeprecationWarning, match="'fast-old' is now called 'quick'"):
        assert get_registry().processor("fast-old").name == "sdpa"


def test_a_former_model_id_loads_the_model_and_the_cli_says_so_in_one_line(renamed: FakePlugins) -> None:
    import biozoo

    with pytest.warns(BiozooDeprecationWarning, match="model 'renamed/tiny' is now called 'renamed/tiny-v2'"):
        model = biozoo.load("renamed/tiny")
    assert model.zoo.manifest.id == "renamed/tiny-v2"
    result = zoo("info", "renamed/tiny", path=str(renamed.root), COLUMNS="400")
    assert result.returncode == 0, result.stderr
    assert "warning: model 'renamed/tiny' is now called 'renamed/tiny-v2'" in result.stderr
    assert "Warning" not in result.stderr and ".py:" not in result.stderr  # no Python warning format


def test_a_current_name_wins_over_an_alias(fake_plugins: FakePlugins, renamed: FakePlugins, tmp_path: Path) -> None:
    folder = _renamed_model(tmp_path / "other")  # a model whose real id is the renamed plugin's alias
    manifest = folder / "manifest.yaml"
    text = manifest.read_text()
    manifest.write_text(text.replace("id: renamed/tiny-v2\naliases: [renamed/tiny]", "id: renamed/tiny"))
    fake_plugins.add(
        "other", f"from pathlib import Path\nfrom biozoo.plugins import hookimpl\n@hookimpl\n"
        f"def biozoo_manifests():\n    return [Path({str(folder)!r})]\n"
    )  # fmt: skip
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", BiozooDeprecationWarning)
        assert get_registry().model_entry("renamed/tiny").plugin == "other"


def test_an_alias_claimed_for_two_names_is_a_clash_naming_both(fake_plugins: FakePlugins, tmp_path: Path) -> None:
    for plugin, model_id in (("one", "one/a"), ("two", "two/b")):
        folder = _renamed_model(tmp_path / plugin)
        manifest = folder / "manifest.yaml"
        manifest.write_text(manifest.read_text().replace("id: renamed/tiny-v2", f"id: {model_id}"))
        fake_plugins.add(
            plugin, f"from pathlib import Path\nfrom biozoo.plugins import hookimpl\n@hookimpl\n"
            f"def biozoo_manifests():\n    return [Path({str(folder)!r})]\n"
        )  # fmt: skip
    with pytest.raises(DuplicateNameError, match="former name of 'one/a' \\(one\\) and of 'two/b' \\(two\\)"):
        get_registry().model_entry("renamed/tiny")


def test_an_alias_outside_the_plugins_namespace_breaks_only_that_plugin(fake_plugins: FakePlugins) -> None:
    fake_plugins.add(
        "thief",
        "from biozoo.plugins import ComponentDecl, hookimpl\n@hookimpl\ndef biozoo_components():\n"
        "    return [ComponentDecl('thief.head', 'head', 'x.y:Head', aliases=('scgpt.cls_decoder',))]\n",
    )
    status = get_registry().plugins["thief"]
    assert status.status == "broken" and "'scgpt.cls_decoder' is outside the plugin's namespace" in status.reason


def test_bad_aliases_are_refused_where_they_are_declared() -> None:
    with pytest.raises(PluginError, match="lists itself"):
        ComponentDecl("a.b", "head", "x.y:Z", aliases=("a.b",))
    with pytest.raises(PluginError, match="list of former names"):
        ComponentDecl("a.b", "head", "x.y:Z", aliases="a.c")
    with pytest.raises(PluginError, match="lower-case"):
        ProcessorDecl("quick", "x.y:Z", aliases=("Fast",))


def test_a_manifest_alias_must_be_a_model_id() -> None:
    from pydantic import ValidationError

    from biozoo.manifest.schema import Manifest

    with pytest.raises(ValidationError, match="alias 'Not An Id'"):
        Manifest.model_validate({"id": "a/b", "aliases": ["Not An Id"], "architecture": {"name": "a.b"}})
