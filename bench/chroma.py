"""Chroma backbone sampling on CPU: time per SDE step and a whole sample, side by side with the reference.

The reference is generate-chroma 1.0.0's ``GraphBackbone`` (its ``sample_sde``, which ``Chroma.sample`` calls for
the backbone). It is not a dependency of biozoo; install it without its dependencies outside the repository:

    .venv/bin/pip install --no-deps --target /tmp/chroma_ref generate-chroma==1.0.0
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python bench/chroma.py            # full (~35 min on the idle 2-core machine)
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python bench/chroma.py --quick    # L=32/64, 1 round, 20-step sample (< 1 min)

Its display-only imports (nglview, sklearn, PIL) are replaced by empty stand-in modules, and the 2G3N centering
statistics it would download are computed from a structure in the plugin's golden files instead
(``scripts/make_chroma_structure_golden.py`` / ``scripts/make_chroma_graph_golden.py`` do the same). Nothing is
downloaded or installed. Without the reference the script stops with a message saying how to get it.

What runs, all in one process, float32, ``--threads`` torch threads (default: torch's own, printed):

* **Weights.** A reference ``GraphBackbone`` built after ``torch.manual_seed`` with random weights and
  public-like init_kwargs (``CONFIGS``; ``--config``); ours, ``ChromaBackbone`` with the same init_kwargs, loads
  its state dict through :func:`biozoo_chroma.graph.convert_reference_state_dict` (the converter's path),
  strictly.
* **Inputs.** Chroma's sampling defaults (reverse SDE, Euler-Maruyama, Langevin factor 2, inverse temperature
  10, not isothermal, t from 1 to 0.001) from ideal helices over the whole system, with the same injected noise
  on both sides (initial and per-step Z), both hidden dithers off (frame averaging, Kabsch) and torch's global
  generator seeded alike before each run (the ``random_log`` graph draws from it in the same order).
* **Time per SDE step** (one denoiser call, the score through the alignment and R^-1, the drift and the
  integrator update) at L=100 and L=500, one chain and four chains of L/4 (one sample each): a run of
  ``--steps`` steps timed whole and divided by the steps, ``--rounds`` rounds, the two sides alternating which
  goes first; the table gives medians and the median over rounds of (reference / ours of the same round).
* **A whole sample** (``--sample-steps``, default 500) at L=100, one chain, ``--sample-rounds`` rounds.
* **Same outputs.** One step from the same state on both sides (the arithmetic itself), and every timed
  run's last state against the other side's of the same round: the largest |difference| in Å and relative to
  the state's largest |coordinate| (random weights drive the states far from protein-like sizes, and float32
  rounding grows with them; on ``random_log`` graphs a rounding difference can flip a random neighbour
  choice after the first step, after which the trajectories part).

The reference's tqdm progress bar is switched off (``TQDM_DISABLE=1`` unless set). Its frame-averaging dither,
set to 0, still draws a normal sample that ours does not; that call runs on a forked generator so that both
sides' random graphs see the same draws.

The load average is printed before and after (the CI machine type has 2 shared vCPUs: check ``uptime``).
The Markdown table goes to stdout (paste into docs/benchmarks.md); progress to stderr. ``--profile`` prints the
top of a torch.profiler table of one step on each side instead of timing.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_HINT = (
    "the reference (generate-chroma 1.0.0) is not importable: install it outside the repository with\n"
    "  .venv/bin/pip install --no-deps --target /tmp/chroma_ref generate-chroma==1.0.0\n"
    "and run with PYTHONPATH=/tmp/chroma_ref"
)
ENTRY_A = {  # the backbone's feature set (research chroma.md 2.4, entry A)
    "node_features": [["internal_coords", {"log_lengths": True}]],
    "edge_features": ["distances_2mer", "orientations_2mer", "orientations_chain", "distances_chain"],
}
CONFIGS = {
    # Entry A features on a random_log graph (2.4: the public centering statistics do not fit kNN-30), at the
    # reference constructor's own sizes (the public sizes are unknown; this is the size a 2-core run allows).
    # prediction_type "scale" (X0 mixed with X_t by an SNR-biased weight, X0 -> X_t as t -> 0): with random
    # weights and "X0" the late, stiff steps overshoot, the states overflow and both sides' SVDs fail before
    # step 500. It adds one 128 -> 1 MLP per denoise, nothing measurable.
    "public-like": {
        "dim_nodes": 128, "dim_edges": 128, "num_neighbors": 30, **ENTRY_A, "num_layers": 3, "dropout": 0.1,
        "graph_criterion": "random_log", "graph_random_min_local": 20, "prediction_type": "scale",
    },
    # The same at research 2.3's illustrative 25.6M-parameter size (about 17 s per denoise at L=100 on 2 cores).
    "large": {
        "dim_nodes": 512, "dim_edges": 256, "num_neighbors": 60, **ENTRY_A, "num_layers": 12, "dropout": 0.1,
        "graph_criterion": "random_log", "graph_random_min_local": 20, "prediction_type": "scale",
    },
    # The reference constructor's defaults (kNN-30, three edge features).
    "defaults": {},
}  # fmt: skip
SAMPLE_KW = {  # Chroma.sample's defaults
    "langevin_factor": 2.0, "inverse_temperature": 10.0, "langevin_isothermal": False,
    "sde_func": "reverse_sde", "integrate_func": "euler_maruyama", "initialize_noise": True,
}  # fmt: skip
TSPAN = (1.0, 0.001)
SEED = 20260131
DEVICE = torch.device("cpu")  # --device
DTYPE = torch.float32  # --dtype (biozoo's weights; the reference runs in float32)


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def import_reference() -> None:
    """Stand-ins for chroma's display-only imports, then ``import chroma``; exit with the hint if missing."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]  # this file is also called chroma
    sys.modules.pop("chroma", None)
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_chroma_structure_golden import stub_modules

    stub_modules()
    os.environ.setdefault("TQDM_DISABLE", "1")  # the reference's per-step progress bar (stderr only)
    try:
        import chroma  # noqa: F401
        from chroma.models.graph_backbone import GraphBackbone  # noqa: F401
    except ImportError as exc:
        sys.exit(f"{REFERENCE_HINT}\n({type(exc).__name__}: {exc})")
    from make_chroma_graph_golden import patch_centering, structures

    patch_centering(structures())


