"""scGPT whole-human cell embedding on a GPU: biozoo vs the reference (scgpt 0.2.4), same weights, same batches.

Issue 11's table, regenerated in one run. The model is whole-human sized (60,697-token vocabulary, 512 wide,
12 layers, 8 heads, d_hid 512) with seeded random weights: a reference ``TransformerModel`` is saved as an official
folder and converted with ``biozoo_scgpt.convert.convert_checkpoint``, so both sides read the same numbers.

Cells: ``--cells`` (1,024) synthetic cells of 200-1,200 tokens (CLS first; seeded gene ids without repeats, values
= expression bins 1..50 as floats, as scGPT's ``embed_data`` feeds its continuous value encoder), in batches of
``--batch-size`` (64) in the given order, each padded to its longest cell (pad id, pad value -2), as
``embed_data`` forms them. Every variant embeds all cells once untimed (warm-up, kernel selection) and then
``--rounds`` times timed: host tensors are pinned and copied to the device inside the timed loop, CLS rows are
L2-normalised on the device, one synchronisation at the end. The table gives the best round's cells/s.

Variants:

* ``reference fp32``: ``TransformerModel._encode`` under ``torch.no_grad`` in eval mode, which takes PyTorch's
  nested-tensor fast path (``torch._transformer_encoder_layer_fwd``).
* ``reference fp16 autocast``: the same under ``torch.autocast(float16)``.
* ``biozoo fp32 <processor>``: ``biozoo.load(folder, device=...)``, ``model.encode`` with each ``--processors``
  attention processor (``auto`` picks). TF32 is off for every fp32 row (strict fp32).
* ``biozoo fp32 + TF32``: opt-in TF32 matmuls (``torch.backends.cuda.matmul.allow_tf32``), measured separately.
* ``biozoo bf16 autocast``: fp32 weights under ``torch.autocast(bfloat16)``.
* ``biozoo bfloat16`` / ``float16``: ``biozoo.load(..., dtype=...)``, weights and activations in half precision
  (``auto`` processor); ``biozoo bfloat16 <processor>`` with each ``--half-processors`` processor (``varlen``'s
  packed flash-attention path on CUDA).
* ``... sorted``: the same cells batched by length (longest first) with at most ``--max-tokens`` padded tokens per
  batch, as biozoo's own single-cell pipeline batches them; outputs are put back in the given order.
* ``biozoo pipeline``: ``biozoo_scgpt.tasks.cell_embeddings(model, adata)`` from an in-memory AnnData of counts
  with the same genes per cell (normalisation, binning, tokenisation, sorted batches, model), fp32 and bf16.

Same outputs: max |difference| of the L2-normalised CLS embeddings against ``reference fp32`` (same cells, same
order; the pipeline rows bin counts themselves, so they are compared with biozoo's fp32 pipeline instead).

Run on a CUDA machine (the reference installed without its dependencies, e.g. ``pip install --no-deps
scgpt==0.2.4``; only ``scgpt.model`` is imported)::

    python bench/gpu_embed.py --out results.json             # the table to stdout, everything to results.json
    python bench/gpu_embed.py --device cpu --quick           # a rehearsal on CPU (small model and few cells)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import math
import platform
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

SHAPE = {"ntoken": 60697, "d_model": 512, "nhead": 8, "d_hid": 512, "nlayers": 12}
QUICK_SHAPE = {"ntoken": 2003, "d_model": 64, "nhead": 4, "d_hid": 64, "nlayers": 2}
SPECIALS = ("<pad>", "<cls>", "<eoc>")
PAD_VALUE = -2.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the reference: scgpt.model.model only (scgpt/__init__.py imports scanpy, torchtext, ...) --------------------


def import_reference() -> Any:
    spec = importlib.util.find_spec("scgpt")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the reference is not installed: pip install --no-deps scgpt==0.2.4")
    root = Path(spec.submodule_search_locations[0])
    for name, path in (("scgpt", root), ("scgpt.model", root / "model")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flash_attn is not installed"
        return importlib.import_module("scgpt.model.model").TransformerModel


def build_models(workdir: Path, shape: dict[str, int], device: str, seed: int = 0) -> tuple[Any, Path, int, int]:
    """The reference model on ``device`` and the converted biozoo folder; also the pad and CLS ids."""
    from biozoo_scgpt.convert import convert_checkpoint

    TransformerModel = import_reference()
    genes = [f"GENE{i:05d}" for i in range(shape["ntoken"] - len(SPECIALS))]
    vocab = {g: i for i, g in enumerate(genes)}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    torch.manual_seed(seed)
    ref = TransformerModel(
        shape["ntoken"], shape["d_model"], shape["nhead"], shape["d_hid"], shape["nlayers"],
        vocab=vocab, dropout=0.2, pad_token="<pad>", pad_value=int(PAD_VALUE), do_mvc=True,
        use_fast_transformer=False,
    )  # fmt: skip
    official = workdir / "official"
    official.mkdir()
    args = {
        "embsize": shape["d_model"], "nheads": shape["nhead"], "d_hid": shape["d_hid"], "nlayers": shape["nlayers"],
        "n_layers_cls": 3, "dropout": 0.2, "pad_token": "<pad>", "pad_value": int(PAD_VALUE), "mask_value": -1,
        "input_style": "binned", "input_emb_style": "continuous", "n_bins": 51, "max_seq_len": 1200, "MVC": True,
    }  # fmt: skip
    (official / "args.json").write_text(json.dumps(args))
    (official / "vocab.json").write_text(json.dumps(vocab))
    state = {k.replace("self_attn.in_proj_", "self_attn.Wqkv."): v for k, v in ref.state_dict().items()}
    torch.save({k: v for k, v in state.items() if not k.startswith("cls_decoder.")}, official / "best_model.pt")
    folder = convert_checkpoint(official, workdir / "biozoo", model_id="bench/whole-human-random")
    return ref.to(device).eval(), folder, vocab["<pad>"], vocab["<cls>"]


# -- cells and batches --------------------------------------------------------------------------------------------


def make_cells(n: int, n_genes: int, lo: int, hi: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per cell: gene ids (without CLS) and their bins 1..50 as floats."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo - 1, hi, (n,), generator=g).tolist()  # + CLS: lo..hi tokens
    cells = []
    for length in lengths:
        genes = torch.randperm(n_genes, generator=g)[:length]
        bins = torch.randint(1, 51, (length,), generator=g).float()
        cells.append((genes, bins))
    return cells


def batch_plan(cells: list, batch_size: int, sort: bool, max_tokens: int) -> list[list[int]]:
    """Cell indices per batch: the given order in ``batch_size`` runs, or longest first under a padded-token cap."""
    order = list(range(len(cells)))
    if not sort:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    order.sort(key=lambda i: -len(cells[i][0]))
    plan, current = [], []
    for i in order:
        width = len(cells[(current or [i])[0]][0]) + 1  # the longest cell of the batch is its first
        if current and ((len(current) + 1) * width > max_tokens or len(current) >= 4 * batch_size):
            plan.append(current)
            current = []
        current.append(i)
    return plan + ([current] if current else [])


def padded(cells: list, idx: list[int], pad_id: int, cls_id: int) -> tuple[torch.Tensor, ...]:
    width = 1 + max(len(cells[i][0]) for i in idx)
    src = torch.full((len(idx), width), pad_id, dtype=torch.long)
    values = torch.full((len(idx), width), PAD_VALUE)
    for row, i in enumerate(idx):
        genes, bins = cells[i]
        src[row, 0], values[row, 0] = cls_id, 0.0
        src[row, 1 : 1 + len(genes)], values[row, 1 : 1 + len(genes)] = genes, bins
    return src.pin_memory() if torch.cuda.is_available() else src, (
        values.pin_memory() if torch.cuda.is_available() else values
    )


# -- timing -------------------------------------------------------------------------------------------------------


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_variant(
    encode: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    batches: list[tuple[list[int], torch.Tensor, torch.Tensor]],
    n_cells: int,
    pad_id: int,
    device: str,
    rounds: int,
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> tuple[float, torch.Tensor]:
    """Best cells/s over ``rounds`` timed passes (after one warm-up pass) and the normalised CLS rows, in order."""
    out = torch.empty(n_cells, dtype=torch.float32, device=device)

    def one_pass() -> torch.Tensor:
        rows = []
        with torch.inference_mode(), context():
            for _idx, src, values in batches:
                src_d = src.to(device, non_blocking=True)
                values_d = values.to(device, non_blocking=True)
                hidden = encode(src_d, values_d, src_d == pad_id)
                rows.append(torch.nn.functional.normalize(hidden[:, 0].float(), dim=-1))
        return torch.cat(rows)

    order = torch.tensor([i for idx, _, _ in batches for i in idx], device=device)
    one_pass()
    sync(device)
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        emb = one_pass()
        sync(device)
        best = min(best, time.perf_counter() - start)
    out = torch.empty((n_cells, emb.shape[1]), dtype=torch.float32, device=device)
    out[order] = emb
    return n_cells / best, out.cpu()


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def autocast(device: str, dtype: torch.dtype) -> Callable[[], contextlib.AbstractContextManager]:
    return lambda: torch.autocast(device.split(":")[0], dtype=dtype)


def _adata(X: Any, genes: list[str]) -> Any:
    import anndata
    import pandas as pd

    return anndata.AnnData(X=X, var=pd.DataFrame(index=pd.Index(genes, dtype=object)))


# -- main ---------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cells", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64 * 700, help="padded tokens per sorted batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processors", default="auto,eager,sdpa,varlen", help="biozoo fp32 rows, comma-separated")
    parser.add_argument("--compile-only", action="store_true", help="only bfloat16 sorted, eager vs torch.compile")
    parser.add_argument("--half-processors", default="varlen,varlen-self", help="extra bfloat16 rows")
    parser.add_argument("--skip", default="", help="comma-separated variant names to leave out")
    parser.add_argument("--quick", action="store_true", help="a tiny model and 96 cells of 20-120 tokens")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    import biozoo

    device = args.device
    shape = QUICK_SHAPE if args.quick else SHAPE
    lo, hi = (20, 120) if args.quick else (200, 1200)
    n_cells = 96 if args.quick else args.cells
    skip = set(filter(None, args.skip.split(",")))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # strict fp32 by default
    results: dict[str, Any] = {"rows": [], "device": device, "torch": torch.__version__, "shape": shape}
    if device.startswith("cuda"):
        results["gpu"] = torch.cuda.get_device_name(device)
    log(f"building models ({shape})")
    with tempfile.TemporaryDirectory() as tmp:
        ref, folder, pad_id, cls_id = build_models(Path(tmp), shape, device)
        cells = make_cells(n_cells, shape["ntoken"] - len(SPECIALS), lo, hi, seed=1)
        results["tokens"] = sum(len(g) + 1 for g, _ in cells)

        def batches(sort: bool) -> list:
            plan = batch_plan(cells, args.batch_size, sort, args.max_tokens)
            return [(idx, *padded(cells, idx, pad_id, cls_id)) for idx in plan]

        given, by_length = batches(False), batches(True)
        results["padded_tokens"] = {"given order": sum(s.numel() for _, s, _ in given),
                                    "sorted": sum(s.numel() for _, s, _ in by_length)}  # fmt: skip
        baseline: dict[str, torch.Tensor] = {}

        def row(name: str, encode: Callable, plan: list, compare: str = "reference fp32", **kw: Any) -> None:
            if name in skip:
                return
            try:
                speed, emb = run_variant(encode, plan, n_cells, pad_id, device, args.rounds, **kw)
            except Exception as exc:  # a failing variant is a row, not the end of the run
                log(f"{name}: FAILED {type(exc).__name__}: {exc}")
                results["rows"].append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
                return
            baseline.setdefault(name, emb)
            ref_emb = baseline.get(compare)
            diff = None if ref_emb is None or ref_emb is emb else float((emb - ref_emb).abs().max())
            results["rows"].append({"name": name, "cells_per_s": speed, "max_abs_diff": diff, "vs": compare})
            log(f"{name}: {speed:,.0f} cells/s, max|diff| vs {compare} {diff}")

        if args.compile_only:  # eager against torch.compile(dynamic=True), bfloat16, sorted batches
            del ref
            half = biozoo.load(folder, device=device, dtype="bfloat16")
            row("biozoo bfloat16 sorted", half.encode, by_length, compare="biozoo bfloat16 sorted")
            compiled = torch.compile(half.encode, dynamic=True)
            start = time.perf_counter()
            row("biozoo bfloat16 sorted, torch.compile", compiled, by_length, compare="biozoo bfloat16 sorted")
            results["compile_seconds_incl_runs"] = time.perf_counter() - start
            results["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            print(markdown(results))
            return
        row("reference fp32", ref._encode, given)
        row("reference fp16 autocast", ref._encode, given, context=autocast(device, torch.float16))
        del ref
        model = biozoo.load(folder, device=device)
        for proc in filter(None, args.processors.split(",")):
            with contextlib.suppress(Exception):
                biozoo.set_processor(model, proc)
            row(f"biozoo fp32 {proc}", model.encode, given)
        biozoo.set_processor(model, "auto")
        if device.startswith("cuda"):
            row("biozoo fp32 + TF32 (opt-in)", model.encode, given, context=lambda: tf32(True))
        row("biozoo fp32 sorted", model.encode, by_length)
        row("biozoo bf16 autocast", model.encode, given, context=autocast(device, torch.bfloat16))
        del model
        for dtype in ("bfloat16", "float16"):
            half = biozoo.load(folder, device=device, dtype=dtype)
            row(f"biozoo {dtype}", half.encode, given)
            row(f"biozoo {dtype} sorted", half.encode, by_length)
            if dtype == "bfloat16":
                for proc in filter(None, args.half_processors.split(",")):
                    biozoo.set_processor(half, proc)
                    row(f"biozoo {dtype} {proc}", half.encode, given)
                    row(f"biozoo {dtype} {proc} sorted", half.encode, by_length)
            del half
        if "pipeline" not in skip:
            pipeline_rows(folder, cells, shape, device, args, results)
    results["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results["python"] = platform.python_version()
    print(markdown(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


def pipeline_rows(folder: Path, cells: list, shape: dict, device: str, args: Any, results: dict) -> None:
    """biozoo's own pipeline from an AnnData (fp32 and bf16): cells/s over the whole call."""
    import biozoo
    from biozoo_scgpt.tasks import cell_embeddings

    genes = [f"GENE{i:05d}" for i in range(shape["ntoken"] - len(SPECIALS))]
    adata = _adata(pipeline_adata_matrix(cells, len(genes)), genes)
    outs = {}
    for dtype in ("float32", "bfloat16"):
        name = f"biozoo pipeline from AnnData, {dtype}"
        try:
            model = biozoo.load(folder, device=device, dtype=dtype)
            cell_embeddings(model, adata[:8].copy(), batch_size=args.batch_size)  # warm-up
            sync(device)
            best = math.inf
            for _ in range(args.rounds):
                start = time.perf_counter()
                emb = cell_embeddings(model, adata, batch_size=args.batch_size)
                sync(device)
                best = min(best, time.perf_counter() - start)
            emb = torch.as_tensor(emb[0])  # (embeddings, prepared cells)
            outs[dtype] = torch.nn.functional.normalize(emb.float(), dim=-1)
            diff = None if dtype == "float32" else float((outs[dtype] - outs["float32"]).abs().max())
            results["rows"].append({"name": name, "cells_per_s": len(cells) / best, "max_abs_diff": diff,
                                    "vs": "biozoo pipeline from AnnData, float32"})  # fmt: skip
            log(f"{name}: {len(cells) / best:,.0f} cells/s, max|diff| {diff}")
        except Exception as exc:
            log(f"{name}: FAILED {type(exc).__name__}: {exc}")
            results["rows"].append({"name": name, "error": f"{type(exc).__name__}: {exc}"})


