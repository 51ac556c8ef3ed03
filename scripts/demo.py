"""The README demo: what a new user sees in their first minute with biozoo.

Runs real ``zoo`` commands (printed before they run) and a few lines of the
Python API. Everything works offline from a fresh clone.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ZOO = str(Path(sys.executable).with_name("zoo"))


def run(*args: str) -> None:
    print(f"\n$ zoo {shlex.join(args)}", flush=True)
    subprocess.run([ZOO, *args], check=True)


def main() -> None:
    run("plugins")
    run("list")
    run("info", "core/tiny-transformer")
    run("load", "core/tiny-transformer", "--dtype", "bfloat16")
    run("verify", "core/tiny-transformer")
    run("verify", "core/tiny-transformer", "--processor", "eager")

    print("\n$ python  # the same from Python, and which attention kernel each layer ran", flush=True)
    import torch

    import biozoo

    model = biozoo.load("core/tiny-transformer")
    ids = torch.tensor([[3, 7, 1, 9, 0, 0]])
    with torch.no_grad():
        out = model(input_ids=ids, padding_mask=ids.eq(0))
    print("logits:", [round(x, 4) for x in out["logits"][0].tolist()])
    for row in biozoo.explain(model):
        print(f"  {row['module']}: ran {row['ran']} ({row['reason']})")


if __name__ == "__main__":
    main()
