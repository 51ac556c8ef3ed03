"""Chunked ``zoo embed`` at scale: peak memory against the number of cells, and cells/s against Ray actors.

Three measurements, each in fresh processes (peak RSS by ``/usr/bin/time -f %M``):

* ``--io N,N,...``: the streaming path alone over synthetic atlases of N cells (the real reader, per-chunk
  normalisation, the atomic chunk files and the chunk-by-chunk assembly), with a cheap stand-in embedding (a fixed
  random projection of log-normalised counts to 128 dims) so that a million cells take minutes on 2 CPUs;
* ``--model MODEL --cells N,N``: ``zoo embed MODEL`` unchunked and with ``--chunk-size``, the real model;
* ``--ray-actors 1,2 --cells N``: ``zoo embed --engine ray --actors K`` on a local Ray cluster.

``--chunked-only`` skips the unchunked real-model run (a million cells would not fit the point), and
``--rss-every S`` samples the run's resident memory every S seconds, so that a long run shows its memory curve.

The synthetic cells are the held-out PBMCs of ``examples/pbmc68k_test.h5ad`` resampled (raw counts, 765 genes,
about 250 non-zero per cell), written block by block so that making them needs no more memory than reading them.

    .venv/bin/python bench/chunked_embed.py --io 100000,1000000
    .venv/bin/python bench/chunked_embed.py --model autoregressive/pbmc-small --cells 5000,20000
    .venv/bin/python bench/chunked_embed.py --model autoregressive/pbmc-small --ray-actors 1,2 --cells 4000
    .venv/bin/python bench/chunked_embed.py --cells 1000000 --chunked-only --rss-every 60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PBMC = ROOT / "examples" / "pbmc68k_test.h5ad"
BLOCK = 20_000


def make_cells(path: Path, n: int, seed: int = 0) -> None:
    """``n`` PBMCs resampled from the example file into ``path``, written block by block."""
    import anndata
    import h5py
    import pandas as pd
    import scipy.sparse as sp
    from anndata.io import sparse_dataset, write_elem

    source = anndata.read_h5ad(PBMC)
    X = sp.csr_matrix(source.X).astype(np.float32)
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        first = True
        for start in range(0, n, BLOCK):
            block = X[rng.integers(0, X.shape[0], min(BLOCK, n - start))]
            if first:
                write_elem(f, "X", block)
                first = False
            else:
                sparse_dataset(f["X"]).append(block)
        write_elem(f, "obs", pd.DataFrame(index=pd.Index([f"cell{i}" for i in range(n)], dtype=object)))
        var = source.var.copy()
        var.index = var.index.astype(object)
        write_elem(f, "var", pd.DataFrame(index=var.index))
        for name in ("obsm", "varm", "layers", "obsp", "varp", "uns"):
            write_elem(f, name, {})


IO_WORKER = r"""
import sys, time
from pathlib import Path
import numpy as np
from biozoo.singlecell.chunked import ChunkJob, run_local
from biozoo.singlecell.sharded import ShardedOutput
from biozoo.singlecell.stream import CellSource

source_path, out_path, chunk_size = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
projection = np.random.default_rng(0).standard_normal((765, 128)).astype(np.float32) / 765 ** 0.5

class Projection:  # the CellPipeline surface run_local uses: a stand-in for the model
    def cell_embeddings(self, adata, **_):
        X = adata.X.tocsr().astype(np.float32)
        X = X.multiply(1e4 / np.maximum(X.sum(1), 1)).log1p()
        return np.asarray(X @ projection, dtype=np.float32), type("P", (), {"steps": ["log1p-projection"]})()

start = time.perf_counter()
source = CellSource(source_path)
chunks = source.chunks(chunk_size)
out = ShardedOutput(out_path.with_name(out_path.name + ".parts"), {"bench": True}, resume=False, overwrite=True)
job = ChunkJob(None, "", None, str(source_path), str(out.chunks_folder), None, None, 0, None)
run_local(Projection(), source, chunks, out, job, devices=None, progress=False)
obs, dims = out.assemble(source, chunks, out_path, {"X_projection": {"bench": "io"}}, obsm_key="X_projection")
n = len(obs)
out.remove()
print(f"{n} {dims} {time.perf_counter() - start:.1f}")
"""


def _rss_mb(pid: int) -> float | None:
    """The resident memory of ``pid``'s first child (the command under ``/usr/bin/time``), from /proc."""
    try:
        child = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0]
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, IndexError, ValueError):
        return None
    return None