def pipeline_adata_matrix(cells: list, n_genes: int) -> Any:
    import numpy as np
    import scipy.sparse as sp

    rows = np.concatenate([np.full(len(g), r) for r, (g, _) in enumerate(cells)])
    cols = np.concatenate([g.numpy() for g, _ in cells])
    vals = np.concatenate([b.numpy() for _, b in cells]).astype(np.float32)
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(cells), n_genes))


def markdown(results: dict) -> str:
    rows = results["rows"]
    ref = {r["name"]: r.get("cells_per_s") for r in rows}
    fp32, fp16 = ref.get("reference fp32"), ref.get("reference fp16 autocast")
    lines = [
        f"{results.get('gpu', results['device'])}, torch {results['torch']}, {results['when']}; "
        f"{results['tokens']:,} tokens in the cells; padded tokens: {results['padded_tokens']}",
        "",
        "| variant | cells/s | vs reference fp32 | vs reference fp16 autocast | max abs diff (vs) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error'][:120]} | | | |")
            continue
        s = r["cells_per_s"]
        a = f"{s / fp32:.2f}x" if fp32 else "-"
        b = f"{s / fp16:.2f}x" if fp16 else "-"
        d = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e} ({r['vs']})"
        lines.append(f"| {r['name']} | {s:,.0f} | {a} | {b} | {d} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
