"""Chroma design and packing on CPU: Potts design, autoregressive design and pack, side by side with the reference.

The reference is generate-chroma 1.0.0's ``GraphDesign`` (what ``Chroma.design`` and ``Chroma.pack`` call). It is
not a dependency of biozoo; install it without its dependencies outside the repository:

    .venv/bin/pip install --no-deps --target /tmp/chroma_ref generate-chroma==1.0.0
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python bench/chroma_design.py            # full (see docs/benchmarks.md)
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python bench/chroma_design.py --quick    # L=48, 1 round, 20 sweeps

The reference is imported as ``bench/chroma.py`` imports it (stand-ins for its display-only imports, centering
statistics from a bundled structure; nothing is downloaded or installed); without it the script stops with the
hint saying how to get it.

What runs, all in one process, float32, ``--threads`` torch threads (default 2), batch size 1:

* **Weights.** A reference ``GraphDesign`` built after ``torch.manual_seed`` with random weights and the config
  ``--config``: ``public-like`` (default) is the design golden scripts' set-up (make_chroma_design_golden.INIT_KWARGS:
  research chroma.md 2.4's entry-B features, Potts and marginals heads, log-SNR time embedding, two-stage packing)
  at the reference constructor's own sizes (128/128, 3 layers, kNN-30, 512 hidden; the public sizes are unknown);
  ``golden`` is INIT_KWARGS as the golden files use it (small). Ours, ``ChromaDesign`` with the same init_kwargs,
  loads the reference's state dict through :func:`biozoo_chroma.design.keys.convert_design_state_dict`, strictly.
* **Inputs.** One system per size: L <= 164 the first L residues of 3e8mA (a real chain), longer an ideal helix
  (one chain); ``--two-chain`` adds 4E43 (408 residues, two chains). A random sequence (seeded) for packing.
* **What is timed** (each the sequence or chi stage as the reference's ``GraphDesign.sample`` / ``pack`` runs it;
  ``Chroma.design`` is the design stage followed by the packing stage):

  - ``potts``: encode at ``design_t`` 0.5, the initial sequence, annealed DLMC with the LCP penalty at
    ``Chroma.design``'s defaults (temperature 0.01, ``potts_mcmc_depth`` 500 sweeps, ``--sweeps``). The reference's
    side is ``encode``, ``init_sampling_masks`` and ``decoder_S_potts.sample`` (its ``sample`` also draws a decoding
    order it does not use for Potts; that is left out); ours ``ChromaDesign.design_potts``.
  - ``autoregressive``: encode at 0.5 and decode every residue with the LCP bias, in a fixed decoding order (one
    spatial traversal drawn once, both sides; the traversal is not timed) at ``temperature_S`` 1e-5, so that the
    sampled sequences compare (effectively argmax; the arithmetic is the same at any temperature). Reference:
    ``encode``, ``init_sampling_masks``, ``decoder.decode``; ours ``encode`` and ``design_autoregressive``.
  - ``pack``: ``pack`` (encode at t=0, sequence re-encoding, chi decoded residue by residue at ``temperature_chi``
    1e-3, side chains built) in the same fixed order, with the same uniforms: the reference draws one
    ``torch.rand(1, 1)`` per residue and chi from the seeded global generator, which ours receives as ``uniforms``
    (make_chroma_pack_golden.step_uniforms re-draws them after the same seed).

* **Timing.** ``--rounds`` rounds, the two sides alternating which goes first; medians, and the median over rounds
  of (reference / ours of the same round); in brackets the best round of each side and their ratio. On a shared
  2-vCPU machine another process makes every 2-thread operation wait for a descheduled thread, and these loops are
  thousands of small operations: one busy neighbour made single runs 5-60x slower, so the best round is the
  better estimate of the code's own speed there (check ``uptime``; the load is printed).
* **Same outputs.** Autoregressive: the fraction of positions where the designed sequences agree, and the largest
  |difference| of ``logp_S``. Pack: the largest |difference| of the built atoms (Å) and of ``logp_chi``. Potts: the
  two samplers draw from different random streams, so their sequences differ; instead the fields and couplings
  agree (max |h|, |J| difference, relative), each side's final sequences get the same energy from both
  implementations (relative difference), and the final energies of both samplers over rounds are shown next to
  those of random sequences (the scale).

The load average is printed before and after (the CI machine type has 2 shared vCPUs: check ``uptime``). The
Markdown table goes to stdout; progress to stderr. ``--profile torch`` prints torch.profiler's top operators (self
CPU time) of one run of each operation on each side at the first length; ``--profile python`` cProfile's top
functions (cumulative time), which shows the Python overhead of the per-residue loops. ``--patch FILE`` execs
FILE before ours is built, to measure a proposed change (say, a faster function patched into ``biozoo_chroma``)
against the reference in the same run; the table then describes the patched code, not the committed one.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # the reference's progress bars; tqdm reads it when torch imports it
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from make_chroma_design_golden import INIT_KWARGS  # noqa: E402
from make_chroma_pack_golden import step_uniforms  # noqa: E402


def _load_backbone_bench() -> Any:
    """bench/chroma.py under another name: as ``chroma`` it would shadow the reference package."""
    spec = importlib.util.spec_from_file_location("bench_chroma_backbone", Path(__file__).with_name("chroma.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


backbone_bench = _load_backbone_bench()
log, describe_machine, differences = backbone_bench.log, backbone_bench.describe_machine, backbone_bench.differences

SIZE_KEYS = ("dim_nodes", "dim_edges", "num_neighbors", "num_layers", "num_layers_encoder", "decoder_num_hidden",
             "node_mlp_layers", "node_mlp_dim", "edge_mlp_dim", "mlp_activation")  # fmt: skip
CONFIGS = {
    # the golden scripts' features and heads at the reference constructor's sizes (128/128, 3 layers, kNN-30)
    "public-like": {k: v for k, v in INIT_KWARGS.items() if k not in SIZE_KEYS},
    "golden": INIT_KWARGS,
}
DESIGN_T = 0.5  # Chroma.design's design_t
TEMPERATURE_S = 0.01  # Chroma.design's temperature_S (Potts)
TEMPERATURE_AR = 1e-5  # autoregressive: effectively argmax, so the two sides' sequences compare
TEMPERATURE_CHI = 1e-3  # Chroma.pack's temperature_chi
SWEEPS = 500  # Chroma.design's potts_mcmc_depth
SEED = 20261399
OPERATIONS = ("potts", "autoregressive", "pack")


class Case:
    """One system: backbone ``X [1, L, 4, 3]``, chain map, a sequence to pack, a decoding order and its uniforms."""

    def __init__(self, name: str, X: torch.Tensor, C: torch.Tensor, seed: int) -> None:
        from biozoo_chroma.design.traversal import SpatialTraversal

        self.name, self.X, self.C = name, X.contiguous(), C.contiguous()
        self.X14 = torch.nn.functional.pad(self.X, [0, 0, 0, 10])  # what the reference's sample/pack use
        gen = torch.Generator().manual_seed(seed)
        self.S = torch.randint(0, 20, C.shape, generator=gen)
        self.permute_idx = SpatialTraversal()(self.X, self.C, generator=gen)
        self.seed = seed
        torch.manual_seed(seed)
        self.uniforms = step_uniforms(self.permute_idx)  # what the reference draws after torch.manual_seed(seed)

    @property
    def length(self) -> int:
        return self.C.shape[1]


def cases(lengths: list[int], two_chain: bool) -> list[Case]:
    from make_chroma_graph_golden import structures

    from biozoo_chroma.backbone.ideal import alpha_helix

    s = structures()
    out = []
    for L in lengths:
        if s["3e8mA.bb.X"].shape[1] >= L:
            X, C, name = s["3e8mA.bb.X"][:, :L], s["3e8mA.bb.C"][:, :L], f"3e8mA 1-{L}"
        else:
            X, C, name = alpha_helix(L), torch.ones(1, L, dtype=torch.long), "ideal helix"
        out.append(Case(name, X, C, SEED + L))
    if two_chain:
        out.append(Case("4E43, 2 chains", s["4E43.bb.X"], s["4E43.bb.C"], SEED + 2))
    return out


class Reference:
    """The reference's stages, called as its ``GraphDesign.sample`` / ``pack`` call them."""

    name = "reference"

    def __init__(self, kwargs: dict) -> None:
        from chroma.models.graph_design import GraphDesign

        torch.manual_seed(SEED)
        self.model = GraphDesign(**kwargs).eval()

    def _start(self, case: Case) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]:
        from chroma.layers.structure import potts

        enc = self.model.encode(case.X14, case.C, t=DESIGN_T)
        logits = torch.zeros(*case.C.shape, 20)
        mask_S, _, S_init = potts.init_sampling_masks(logits, None, S=case.S)
        return enc, mask_S, S_init

    def potts(self, case: Case, sweeps: int) -> dict[str, torch.Tensor]:
        from chroma.layers import complexity

        enc, mask_S, S_init = self._start(case)
        S, U = self.model.decoder_S_potts.sample(
            *enc, S=S_init, mask_sample=mask_S, temperature=TEMPERATURE_S, num_sweeps=sweeps,
            penalty_func=lambda S_: complexity.complexity_lcp(S_, case.C), proposal="dlmc", rejection_step=False,
            verbose=False,
        )  # fmt: skip
        return {"S": S, "U": U}

    def autoregressive(self, case: Case) -> dict[str, torch.Tensor]:
        from chroma.layers import complexity

        enc, mask_S, S_init = self._start(case)
        S, _, logp_S, _, _ = self.model.decoder.decode(
            case.X14, case.C, S_init, *enc, case.permute_idx, temperature_S=TEMPERATURE_AR, sample=True,
            mask_sample=mask_S, bias_S_func=complexity.complexity_scores_lcp_t,
        )  # fmt: skip
        return {"S": S, "logp_S": logp_S}

    def pack(self, case: Case) -> dict[str, torch.Tensor]:
        torch.manual_seed(case.seed)  # the chi head's uniforms (Case.uniforms holds the same draws)
        X, _, scores = self.model.pack(
            case.X14, case.C, case.S, permute_idx=case.permute_idx, temperature_chi=TEMPERATURE_CHI,
            return_scores=True,
        )  # fmt: skip
        return {"X": X, "logp_chi": scores["logp_chi"]}

    def energy(self, case: Case, S: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(U(S), h, J)`` of the Potts head at design_t."""
        from chroma.layers.structure import potts

        node_h, edge_h, edge_idx, mask_i, mask_ij = self.model.encode(case.X14, case.C, t=DESIGN_T)
        h, J = self.model.decoder_S_potts(node_h, edge_h, edge_idx, mask_i, mask_ij)
        return potts.compute_potts_energy(S, *batched(S, h, J, edge_idx))[0], h, J


class Biozoo:
    """Ours, with the reference's weights; every random draw from a seeded generator."""

    name = "biozoo"

    def __init__(self, kwargs: dict, state: dict[str, torch.Tensor]) -> None:
        from biozoo_chroma.design import ChromaDesign
        from biozoo_chroma.design.keys import convert_design_state_dict

        self.model = ChromaDesign(**kwargs).eval()
        self.model.load_state_dict(convert_design_state_dict(state), strict=True)

    def potts(self, case: Case, sweeps: int) -> dict[str, torch.Tensor]:
        S, U = self.model.design_potts(
            case.X, case.C, t=DESIGN_T, temperature=TEMPERATURE_S, num_sweeps=sweeps, proposal="dlmc",
            regularization="LCP", generator=torch.Generator().manual_seed(case.seed),
        )  # fmt: skip
        return {"S": S, "U": U}

    def autoregressive(self, case: Case) -> dict[str, torch.Tensor]:
        from biozoo_chroma.design.autoregressive import design_autoregressive

        enc = self.model.encode(case.X, case.C, DESIGN_T)
        out = design_autoregressive(
            self.model, enc, case.X, case.C, permute_idx=case.permute_idx, temperature=TEMPERATURE_AR,
            regularization="LCP", generator=torch.Generator().manual_seed(case.seed),
        )  # fmt: skip
        return {"S": out.S, "logp_S": out.logp_S}

    def pack(self, case: Case) -> dict[str, torch.Tensor]:
        out = self.model.pack(
            case.X, case.C, case.S, temperature_chi=TEMPERATURE_CHI, permute_idx=case.permute_idx,
            uniforms=case.uniforms,
        )  # fmt: skip
        return {"X": out.X, "logp_chi": out.logp_chi}

    def energy(self, case: Case, S: torch.Tensor) -> tuple[torch.Tensor, ...]:
        enc = self.model.encode(case.X, case.C, DESIGN_T)
        h, J = self.model.potts(enc)
        return self.model.potts_energy(S, *batched(S, h, J, enc.edge_idx)), h, J


def batched(S: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """One system's Potts model repeated for every sequence in ``S [N, L]``."""
    return [t.expand(S.shape[0], *t.shape[1:]) for t in tensors]


def call(side: Reference | Biozoo, op: str, case: Case, sweeps: int) -> Callable[[], dict[str, torch.Tensor]]:
    return lambda: side.potts(case, sweeps) if op == "potts" else getattr(side, op)(case)


def timed(fn: Callable[[], dict[str, torch.Tensor]]) -> tuple[float, dict[str, torch.Tensor]]:
    start = time.perf_counter()
    with torch.no_grad():
        out = fn()
    return time.perf_counter() - start, out


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return differences(a, b)[1]


def same_outputs(op: str, outs: dict[str, list[dict[str, torch.Tensor]]], case: Case, sides: list) -> str:
    """The equality column of one row (see the module docstring)."""
    ref, ours = outs["reference"], outs["biozoo"]
    if op == "autoregressive":
        agree = min(float(torch.eq(r["S"], o["S"]).float().mean()) for r, o in zip(ref, ours, strict=True))
        logp = max(differences(o["logp_S"], r["logp_S"])[0] for r, o in zip(ref, ours, strict=True))
        return f"S equal at {agree:.1%} of positions; logp_S {logp:.1e}"
    if op == "pack":
        X = max(differences(o["X"], r["X"])[0] for r, o in zip(ref, ours, strict=True))
        logp = max(differences(o["logp_chi"], r["logp_chi"])[0] for r, o in zip(ref, ours, strict=True))
        return f"X {X:.1e} Å; logp_chi {logp:.1e}"
    reference, biozoo = sides
    with torch.no_grad():
        _, h_r, J_r = reference.energy(case, ref[0]["S"])
        _, h_o, J_o = biozoo.energy(case, ref[0]["S"])
        cross = max(relative(biozoo.energy(case, r["S"])[0], reference.energy(case, r["S"])[0]) for r in ref + ours)
        gen = torch.Generator().manual_seed(case.seed)
        U_rand = biozoo.energy(case, torch.randint(0, 20, (8, case.length), generator=gen))[0]
    mean = {k: statistics.mean(float(o["U"].sum()) for o in v) for k, v in outs.items()}
    scale = float(U_rand.mean())
    return (f"h {relative(h_o, h_r):.1e}, J {relative(J_o, J_r):.1e} (rel.); U of the same S {cross:.1e} (rel.); "
            f"final U ref {mean['reference']:.1f} / ours {mean['biozoo']:.1f} (random S {scale:.1f})")  # fmt: skip


def measure(sides: list, op: str, case: Case, rounds: int, sweeps: int) -> dict[str, Any]:
    seconds: dict[str, list[float]] = {s.name: [] for s in sides}
    outs: dict[str, list[dict[str, torch.Tensor]]] = {s.name: [] for s in sides}
    ratios = []
    for r in range(rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            t, out = timed(call(side, op, case, sweeps))
            seconds[side.name].append(t)
            outs[side.name].append(out)
        if len(sides) == 2:
            ratios.append(seconds["reference"][-1] / seconds["biozoo"][-1])
        log(f"  {op} L={case.length} ({case.name}) round {r + 1}/{rounds}: "
            + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in seconds.items()))  # fmt: skip
    return {
        "median": {k: statistics.median(v) for k, v in seconds.items()},
        "best": {k: min(v) for k, v in seconds.items()},
        "ratio": statistics.median(ratios) if ratios else None,
        "same": same_outputs(op, outs, case, sides) if len(sides) == 2 else "–",
    }


def profile(sides: list, ops: list[str], case: Case, sweeps: int, kind: str, rows: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for op in ops:
        for side in sides:
            fn = call(side, op, case, sweeps)
            timed(fn)  # warm-up
            print(f"\n### {side.name}, {op}, L={case.length} ({case.name})\n")
            if kind == "torch":
                with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                    seconds, _ = timed(fn)
                print(f"wall {seconds:.3f} s\n")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))
            else:
                profiler = cProfile.Profile()
                profiler.enable()
                seconds, _ = timed(fn)
                profiler.disable()
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(rows)
                print(f"wall {seconds:.3f} s\n```\n{text.getvalue().strip()}\n```")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="public-like")
    parser.add_argument("--lengths", default="100,500", help="comma-separated L (one chain each)")
    parser.add_argument("--two-chain", action="store_true", help="add 4E43 (408 residues, two chains)")
    parser.add_argument("--ops", default=",".join(OPERATIONS), help=f"comma-separated, of {', '.join(OPERATIONS)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sweeps", default=str(SWEEPS),
                        help="Potts sweeps (potts_mcmc_depth), one for all lengths or comma-separated per length")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-reference", action="store_true", help="time biozoo alone (random weights)")
    parser.add_argument("--profile", choices=["torch", "python"], help="profile one run per side instead")
    parser.add_argument("--quick", action="store_true", help="L=48, 1 round, 20 sweeps")
    parser.add_argument("--patch", action="append", default=[], type=Path,
                        help="a Python file exec'd before ours is built (e.g. a proposed faster function patched "
                             "into biozoo_chroma); may repeat")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.rounds, args.sweeps = "48", 1, "20"
    torch.set_num_threads(args.threads)
    kwargs = CONFIGS[args.config]
    ops = args.ops.split(",")
    if unknown := set(ops) - set(OPERATIONS):
        parser.error(f"unknown operation(s) {', '.join(sorted(unknown))}")

    backbone_bench.import_reference() if not args.no_reference else None
    for path in args.patch:  # a proposed change to ours, measured against the reference and the same weights
        exec(compile(path.read_text(), str(path), "exec"), {"__name__": "__patch__"})
        log(f"applied {path}")
    if args.no_reference:
        from biozoo_chroma.design import ChromaDesign

        torch.manual_seed(SEED)
        sides: list = [Biozoo(kwargs, ChromaDesign(**kwargs).state_dict())]
    else:
        ref = Reference(kwargs)
        sides = [ref, Biozoo(kwargs, ref.model.state_dict())]
    systems = cases([int(x) for x in args.lengths.split(",")], args.two_chain)
    sweeps = [int(x) for x in args.sweeps.split(",")]
    sweeps += sweeps[-1:] * (len(systems) - len(sweeps))  # the last count for the remaining systems
    if args.profile:
        profile(sides, ops, systems[0], sweeps[0], args.profile, 25)
        return
    for op in ops:  # warm-up: first calls load kernels and modules (the reference's step mode imports dynamo)
        for side in sides:
            timed(call(side, op, systems[0], 2))

    load_before = os.getloadavg()
    started = time.time()
    rows = [(op, case, n, measure(sides, op, case, args.rounds, n))
            for case, n in zip(systems, sweeps, strict=False) for op in ops]  # fmt: skip
    load_after = os.getloadavg()
    params = sum(p.numel() for p in sides[-1].model.parameters())
    print(f"config `{args.config}` ({params:,} parameters): {kwargs}\n")
    print(f"{describe_machine(args.threads)}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"{(time.time() - started) / 60:.1f} min; median of {args.rounds} rounds\n")  # fmt: skip
    print("| operation | L | system | reference s: median (best) | biozoo s: median (best) | speed vs reference: "
          "median ratio (ratio of bests) | same outputs |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for op, case, n, m in rows:
        op = f"potts, {n} sweeps" if op == "potts" else op
        times = {k: f"{m['median'][k]:.3f} ({m['best'][k]:.3f})" for k in m["median"]}
        ratio = "–"
        if m["ratio"] is not None:
            ratio = f"**{m['ratio']:.2f}x** ({m['best']['reference'] / m['best']['biozoo']:.2f}x)"
        print(f"| {op} | {case.length} | {case.name} | {times.get('reference', '–')} | {times['biozoo']} | {ratio} "
              f"| {m['same']} |")  # fmt: skip


if __name__ == "__main__":
    main()
