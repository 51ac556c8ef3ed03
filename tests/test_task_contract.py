"""The task contract (biozoo.tasks): what the CLI passes a plugin's task, checked when the task is resolved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from biozoo.errors import PluginError
from biozoo.registry import get_registry
from biozoo.tasks import CONTRACTS, AnnotateTask, EmbedTask, check_task, contract_of
from tests.support.cli import zoo

if TYPE_CHECKING:
    from tests.support.fake_plugins import FakePlugins

ARCHITECTURE = "core.sequence_classifier"  # the tiny core model's: it loads in a second

PLUGIN = """
from biozoo.plugins import TaskDecl, hookimpl

@hookimpl
def biozoo_tasks():
    return [TaskDecl(task="embed", architecture={arch!r}, target="fake_tasks_impl:embed")]
"""

TASK = """
import json
from pathlib import Path

def embed(model, input_path, output_path, *, {params}):
    kwargs = dict({names})
    Path({record!r}).write_text(json.dumps(sorted(kwargs)))
    Path(output_path).write_bytes(b"written by the fake task")
    return {result}
"""

GOOD_RESULT = '{"cells": 3, "dims": 8, "key": "obsm[\\"X_fake\\"]", "steps": []}'


def _install(fake_plugins: FakePlugins, tmp_path: Path, params: str, result: str = GOOD_RESULT) -> Path:
    record = tmp_path / "kwargs.json"
    names = ", ".join(f"{p.split('=')[0].strip()}={p.split('=')[0].strip()}" for p in params.split(","))
    (fake_plugins.root / "fake_tasks_impl.py").write_text(
        TASK.format(params=params, names=names, record=str(record), result=result)
    )
    fake_plugins.add("faketasks", PLUGIN.format(arch=ARCHITECTURE), dist="biozoo-fake-tasks")
    return record


def _embed(fake_plugins: FakePlugins, tmp_path: Path, *extra: str):
    source = tmp_path / "cells.h5ad"
    source.write_bytes(b"only its name and existence are checked before the task runs")
    output = tmp_path / "out.h5ad"
    args = ("embed", "core/tiny-transformer", str(source), "-o", str(output), *extra)
    return zoo(*args, path=str(fake_plugins.root)), output


def test_the_cli_passes_a_task_exactly_the_keywords_of_its_contract(fake_plugins: FakePlugins, tmp_path: Path) -> None:
    record = _install(fake_plugins, tmp_path, "batch_size, var_column, layer, seed")
    result, output = _embed(fake_plugins, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(record.read_text()) == sorted(CONTRACTS["embed"].keywords)
    assert output.read_bytes() == b"written by the fake task"


def test_a_task_missing_a_keyword_is_refused_naming_it_the_plugin_and_the_contract(
    fake_plugins: FakePlugins, tmp_path: Path
) -> None:
    record = _install(fake_plugins, tmp_path, "batch_size, layer, seed")
    result, output = _embed(fake_plugins, tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "it takes no keyword 'var_column'" in result.stderr
    assert "biozoo-fake-tasks" in result.stderr  # the distribution to blame
    assert "embed(model, input_path, output_path, *, batch_size, var_column, layer, seed" in result.stderr
    assert not record.exists() and not output.exists()  # refused before it ran


def test_plugins_check_reports_a_task_that_breaks_its_contract(fake_plugins: FakePlugins, tmp_path: Path) -> None:
    _install(fake_plugins, tmp_path, "batch_size, var_column, layer, seed, required_thing")
    result = zoo("plugins", "--check", "faketasks", path=str(fake_plugins.root), COLUMNS="400")
    assert result.returncode == 1
    assert "it requires 'required_thing', which the CLI never passes" in result.stdout + result.stderr


def test_a_task_that_takes_devices_gets_them_and_one_that_does_not_is_refused_for_devices(
    fake_plugins: FakePlugins, tmp_path: Path
) -> None:
    _install(fake_plugins, tmp_path, "batch_size, var_column, layer, seed")
    result, output = _embed(fake_plugins, tmp_path, "--devices", "cpu,cpu:1")
    if "cpu:1" in result.stderr and "device" in result.stderr and "cannot split" not in result.stderr:
        pytest.skip("this torch build does not accept a second CPU device name")
    assert result.returncode == 1
    assert "cannot split cells over devices" in result.stderr
    assert not output.exists()


def test_a_result_without_what_the_cli_reads_is_an_error_not_a_traceback(
    fake_plugins: FakePlugins, tmp_path: Path
) -> None:
    _install(fake_plugins, tmp_path, "batch_size, var_column, layer, seed", result='{"cells": 3}')
    result, output = _embed(fake_plugins, tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "KeyError" not in result.stderr
    assert "without 'dims', 'key', 'steps'" in result.stderr
    assert not output.exists()  # a failed task publishes nothing


def test_a_task_with_kwargs_or_defaults_follows_the_contract() -> None:
    def catch_all(model, input_path, output_path, **options):  # the scgpt finetune wrapper's shape
        return {}

    def extra_option(model, input_path, output_path, *, batch_size, var_column, layer, seed, key="X", devices=None):
        return {}

    check_task("embed", catch_all, "catch_all")
    check_task("embed", extra_option, "extra_option")
    check_task("fold", lambda: None, "a task the CLI does not run")  # plugin-invented tasks are not checked


def test_too_few_positional_arguments_are_refused() -> None:
    def embed(model, output_path, *, batch_size, var_column, layer, seed):
        return {}

    with pytest.raises(PluginError, match="fewer than 3 positional arguments"):
        check_task("embed", embed, "embed")


def test_contracts_are_read_from_the_protocols() -> None:
    contract = contract_of("embed", EmbedTask)
    assert contract.positional == ("model", "input_path", "output_path")
    assert contract.keywords == ("batch_size", "var_column", "layer", "seed")
    optional = ("key", "devices", "chunk_size", "parts", "resume", "restart", "engine", "per_shard")
    assert contract.optional == optional
    assert contract.result_keys == ("cells", "dims", "key", "steps")
    assert contract_of("annotate", AnnotateTask).optional == optional
    assert set(CONTRACTS) == {"embed", "annotate", "finetune", "generate", "sample", "score", "design", "pack"}


def test_every_installed_plugins_tasks_follow_their_contracts() -> None:
    registry = get_registry()
    names = registry.tasks.names()
    for name in names:  # none in the core-only venv; every first-party task with the plugins
        task, architecture = name.split(":")
        registry.task(task, architecture)  # raises on a broken contract


def test_the_cores_embed_task_follows_the_embed_contract_and_takes_devices() -> None:
    from biozoo.singlecell.pipeline import annotate_task, embed_task

    task = embed_task(lambda model: None)
    check_task("embed", task, "biozoo.singlecell.pipeline.embed_task")
    assert CONTRACTS["embed"].accepts(task, "devices")
    annotate = annotate_task(lambda model: None)
    check_task("annotate", annotate, "biozoo.singlecell.pipeline.annotate_task")
    assert all(CONTRACTS["annotate"].accepts(annotate, k) for k in CONTRACTS["annotate"].optional)


def test_key_is_passed_only_when_given_and_refused_by_a_task_without_it(
    fake_plugins: FakePlugins, tmp_path: Path
) -> None:
    record = _install(fake_plugins, tmp_path, "batch_size, var_column, layer, seed, key=None")
    result, _ = _embed(fake_plugins, tmp_path, "--key", "X_mine", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert "key" in json.loads(record.read_text())
    plain = _install_again(fake_plugins, tmp_path, "batch_size, var_column, layer, seed")
    result, _ = _embed(fake_plugins, tmp_path, "--key", "X_mine", "--overwrite")
    assert result.returncode == 1 and "cannot choose its key" in result.stderr and "leave out --key" in result.stderr
    assert not plain.exists()


def _install_again(fake_plugins: FakePlugins, tmp_path: Path, params: str) -> Path:
    """Replace the installed fake task's code (the plugin stays registered)."""
    record = tmp_path / "kwargs-again.json"
    names = ", ".join(f"{p.strip()}={p.strip()}" for p in params.split(","))
    (fake_plugins.root / "fake_tasks_impl.py").write_text(
        TASK.format(params=params, names=names, record=str(record), result=GOOD_RESULT)
    )
    return record
