"""The zoo CLI: light start-up, JSON for machines, clear errors without tracebacks."""

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

from tests.support.models import write_model


def zoo(*args: str, env: dict[str, str] | None = None, importtime: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "biozoo.cli.app", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def imported_modules(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


HEAVY_PLUGIN = """
from biozoo.plugins import ComponentDecl, hookimpl
@hookimpl
def biozoo_components():
    return [ComponentDecl("heavy.encoder", "encoder", "fake_heavy_models:Encoder")]
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["list"],
        ["list", "--json"],
        ["list", "--kind", "components"],
        ["plugins"],
        ["info", "core/tiny-transformer"],
    ],
)
def test_listing_commands_import_neither_torch_nor_model_code(args: list[str], fake_plugins: FakePlugins) -> None:
    fake_plugins.add("heavy", HEAVY_PLUGIN)
    (fake_plugins.root / "fake_heavy_models.py").write_text("import torch\n")
    env = {"PYTHONPATH": os.pathsep.join([str(fake_plugins.root), *sys.path])}
    proc = zoo(*args, env=env, importtime=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = imported_modules(proc.stderr)
    assert "torch" not in modules
    assert "fake_heavy_models" not in modules
    assert "biozoo.nn.attention" not in modules


def test_list_json_has_the_documented_fields() -> None:
    proc = zoo("list", "--json")
    rows = json.loads(proc.stdout)
    row = next(r for r in rows if r["id"] == "core/tiny-transformer")
    assert {"id", "plugin", "available", "description"} <= set(row)
    assert row["available"] is True and row["plugin"] == "core"


def test_list_pattern_filters() -> None:
    assert json.loads(zoo("list", "tiny", "--json").stdout)
    assert json.loads(zoo("list", "no-such-model-xyz", "--json").stdout) == []


def test_load_reports_what_happened() -> None:
    proc = zoo("load", "core/tiny-transformer", "--dtype", "bfloat16")
    assert proc.returncode == 0, proc.stderr
    for words in ("parameters", "69,317", "bfloat16", "cpu", "load time", "peak RSS", "model.safetensors", "sha256 ok"):
        assert words in proc.stdout


def test_verify_passes_for_the_reference_model() -> None:
    proc = zoo("verify", "core/tiny-transformer")
    assert proc.returncode == 0, proc.stderr
    assert "reproduces its test vectors" in proc.stdout


def test_verify_fails_when_outputs_drift(tmp_path: Path) -> None:
    import shutil

    import yaml
    from safetensors.torch import load_file, save_file

    from biozoo._core_plugin import registry_dir
    from tests.support.models import sha256

    folder = tmp_path / "drift"
    shutil.copytree(registry_dir() / "core" / "tiny-transformer", folder)
    vectors = load_file(str(folder / "test_vectors.safetensors"))
    vectors["output.logits"][0, 0] += 0.1
    save_file(vectors, folder / "test_vectors.safetensors")
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    manifest["test_vectors"]["sha256"] = sha256(folder / "test_vectors.safetensors")
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    proc = zoo("verify", str(folder))
    assert proc.returncode == 1
    assert "logits: 1 of 20 elements disagree" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["info", "nope/missing"], "no model named 'nope/missing'"),
        (["load", "core/tiny-transformr"], "did you mean core/tiny-transformer"),
        (["load", "/definitely/not/here"], "neither a registered model id"),
        (["load", "core/tiny-transformer", "--processor", "warp"], "no attention processor named 'warp'"),
    ],
)
def test_errors_are_one_clear_message(args: list[str], words: str) -> None:
    proc = zoo(*args)
    assert proc.returncode == 1
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr


def test_info_and_load_of_a_local_folder(tmp_path: Path) -> None:
    write_model(tmp_path / "m")
    info = json.loads(zoo("info", str(tmp_path / "m"), "--json").stdout)
    assert info["manifest"]["id"] == "test/tiny" and info["available"] is True
    assert zoo("load", str(tmp_path / "m")).returncode == 0


def test_python_api_mirrors_the_cli() -> None:
    import biozoo

    ids = {row["id"] for row in biozoo.list_models()}
    cli_ids = {row["id"] for row in json.loads(zoo("list", "--json").stdout)}
    assert ids == cli_ids
    checks = biozoo.verify("core/tiny-transformer", processor="eager")
    assert {c.name for c in checks} == {"embedding", "logits"} and all(c.ok for c in checks)


def test_explain_reports_the_kernel_each_layer_ran() -> None:
    rows = json.loads(zoo("explain", "core/tiny-transformer", "--json").stdout)
    assert [r["module"] for r in rows] == ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
    assert all(r["ran"] == "sdpa" and r["requested"] == "auto (default)" for r in rows)
    named = json.loads(zoo("explain", "core/tiny-transformer", "--processor", "eager", "--json").stdout)
    assert all(r["ran"] == "eager" and "set on the model" in r["requested"] for r in named)


def test_piped_output_does_not_depend_on_an_invented_terminal_width(tmp_path: Path) -> None:
    """rich assumed 80 columns without a terminal, and split 'sha256 ok' off a long origin path."""
    folder = tmp_path / ("a-long-folder-name-" * 4) / ("another-one-" * 5) / "model"
    write_model(folder)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.run(
        [sys.executable, "-m", "biozoo.cli.app", "load", str(folder)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if "model.safetensors" in line)
    assert str(folder) in line and "(sha256 ok)" in line


def test_80_columns_never_truncate_ids_nor_rewrap_yaml(tmp_path: Path) -> None:
    import yaml

    narrow = {"COLUMNS": "80"}
    ids = [row["id"] for row in json.loads(zoo("list", "--json").stdout)]
    listing = zoo("list", env=narrow).stdout
    assert all(len(line) <= 80 for line in listing.splitlines()), listing
    assert all(any(line.strip() == i or line.startswith(f"│ {i} ") for line in listing.splitlines()) for i in ids)

    info = zoo("info", "core/tiny-transformer", env=narrow).stdout
    document = info.split("\n", 2)[2]  # after the id and availability lines
    expected = json.loads(zoo("info", "core/tiny-transformer", "--json").stdout)["manifest"]
    assert yaml.safe_load(document) == expected

    explain = zoo("explain", "core/tiny-transformer", env=narrow).stdout.splitlines()
    assert all(len(line) <= 80 for line in explain), explain
    assert len(explain) <= 3 * 2  # two attention layers, at most three lines each