def dither_off_reference() -> None:
    """The reference's frame-averaging dither at 0 (it calls the module's ``average_transforms``).

    At 0 the reference still draws its normal sample (ours draws nothing), which would shift the later
    ``random_log`` graph draws; the call runs on a forked generator so the global one is left as it was.
    """
    from chroma.layers.structure import transforms

    original = transforms.average_transforms

    def undithered(*args, **kwargs):
        kwargs["dither_eps"] = 0.0
        with torch.random.fork_rng(devices=[DEVICE] if DEVICE.type == "cuda" else []):
            return original(*args, **kwargs)

    transforms.average_transforms = undithered


class Side:
    """One implementation's sampler over injected noise: ``run(C, X_init, Z_init, Z_steps) -> last state``."""

    def __init__(self, name: str, model: torch.nn.Module, run: Callable[..., torch.Tensor]) -> None:
        self.name, self.model, self.run = name, model, run


def reference_side(kwargs: dict) -> tuple[Side, dict[str, torch.Tensor]]:
    from chroma.models.graph_backbone import GraphBackbone

    torch.manual_seed(SEED)
    model = GraphBackbone(**kwargs).eval().to(DEVICE)
    model.noise_perturb.loss_rmsd.rmsd.dither = False
    d = model.noise_perturb
    noise: dict = {}
    draw = d.base_gaussian.sample
    d.base_gaussian.sample = lambda C_: draw(C_, Z=noise["init"])

    def with_noise(fn):
        def drift(X_, X0_func, C_, t, **kw):
            Z = noise["steps"][noise["i"]]
            noise["i"] += 1
            return fn(X_, X0_func, C_, t, Z=Z, **kw)

        return drift

    d.sde_funcs = {k: with_noise(v) for k, v in d.sde_funcs.items()}

    def run(C, X_init, Z_init, Z_steps):
        noise.update(init=Z_init, steps=Z_steps, i=0)
        out = model.sample_sde(C, X_init=X_init, N=len(Z_steps), tspan=TSPAN, **SAMPLE_KW)
        return out["Xunc_trajectory"][-1]

    return Side("reference", model, run), model.state_dict()


