"""scGPT cell-embedding throughput on CPU: biozoo vs the reference (scgpt 0.2.4), same weights, same cells.

Issue requirement: cells/s and peak memory at whole-human size (60,697-token vocabulary, 512 wide,
12 layers, 8 heads, d_hid 512, max length 1200), side by side with the reference implementation on
the same weights and cells; target >= 2x the reference's throughput with the same outputs.

What runs (all in one invocation; each measurement in a fresh subprocess, 2 torch threads):

* **Weights.** A reference ``TransformerModel(60697, 512, 8, 512, 12, do_mvc=True, pad_value=-2,
  dropout=0.2)`` with seeded random weights is saved as an official folder (``args.json``,
  ``vocab.json`` = scgpt's shipped 60,694-gene census vocabulary + ``<pad>``/``<cls>``/``<eoc>``,
  ``best_model.pt`` with flash-attn-1 ``Wqkv`` key names, no ``cls_decoder``) and converted with
  ``biozoo_scgpt.convert.convert_checkpoint``: both sides read the same numbers.
* **Cells.** scanpy's bundled ``pbmc68k_reduced`` (700 PBMCs, 765 genes). Counts are recovered from
  ``raw.X`` as ``round(expm1(raw.X) * n_counts / 1e4)``. Its 765 genes map onto 765 vocabulary
  tokens: the 705 whose symbols are in the census vocabulary by name, the other 60 onto unused
  census genes (seeded choice). Two datasets:

  - ``pbmc``: N randomly chosen cells (seeded), 183-409 expressed genes each;
  - ``pbmc x4``: whole-transcriptome-like lengths. Cell i is four pbmc cells side by side
    (source cells ``s``, ``s+175``, ``s+350``, ``s+525`` mod 700) over four disjoint blocks of 765
    vocabulary genes (block 0 = the pbmc genes above, blocks 1-3 = further unused census genes),
    so it expresses ~4x the genes (~750-1400; those above 1199 are subsampled to the 1200-token
    maximum, by each side's own sampler).
* **Reference side.** ``scgpt.tasks.embed_data(adata, folder, gene_col="index", max_length=1200,
  batch_size=64, device="cpu", use_fast_transformer=False)``, the package's own code as shipped,
  imported module by module (``scgpt/__init__.py`` cannot be imported with torch 2.13: torchtext's
  compiled library does not match). Stand-ins: a pure-Python ``torchtext.vocab`` (``Vocab`` /
  ``vocab``) for ``GeneVocab``'s base class, and an empty ``IPython`` module when IPython is absent
  (``scgpt.utils`` imports ``get_ipython`` at module level). Everything else, including its
  DataLoader (SequentialSampler, ``num_workers = #cpus``, pin_memory) and DataCollator binning,
  runs unmodified. "embed" time is its ``get_batch_cell_embeddings`` (timed by a wrapper);
  "load" is the rest of ``embed_data`` (vocabulary, gene matching, model build + ``load_pretrained``).
* **biozoo side.** ``biozoo.load(folder)`` ("load") then ``biozoo_scgpt.tasks.cell_embeddings(model,
  adata, batch_size=...)`` ("embed": validation, gene matching, normalise+log1p, binning,
  tokenisation, length-sorted batches, model). Variants: the default (auto attention processor,
  which picks ``sdpa`` here, batch size 64), ``sdpa`` with batch size 16 and 32, and ``eager``
  attention (processors named with ``biozoo.set_processor``).
* **Allocator.** The last round also runs the reference and biozoo's default with glibc's malloc
  told to keep freed memory (``MALLOC_MMAP_THRESHOLD_=2**32 MALLOC_TRIM_THRESHOLD_=2**36``): by
  default every large short-lived tensor is a fresh mmap whose pages are faulted in (and zeroed)
  again, which costs the reference's materialised attention scores much more than biozoo.
* **Peak memory.** In each subprocess the kernel's peak-RSS counter is reset
  (``/proc/self/clear_refs``) after imports and reading the data; the column is VmHWM at the end
  minus VmRSS at that point, i.e. model weights + everything the run allocates. The reference's
  DataLoader worker processes are not included there; their largest ``ru_maxrss`` is given
  separately (forked children: that figure counts pages shared with the parent too).
* **Same outputs.** Reference binning breaks ties at random, so equality is checked on inputs
  where ties cannot occur: the first E cells of each dataset with at most 1199 expressed genes
  (no subsampling), as log1p(normalize_total(counts, 1e4)) plus a seeded jitter in [0, 1e-2) on
  the non-zeros (all non-zero values of a cell distinct; biozoo then uses them as is). The core
  variants embed them in their first-round subprocess, after the timed run (so not in the time or
  the peak); the table gives max |diff| against the reference.
* **Schedule.** Rounds are interleaved: every round runs the core variants (reference, biozoo
  default, biozoo bs 16) once each in rotated order, the last round(s) also the extras (eager,
  bs 32, the two malloc-tuned runs). Throughput is cells / embed seconds on the count data; the
  table shows medians and the best run, and the speed ratio as the median over rounds of
  (variant / reference of the same round), which is robust to the load drifting on a shared
  machine.

Run (from the repository root; check ``uptime`` first: ~8 min full and ~2 min quick on the idle 2-core
machine, much longer when other jobs share the cores):

    .venv/bin/python bench/scgpt_embed.py            # full: 96 + 24 cells, 3 rounds
    .venv/bin/python bench/scgpt_embed.py --quick    # 32 + 8 cells, 1 round

``--patch FILE`` adds a biozoo variant with FILE exec'd in the worker before embedding (e.g. a
replacement ``biozoo_scgpt.tasks.cell_embeddings``), to measure a proposed change in the same run.

The Markdown table goes to stdout (paste into docs/benchmarks.md); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.util
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path
from typing import Any

THREADS = 2
MAX_LENGTH = 1200
SHAPE = {"ntoken": 60697, "d_model": 512, "nhead": 8, "d_hid": 512, "nlayers": 12}
ARGS_JSON = {
    "embsize": 512,
    "nheads": 8,
    "d_hid": 512,
    "nlayers": 12,
    "n_layers_cls": 3,
    "dropout": 0.2,
    "pad_token": "<pad>",
    "pad_value": -2,
    "mask_value": -1,
    "input_style": "binned",
    "input_emb_style": "continuous",
    "n_bins": 51,
    "max_seq_len": MAX_LENGTH,
    "MVC": True,
    "fast_transformer": True,
}
SPECIALS = ("<pad>", "<cls>", "<eoc>")
BLOCKS = 4  # pbmc x4
BLOCK_SHIFT = 175  # source cell offset between blocks (700 / 4)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# the reference, imported without scgpt/__init__.py


def _package(name: str, path: Path | None) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = [str(path)] if path is not None else []
    sys.modules[name] = module
    return module


def _torchtext_standin() -> None:
    """A pure-Python ``torchtext.vocab`` with what ``GeneVocab`` uses (torchtext 0.18 cannot load on torch 2.13)."""
    with contextlib.suppress(Exception):
        import torchtext.vocab  # noqa: F401

        return
    for name in [m for m in sys.modules if m == "torchtext" or m.startswith("torchtext.")]:
        del sys.modules[name]

    class _Table:  # the C++ torchtext._torchtext.Vocab
        def __init__(self, tokens: list[str]) -> None:
            self.itos = list(tokens)
            self.stoi = {t: i for i, t in enumerate(self.itos)}
            self.default: int | None = None

    class Vocab:
        def __init__(self, vocab: _Table) -> None:
            self.vocab = vocab

        def __len__(self) -> int:
            return len(self.vocab.itos)

        def __contains__(self, token: str) -> bool:
            return token in self.vocab.stoi

        def __getitem__(self, token: str) -> int:
            index = self.vocab.stoi.get(token, self.vocab.default)
            if index is None:
                raise RuntimeError(f"Token {token} not found and default index is not set")
            return index

        def __call__(self, tokens: list[str]) -> list[int]:
            return self.lookup_indices(tokens)

        def lookup_indices(self, tokens: list[str]) -> list[int]:
            return [self[t] for t in tokens]

        def lookup_token(self, index: int) -> str:
            return self.vocab.itos[index]

        def lookup_tokens(self, indices: list[int]) -> list[str]:
            return [self.vocab.itos[i] for i in indices]

        def set_default_index(self, index: int | None) -> None:
            self.vocab.default = index

        def get_default_index(self) -> int | None:
            return self.vocab.default

        def insert_token(self, token: str, index: int) -> None:
            if token in self.vocab.stoi:
                raise RuntimeError(f"Token {token} already exists in the Vocab")
            if index == len(self.vocab.itos):
                self.vocab.itos.append(token)
                self.vocab.stoi[token] = index
            else:
                self.vocab.itos.insert(index, token)
                self.vocab.stoi = {t: i for i, t in enumerate(self.vocab.itos)}

        def append_token(self, token: str) -> None:
            self.insert_token(token, len(self.vocab.itos))

        def get_stoi(self) -> dict[str, int]:
            return dict(self.vocab.stoi)

        def get_itos(self) -> list[str]:
            return list(self.vocab.itos)

    def vocab(ordered_dict: Any, min_freq: int = 1, specials: Any = None, special_first: bool = True) -> Vocab:
        tokens = [t for t, freq in ordered_dict.items() if freq >= min_freq]
        for s in specials or []:
            if s in tokens:
                tokens.remove(s)
        if specials:
            tokens = list(specials) + tokens if special_first else tokens + list(specials)
        return Vocab(_Table(tokens))

    root = _package("torchtext", None)
    vocab_module = types.ModuleType("torchtext.vocab")
    vocab_module.Vocab, vocab_module.vocab = Vocab, vocab
    root.vocab = vocab_module
    sys.modules["torchtext.vocab"] = vocab_module


def import_reference() -> types.ModuleType:
    """``scgpt.tasks.cell_emb`` of the installed scgpt 0.2.4, with its real dependencies inside scgpt."""
    spec = importlib.util.find_spec("scgpt")
    if spec is None or spec.origin is None:
        raise SystemExit("the reference is not installed: pip install --no-deps scgpt==0.2.4 && pip install scanpy")
    root = Path(spec.origin).parent
    pkg = _package("scgpt", root)
    pkg.logger = logging.getLogger("scGPT")  # what scgpt/__init__.py defines before importing submodules
    _torchtext_standin()
    if importlib.util.find_spec("IPython") is None:  # undeclared dependency of scgpt.utils.util
        ipython = types.ModuleType("IPython")
        ipython.get_ipython = lambda: None
        sys.modules["IPython"] = ipython
    model_pkg = _package("scgpt.model", root / "model")
    model_pkg.TransformerModel = importlib.import_module("scgpt.model.model").TransformerModel
    tokenizer_pkg = _package("scgpt.tokenizer", root / "tokenizer")
    tokenizer_pkg.GeneVocab = importlib.import_module("scgpt.tokenizer.gene_tokenizer").GeneVocab
    utils_pkg = _package("scgpt.utils", root / "utils")
    utils_pkg.load_pretrained = importlib.import_module("scgpt.utils.util").load_pretrained
    _package("scgpt.tasks", root / "tasks")  # tasks/__init__ also imports grn.py (seaborn, networkx): not needed
    return importlib.import_module("scgpt.tasks.cell_emb")


# --------------------------------------------------------------------------------------------------------------
# setup: weights and cells


def build_official_folder(folder: Path, seed: int = 0) -> list[str]:
    """A whole-human-shaped official scGPT folder with seeded random weights; returns the vocabulary genes."""
    import torch

    cell_emb = import_reference()
    census = json.loads((Path(cell_emb.__file__).parents[1] / "tokenizer" / "default_census_vocab.json").read_text())
    genes = [g for g, _ in sorted(census.items(), key=lambda kv: kv[1])]
    assert len(genes) == SHAPE["ntoken"] - len(SPECIALS), len(genes)
    token2idx = {g: i for i, g in enumerate(genes)}
    for s in SPECIALS:
        token2idx[s] = len(token2idx)
    vocab = cell_emb.GeneVocab.from_dict(token2idx)
    torch.manual_seed(seed)
    model = cell_emb.TransformerModel(
        SHAPE["ntoken"],
        SHAPE["d_model"],
        SHAPE["nhead"],
        SHAPE["d_hid"],
        SHAPE["nlayers"],
        vocab=vocab,
        dropout=0.2,
        pad_token="<pad>",
        pad_value=-2,
        do_mvc=True,
        use_fast_transformer=False,
    )
    state = {
        k.replace("self_attn.in_proj_", "self_attn.Wqkv."): v
        for k, v in model.state_dict().items()
        if not k.startswith("cls_decoder.")  # pretrained checkpoints carry no classifier
    }
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps(ARGS_JSON, indent=2))
    (folder / "vocab.json").write_text(json.dumps(token2idx, indent=2))
    torch.save(state, folder / "best_model.pt")
    return genes


def build_datasets(workdir: Path, genes: list[str], n_short: int, n_long: int, n_eq: int, seed: int = 0) -> dict:
    """Write the count datasets and the tie-free equality datasets as .h5ad; return their paths and stats."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scanpy as sc
    from scipy import sparse

    pbmc = sc.datasets.pbmc68k_reduced()
    raw = pbmc.raw.X.toarray() if sparse.issparse(pbmc.raw.X) else np.asarray(pbmc.raw.X)
    counts = np.rint(np.expm1(raw.astype(np.float64)) * pbmc.obs["n_counts"].to_numpy()[:, None] / 1e4)
    counts = counts.astype(np.float32)
    n_cells, n_genes = counts.shape
    rng = np.random.default_rng(seed)
    known = set(genes)
    names = list(pbmc.raw.var_names)
    pool = [g for g in genes if g not in set(names)]
    spare = iter(rng.permutation(pool).tolist())
    block0 = [n if n in known else next(spare) for n in names]
    blocks = [block0] + [[next(spare) for _ in range(n_genes)] for _ in range(BLOCKS - 1)]

    def to_adata(x: np.ndarray, var_names: list[str], obs_names: list[str]) -> ad.AnnData:
        return ad.AnnData(X=sparse.csr_matrix(x), obs=pd.DataFrame(index=obs_names), var=pd.DataFrame(index=var_names))

    order = rng.permutation(n_cells)
    short_src = order[: min(n_short, n_cells)]
    datasets: dict[str, dict] = {}
    long_src = order[: min(n_long, n_cells)]
    long_x = np.hstack([counts[(long_src + k * BLOCK_SHIFT) % n_cells] for k in range(BLOCKS)])
    long_names = [g for block in blocks for g in block]
    for name, x, var_names, src in (
        ("pbmc", counts[short_src], block0, short_src),
        (f"pbmc x{BLOCKS}", long_x, long_names, long_src),
    ):
        obs_names = [f"{pbmc.obs_names[i]}#{j}" for j, i in enumerate(src)]
        path = workdir / f"{name.replace(' ', '_')}.h5ad"
        to_adata(x, var_names, obs_names).write_h5ad(path)
        nnz = (x > 0).sum(axis=1)
        tokens = np.minimum(nnz + 1, MAX_LENGTH)
        # equality input: no cell above the maximum length, all non-zero values of a cell distinct
        fits = np.flatnonzero(nnz <= MAX_LENGTH - 1)[:n_eq]
        logn = np.log1p(x[fits] / x[fits].sum(axis=1, keepdims=True) * 1e4)
        eq = np.zeros(logn.shape, dtype=np.float32)
        for i, row in enumerate(logn):
            nz = np.flatnonzero(row)
            while True:  # redraw the (rare) rows where float32 rounding left two values equal
                values = (row[nz] + rng.uniform(0, 1e-2, size=nz.size)).astype(np.float32)
                if np.unique(values).size == values.size:
                    break
            eq[i, nz] = values
        eq_path = workdir / f"{name.replace(' ', '_')}_eq.h5ad"
        to_adata(eq, var_names, [obs_names[i] for i in fits]).write_h5ad(eq_path)
        datasets[name] = {
            "path": str(path),
            "eq_path": str(eq_path),
            "cells": int(x.shape[0]),
            "eq_cells": len(fits),
            "genes_min": int(nnz.min()),
            "genes_median": float(np.median(nnz)),
            "genes_max": int(nnz.max()),
            "tokens": int(tokens.sum()),
            "subsampled": int((nnz + 1 > MAX_LENGTH).sum()),
        }
    return datasets


