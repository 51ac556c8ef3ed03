"""Run design (Potts and autoregressive), pack and score_sequence on every TS50 chain, 4E43 and 3PWP (issue 13).

A smoke run over real structures, not an accuracy test: the design network is the packing golden's random-weight
one unless ``--model`` names a chroma.design model (e.g. chroma/demo-design) or a converted folder holding one.
The structures come from mdanalysistests (``./dev`` installs it):

    .venv/bin/python scripts/check_chroma_design_structures.py [--model chroma/demo-design] [--sweeps 20]

Prints one row per structure (residues, chains, seconds per step, neglogp of the native and of the designed
sequence) and fails if any step raises or gives a non-finite score, or leaves a residue with structure without
its side chains.

With ``--cli`` it runs the commands a user runs instead, each in a fresh process, on the same structures:
``zoo design MODEL in -o out.pdb`` (Potts at its defaults, then ``--method autoregressive``), ``zoo pack`` and
one ``zoo score MODEL --sequence --json`` over every packed file (``--model`` defaults to chroma/demo-design):

    .venv/bin/python scripts/check_chroma_design_structures.py --cli
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins/chroma/tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a chroma.design model or a converted folder (default: golden weights)")
    parser.add_argument("--sweeps", type=int, help="Potts MCMC sweeps (default 20; with --cli the CLI's, 500)")
    parser.add_argument("--cli", action="store_true", help="run zoo design / pack / score in fresh processes")
    args = parser.parse_args()
    from test_chroma_structures import COMPLEXES, TS50

    if args.cli:
        return check_cli([*TS50, *COMPLEXES], args.model or "chroma/demo-design", args.sweeps)

    from biozoo_chroma import Protein
    from biozoo_chroma.design.api import SEQUENCE_SCORES, design, pack, score_sequence
    from biozoo_chroma.tasks import design_network

    if args.model:
        import biozoo

        net = design_network(biozoo.load(args.model))
    else:
        from test_chroma_pack import model

        net = model()
    failures = 0
    print("| structure | residues | chains | potts s | AR s | pack s | neglogp native / designed |")
    print("|---|---|---|---|---|---|---|")
    for path in [*TS50, *COMPLEXES]:
        p = Protein(path)
        times = []
        try:
            start = time.perf_counter()
            design(net, p, potts_mcmc_depth=args.sweeps or 20, seed=0)
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
            q = design(net, p, design_method="autoregressive", seed=0)
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
            packed = pack(net, p, seed=0)
            times.append(time.perf_counter() - start)
            observed = torch.from_numpy(p.observed)
            for made in (q, packed):
                assert bool((made.to_XCS(all_atom=True)[1][0][observed] > 0).all()), "a residue lacks side chains"
            native, designed = score_sequence(net, packed), score_sequence(net, q)
            assert all(bool(torch.isfinite(s[k])) for s in (native, designed) for k in SEQUENCE_SCORES)
            print(f"| {path.name.split('.')[0]} | {len(p)} | {len(p.chain_ids)} | "
                  + " | ".join(f"{t:.1f}" for t in times)
                  + f" | {float(native['neglogp']):.3f} / {float(designed['neglogp']):.3f} |", flush=True)  # fmt: skip
        except Exception as exc:  # report every structure, then fail
            failures += 1
            print(f"| {path.name} | FAILED: {type(exc).__name__}: {exc} |", flush=True)
    return 1 if failures else 0


def zoo(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "biozoo.cli.app", *args], capture_output=True, text=True)
    return done, time.perf_counter() - start


def check_cli(paths: list[Path], model: str, sweeps: int | None) -> int:
    """The user's commands on every structure: each must exit 0 and give every residue with structure its side
    chains; one ``zoo score --sequence`` over all packed files must give finite scores."""
    import torch

    from biozoo_chroma import Protein

    failures = 0
    potts = ["--sweeps", str(sweeps)] if sweeps else []
    print("| structure | residues | chains | zoo design (potts) s | zoo design --method autoregressive s "
          "| zoo pack s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        packed_files = []
        for path in paths:
            name = path.name.split(".")[0]
            out = Path(tmp) / name
            runs = [
                zoo("design", model, str(path), "-o", f"{out}.potts.pdb", *potts),
                zoo("design", model, str(path), "-o", f"{out}.ar.pdb", "--method", "autoregressive"),
                zoo("pack", model, str(path), "-o", f"{out}.packed.pdb"),
            ]
            bad = [done.stderr.strip().splitlines()[-2:] for done, _ in runs if done.returncode != 0]
            if not bad:
                observed = torch.from_numpy(Protein(path).observed)
                for made in ("potts", "ar", "packed"):
                    C = Protein(f"{out}.{made}.pdb").to_XCS(all_atom=True)[1][0]
                    if len(C) != len(observed) or not bool((C[observed] > 0).all()):
                        bad.append([f"{made}: a residue lacks its side chains"])
            if bad:
                failures += 1
                print(f"| {name} | FAILED: {bad} |", flush=True)
                continue
            packed_files.append(f"{out}.packed.pdb")
            protein = Protein(path)
            print(f"| {name} | {len(protein)} | {len(protein.chain_ids)} | "
                  + " | ".join(f"{seconds:.1f}" for _, seconds in runs) + " |", flush=True)  # fmt: skip
        done, seconds = zoo("score", model, *packed_files, "--sequence", "--json")
        if done.returncode != 0:
            print(f"zoo score --sequence FAILED: {done.stderr.strip().splitlines()[-2:]}")
            return 1
        rows = json.loads(done.stdout)["structures"]
        finite = all(v is not None for row in rows for v in row["scores"].values())
        print(f"\nzoo score {model} --sequence --json over {len(rows)} packed files: {seconds:.1f} s, "
              f"every score finite: {finite}")
        failures += 0 if finite and len(rows) == len(packed_files) else 1
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
