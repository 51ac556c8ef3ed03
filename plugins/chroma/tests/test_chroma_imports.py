"""Every subpackage and top-level module of the plugin imports first in a fresh interpreter: no import cycle
depends on what came before (``import biozoo_chroma.diffusion`` used to fail through superposition -> graph)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import biozoo_chroma

TOP_LEVEL = sorted(m.name for m in pkgutil.iter_modules(biozoo_chroma.__path__, "biozoo_chroma."))
MODULES = [*TOP_LEVEL, "biozoo_chroma.graph.keys"]


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    script = (
        "import subprocess, sys\n"
        "bad = []\n"
        "for name in sys.argv[1:]:\n"
        "    r = subprocess.run([sys.executable, '-c', f'import {name}'], capture_output=True, text=True)\n"
        "    if r.returncode:\n"
        "        bad.append(name + ': ' + r.stderr.strip().splitlines()[-1])\n"
        "print('\\n'.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, *MODULES], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", result.stdout
    assert "biozoo_chroma.diffusion" in MODULES and "biozoo_chroma.graph.keys" in MODULES
