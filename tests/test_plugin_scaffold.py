"""``zoo plugin new NAME``: the project it writes installs, passes ``zoo plugins --check`` and its own tests.

The first test is issue 12's done-when check, run offline: a fresh venv that sees the running interpreter's
packages (biozoo, torch, pytest), the new project installed into it with pip, then the CLI and pytest in it.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from biozoo._version import __version__ as CORE_VERSION
from biozoo.scaffold import FILES, ScaffoldError, core_range, create
from biozoo.utils.atomic import plain_mode

EXPECTED = {
    "pyproject.toml",
    "README.md",
    ".github/workflows/ci.yml",
    "biozoo_demo_x/__init__.py",
    "biozoo_demo_x/plugin.py",
    "biozoo_demo_x/model.py",
    "biozoo_demo_x/make_model.py",
    "biozoo_demo_x/manifests/tiny/manifest.yaml",
    "biozoo_demo_x/manifests/tiny/model.safetensors",
    "biozoo_demo_x/manifests/tiny/test_vectors.safetensors",
    "tests/conftest.py",
    "tests/test_demo_x.py",
}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "COLUMNS" and not k.startswith(("PYTEST_", "BIOZOO_PLUGINS"))}


def _run(args: list[str], cwd: Path, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run([python, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


def _zoo(args: list[str], cwd: Path, python: str = sys.executable) -> subprocess.CompletedProcess:
    return _run(["-m", "biozoo.cli.app", *args], cwd, python)


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _venv_seeing_this_interpreter(folder: Path) -> str:
    """A venv (``--system-site-packages``) that also sees this interpreter's site-packages, itself a venv's."""
    venv.create(folder, system_site_packages=True, with_pip=False)
    python = folder / "bin" / "python"
    inner = _run(["-c", "import site; print(site.getsitepackages()[0])"], folder, str(python)).stdout.strip()
    lines = "".join(f"import site; site.addsitedir({path!r})\n" for path in site.getsitepackages())
    (Path(inner) / "_biozoo_parent_env.pth").write_text(lines)
    return str(python)


def test_a_new_plugin_installs_passes_the_checks_is_listed_and_passes_its_tests(tmp_path: Path) -> None:
    created = _zoo(["plugin", "new", "demo_x"], tmp_path)
    assert created.returncode == 0, created.stderr[-3000:]
    assert _files(tmp_path / "demo_x") == EXPECTED
    python = _venv_seeing_this_interpreter(tmp_path / "venv")
    install = _run(
        ["-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-e", "./demo_x"],
        tmp_path,
        python,
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]

    check = _zoo(["plugins", "--check", "demo_x", "--json"], tmp_path, python)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    (report,) = json.loads(check.stdout)
    assert report["label"] == "plugin 'demo_x' (biozoo-demo-x 0.1.0)" and report["ok"]
    done = {(c["subject"], c["check"]): c["status"] for c in report["checks"]}
    assert done[("model demo_x/tiny", "test vectors")] == "ok"
    assert done[("component demo_x.attention_pool_head", "import, kind")] == "ok"

    listed = _zoo(["list", "--json"], tmp_path, python)
    assert listed.returncode == 0, listed.stderr[-3000:]
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert rows["demo_x/tiny"]["plugin"] == "demo_x" and rows["demo_x/tiny"]["available"]

    tests = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "./demo_x"], tmp_path, python)
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and " failed" not in tests.stdout, tests.stdout[-3000:]
    assert "declares no attention processor" in tests.stdout or "biozoo-attention" in tests.stdout


def test_the_project_spells_each_name_as_its_place_requires(tmp_path: Path) -> None:
    project = create("demo_x", tmp_path / "demo_x")
    assert _files(project) == EXPECTED
    meta = tomllib.loads((project / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "biozoo-demo-x"
    assert meta["project"]["entry-points"]["biozoo.plugins"] == {"demo_x": "biozoo_demo_x.plugin"}
    (core,) = [Requirement(d) for d in meta["project"]["dependencies"]]
    assert core.name == "biozoo" and str(core.specifier) == str(SpecifierSet(core_range()))
    assert CORE_VERSION in core.specifier
    assert core_range("0.1.0") == ">=0.1,<0.2" and core_range("1.4.2") == ">=1.4,<2"
    assert meta["tool"]["setuptools"]["package-data"] == {"biozoo_demo_x": ["manifests/**/*"]}
    texts = {p: (project / p).read_text() for p in _files(project) if not p.endswith(".safetensors")}
    assert not [p for p, text in texts.items() if "{{" in text or "}}" in text]  # every placeholder filled
    assert "id: demo_x/tiny" in texts["biozoo_demo_x/manifests/tiny/manifest.yaml"]
    assert "0" * 64 not in texts["biozoo_demo_x/manifests/tiny/manifest.yaml"]  # sha256 filled in
    assert 'pytest_plugins = ["biozoo.testing"]' in texts["tests/conftest.py"]
    assert "zoo plugins --check demo_x" in texts[".github/workflows/ci.yml"]
    files, folders = plain_mode(), plain_mode(directory=True)
    for path in [project, *project.rglob("*")]:
        assert path.stat().st_mode & 0o7777 == (folders if path.is_dir() else files), path


def test_the_generated_python_is_lint_clean(tmp_path: Path) -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("needs ruff (the test extra)")
    project = create("demo_x", tmp_path / "demo_x")
    rules = ["--select", "E,F,W,I,B,UP,SIM,RUF", "--line-length", "120", "--target-version", "py311"]
    proc = subprocess.run(
        [ruff, "check", "--isolated", "--no-cache", *rules, "."], cwd=project, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_an_existing_folder_is_refused_and_overwrite_replaces_only_its_own_project(tmp_path: Path) -> None:
    first = _zoo(["plugin", "new", "demo_x", "--dir", "proj"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (tmp_path / "proj" / "notes.txt").write_text("mine")
    again = _zoo(["plugin", "new", "demo_x", "--dir", "proj"], tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr and "--overwrite" in again.stderr
    assert (tmp_path / "proj" / "notes.txt").read_text() == "mine"
    other = _zoo(["plugin", "new", "other_y", "--dir", "proj", "--overwrite"], tmp_path)  # not its project
    assert other.returncode == 1 and "not one this command wrote" in other.stderr, other.stderr
    replaced = _zoo(["plugin", "new", "demo_x", "--dir", "proj", "--overwrite"], tmp_path)
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert _files(tmp_path / "proj") == EXPECTED
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]  # nothing staged is left beside it


def test_a_failed_step_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the model folder cannot be written
    with pytest.raises(ScaffoldError, match="writing the model folder of the new plugin failed"):
        create("demo_x", tmp_path / "demo_x")
    assert list(tmp_path.iterdir()) == []


def test_every_template_is_written() -> None:
    from importlib import resources

    shipped = {p.name for p in (resources.files("biozoo.scaffold") / "templates").iterdir()}
    assert shipped == set(FILES.values())
