"""Count host synchronisations in the hot paths on a CUDA GPU (issue 11: no host syncs per step or call).

PyTorch reports every operation that makes the host wait for the GPU (``.item()``, ``bool(tensor)``, a
data-dependent shape, a blocking copy) when ``torch.cuda.set_sync_debug_mode("warn")`` is on. Each path runs once
to warm up, then once counted:

* scGPT ``encode`` (a small random model, 2 layers, right-padded batch) with each attention processor that
  applies, in float32 and bfloat16;
* the autoregressive model's ``generate`` (``autoregressive/pbmc-small``, 8 cells, 16 genes): syncs per step;
* Chroma's ``denoise`` and one whole SDE step (``chroma/demo``, 2 samples, 60 residues).

The table (path, syncs, where the first one happened) goes to stdout. ``python bench/cuda_syncs.py [--device
cuda]``; it refuses to run without CUDA (the debug mode exists only there).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable

import torch


def count_syncs(fn: Callable[[], object]) -> tuple[int, str]:
    """Synchronisations made by ``fn()`` and the innermost biozoo frame of the first one."""
    fn()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    where = f"{'/'.join(syncs[0].filename.split('/')[-2:])}:{syncs[0].lineno}" if syncs else ""
    return len(syncs), where


def scgpt_paths(device: str) -> dict[str, Callable[[], object]]:
    import biozoo

    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([40, 33, 17, 8])
    src = torch.randint(10, 500, (4, 40), generator=g)
    keep = torch.arange(40)[None] < lengths[:, None]
    src = src.masked_fill(~keep, 0).to(device)
    values = torch.rand(4, 40, generator=g).to(device)
    pad = (~keep).to(device)
    paths = {}
    for dtype in (torch.float32, torch.bfloat16):
        m = biozoo.load("scgpt/cls", device=device, dtype=dtype)
        for proc in ("sdpa", "eager", "varlen", "varlen-self"):

            def run(m=m, proc=proc) -> object:
                biozoo.set_processor(m, proc)
                with torch.inference_mode():
                    return m.encode(src, values, pad)

            paths[f"scgpt/cls encode, {str(dtype)[6:]}, {proc}"] = run
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs CUDA: torch.cuda.set_sync_debug_mode exists only there")
    import biozoo

    rows: list[tuple[str, str, str]] = []

    def measure(name: str, fn: Callable[[], object], per: int = 1) -> None:
        try:
            n, where = count_syncs(fn)
            rows.append((name, f"{n}" + (f" ({n / per:.1f} per step)" if per > 1 else ""), where))
        except Exception as exc:  # one failing path is a row, not the end of the run
            rows.append((name, "failed", f"{type(exc).__name__}: {exc}"[:160]))

    try:
        for name, fn in scgpt_paths(args.device).items():
            measure(name, fn)
    except Exception as exc:
        rows.append(("scgpt paths", "failed", f"{type(exc).__name__}: {exc}"[:160]))
    try:
        from biozoo_autoregressive.generation import generate

        ar = biozoo.load("autoregressive/pbmc-small", device=args.device)
        measure("autoregressive generate, 8 cells x 16 genes", lambda: generate(ar, 8, max_length=16, seed=0), 16)
    except Exception as exc:
        rows.append(("autoregressive", "failed", f"{type(exc).__name__}: {exc}"[:160]))
    try:
        chroma = biozoo.load("chroma/demo", device=args.device)
        from biozoo_chroma.backbone.ideal import alpha_helix

        X = alpha_helix(60, device=args.device).expand(2, -1, -1, -1).contiguous()
        C = torch.ones(2, 60, dtype=torch.long, device=args.device)
        with torch.inference_mode():
            measure("chroma/demo denoise, 2 x 60 residues", lambda: chroma.denoise(X, C, 0.5))
        measure(
            "chroma/demo sample, 2 x 60 residues, 10 SDE steps",
            lambda: chroma.sample(samples=2, steps=10, chain_lengths=[60], seed=0),
            10,
        )
    except Exception as exc:
        rows.append(("chroma", "failed", f"{type(exc).__name__}: {exc}"[:160]))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    print("| path | host synchronisations | first one at |")
    print("|---|---|---|")
    for name, n, where in rows:
        print(f"| {name} | {n} | {where} |")


if __name__ == "__main__":
    main()
