"""Attention kernels on CPU: time and peak memory per kernel, side by side with diffusers' processors.

What is measured: one attention *layer* (q/k/v projections, attention, output
projection; 512 wide, 8 heads of 64) on the same input and weights, so
diffusers' ``Attention`` + ``AttnProcessor`` (eager) / ``AttnProcessor2_0``
(SDPA) and biozoo's ``MultiHeadAttention`` + each registered kernel do the
same work outside the kernel. biozoo kernels get a ``key_padding`` mask;
diffusers gets its own convention, an additive ``(B, 1, S)`` mask with
-10000 at padding (what its UNets build). ``linear`` computes a different
function (shown for its cost only) and ``varlen-self`` zeros padded query
rows; ``max |diff|`` compares every row with biozoo ``sdpa`` on valid rows.

Shapes (full run):

* ``ragged``: 32 cells with 100..1200 tokens (seeded uniform), right-padded to
  the longest: what an unsorted scGPT batch looks like (~45% padding);
* ``sorted``: 32 cells with 560..640 tokens: a length-sorted batch (little padding);
* ``dense``: 8 x 256, no mask (the shape of the diffusers research timings).

``--quick``: ``ragged`` 16 cells of 50..600 tokens and ``dense`` 4 x 256, 3 rounds.

Method:

* **Time**: one worker process per shape builds every variant, warms each up
  once, then runs ``--rounds`` interleaved rounds (round r runs every variant
  once, in an order rotated by r); the table shows the median and the minimum.
* **Peak memory**: a fresh subprocess per (shape, variant). After a warm-up
  call, the kernel's peak-RSS counter is reset (``/proc/self/clear_refs``);
  the column is VmHWM after one more call minus VmRSS before it: what that
  call allocated at its peak (inputs and weights excluded).
* 2 torch threads (the CPU host has 2 vCPUs; ``--threads 1`` when other processes are busy: a
  descheduled OpenMP thread stalls every parallel region, which hurts kernels made of many small
  calls, such as ``varlen``, far more than one big call); ``torch.inference_mode``.

Run from the repository root (check ``uptime`` first: another heavy process
skews both columns):

    .venv/bin/python bench/attention_kernels.py --quick     # ~2 min
    .venv/bin/python bench/attention_kernels.py             # full; ~10-15 min on 2 vCPUs, ~6 GB peak (eager)
    .venv/bin/python bench/attention_kernels.py --kernels sdpa,varlen,diffusers-sdpa

The Markdown table goes to stdout; progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

WIDTH, HEADS = 512, 8
BIOZOO = ["sdpa", "eager", "sliced", "varlen", "varlen-self", "flex", "linear"]
DIFFUSERS = ["diffusers-eager", "diffusers-sdpa"]


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    low: int
    high: int
    masked: bool = True

    def lengths(self) -> list[int]:
        import numpy as np

        rng = np.random.default_rng(0)
        return [int(n) for n in rng.integers(self.low, self.high + 1, size=self.batch)]


FULL = [Shape("ragged", 32, 100, 1200), Shape("sorted", 32, 560, 640), Shape("dense", 8, 256, 256, masked=False)]
QUICK = [Shape("ragged", 16, 50, 600), Shape("dense", 4, 256, 256, masked=False)]


def _shape(name: str, quick: bool) -> Shape:
    return next(s for s in (QUICK if quick else FULL) if s.name == name)


# -- worker side ------------------------------------------------------------------------------------------------


def _setup(shape: Shape, variants: list[str]) -> tuple[dict[str, Any], Any]:
    """Inputs and one callable per variant, all sharing the same weights."""
    import torch

    from biozoo.attention import set_processor
    from biozoo.nn.attention import MultiHeadAttention

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    torch.manual_seed(0)
    lengths = shape.lengths()
    s = max(lengths)
    x = torch.randn(shape.batch, s, WIDTH)
    pad = torch.arange(s)[None, :] >= torch.tensor(lengths)[:, None]  # True = padding (torch convention)
    mha = MultiHeadAttention(WIDTH, HEADS).eval()
    runs: dict[str, Any] = {}
    for name in variants:
        if name.startswith("diffusers-"):
            runs[name] = _diffusers(name, mha, pad if shape.masked else None, x)
            continue

        def run(name: str = name) -> Any:
            set_processor(mha, name)
            return mha(x, key_padding_mask=pad if shape.masked else None)[0]

        runs[name] = run
    return runs, ~pad


def _diffusers(name: str, mha: Any, pad: Any, x: Any) -> Any:
    import torch
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    attn = Attention(query_dim=WIDTH, heads=HEADS, dim_head=WIDTH // HEADS, bias=True, out_bias=True).eval()
    with torch.no_grad():
        for ours, theirs in ((mha.q_proj, attn.to_q), (mha.k_proj, attn.to_k), (mha.v_proj, attn.to_v)):
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
        attn.to_out[0].load_state_dict(mha.out_proj.state_dict())
    attn.set_processor(AttnProcessor() if name == "diffusers-eager" else AttnProcessor2_0())
    mask = None if pad is None else (pad.to(x.dtype) * -10000.0)[:, None, :]
    return lambda: attn(x, attention_mask=mask)


def _worker_time(shape: Shape, variants: list[str], rounds: int) -> dict[str, Any]:
    import torch

    runs, valid = _setup(shape, variants)
    times: dict[str, list[float]] = {v: [] for v in variants}
    diffs: dict[str, float | None] = {}
    with torch.inference_mode():
        reference = runs["sdpa"]() if "sdpa" in runs else None
        for name, run in runs.items():  # warm-up (flex traces here), and the comparison
            out = run()
            diffs[name] = None if reference is None else float((out - reference)[valid].abs().max())
        for r in range(rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for name in order:
                start = time.perf_counter()
                runs[name]()
                times[name].append(time.perf_counter() - start)
            print(f"  {shape.name}: round {r + 1}/{rounds}", file=sys.stderr)
    return {"times": times, "diffs": diffs}


def _status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _worker_memory(shape: Shape, variant: str) -> dict[str, Any]:
    import torch

    runs, _ = _setup(shape, [variant])
    with torch.inference_mode():
        runs[variant]()
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
        before = _status("VmRSS")
        out = runs[variant]()
        peak = _status("VmHWM")
    del out
    return {"peak_bytes": peak - before}


# -- orchestration ----------------------------------------------------------------------------------------------


def _spawn(*args: str) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    sys.stderr.write(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _available(variants: list[str]) -> list[str]:
    keep = []
    for name in variants:
        if name.startswith("diffusers-"):
            try:
                import diffusers  # noqa: F401
            except ImportError:
                print(f"skipping {name}: diffusers is not installed (pip install diffusers==0.42.1)", file=sys.stderr)
                continue
        keep.append(name)
    return keep


def _load_warning() -> str:
    load1 = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    if load1 > 0.5 * cpus:
        return f"load average {load1:.1f} on {cpus} CPUs before the run: other processes were busy; expect noise"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--kernels", default=",".join(BIOZOO + DIFFUSERS))
    parser.add_argument("--shapes", default=None, help="comma-separated shape names (default: all)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker (1 on a busy machine)")
    parser.add_argument("--worker", choices=["time", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    variants = [v for v in args.kernels.split(",") if v]
    if args.worker:
        shape = _shape(args.shape, args.quick)
        result = _worker_time(shape, variants, rounds) if args.worker == "time" else _worker_memory(shape, variants[0])
        print(json.dumps(result))
        return 0
    os.environ["BENCH_THREADS"] = str(args.threads)  # inherited by the workers
    warning = _load_warning()
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    variants = _available(variants)
    shapes = QUICK if args.quick else FULL
    if args.shapes:
        shapes = [s for s in shapes if s.name in args.shapes.split(",")]
    quick = ["--quick"] if args.quick else []
    lines = [
        "| shape | kernel | median ms | min ms | peak MB | max abs diff vs sdpa |",
        "|---|---|---|---|---|---|",
    ]
    for shape in shapes:
        lengths = shape.lengths()
        print(f"{shape.name}: timing {len(variants)} variants", file=sys.stderr)
        timed = _spawn(
            "--worker", "time", "--shape", shape.name, "--rounds", str(rounds), "--kernels", ",".join(variants), *quick
        )
        label = (
            f"{shape.name} {shape.batch}x({min(lengths)}..{max(lengths)})"
            if shape.masked
            else (f"{shape.name} {shape.batch}x{max(lengths)}")
        )
        padding = 1 - sum(lengths) / (len(lengths) * max(lengths))
        if shape.masked:
            label += f", {padding:.0%} padding"
        for name in variants:
            print(f"{shape.name}: peak memory of {name}", file=sys.stderr)
            peak = _spawn("--worker", "memory", "--shape", shape.name, "--kernels", name, *quick)["peak_bytes"]
            ts = timed["times"][name]
            diff = timed["diffs"][name]
            lines.append(
                f"| {label} | {name} | {statistics.median(ts) * 1e3:.1f} | {min(ts) * 1e3:.1f} | "
                f"{peak / 2**20:.0f} | {'' if diff is None else f'{diff:.1e}'} |"
            )
    print("\n".join(lines))
    import torch

    note = f"\ntorch {torch.__version__}, {args.threads} thread(s), {rounds} interleaved rounds (medians)."
    print(note + (f" Note: {warning}." if warning else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