# --------------------------------------------------------------------------------------------------------------
# one measurement (runs in a fresh subprocess)


def _status() -> dict[str, float]:
    fields = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def _loadavg() -> float:
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def worker(job: dict) -> dict:
    warnings.filterwarnings("ignore")
    import anndata as ad
    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    if job["variant"] == "reference":
        cell_emb = import_reference()
    else:
        import biozoo
        import biozoo_scgpt.tasks as tasks

        if job.get("patch"):  # a proposed change, e.g. a replacement tasks.cell_embeddings (see --patch)
            source = Path(job["patch"]).read_text()
            exec(compile(source, job["patch"], "exec"), {"__name__": "bench_patch"})
    adata = ad.read_h5ad(job["data"])
    eq = ad.read_h5ad(job["eq_data"]) if job.get("eq_data") else None
    gc.collect()
    reset = _reset_peak()
    base = _status()
    result: dict[str, Any] = {"threads": torch.get_num_threads(), "peak_reset": reset, "load_avg": [_loadavg()]}
    if job["variant"] == "reference":
        timing: dict[str, float] = {}
        inner = cell_emb.get_batch_cell_embeddings

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                timing["embed"] = time.perf_counter() - start

        cell_emb.get_batch_cell_embeddings = timed

        def run(data: Any) -> Any:
            out = cell_emb.embed_data(
                data,
                job["official"],
                gene_col="index",
                max_length=MAX_LENGTH,
                batch_size=job["batch_size"],
                device="cpu",
                use_fast_transformer=False,
            )
            return out.obsm["X_scGPT"]

        start = time.perf_counter()
        emb = run(adata)
        total = time.perf_counter() - start
        result.update(load=total - timing["embed"], embed=timing["embed"])
        result["processor"] = "torch fast path"
    else:
        start = time.perf_counter()
        model = biozoo.load(job["converted"])
        if job.get("processor"):
            biozoo.set_processor(model, job["processor"])
        loaded = time.perf_counter()

        def run(data: Any) -> Any:
            return tasks.cell_embeddings(model, data, batch_size=job["batch_size"], progress=False)[0]

        emb = run(adata)
        result.update(load=loaded - start, embed=time.perf_counter() - loaded)
        decision = model.transformer_encoder.layers[0].self_attn.last_decision
        result["processor"] = decision.ran if decision else "patched (direct sdpa)" if job.get("patch") else "?"
    end = _status()
    result["load_avg"].append(_loadavg())
    result.update(
        cells=int(emb.shape[0]),
        rss_base_mb=base["VmRSS"],
        peak_mb=end["VmHWM"],
        peak_delta_mb=end["VmHWM"] - (base["VmRSS"] if reset else base["VmHWM"]),
        children_peak_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        finite=bool(np.isfinite(emb).all()),
    )
    np.save(job["out"], emb)
    if eq is not None:
        np.save(job["out"].replace(".npy", "_eq.npy"), run(eq))
    return result