def biozoo_side(kwargs: dict, state: dict[str, torch.Tensor]) -> Side:
    from biozoo_chroma.backbone import ChromaBackbone
    from biozoo_chroma.graph import convert_reference_state_dict

    model = ChromaBackbone(**kwargs).eval()
    model.load_state_dict(convert_reference_state_dict(state), strict=True)
    model = model.to(DEVICE, DTYPE)
    model.set_dither(False)

    def run(C, X_init, Z_init, Z_steps):
        out = model.diffusion.sample(
            model.denoise, C, X_init, steps=len(Z_steps), tspan=TSPAN, noise_init=Z_init, noise=list(Z_steps),
            **SAMPLE_KW,
        )  # fmt: skip
        return out.Xunc_trajectory[-1]

    return Side("biozoo", model, run)


def inputs(length: int, chains: int, steps: int, seed: int) -> tuple[torch.Tensor, ...]:
    """One system of ``chains`` equal chains (ideal helix over all of it), its initial and per-step noise."""
    from biozoo_chroma.backbone.ideal import alpha_helix

    if length % chains:
        raise SystemExit(f"L={length} does not split into {chains} equal chains")
    C = torch.arange(1, chains + 1).repeat_interleave(length // chains)[None]
    gen = torch.Generator().manual_seed(seed)
    Z_init = torch.randn(1, length * 4, 3, generator=gen)
    Z_steps = torch.randn(steps, 1, length, 4, 3, generator=gen)
    return C.to(DEVICE), alpha_helix(length).contiguous().to(DEVICE), Z_init.to(DEVICE), Z_steps.to(DEVICE)


def timed(side: Side, args: tuple[torch.Tensor, ...], seed: int) -> tuple[float, torch.Tensor]:
    torch.manual_seed(seed)  # the random_log graph's draws
    start = time.perf_counter()
    with torch.no_grad():
        out = side.run(*args)
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    return time.perf_counter() - start, out


def differences(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    diff = float((a.double() - b.double()).abs().max())
    return diff, diff / max(float(b.double().abs().max()), 1e-30)


def measure(sides: list[Side], length: int, chains: int, steps: int, rounds: int) -> dict:
    """``rounds`` interleaved runs of ``steps`` steps per side: per-step seconds, ratios, worst differences."""
    args = inputs(length, chains, steps, SEED + length + chains)
    seconds: dict[str, list[float]] = {s.name: [] for s in sides}
    ratios, worst_abs, worst_rel, finite = [], 0.0, 0.0, True
    for r in range(rounds):
        outs: dict[str, torch.Tensor] = {}
        for side in sides if r % 2 == 0 else sides[::-1]:
            t, outs[side.name] = timed(side, args, SEED + r)
            seconds[side.name].append(t / steps)
        if "reference" in outs:
            ratios.append(seconds["reference"][-1] / seconds["biozoo"][-1])
            a, rel = differences(outs["biozoo"], outs["reference"])
            worst_abs, worst_rel = max(worst_abs, a), max(worst_rel, rel)
            finite = finite and bool(torch.isfinite(outs["reference"]).all())
        log(f"  L={length} chains={chains} round {r + 1}/{rounds}: "
            + ", ".join(f"{k} {v[-1]:.3f} s/step" for k, v in seconds.items()))  # fmt: skip
    one_step = None
    if len(sides) == 2:  # the same first step from the same state: equal arithmetic, before any graph flip
        first = (*args[:3], args[3][:1])
        one = {side.name: timed(side, first, SEED)[1] for side in sides}
        one_step = differences(one["biozoo"], one["reference"])
    return {
        "median": {k: statistics.median(v) for k, v in seconds.items()},
        "min": {k: min(v) for k, v in seconds.items()},
        "ratio": statistics.median(ratios) if ratios else None,
        "abs": worst_abs, "rel": worst_rel, "finite": finite, "one_step": one_step,
    }  # fmt: skip


def profile(sides: list[Side], length: int, chains: int, steps: int, rows: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    args = inputs(length, chains, steps, SEED)
    for side in sides:
        timed(side, args, SEED)  # warm-up
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            timed(side, args, SEED)
        print(f"\n### {side.name}, L={length}, chains={chains}, {steps} steps\n")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def describe_machine(threads: int) -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, torch {torch.__version__}, "
        f"{threads} torch threads, biozoo {str(DTYPE).removeprefix('torch.')}"
        + (f", on {torch.cuda.get_device_name(DEVICE)}" if DEVICE.type == "cuda" else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="public-like")
    parser.add_argument("--lengths", default="100,500", help="comma-separated L")
    parser.add_argument("--chains", default="1,4", help="comma-separated chain counts")
    parser.add_argument("--steps", type=int, default=0, help="steps per timed run (default: 4 at L<=100, else 2)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sample-steps", type=int, default=500, help="0 skips the whole sample")
    parser.add_argument("--sample-rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-reference", action="store_true", help="time biozoo alone")
    parser.add_argument("--profile", action="store_true", help="profile one run per side at the first L/chains")
    parser.add_argument("--quick", action="store_true", help="L=32,64, 1 round, a 20-step sample")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]; both sides run there")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="biozoo's weights (with --no-reference: the reference runs in float32 only)")
    args = parser.parse_args()
    global DEVICE, DTYPE
    DEVICE, DTYPE = torch.device(args.device), getattr(torch, args.dtype)
    if args.dtype != "float32" and not args.no_reference:
        parser.error("--dtype other than float32 needs --no-reference")
    if args.quick:
        args.lengths, args.rounds, args.sample_steps = "32,64", 1, 20
    torch.set_num_threads(args.threads)
    lengths = [int(x) for x in args.lengths.split(",")]
    chain_counts = [int(x) for x in args.chains.split(",")]
    kwargs = CONFIGS[args.config]

    if args.no_reference:
        from biozoo_chroma.backbone import ChromaBackbone

        torch.manual_seed(SEED)
        sides = [biozoo_side(kwargs, ChromaBackbone(**kwargs).state_dict())]
    else:
        import_reference()
        dither_off_reference()
        ref, state = reference_side(kwargs)
        sides = [ref, biozoo_side(kwargs, state)]
    if args.profile:
        profile(sides, lengths[0], chain_counts[0], args.steps or 2, 25)
        return

    load_before = os.getloadavg()
    started = time.time()
    rows = []
    for length in lengths:
        for chains in chain_counts:
            steps = args.steps or (4 if length <= 100 else 2)
            rows.append((f"{length}", chains, steps, measure(sides, length, chains, steps, args.rounds)))
    if args.sample_steps:
        log(f"whole sample: L={lengths[0]}, {args.sample_steps} steps")
        rows.append((f"{lengths[0]}, whole sample", 1, args.sample_steps,
                     measure(sides, lengths[0], 1, args.sample_steps, args.sample_rounds)))  # fmt: skip
    load_after = os.getloadavg()

    params = sum(p.numel() for p in sides[-1].model.parameters())
    print(f"config `{args.config}` ({params:,} parameters): {kwargs or 'the reference constructor defaults'}\n")
    print(f"{describe_machine(args.threads)}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"{(time.time() - started) / 60:.1f} min; median of {args.rounds} rounds per step row, "
          f"{args.sample_rounds} for the whole sample\n")  # fmt: skip
    print("| L | chains | steps per run | reference s/step | biozoo s/step | speed vs reference "
          "| one step: max abs diff Å (relative) | whole run: max abs diff Å (relative) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for length, chains, steps, m in rows:
        ref = m["median"].get("reference")
        ours = m["median"]["biozoo"]
        ratio = f"**{m['ratio']:.2f}x**" if m["ratio"] is not None else "–"
        same = f"{m['abs']:.1e} ({m['rel']:.1e})" + ("" if m["finite"] else ", not finite")
        ref_s = f"{ref:.3f}" if ref is not None else "–"
        one = "–" if m["one_step"] is None else f"{m['one_step'][0]:.1e} ({m['one_step'][1]:.1e})"
        print(f"| {length} | {chains} | {steps} | {ref_s} | {ours:.3f} | {ratio} | {one} | {same if ref else '–'} |")


if __name__ == "__main__":
    main()
