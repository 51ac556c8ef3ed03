"""``zoo plugin new NAME``: a plugin project that installs, passes ``zoo plugins --check`` and its own tests.

Why a scaffold in the core: the four spellings of a plugin's name (distribution, import package, namespace,
model id), the entry point, the core range, a manifest with sha256 and test vectors, and a test suite that runs
the core's checks are each easy to get wrong by hand. The templates (``templates/*.tmpl``, package data) ship
with the core that renders them, so what they use is what this core offers; ``tests/test_plugin_scaffold.py``
installs a rendered project in a fresh venv and runs its tests.

The model folder is written by the project's own ``make_model`` module (what the author re-runs later), in a
subprocess that sees the staged project as an installed plugin (a temporary ``dist-info`` with its entry point):
assembling the manifest needs the plugin's component. The project folder appears whole or not at all.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata, resources
from pathlib import Path

from biozoo._version import __version__ as CORE_VERSION
from biozoo.errors import BiozooError
from biozoo.plugins.loader import ENTRY_POINT_GROUP, NAMESPACE_RE, namespace_for

# path in the new project -> template; "{package}" and "{name}" are filled in
FILES = {
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    ".github/workflows/ci.yml": "ci.yml.tmpl",
    "{package}/__init__.py": "package_init.py.tmpl",
    "{package}/plugin.py": "plugin.py.tmpl",
    "{package}/model.py": "model.py.tmpl",
    "{package}/make_model.py": "make_model.py.tmpl",
    "tests/conftest.py": "conftest.py.tmpl",
    "tests/test_{name}.py": "test_plugin.py.tmpl",
}
RESERVED = frozenset({"core"})  # the core's own plugin name
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


class ScaffoldError(BiozooError):
    """The plugin name cannot be used, or the project could not be written."""


def core_range(version: str = CORE_VERSION) -> str:
    """The core versions a new plugin supports: this minor series before 1.0 (``>=0.1,<0.2``), else this major."""
    major, minor = (int(part) for part in re.findall(r"\d+", version)[:2])
    if major == 0:
        return f">={major}.{minor},<{major}.{minor + 1}"
    return f">={major}.{minor},<{major + 1}"


def spellings(name: str) -> dict[str, str]:
    """The names a plugin goes by, from its plugin name (``gene_mini``): distribution, import package, ..."""
    return {
        "name": name,  # entry-point name = plugin name = component namespace = model id namespace
        "dist": "biozoo-" + name.replace("_", "-"),  # hyphens in the distribution name only
        "package": f"biozoo_{name}",
        "core_range": core_range(),
        "core_version": CORE_VERSION,
    }


def check_name(name: str) -> None:
    """A plugin name the loader accepts as a namespace, not reserved and not taken by an installed plugin."""
    if not NAMESPACE_RE.match(name):
        fixed = namespace_for(name)
        raise ScaffoldError(
            f"{name!r} is not a valid plugin name: it names the plugin's components ('{name}.NAME'), so it must be "
            "lower-case letters, digits and '_', starting with a letter",
            f"use {fixed!r} (`zoo plugin new {fixed}`); the distribution is then {spellings(fixed)['dist']!r}",
        )
    if name in RESERVED:
        raise ScaffoldError(f"the plugin name {name!r} is reserved for biozoo itself", "choose another name")
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if namespace_for(ep.name) == name or ep.name == name:
            dist = ep.dist.name if ep.dist else "?"
            raise ScaffoldError(
                f"a plugin named {ep.name!r} is already installed (distribution {dist})",
                "choose another name (`zoo plugins` lists the installed ones): two plugins cannot share a name",
            )


def render(name: str) -> dict[str, str]:
    """The project's text files, path -> content (the model folder is written by :func:`create`)."""
    names = spellings(name)
    templates = resources.files(__name__) / "templates"
    files = {}
    for path, template in FILES.items():
        text = (templates / template).read_text(encoding="utf-8")
        files[path.format(**names)] = _PLACEHOLDER.sub(lambda m: names[m.group(1)], text)
    return files


def create(name: str, folder: Path | str | None = None, *, overwrite: bool = False) -> Path:
    """Write the project for plugin ``name`` into ``folder`` (default ``./NAME``); returns the folder.

    Refuses an existing folder unless ``overwrite``, and then replaces only a project this command wrote for the
    same plugin. Nothing is left behind when any step fails.
    """
    from biozoo.utils.atomic import staged_output

    check_name(name)
    target = Path(folder) if folder is not None else Path(name)
    package = spellings(name)["package"]
    files = render(name)
    mine = (f"{package}/plugin.py",)  # --overwrite replaces a project this command wrote for this plugin, nothing else
    with staged_output(target, overwrite=overwrite, folder=True, flag="--dir", markers=mine) as stage:
        for path, text in files.items():
            (stage / path).parent.mkdir(parents=True, exist_ok=True)
            (stage / path).write_text(text, encoding="utf-8")
        write_model_folder(stage, name)
    return target


def write_model_folder(project: Path, name: str) -> None:
    """Run ``python -m biozoo_NAME.make_model`` for a project that is not installed yet, as if it were."""
    names = spellings(name)
    with tempfile.TemporaryDirectory(prefix="biozoo-scaffold-") as site:
        info = Path(site) / f"{names['package']}-0.1.0.dist-info"
        info.mkdir()
        requires = f"Requires-Dist: biozoo{names['core_range']}\n"
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {names['dist']}\nVersion: 0.1.0\n{requires}")
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {names['package']}.plugin\n")
        env = {k: v for k, v in os.environ.items() if k not in ("BIOZOO_DISABLE_PLUGINS", "BIOZOO_STRICT")}
        env["BIOZOO_PLUGINS"] = name  # other installed plugins stay out of it (the core always loads)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in the new project
        env["PYTHONPATH"] = os.pathsep.join([str(project), site, *filter(None, [os.environ.get("PYTHONPATH")])])
        proc = subprocess.run(
            [sys.executable, "-m", f"{names['package']}.make_model"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise ScaffoldError(
            f"writing the model folder of the new plugin failed: {proc.stderr.strip()[-2000:]}",
            "this is a bug in biozoo's scaffold or a broken install of biozoo/torch: `zoo plugins --check core`",
        )