# --------------------------------------------------------------------------------------------------------------
# the driver

REFERENCE = "reference `embed_data`, bs 64"
#: freed memory stays in the process instead of going back to the OS (and being page-faulted in again): big
#: short-lived tensors, such as the reference's materialised attention scores, then cost no page faults.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**36)}
DEFAULT = "biozoo `cell_embeddings` (default: auto attention, bs 64)"


def run_job(job: dict, env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(job)],
        capture_output=True,
        text=True,
        env={**env, **job.get("env", {})},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{job['variant']} on {job['dataset']} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def variants(patch: Path | None) -> tuple[list[dict], list[dict]]:
    """(core variants, run every round; extra variants, run in the last ``extra_repeats`` rounds)."""
    core = [
        {"name": REFERENCE, "variant": "reference", "batch_size": 64},
        {"name": DEFAULT, "variant": "biozoo", "batch_size": 64},
        {"name": "biozoo sdpa, bs 16", "variant": "biozoo", "processor": "sdpa", "batch_size": 16},
    ]
    if patch is not None:
        core.append(
            {
                "name": f"biozoo + {patch.name}, bs 64",
                "variant": "biozoo",
                "batch_size": 64,
                "patch": str(patch.resolve()),
            }
        )
    extra = [
        {"name": "biozoo eager attention, bs 64", "variant": "biozoo", "processor": "eager", "batch_size": 64},
        {"name": "biozoo sdpa, bs 32", "variant": "biozoo", "processor": "sdpa", "batch_size": 32},
        {"name": "reference, bs 64, glibc malloc tuned", "variant": "reference", "batch_size": 64, "env": MALLOC_ENV},
        {"name": "biozoo default, glibc malloc tuned", "variant": "biozoo", "batch_size": 64, "env": MALLOC_ENV},
    ]
    return core, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="~2-3 minutes: fewer cells, one round")
    parser.add_argument("--cells", type=int, help="cells in the pbmc dataset (default 96, quick 32)")
    parser.add_argument("--long-cells", type=int, help="cells in the pbmc x4 dataset (default 24, quick 8)")
    parser.add_argument("--eq-cells", type=int, help="cells per dataset in the equality check (default 16, quick 4)")
    parser.add_argument("--repeats", type=int, help="interleaved rounds of the core variants (default 3, quick 1)")
    parser.add_argument("--extra-repeats", type=int, help="rounds (the last ones) with the extra variants (default 1)")
    parser.add_argument("--no-extras", action="store_true", help="skip the extra variants (eager attention, bs 32)")
    parser.add_argument(
        "--patch", type=Path, help="also run biozoo with this Python file exec'd first (to measure a proposed change)"
    )
    parser.add_argument("--workdir", type=Path, help="keep the weights and data here (default: a temp dir)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    quick = args.quick
    sizes = {
        "n_short": args.cells or (32 if quick else 96),
        "n_long": args.long_cells or (8 if quick else 24),
        "n_eq": args.eq_cells or (4 if quick else 16),
    }
    repeats = args.repeats or (1 if quick else 3)
    extra_repeats = 0 if args.no_extras else (args.extra_repeats if args.extra_repeats is not None else 1)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.mkdtemp(prefix="scgpt_embed_bench.")
        workdir = Path(tmp)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        bench(workdir, sizes, repeats, extra_repeats, args.patch, quick)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def bench(workdir: Path, sizes: dict, repeats: int, extra_repeats: int, patch: Path | None, quick: bool) -> None:
    started = time.perf_counter()
    warnings.filterwarnings("ignore")
    env = {**os.environ, "BIOZOO_CACHE": str(workdir / "cache")}
    official, converted = workdir / "scGPT_human_random", workdir / "biozoo_scgpt_human_random"
    if not converted.exists():
        log("building the whole-human-shaped reference checkpoint and converting it ...")
        shutil.rmtree(official, ignore_errors=True)
        genes = build_official_folder(official)
        from biozoo_scgpt.convert import convert_checkpoint

        convert_checkpoint(official, converted, model_id="scgpt/bench-human-random")
    else:
        vocab = json.loads((official / "vocab.json").read_text())
        genes = [g for g, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if g not in SPECIALS]
    datasets = build_datasets(workdir, genes, **sizes)
    os.environ["BIOZOO_CACHE"] = env["BIOZOO_CACHE"]
    import biozoo

    biozoo.load(converted)  # hash the weights once (first use), so the timed loads are the normal case
    core, extra = variants(patch)
    log(f"setup {time.perf_counter() - started:.0f} s; datasets: {json.dumps(datasets)}")
    samples: dict[tuple[str, str], list[dict]] = {}
    eq_outputs: dict[tuple[str, str], str] = {}
    rounds = max(repeats, extra_repeats)
    for r in range(rounds):
        todo = (core if r < repeats else []) + (extra if r >= rounds - extra_repeats else [])
        shift = r % len(todo)
        todo = todo[shift:] + todo[:shift]  # rotate the order, so drift does not favour one side
        for dname, dset in datasets.items():
            for v in todo:
                key = (v["name"], dname)
                job = {
                    **v,
                    "dataset": dname,
                    "data": dset["path"],
                    "official": str(official),
                    "converted": str(converted),
                    "out": str(workdir / f"emb_{len(samples)}_{r}.npy"),
                }
                if key not in eq_outputs and v in core:
                    job["eq_data"] = dset["eq_path"]
                    eq_outputs[key] = job["out"].replace(".npy", "_eq.npy")
                t = time.perf_counter()
                res = run_job(job, env)
                res["round"] = r
                samples.setdefault(key, []).append(res)
                log(
                    f"[{time.perf_counter() - started:4.0f} s] round {r + 1}: {v['name'][:44]:44s} {dname:8s} "
                    f"embed {res['embed']:6.1f} s ({res['cells'] / res['embed']:5.2f} cells/s)  load "
                    f"{res['load']:4.1f} s  peak +{res['peak_delta_mb']:5.0f} MiB  load avg "
                    f"{res['load_avg'][0]:.1f}-{res['load_avg'][1]:.1f}  [{time.perf_counter() - t:.0f} s]"
                )
    report(datasets, samples, eq_outputs, repeats, extra_repeats, quick, time.perf_counter() - started)


def report(
    datasets: dict,
    samples: dict[tuple[str, str], list[dict]],
    eq_outputs: dict[tuple[str, str], str],
    repeats: int,
    extra_repeats: int,
    quick: bool,
    elapsed: float,
) -> None:
    import numpy as np
    import torch

    loads = [x for rows in samples.values() for r in rows for x in r["load_avg"]]
    print(
        f"scGPT whole-human shape (60,697-token vocabulary, 512 wide, 12 layers, 8 heads, d_hid 512, max length "
        f"{MAX_LENGTH}), seeded random weights, same weights and cells on both sides. CPU ({os.cpu_count()} cores), "
        f"torch {torch.__version__}, torch threads = {THREADS} in every process. Each row: fresh subprocess per run, "
        f"median over {repeats} interleaved rounds ({extra_repeats} for the rest), the speed ratio is "
        f"taken against the reference run of the same round; "
        f"1-min load average during the runs {min(loads):.1f}-{max(loads):.1f}"
        f"{'; --quick' if quick else ''}.\n"
    )
    print("| dataset | cells | expressed genes min / median / max | tokens incl. CLS, capped at 1200 |")
    print("|---|---|---|---|")
    for name, d in datasets.items():
        print(
            f"| {name} | {d['cells']} | {d['genes_min']} / {d['genes_median']:.0f} / {d['genes_max']} | "
            f"{d['tokens']:,} ({d['subsampled']} cells subsampled) |"
        )
    print()
    print(
        "| dataset | variant | cells/s (median) | cells/s (best) | embed s | model load s | peak RSS increase MiB "
        "| speed vs reference (median of per-round ratios) | best vs best | attention | runs |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for dname in datasets:
        ref_rows = samples.get((REFERENCE, dname), [])
        ref_by_round = {r["round"]: r["cells"] / r["embed"] for r in ref_rows}
        ref_best = max(ref_by_round.values(), default=None)
        for (vname, d), rows in samples.items():
            if d != dname:
                continue
            rate = statistics.median(r["cells"] / r["embed"] for r in rows)
            best = max(r["cells"] / r["embed"] for r in rows)
            embed = statistics.median(r["embed"] for r in rows)
            load = statistics.median(r["load"] for r in rows)
            peak = f"{statistics.median(r['peak_delta_mb'] for r in rows):.0f}"
            if vname == REFERENCE:
                peak += f" (+ {statistics.median(r['children_peak_mb'] for r in rows):.0f} per DataLoader worker)"
                ratio, ratio_best = "1.00x", "1.00x"
            else:
                paired = [
                    r["cells"] / r["embed"] / ref_by_round[r["round"]] for r in rows if r["round"] in ref_by_round
                ]
                ratio = f"**{statistics.median(paired):.2f}x**" if paired else "-"
                ratio_best = f"{best / ref_best:.2f}x" if ref_best else "-"
            print(
                f"| {dname} | {vname} | {rate:.2f} | {best:.2f} | {embed:.1f} | {load:.1f} | {peak} | {ratio} | "
                f"{ratio_best} | {rows[0]['processor']} | {len(rows)} |"
            )
    print()
    print(
        "Same outputs: tie-free log-normalised input (see the script's docstring), cells within the length limit, "
        "L2-normalised CLS embeddings [cells, 512], biozoo vs reference:\n"
    )
    print("| dataset | variant | cells | max abs diff | min cosine similarity |")
    print("|---|---|---|---|---|")
    for (vname, dname), path in eq_outputs.items():
        if vname == REFERENCE:
            continue
        a, b = np.load(eq_outputs[(REFERENCE, dname)]), np.load(path)
        cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        print(f"| {dname} | {vname} | {len(a)} | {np.abs(a - b).max():.1e} | {cos.min():.7f} |")
    print(f"\nwhole run: {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