def timed(
    cmd: list[str], env: dict[str, str] | None = None, rss_every: float = 0
) -> tuple[float, float, str, list[tuple[float, float]]]:
    """(seconds, peak RSS in MB, stdout, [(seconds, RSS MB), ...] every ``rss_every`` s) of one fresh process."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", *cmd], stdout=stdout, stderr=stderr, text=True,
                                env={**os.environ, **(env or {})})  # fmt: skip
        curve = []
        while proc.poll() is None:
            time.sleep(min(rss_every, 5) if rss_every else 0.2)
            now = time.perf_counter() - start
            if rss_every and (not curve or now - curve[-1][0] >= rss_every):
                rss = _rss_mb(proc.pid)
                if rss is not None:
                    curve.append((round(now), round(rss)))
                    print(f"  {curve[-1][0]} s: {curve[-1][1]} MB", flush=True)
        seconds = time.perf_counter() - start
        stdout.seek(0), stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    peak_kb = int(err.strip().splitlines()[-1])
    return seconds, peak_kb / 1024, out, curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--io", help="comma-separated cell counts for the streaming-path measurement")
    parser.add_argument("--model", default="autoregressive/pbmc-small")
    parser.add_argument("--cells", help="comma-separated cell counts for the real-model runs")
    parser.add_argument("--ray-actors", help="comma-separated actor counts (with --cells: one count)")
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--chunked-only", action="store_true", help="skip the unchunked real-model run")
    parser.add_argument("--rss-every", type=float, default=0, help="sample the run's RSS every S seconds")
    args = parser.parse_args()
    py, zoo = sys.executable, str(Path(sys.executable).with_name("zoo"))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for n in [int(x) for x in (args.io or "").split(",") if x]:
            data = work / f"cells_{n}.h5ad"
            made = time.perf_counter()
            make_cells(data, n)
            made = time.perf_counter() - made
            seconds, peak, out, _ = timed([py, "-c", IO_WORKER, str(data), str(work / "io.h5ad"), str(args.chunk_size)])
            rows.append({"what": "streaming path (projection)", "cells": n, "chunk": args.chunk_size,
                         "seconds": round(seconds, 1), "cells_per_s": round(n / seconds), "peak_rss_mb": round(peak),
                         "input_mb": round(data.stat().st_size / 2**20), "made_s": round(made, 1)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            # what an unchunked embed starts with: the whole file in memory
            seconds, peak, _, _ = timed([py, "-c", f"import anndata; anndata.read_h5ad({str(data)!r})"])
            rows.append({"what": "unchunked: anndata.read_h5ad alone", "cells": n, "seconds": round(seconds, 1),
                         "cells_per_s": round(n / seconds), "peak_rss_mb": round(peak)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            data.unlink()
            (work / "io.h5ad").unlink()
        for n in [int(x) for x in (args.cells or "").split(",") if x]:
            data = work / f"cells_{n}.h5ad"
            make_cells(data, n)
            runs = []
            if args.ray_actors:
                for k in [int(x) for x in args.ray_actors.split(",")]:
                    runs.append((f"--engine ray --actors {k}", ["--engine", "ray", "--actors", str(k),
                                                               "--chunk-size", str(min(args.chunk_size, n // 4))]))
            else:
                runs = [] if args.chunked_only else [("unchunked", [])]
                runs.append((f"--chunk-size {args.chunk_size}", ["--chunk-size", str(args.chunk_size)]))
            for label, extra in runs:
                out = work / "out.h5ad"
                seconds, peak, _, curve = timed([zoo, "embed", args.model, str(data), "-o", str(out), *extra],
                                                env={"TQDM_DISABLE": "1"}, rss_every=args.rss_every)  # fmt: skip
                rows.append({"what": f"zoo embed {args.model} {label}", "cells": n, "seconds": round(seconds, 1),
                             "cells_per_s": round(n / seconds, 1), "peak_rss_mb": round(peak)})  # fmt: skip
                if curve:
                    rows[-1]["rss_curve_s_mb"] = curve
                print(json.dumps(rows[-1]), flush=True)
                out.unlink()
            data.unlink()
    print("\n| run | cells | seconds | cells/s | peak RSS (MB) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['what']} | {r['cells']:,} | {r['seconds']} | {r['cells_per_s']} | {r['peak_rss_mb']} |")


if __name__ == "__main__":
    main()
