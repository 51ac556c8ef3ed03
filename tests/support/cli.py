"""Run the real `zoo` CLI in a subprocess, as a user would (fresh interpreter, real exit codes)."""

from __future__ import annotations

import os
import subprocess
import sys


def zoo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "biozoo.cli.app", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )
