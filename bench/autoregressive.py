"""Autoregressive (scModelForge) plugin on CPU: generation with and without the KV cache, and the
training step side by side with the reference scModelForge ``AutoregressiveTransformer``.

What runs (one invocation, one process for the timings; torch's default thread count, reported):

* **Generation.** ``biozoo_autoregressive.model.AutoregressiveTransformer`` with
  ``objective="next_token"`` and seeded random weights, in two shapes, both with a vocabulary of
  770 (765 PBMC genes + 5 specials) and max_seq_len 512: "small" (256 wide, 4 layers, 8 heads, ffn
  1024, learned positions) and "demo" (the shape ``scripts/train_autoregressive_pbmc.py`` trains:
  128 wide, 4 layers, 4 heads, ffn 256, rotary positions). ``eos_token_id=None``, so every cell reaches
  ``max_length``. For each shape, ``model.generate(32, max_length=L, seed=...)`` with L = 128 and
  256 genes, ``use_cache=True`` and ``use_cache=False`` alternated (3 runs with the cache, 2 without:
  the uncached runs are the slow part), medians. Throughput is
  generated genes per second (``n_cells * max_length / seconds``). Every run with both paths
  also checks that they give the same cells (``gene_ids`` and ``bin_ids``) for the same seed; the
  script exits non-zero if they differ.
* **Training step.** The reference ``scmodelforge.models.autoregressive.AutoregressiveTransformer``
  (imported from ``--reference-src``; needs ``omegaconf``) and ours with ``objective="scmodelforge"``
  (the same work) in the same config (vocabulary 770, 256 wide, 4 layers, 8 heads, ffn 1024,
  max_seq_len 512, dropout 0.1) and the same weights (ours loads the reference's state dict as is).
  One batch for everyone: 16 cells, 256 tokens, real lengths spread evenly over 100..256 (CLS
  included; ~30% padding), 15% of the genes masked (input ``<mask>``, label = the gene, -100
  elsewhere), per-cell log1p counts as ``values`` and per-cell rank bins as ``bin_ids``. A step is
  ``zero_grad`` + forward (loss) + backward + ``AdamW.step``, every variant with its own model
  copy and optimizer. Variants: the reference; biozoo with the ``sdpa`` and ``eager`` attention
  processors; for information, biozoo's ``next_token`` objective (bins as input, shifted targets)
  on the same cells. Steps are interleaved (each round runs every variant once, in rotated order)
  after warm-up steps; the table gives the median (and min) ms per step and the median over
  rounds of (variant / reference of the same round).
* **Forward latency.** ``eval()`` + ``no_grad`` forward (logits and embeddings, no labels) of the
  same batch, interleaved the same way; the reference also with PyTorch's fused encoder fast path
  switched off (``torch.backends.mha.set_fastpath_enabled(False)``), which is what it runs in
  eval otherwise.
* **Same numbers.** Before timing, on the fresh shared weights in ``eval()`` mode (no dropout):
  the loss, the logits at real positions, and (one backward each) every parameter's gradient of
  ours vs the reference; max |diff| is reported.
* **Peak memory** (full run only). Each training variant again in a fresh subprocess: the
  kernel's peak-RSS counter is reset (``/proc/self/clear_refs``) after the models and batch are
  built, then 1 warm-up + 3 steps; the column is VmHWM minus VmRSS at the reset (activations,
  gradients, optimizer state, allocator slack).

If the reference cannot be imported, its rows are skipped with a message (biozoo's still run).

**Cells per second** (``--cells N``, on its own): what ``zoo generate autoregressive/pbmc-small -n N``
does (the shipped model, its default max length, batches of 64 on CPU and 1024 on a GPU unless
``--batch-size``; writing the h5ad included), on ``--device`` (cpu, cuda), after a small warm-up
run; ``--compile`` and ``--sync-every`` pass through to ``generate``. Reports cells/s and genes/s
(JSON with ``--json``):

    .venv/bin/python bench/autoregressive.py --cells 256                 # CPU
    python bench/autoregressive.py --cells 1000 --device cuda            # the GPU run

Run (from the repository root; check ``uptime`` first, the machine has 2 shared vCPUs):

    .venv/bin/python bench/autoregressive.py            # full (~7 min on the idle 2-core machine)
    .venv/bin/python bench/autoregressive.py --quick    # tiny sizes, 2 repeats, no memory (< 30 s)
    .venv/bin/python bench/autoregressive.py --json out.json --reference-src /path/to/scModelForge/src

The Markdown tables go to stdout (paste into docs/benchmarks.md); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import biozoo
from biozoo_autoregressive.model import AutoregressiveTransformer

DEFAULT_REFERENCE = "/work/refs/scModelForge/src"
PAD, MASK, CLS = 0, 2, 3
N_BINS = 51


@dataclass(frozen=True)
class Sizes:
    """Everything the two modes (full, quick) differ in."""

    vocab: int
    gen_shapes: tuple[tuple[str, int, int, int, int, str], ...]  # (name, hidden, layers, heads, ffn, positional)
    gen_cells: int
    gen_lengths: tuple[int, ...]
    gen_repeats: int
    gen_nocache_repeats: int  # <= gen_repeats; the uncached runs are the slow part
    max_seq_len: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    batch: int
    seq: int
    min_len: int
    warmup: int
    steps: int
    fwd_warmup: int
    fwd_steps: int


FULL = Sizes(
    vocab=770,
    gen_shapes=(("small", 256, 4, 8, 1024, "learned"), ("demo", 128, 4, 4, 256, "rotary")),
    gen_cells=32,
    gen_lengths=(128, 256),
    gen_repeats=3,
    gen_nocache_repeats=2,
    max_seq_len=512,
    hidden=256,
    layers=4,
    heads=8,
    ffn=1024,
    batch=16,
    seq=256,
    min_len=100,
    warmup=3,
    steps=15,
    fwd_warmup=2,
    fwd_steps=10,
)
QUICK = Sizes(
    vocab=70,
    gen_shapes=(("tiny", 32, 2, 4, 64, "learned"), ("tiny", 32, 2, 4, 64, "rotary")),
    gen_cells=4,
    gen_lengths=(16, 32),
    gen_repeats=2,
    gen_nocache_repeats=2,
    max_seq_len=64,
    hidden=32,
    layers=2,
    heads=4,
    ffn=64,
    batch=4,
    seq=32,
    min_len=12,
    warmup=1,
    steps=2,
    fwd_warmup=1,
    fwd_steps=2,
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def import_reference(src: str) -> tuple[type | None, str]:
    """The reference class, or None and the reason it could not be imported."""
    if not Path(src).is_dir():
        return None, f"{src} is not a directory"
    if src not in sys.path:
        sys.path.insert(0, src)
    try:
        from scmodelforge.models.autoregressive import AutoregressiveTransformer as Reference
    except Exception as error:  # any import failure means: no reference columns
        return None, f"{type(error).__name__}: {error}"
    return Reference, ""


# -- generation --------------------------------------------------------------------------------------------------


def bench_generation(sizes: Sizes) -> list[dict[str, Any]]:
    rows = []
    for name, hidden, layers, heads, ffn, positional in sizes.gen_shapes:
        torch.manual_seed(0)
        model = AutoregressiveTransformer(
            sizes.vocab,
            hidden_dim=hidden,
            num_layers=layers,
            num_heads=heads,
            ffn_dim=ffn,
            max_seq_len=sizes.max_seq_len,
            positional=positional,
            objective="next_token",
            eos_token_id=None,
        ).eval()
        params = model.num_parameters()
        for use_cache in (True, False):  # warm-up: first calls pay one-off costs (allocations, dispatch)
            model.generate(2, max_length=8, seed=0, use_cache=use_cache)
        for length in sizes.gen_lengths:
            times: dict[bool, list[float]] = {True: [], False: []}
            same = True
            for repeat in range(sizes.gen_repeats):
                outs = {}
                order = (True, False) if repeat % 2 == 0 else (False, True)
                for use_cache in order if repeat < sizes.gen_nocache_repeats else (True,):
                    start = time.perf_counter()
                    cells = model.generate(sizes.gen_cells, max_length=length, seed=repeat, use_cache=use_cache)
                    seconds = time.perf_counter() - start
                    assert int(cells.lengths.min()) == length, "every cell must reach max_length (eos_token_id=None)"
                    times[use_cache].append(seconds)
                    outs[use_cache] = cells
                    log(f"  generate {name} {sizes.gen_cells}x{length} cache={use_cache}: {seconds:.2f} s")
                if False in outs:
                    same &= torch.equal(outs[True].gene_ids, outs[False].gene_ids)
                    same &= torch.equal(outs[True].bin_ids, outs[False].bin_ids)
            tokens = sizes.gen_cells * length
            cached, uncached = statistics.median(times[True]), statistics.median(times[False])
            rows.append(
                {
                    "model": name,
                    "hidden": hidden,
                    "layers": layers,
                    "heads": heads,
                    "ffn": ffn,
                    "positional": positional,
                    "params": params,
                    "cells": sizes.gen_cells,
                    "genes": length,
                    "cache_s": cached,
                    "nocache_s": uncached,
                    "cache_tok_s": tokens / cached,
                    "nocache_tok_s": tokens / uncached,
                    "speedup": uncached / cached,
                    "same_cells": bool(same),
                }
            )
    return rows


def bench_cells_per_second(
    n_cells: int, device: str, batch_size: int | None, compile: bool, sync_every: int | None
) -> dict[str, Any]:
    """``zoo generate autoregressive/pbmc-small -n n_cells`` on ``device``, timed (after a warm-up batch)."""
    import tempfile

    from biozoo_autoregressive import tasks

    model = biozoo.load("autoregressive/pbmc-small", device=device)
    original = type(model).generate

    def generate(self: Any, n: int, **kw: Any) -> Any:  # sync_every is the decoder's own option, not the task's
        return original(self, n, **kw, **({} if sync_every is None else {"sync_every": sync_every}))

    type(model).generate = generate
    options = {"batch_size": batch_size, "compile": compile}
    try:
        with tempfile.TemporaryDirectory() as folder:
            warm = min(n_cells, batch_size or 64)
            tasks.generate(model, Path(folder) / "warm.h5ad", n_cells=warm, progress=False, **options)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = tasks.generate(model, Path(folder) / "cells.h5ad", n_cells=n_cells, **options)
            seconds = time.perf_counter() - start
    finally:
        type(model).generate = original
    genes = result["genes_per_cell"] * result["cells"]
    return {
        "device": device if not device.startswith("cuda") else f"{device} ({torch.cuda.get_device_name(device)})",
        "cells": n_cells,
        "batch_size": batch_size or (tasks.GENERATE_BATCH_CPU if device == "cpu" else tasks.GENERATE_BATCH_GPU),
        "compile": compile,
        "sync_every": sync_every,
        "seconds": seconds,
        "cells_per_s": n_cells / seconds,
        "genes_per_s": genes / seconds,
        "genes_per_cell": result["genes_per_cell"],
    }


# -- training ----------------------------------------------------------------------------------------------------


def make_batch(sizes: Sizes, seed: int = 0) -> dict[str, torch.Tensor]:
    """Padded cells: CLS + distinct genes, 15% masked, log1p values, per-cell rank bins."""
    g = torch.Generator().manual_seed(seed)
    b, s = sizes.batch, sizes.seq
    lengths = torch.linspace(sizes.min_len, s, b).round().long()[torch.randperm(b, generator=g)]
    genes = torch.full((b, s), PAD)
    values = torch.zeros(b, s)
    bins = torch.zeros(b, s, dtype=torch.long)
    labels = torch.full((b, s), -100)
    for i, n in enumerate(lengths.tolist()):
        genes[i, 0] = CLS
        genes[i, 1:n] = 4 + torch.randperm(sizes.vocab - 4, generator=g)[: n - 1]
        counts = torch.distributions.Geometric(0.3).sample((n - 1,)) + 1
        values[i, 1:n] = torch.log1p(counts)
        ranks = values[i, 1:n].argsort().argsort().float()
        bins[i, 1:n] = 1 + (ranks * (N_BINS - 1) / (n - 1)).long().clamp(max=N_BINS - 2)
        masked = 1 + torch.randperm(n - 1, generator=g)[: max(1, round(0.15 * (n - 1)))]
        labels[i, masked] = genes[i, masked]
    attention_mask = (genes != PAD).long()
    input_ids = genes.masked_fill(labels != -100, MASK)
    # next_token objective: the cell itself as input and (shifted inside the model) as targets
    next_labels = genes.masked_fill(attention_mask == 0, -100)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "values": values,
        "labels": labels,
        "bin_ids": bins,
        "genes": genes,
        "next_labels": next_labels,
    }


def model_kwargs(sizes: Sizes) -> dict[str, Any]:
    return dict(
        hidden_dim=sizes.hidden,
        num_layers=sizes.layers,
        num_heads=sizes.heads,
        ffn_dim=sizes.ffn,
        dropout=0.1,
        max_seq_len=sizes.max_seq_len,
    )


def build_variants(sizes: Sizes, reference: type | None) -> tuple[dict[str, torch.nn.Module], dict[str, Callable]]:
    """Models (own copies, shared initial weights) and their ``model -> loss`` calls on one batch."""
    batch = make_batch(sizes)
    torch.manual_seed(0)
    models: dict[str, torch.nn.Module] = {}
    if reference is not None:
        models["reference"] = reference(sizes.vocab, **model_kwargs(sizes))
    ours = AutoregressiveTransformer(sizes.vocab, objective="scmodelforge", **model_kwargs(sizes))
    if reference is not None:
        ours.load_state_dict(models["reference"].state_dict(), strict=True)
    for processor in ("sdpa", "eager"):
        models[f"biozoo {processor}"] = copy.deepcopy(ours)
        biozoo.set_processor(models[f"biozoo {processor}"], processor)
    torch.manual_seed(0)
    models["biozoo next_token sdpa"] = AutoregressiveTransformer(
        sizes.vocab, objective="next_token", **model_kwargs(sizes)
    )
    biozoo.set_processor(models["biozoo next_token sdpa"], "sdpa")

    def masked(model: torch.nn.Module, *, loss: bool = True) -> Any:
        extra = {"labels": batch["labels"], "bin_ids": batch["bin_ids"]} if loss else {}
        return model(batch["input_ids"], batch["attention_mask"], batch["values"], **extra)

    def next_token(model: torch.nn.Module, *, loss: bool = True) -> Any:
        extra = {"labels": batch["next_labels"]} if loss else {}
        return model(batch["genes"], batch["attention_mask"], bin_ids=batch["bin_ids"], **extra)

    calls = {name: next_token if "next_token" in name else masked for name in models}
    return models, calls


def check_same_numbers(models: dict[str, torch.nn.Module], calls: dict[str, Callable], sizes: Sizes) -> dict:
    """Loss, logits and gradients of ours vs the reference on the shared initial weights, dropout off."""
    batch = make_batch(sizes)
    valid = batch["attention_mask"].bool()
    ref, result = models["reference"], {}
    for name in ("biozoo sdpa", "biozoo eager"):
        ours = models[name]
        outs, grads = {}, {}
        for side, model in (("ref", ref), ("ours", ours)):
            model.eval()
            model.zero_grad(set_to_none=True)
            out = calls[name](model)
            out.loss.backward()
            outs[side] = (float(out.loss.detach()), out.logits.detach())
            grads[side] = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
            model.zero_grad(set_to_none=True)
            model.train()
        result[name] = {
            "loss_ref": outs["ref"][0],
            "loss_ours": outs["ours"][0],
            "loss_abs_diff": abs(outs["ref"][0] - outs["ours"][0]),
            "logits_max_abs_diff": float((outs["ref"][1][valid] - outs["ours"][1][valid]).abs().max()),
            "grad_max_abs_diff": max(float((grads["ref"][k] - grads["ours"][k]).abs().max()) for k in grads["ref"]),
            "grad_max_abs": max(float(g.abs().max()) for g in grads["ref"].values()),
            "grad_keys_match": set(grads["ref"]) == set(grads["ours"]),
        }
    return result


def rounds(names: list[str], n: int) -> Iterator[tuple[int, str]]:
    """Every variant once per round, the order rotated each round."""
    for r in range(n):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            yield r, name


def bench_training(sizes: Sizes, reference: type | None) -> tuple[list[dict[str, Any]], dict]:
    models, calls = build_variants(sizes, reference)
    equality = check_same_numbers(models, calls, sizes) if reference is not None else {}
    names = list(models)
    optims = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    for m in models.values():
        m.train()

    step_ms: dict[str, dict[int, float]] = {name: {} for name in names}
    for r, name in rounds(names, sizes.warmup + sizes.steps):
        model, opt = models[name], optims[name]
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        calls[name](model).loss.backward()
        opt.step()
        ms = (time.perf_counter() - start) * 1e3
        if r >= sizes.warmup:
            step_ms[name][r] = ms
        if r == sizes.warmup + sizes.steps - 1 or r < sizes.warmup:
            log(f"  train step round {r} {name}: {ms:.0f} ms")

    fwd_names = list(names)
    if reference is not None:
        fwd_names.insert(1, "reference, fast path off")
    fwd_ms: dict[str, dict[int, float]] = {name: {} for name in fwd_names}
    for m in models.values():
        m.eval()
    with torch.no_grad():
        for r, name in rounds(fwd_names, sizes.fwd_warmup + sizes.fwd_steps):
            off = name == "reference, fast path off"
            model_name = "reference" if off else name
            if off:
                torch.backends.mha.set_fastpath_enabled(False)
            try:
                start = time.perf_counter()
                calls[model_name](models[model_name], loss=False)
                ms = (time.perf_counter() - start) * 1e3
            finally:
                torch.backends.mha.set_fastpath_enabled(True)
            if r >= sizes.fwd_warmup:
                fwd_ms[name][r] = ms
    medians = {n: round(statistics.median(v.values()), 1) for n, v in fwd_ms.items()}
    log(f"  forward ms: {medians}")

    def ratio(table: dict[str, dict[int, float]], name: str) -> float | None:
        if "reference" not in table:
            return None
        return statistics.median(table[name][r] / table["reference"][r] for r in table[name])

    rows = []
    for name in fwd_names:
        row: dict[str, Any] = {"variant": name}
        if name in step_ms:
            row |= {
                "step_ms": statistics.median(step_ms[name].values()),
                "step_min_ms": min(step_ms[name].values()),
                "step_vs_ref": ratio(step_ms, name),
            }
        row |= {"fwd_ms": statistics.median(fwd_ms[name].values()), "fwd_vs_ref": ratio(fwd_ms, name)}
        rows.append(row)
    return rows, equality


# -- memory (fresh subprocesses) ---------------------------------------------------------------------------------


def memory_worker(variant: str, reference_src: str) -> None:
    reference, why = import_reference(reference_src)
    if variant == "reference" and reference is None:
        raise SystemExit(why)
    models, calls = build_variants(FULL, reference)
    model, call = models[variant], calls[variant]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    del models
    gc.collect()
    model.train()
    Path("/proc/self/clear_refs").write_text("5")
    base = status_mb("VmRSS")
    for _ in range(4):
        opt.zero_grad(set_to_none=True)
        call(model).loss.backward()
        opt.step()
    print(json.dumps({"peak_delta_mb": status_mb("VmHWM") - base}))


def bench_memory(variants: list[str], reference_src: str) -> dict[str, float]:
    result = {}
    for variant in variants:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-worker", variant, "--reference-src", reference_src],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode:
            log(f"  memory {variant}: failed: {out.stderr.strip()[-300:]}")
            continue
        result[variant] = json.loads(out.stdout.strip().splitlines()[-1])["peak_delta_mb"]
        log(f"  memory {variant}: +{result[variant]:.0f} MiB")
    return result


# -- report ------------------------------------------------------------------------------------------------------


def fmt(x: float | None, spec: str = ".0f", suffix: str = "") -> str:
    return "–" if x is None else f"{x:{spec}}{suffix}"


def report(sizes: Sizes, gen: list[dict], train: list[dict], equality: dict, memory: dict, env: dict) -> str:
    lines = [
        f"torch {env['torch']}, {env['threads']} threads, {env['cpu']}; {env['minutes']:.1f} min; "
        f"load average (1/5/15 min) {env['load_before']} before, {env['load_generation']} after generation, "
        f"{env['load_training']} after training, {env['load_after']} at the end",
        "",
        f"Generation: next_token model, eos_token_id=None, {sizes.gen_cells} cells per batch; median of "
        f"{sizes.gen_repeats} runs with the cache, {sizes.gen_nocache_repeats} without (alternated, same seeds)",
        "",
        "| model | params | cells x genes | KV cache genes/s | no cache genes/s | speedup | same cells |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in gen:
        shape = (
            f"{g['model']} ({g['hidden']} wide, {g['layers']} layers, {g['heads']} heads, ffn {g['ffn']}, "
            f"{g['positional']} positions)"
        )
        lines.append(
            f"| {shape} | {g['params'] / 1e6:.2f}M | {g['cells']} x {g['genes']} | {g['cache_tok_s']:,.0f} "
            f"| {g['nocache_tok_s']:,.0f} | {g['speedup']:.1f}x | {'yes' if g['same_cells'] else '**no**'} |"
        )
    lines += [
        "",
        f"Training: vocabulary {sizes.vocab}, {sizes.hidden} wide, {sizes.layers} layers, {sizes.heads} heads, "
        f"ffn {sizes.ffn}, dropout 0.1; batch {sizes.batch} x {sizes.seq} (lengths {sizes.min_len}..{sizes.seq}), "
        f"AdamW; median of {sizes.steps} interleaved steps after {sizes.warmup} warm-up; forward = eval + no_grad, "
        f"median of {sizes.fwd_steps}",
        "",
        "| variant | train step ms (min) | step vs reference | forward ms | forward vs reference "
        "| peak RSS increase MiB (training) |",
        "|---|---|---|---|---|---|",
    ]
    for t in train:
        step = f"{t['step_ms']:.0f} ({t['step_min_ms']:.0f})" if "step_ms" in t else "–"
        mem = memory.get(t["variant"])
        lines.append(
            f"| {t['variant']} | {step} | {fmt(t.get('step_vs_ref'), '.2f', 'x')} | {t['fwd_ms']:.1f} "
            f"| {fmt(t.get('fwd_vs_ref'), '.2f', 'x')} | {fmt(mem)} |"
        )
    if equality:
        lines.append("")
        for name, e in equality.items():
            lines.append(
                f"Same numbers ({name} vs reference, eval mode, shared weights): loss {e['loss_ref']:.6f} vs "
                f"{e['loss_ours']:.6f} (|diff| {e['loss_abs_diff']:.1e}), logits max |diff| "
                f"{e['logits_max_abs_diff']:.1e}, gradients max |diff| {e['grad_max_abs_diff']:.1e} "
                f"(largest gradient {e['grad_max_abs']:.1e})"
            )
    return "\n".join(lines)


def main() -> None:
    # the reference's nn.TransformerEncoder warns about its own configuration on every build / call
    warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
    warnings.filterwarnings("ignore", message="Support for mismatched src_key_padding_mask and mask")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-src", default=DEFAULT_REFERENCE, help="folder holding the scmodelforge package")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 repeats, no memory runs (< 30 s)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS subprocesses")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    parser.add_argument("--cells", type=int, help="only time `zoo generate autoregressive/pbmc-small -n CELLS`")
    parser.add_argument("--device", default="cpu", help="with --cells: cpu, cuda, cuda:N")
    parser.add_argument("--batch-size", type=int, help="with --cells: cells per batch (default: 64 CPU, 1024 GPU)")
    parser.add_argument("--compile", action="store_true", help="with --cells: torch.compile each decoding step")
    parser.add_argument("--sync-every", type=int, help="with --cells: steps between host checks")
    args = parser.parse_args()
    if args.memory_worker:
        memory_worker(args.memory_worker, args.reference_src)
        return
    if args.cells:
        load = loadavg()
        row = bench_cells_per_second(args.cells, args.device, args.batch_size, args.compile, args.sync_every)
        row |= {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_model()}
        row |= {"load_before": load, "load_after": loadavg()}
        print(
            f"zoo generate autoregressive/pbmc-small -n {row['cells']} on {row['device']} (batch {row['batch_size']}, "
            f"compile {row['compile']}, torch {row['torch']}, {row['threads']} threads, load {load} -> "
            f"{row['load_after']}): {row['seconds']:.1f} s, {row['cells_per_s']:.1f} cells/s, "
            f"{row['genes_per_s']:,.0f} genes/s ({row['genes_per_cell']:.0f} genes per cell)"
        )
        if args.json:
            args.json.write_text(json.dumps(row, indent=2))
        return

    sizes = QUICK if args.quick else FULL
    start = time.perf_counter()
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_model(), "load_before": loadavg()}
    log(f"torch {env['torch']}, {env['threads']} threads; load average {env['load_before']}")
    reference, why = import_reference(args.reference_src)
    if reference is None:
        log(f"reference scModelForge not importable from {args.reference_src} ({why}): skipping its columns")
    log("generation ...")
    gen = bench_generation(sizes)
    env["load_generation"] = loadavg()
    log(f"training ... (load average {env['load_generation']})")
    train, equality = bench_training(sizes, reference)
    env["load_training"] = loadavg()
    memory: dict[str, float] = {}
    if not (args.quick or args.no_memory):
        log(f"memory ... (load average {env['load_training']})")
        memory = bench_memory([t["variant"] for t in train if "step_ms" in t], args.reference_src)
    env |= {"load_after": loadavg(), "minutes": (time.perf_counter() - start) / 60}
    if reference is None:
        env["reference"] = f"skipped: {why}"
    print(report(sizes, gen, train, equality, memory, env))
    if args.json:
        payload = {
            "env": env,
            "sizes": asdict(sizes),
            "generation": gen,
            "training": train,
            "equality": equality,
            "memory_mb": memory,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    failed = [g for g in gen if not g["same_cells"]]
    if failed:
        raise SystemExit(f"cached and uncached generation differ for {[(g['model'], g['genes']) for g in failed]}")


if __name__ == "__main__":
    main()
