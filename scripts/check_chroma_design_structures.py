"""Run design (Potts and autoregressive), pack and score_sequence on every TS50 chain, 4E43 and 3PWP (issue 13).

A smoke run over real structures, not an accuracy test: the design network is the packing golden's random-weight
one unless ``--model`` names a chroma.design model (e.g. chroma/demo-design) or a converted folder holding one.
The structures come from mdanalysistests (``./dev`` installs it):

    .venv/bin/python scripts/check_chroma_design_structures.py [--model chroma/demo-design] [--sweeps 20]

Prints one row per structure (residues, chains, seconds per step, neglogp of the native and of the designed
sequence) and fails if any step raises or gives a non-finite score, or leaves a residue with structure without
its side chains.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins/chroma/tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a chroma.design model or a converted folder (default: golden weights)")
    parser.add_argument("--sweeps", type=int, default=20, help="Potts MCMC sweeps (the reference's default is 500)")
    args = parser.parse_args()
    from test_chroma_structures import COMPLEXES, TS50

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
            design(net, p, potts_mcmc_depth=args.sweeps, seed=0)
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


if __name__ == "__main__":
    raise SystemExit(main())
