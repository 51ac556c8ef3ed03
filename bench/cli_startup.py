"""Wall time of ``zoo --help`` and ``zoo list`` in fresh processes, and proof they skip torch.

Target (issue 2): ``zoo list`` at most 0.3 s wall on the 2-core CI machine.
For scale, the same machine's ``python -c pass`` and ``python -c "import torch"``
are measured in the same run.

Run: ``python bench/cli_startup.py`` (prints a Markdown table for docs/benchmarks.md).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 15
ZOO = shutil.which("zoo") or str(Path(sys.executable).with_name("zoo"))

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "zoo --help": [ZOO, "--help"],
    "zoo list": [ZOO, "list"],
    "zoo list --json": [ZOO, "list", "--json"],
    "zoo list --kind components": [ZOO, "list", "--kind", "components"],
}


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def imports_torch(cmd: list[str]) -> bool:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "biozoo.cli.app", *cmd[1:]],
                          capture_output=True, text=True, check=True)
    return any(line.rstrip().endswith("| torch") for line in proc.stderr.splitlines())


def main() -> None:
    for cmd in COMMANDS.values():
        wall(cmd)  # warm the page cache once
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(RUNS):  # interleaved so background load hits every command alike
        for name, cmd in COMMANDS.items():
            samples[name].append(wall(cmd))
    print(f"median and max of {RUNS} fresh processes each\n")
    print("| command | median s | max s | imports torch |")
    print("|---|---|---|---|")
    for name, values in samples.items():
        torch_flag = "–" if not name.startswith("zoo") else ("yes" if imports_torch(COMMANDS[name]) else "no")
        print(f"| `{name}` | {statistics.median(values):.3f} | {max(values):.3f} | {torch_flag} |")


if __name__ == "__main__":
    main()
