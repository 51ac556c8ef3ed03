"""Run the real `zoo` CLI in a subprocess, as a user would (fresh interpreter, real exit codes)."""

from __future__ import annotations

import os
import subprocess
import sys


def zoo(*args: str, timeout: float = 300, path: str | None = None, **env: str) -> subprocess.CompletedProcess:
    """``zoo ARGS`` in a fresh interpreter; ``path`` goes first on its ``sys.path`` (fake plugins), ``env`` is added."""
    environ = {**os.environ, **env}
    if path is not None:
        environ["PYTHONPATH"] = os.pathsep.join([path, *sys.path])
    return subprocess.run(
        [sys.executable, "-m", "biozoo.cli.app", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
    )
