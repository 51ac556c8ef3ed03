"""Write golden reference data from scModelForge's ``AutoregressiveTransformer`` and tokenizers.

Why: biozoo's ``autoregressive`` plugin reimplements scModelForge's autoregressive transformer
(github.com/EhsanRS/scModelForge). That package is not on PyPI, so our tests cannot import it. This
script runs the reference once, from a local checkout of its ``src`` folder, and stores what it produced:
two small model folders written by the reference's own ``save_pretrained``, the outputs of forward,
loss and encode on a fixed padded batch, and the reference tokenizers' output on real PBMC cells. Our
tests then compare against these files. The output contains only tensors, JSON and our own notes. It
contains no reference source code.

Run (from the repo root, with a venv that has torch, numpy, safetensors, anndata and omegaconf)::

    python scripts/make_scmodelforge_golden.py --reference-src /path/to/scModelForge/src
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path("plugins/autoregressive/tests/golden")
H5AD = REPO_ROOT / "examples" / "pbmc68k_test.h5ad"
REFERENCE_REPO = "https://github.com/EhsanRS/scModelForge"

N_GENES_MODEL = 60  # GENE0..GENE59 -> vocab_size 64 with the 4 special tokens
BATCH, SEQ = 3, 12
LENGTHS = (12, 9, 5)
MASK_ID, CLS_ID = 2, 3
PERTURB_STD = 0.05

N_CELLS, N_TOK_GENES, TOK_MAX_LEN, TOK_BINS, VALUE_MAX = 8, 200, 64, 51, 10.0

MODELS: dict[str, dict[str, Any]] = {
    "scmodelforge-cls": {
        "init_seed": 0,
        "perturb_seed": 1000,
        "batch_seed": 2000,
        "config": {
            "hidden_dim": 32,
            "num_layers": 2,
            "num_heads": 4,
            "ffn_dim": 64,
            "dropout": 0.1,
            "max_seq_len": 32,
            "pooling": "cls",
            "activation": "gelu",
            "n_bins": 51,
        },
        "with_tokenizer_config": True,
    },
    "scmodelforge-mean": {
        "init_seed": 1,
        "perturb_seed": 1001,
        "batch_seed": 2001,
        "config": {
            "hidden_dim": 32,
            "num_layers": 3,
            "num_heads": 4,
            "ffn_dim": None,
            "dropout": 0.1,
            "max_seq_len": 32,
            "pooling": "mean",
            "activation": "relu",
            "n_bins": 51,
            "gene_loss_weight": 0.7,
            "expression_loss_weight": 1.3,
        },
        "with_tokenizer_config": False,
    },
}


def import_reference(src: Path) -> dict[str, Any]:
    """Import the pieces of scModelForge we need from a source checkout (no pip install)."""
    sys.path.insert(0, str(src.resolve()))
    mods = {
        name: importlib.import_module(f"scmodelforge.{name}")
        for name in (
            "models.autoregressive",
            "models.hub",
            "config.schema",
            "data.gene_vocab",
            "data.preprocessing",
            "tokenizers",
            "tokenizers._utils",
        )
    }
    origin = Path(mods["models.autoregressive"].__file__).resolve()
    if not origin.is_relative_to(src.resolve()):
        raise RuntimeError(f"scmodelforge was imported from {origin}, not from {src}")
    return mods


def git_commit(src: Path) -> str:
    """Best-effort commit hash of the reference checkout (an exported tree has none)."""
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


def perturb_(model: torch.nn.Module, seed: int) -> None:
    """Move every parameter off its init value (LayerNorm 1/0, zero biases, zero padding row)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(PERTURB_STD * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def make_batch(seed: int, n_bins: int, vocab_size: int) -> dict[str, torch.Tensor]:
    """A padded batch: row 0 full, rows 1-2 padded; CLS first; two MASK ids per row; a few labels."""
    gen = torch.Generator().manual_seed(seed)
    attention_mask = torch.zeros(BATCH, SEQ, dtype=torch.long)
    for b, n in enumerate(LENGTHS):
        attention_mask[b, :n] = 1
    input_ids = torch.randint(4, vocab_size, (BATCH, SEQ), generator=gen)
    input_ids[:, 0] = CLS_ID
    values = torch.rand(BATCH, SEQ, generator=gen) * 5.0
    values[:, 0] = 0.0
    labels = torch.full((BATCH, SEQ), -100, dtype=torch.long)
    for b, n in enumerate(LENGTHS):
        pos = (1 + torch.randperm(n - 1, generator=gen))[:3].tolist()
        for p in pos[:2]:  # masked positions: label is the "original" gene, input becomes MASK
            labels[b, p] = int(torch.randint(4, vocab_size, (1,), generator=gen))
            input_ids[b, p] = MASK_ID
        labels[b, pos[2]] = input_ids[b, pos[2]]  # a "kept" position: label equals the input id
    input_ids[attention_mask == 0] = 0
    values[attention_mask == 0] = 0.0
    bin_ids = torch.randint(0, n_bins, (BATCH, SEQ), generator=gen)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "values": values.float(),
        "labels": labels,
        "bin_ids": bin_ids,
    }


def run_model(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference outputs in eval mode without grad (float32)."""
    ids, am, vals, labels, bins = (batch[k] for k in ("input_ids", "attention_mask", "values", "labels", "bin_ids"))
    model.eval()
    with torch.no_grad():
        fwd = model(ids, am, values=vals)
        assert fwd.loss is None
        full = model(ids, am, values=vals, labels=labels, bin_ids=bins)
        gene_only = model(ids, am, values=vals, labels=labels)
        nov = model(ids, am, values=None)
        out = {
            "forward.logits": fwd.logits,
            "forward.embeddings": fwd.embeddings,
            "loss.full": full.loss.reshape(()),
            "loss.gene_only": gene_only.loss.reshape(()),
            "encode": model.encode(ids, am, values=vals),
            "forward_novalues.logits": nov.logits,
            "forward_novalues.embeddings": nov.embeddings,
            "encode_novalues": model.encode(ids, am, values=None),
        }
    return {k: v.detach().float().contiguous() for k, v in out.items()}


def build_model_folder(ref: dict[str, Any], out: Path, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    schema, hub = ref["config.schema"], ref["models.hub"]
    genes = [f"GENE{i}" for i in range(N_GENES_MODEL)]
    vocab = ref["data.gene_vocab"].GeneVocab.from_genes(genes)
    cfg = schema.ModelConfig(architecture="autoregressive_transformer", vocab_size=len(vocab), **spec["config"])
    torch.manual_seed(spec["init_seed"])
    model = ref["models.autoregressive"].AutoregressiveTransformer.from_config(cfg)
    perturb_(model, spec["perturb_seed"])

    folder = out / name
    tok_cfg = None
    if spec["with_tokenizer_config"]:
        tok_cfg = schema.TokenizerConfig(
            strategy="binned_expression", max_genes=cfg.max_seq_len, gene_vocab="gene_vocab.json", n_bins=cfg.n_bins
        )
    hub.save_pretrained(model, folder, model_config=cfg, tokenizer_config=tok_cfg, gene_vocab=vocab)
    (folder / "README.md").unlink(missing_ok=True)  # the reference's generated model card: not wanted here

    batch = make_batch(spec["batch_seed"], cfg.n_bins, len(vocab))
    outputs = run_model(model, batch)

    # Round trip through the reference loader must reproduce the same numbers.
    loaded, _ = hub.load_pretrained(str(folder))
    again = run_model(loaded, batch)
    for k, v in outputs.items():
        torch.testing.assert_close(again[k], v, rtol=0, atol=0)

    # Same numbers without PyTorch's fused encoder fast path (what a plain reimplementation computes).
    prev = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        slow = run_model(model, batch)
    finally:
        torch.backends.mha.set_fastpath_enabled(prev)
    fastpath_diff = max(float((slow[k] - v).abs().max()) for k, v in outputs.items())

    tensors = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "values": batch["values"],
        "labels": batch["labels"],
        "bin_ids": batch["bin_ids"],
        **outputs,
    }
    meta = {"reference": REFERENCE_REPO, "model": name, "torch": torch.__version__}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "golden.safetensors"), metadata=meta)
    state = load_file(str(folder / "model.safetensors"))
    return {
        "config": json.loads((folder / "config.json").read_text()),
        "state_keys": {k: list(v.shape) for k, v in state.items()},
        "n_params": sum(v.numel() for v in state.values()),
        "fastpath_max_abs_diff": fastpath_diff,
        "golden_keys": sorted(tensors),
        "loss.full": float(outputs["loss.full"]),
        "loss.gene_only": float(outputs["loss.gene_only"]),
    }


# ----------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------


def batch_tensors(prefix: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Prefix the collated batch keys; ``gene_indices`` is checked equal to ``input_ids`` and not stored."""
    if not torch.equal(batch["gene_indices"], batch["input_ids"]):
        raise AssertionError(f"{prefix}: gene_indices differ from input_ids")
    return {f"{prefix}.{k}": v.contiguous() for k, v in batch.items() if k != "gene_indices"}


def build_tokenizers(ref: dict[str, Any], out: Path) -> dict[str, Any]:
    import anndata

    toks, utils = ref["tokenizers"], ref["tokenizers._utils"]
    adata = anndata.read_h5ad(H5AD)
    sub = adata[:N_CELLS, :N_TOK_GENES]
    counts = np.asarray(sub.X.toarray() if hasattr(sub.X, "toarray") else sub.X, dtype=np.float32)
    genes = [str(g) for g in sub.var_names]
    vocab = ref["data.gene_vocab"].GeneVocab.from_genes(genes)
    gene_ids = vocab.encode(genes)
    prep = ref["data.preprocessing"].PreprocessingPipeline(normalize="library_size", target_sum=1e4, log1p=True)

    # Mimic the reference CellDataset: keep non-zero vocab genes (var order), then preprocess that vector.
    expr_nz: list[np.ndarray] = []
    ids_nz: list[np.ndarray] = []
    dense = np.zeros_like(counts)
    for row in counts:
        keep = row > 0
        expr_nz.append(prep(row[keep]))
        ids_nz.append(gene_ids[keep])
    for i, (e, g) in enumerate(zip(expr_nz, ids_nz, strict=True)):
        dense[i, g - 4] = e

    uniform = toks.BinnedExpressionTokenizer(
        vocab, max_len=TOK_MAX_LEN, n_bins=TOK_BINS, binning_method="uniform", value_max=VALUE_MAX, prepend_cls=True
    )
    quantile = toks.BinnedExpressionTokenizer(
        vocab, max_len=TOK_MAX_LEN, n_bins=TOK_BINS, binning_method="quantile", value_max=VALUE_MAX, prepend_cls=True
    )
    quantile.fit(dense.reshape(-1))
    rank = toks.RankValueTokenizer(vocab, max_len=TOK_MAX_LEN, prepend_cls=True)

    tensors: dict[str, torch.Tensor] = {
        "cells.X": torch.from_numpy(dense),
        "cells.counts": torch.from_numpy(counts),
        "uniform.bin_edges": torch.from_numpy(np.asarray(uniform.bin_edges, dtype=np.float64)),
        "quantile.bin_edges": torch.from_numpy(np.asarray(quantile.bin_edges, dtype=np.float64)),
    }
    tensors |= batch_tensors("binned_uniform", uniform.tokenize_batch(expr_nz, ids_nz))
    tensors |= batch_tensors("binned_quantile", quantile.tokenize_batch(expr_nz, ids_nz))
    tensors |= batch_tensors("rank_value", rank.tokenize_batch(expr_nz, ids_nz))
    # Full rows (zeros included) through the tokenizer's own default include_zero_genes=True path.
    full_rows = [dense[i] for i in range(N_CELLS)]
    full_ids = [gene_ids for _ in range(N_CELLS)]
    tensors |= batch_tensors("binned_uniform_with_zeros", uniform.tokenize_batch(full_rows, full_ids))

    # Edge cases of the digitizer: zero, tiny, exactly on edges, just above, beyond value_max, negative.
    edges_u = np.asarray(uniform.bin_edges)
    probe = np.array(
        [0.0, 1e-6, edges_u[1], edges_u[1] + 1e-4, edges_u[2], 5.0, edges_u[-2], 9.999, 10.0, 10.5, 100.0, -1.0],
        dtype=np.float32,
    )
    probe_t = torch.from_numpy(probe)
    tensors["digitize.values"] = probe_t
    tensors["digitize.uniform_bins"] = utils.digitize_expression(probe_t.clone(), uniform.bin_edges)
    tensors["digitize.quantile_bins"] = utils.digitize_expression(probe_t.clone(), quantile.bin_edges)

    meta = {"reference": REFERENCE_REPO, "torch": torch.__version__}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "tokenizers.safetensors"), metadata=meta)

    n_nz = [len(e) for e in expr_nz]
    sidecar = {
        "source": "examples/pbmc68k_test.h5ad: first 8 cells (obs order) x first 200 genes (var order)",
        "genes": genes,
        "gene_ids": "GeneVocab.from_genes(genes): gene k (0-based) -> id k+4; 0 pad, 1 unk, 2 mask, 3 cls",
        "nonzero_genes_per_cell": n_nz,
        "parameters": {
            "n_bins": TOK_BINS,
            "value_max": VALUE_MAX,
            "max_len": TOK_MAX_LEN,
            "prepend_cls": True,
            "preprocessing": {"normalize": "library_size", "target_sum": 1e4, "log1p": True},
            "quantile_fit_input": "cells.X flattened (8*200 values, zeros included; compute_bin_edges drops them)",
            "n_quantile_edges": len(quantile.bin_edges),
        },
        "calls": {
            "vocab": "GeneVocab.from_genes(genes)",
            "preprocess": "PreprocessingPipeline(normalize='library_size', target_sum=1e4, log1p=True)"
            "(counts[row > 0])",
            "binned_uniform": "BinnedExpressionTokenizer(vocab, max_len=64, n_bins=51, binning_method='uniform', "
            "value_max=10.0, prepend_cls=True).tokenize_batch(expr_nonzero_list, gene_ids_nonzero_list)",
            "binned_quantile": "BinnedExpressionTokenizer(vocab, max_len=64, n_bins=51, binning_method='quantile', "
            "value_max=10.0, prepend_cls=True).fit(cells.X.reshape(-1)).tokenize_batch(expr_nonzero_list, "
            "gene_ids_nonzero_list)",
            "rank_value": "RankValueTokenizer(vocab, max_len=64, prepend_cls=True).tokenize_batch(expr_nonzero_list, "
            "gene_ids_nonzero_list)",
            "binned_uniform_with_zeros": "same uniform tokenizer (include_zero_genes default True)"
            ".tokenize_batch([cells.X[i] for i in range(8)], [arange(4, 204)] * 8)",
            "digitize": "digitize_expression(digitize.values, uniform.bin_edges / quantile.bin_edges)",
        },
        "tensors": {
            k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in tensors.items()
        },
        "notes": [
            "examples/pbmc68k_test.h5ad holds raw UMI counts in .X (no .raw, no layers). The log-normalised values "
            "are made here as the reference data path does: the row is restricted to vocab genes and to non-zero "
            "entries (var order kept), then scaled to a total of 1e4 over those genes only (so over the 200-gene "
            "slice, not the 765-gene cell) and passed through log1p, in float32. cells.X is that result scattered "
            "back into a dense 8x200 matrix (0 where the count is 0); cells.counts is the raw slice.",
            "Special ids: pad 0, unk 1, mask 2, cls 3; genes start at 4 in first-occurrence order.",
            "CLS: when prepend_cls, position 0 gets input_id 3, value 0.0, bin_id 0 (binned) and gene_indices 3.",
            "binned_expression keeps the order it is given (here var order). With include_zero_genes=True (its "
            "default) zeros stay in the sequence with value 0 and bin 0; with the CellDataset path they were "
            "already removed before the tokenizer. It truncates to the first max_len-1 genes, then prepends CLS.",
            "rank_value drops genes with value <= 0 (strictly keeps value > 0), sorts by value descending with a "
            "stable sort, so ties keep their input (var) order; truncates to max_len-1, then prepends CLS. "
            "values are the sorted values. It has no bin_ids.",
            "Uniform bin edges: numpy linspace(0, value_max, n_bins+1) in float64 (52 edges for 51 bins).",
            "Quantile bin edges: numpy quantile (default linear interpolation) of the strictly positive fit values "
            "at linspace(0,1,n_bins+1), then np.unique (sorted, duplicates removed), float64. With integer counts "
            "there are many ties, so fewer than n_bins+1 edges can come out; the effective number of bins is then "
            "len(edges)-1 and bins are clamped to that, not to n_bins. If no positive value exists it falls back "
            "to the uniform edges.",
            "Digitising: the inner edges edges[1:-1] are cast to the values' dtype (float32) and "
            "torch.bucketize(v, inner, right=False) is used, i.e. bin = number of inner edges strictly below v. "
            "A value exactly on an inner edge goes to the lower bin. Values above the last inner edge (including "
            "> value_max) go to the top bin len(edges)-2. Finally every value == 0 is forced to bin 0. Note that "
            "small positive values <= edges[1] also land in bin 0 (bin 0 is not reserved for zeros), and "
            "negative values map to bin 0.",
            "Collation (tokenize_batch -> _collate): pads on the right to the longest sequence in the batch (not "
            "to max_len): input_ids 0, attention_mask 0, gene_indices 0, values 0.0, bin_ids 0. All integer "
            "outputs are int64, values float32. attention_mask is 1 for real tokens including CLS.",
            "The collated batches also contain gene_indices; for these tokenizers it equals input_ids (CLS "
            "included as 3, padding 0), checked by the script, so it is not stored.",
        ],
    }
    (out / "tokenizers.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return {"tensors": sidecar["tensors"], "n_quantile_edges": len(quantile.bin_edges), "nonzero": n_nz}


# ----------------------------------------------------------------------------------------------
# Provenance
# ----------------------------------------------------------------------------------------------

FACTS = """\
- Embedding: token embedding (padding_idx 0) + learned absolute position embedding (positions 0..S-1)
  + optional `expression_proj` (Linear 1->H) of the continuous value; the sum goes through LayerNorm
  then Dropout (LayerNorm first). `values=None` simply skips the value term. There is no bin embedding.
- LayerNorm eps is 1e-12 everywhere (embedding, both encoder norms, both heads); it is a constructor
  argument only, not in the config, so loading always gives 1e-12.
- Encoder: stock `nn.TransformerEncoderLayer(batch_first=True, norm_first=True)` (pre-norm), stacked
  with `nn.TransformerEncoder`; no final LayerNorm. FFN = linear1 -> activation -> dropout -> linear2,
  activation `"gelu"` (exact erf form) or `"relu"`. ffn_dim None means 4*hidden_dim.
- forward: float causal mask (0 on/below diagonal, -inf above) passed as `mask`, plus a boolean key
  padding mask `attention_mask == 0` (PyTorch converts the bool mask to float and warns about the
  mixed mask types). Padded keys are masked; padded query rows are still computed
  and appear in the logits (they attend to the real tokens before them).
- encode: same embedding and encoder but without the causal mask (bidirectional, padding mask only),
  then pooling; no heads.
- Heads (gene: H->vocab_size, bin: H->n_bins): dense Linear(H,H) -> GELU (exact, `nn.GELU()` default)
  -> LayerNorm(eps 1e-12) -> decoder Linear. Not tied to the embedding. forward returns only the gene
  logits; the bin head runs only inside the loss.
- Pooling: "cls" takes position 0 and ignores the mask (so causal forward embeddings are the same for
  every row whose position 0 is CLS with value 0); "mean" is sum(h*mask)/max(sum(mask),1) over real
  tokens, padded positions excluded.
- Loss (only when labels are given): gene_loss_weight * CE(gene_logits, labels, ignore_index=-100),
  plus, only if a `bin_ids` keyword is passed, expression_loss_weight * CE(bin_logits, bin_ids with
  positions where labels == -100 set to -100). No shift: position i is scored against labels[i].
  CE is the mean over non-ignored positions of each term separately.
- Init (before our perturbation): Linear xavier-uniform weight and zero bias, Embedding N(0, 0.02)
  with the padding row zeroed, LayerNorm 1/0; the attention in_proj keeps PyTorch's own init.
"""


def write_provenance(
    out: Path, commit: str, cmd: str, model_info: dict[str, Any], tok_info: dict[str, Any], src: Path
) -> None:
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Golden reference data from scModelForge",
        "",
        f"Reference: `EhsanRS/scModelForge` ({REFERENCE_REPO}), branch `main`, commit `{commit}`.",
        "It is not on PyPI. It was imported from an exported source tree on `sys.path`, not installed.",
        f"Made by `scripts/make_scmodelforge_golden.py` on {date} with torch {torch.__version__}, "
        f"numpy {np.__version__}, Python {sys.version.split()[0]}.",
        "",
        "Command:",
        "",
        "```bash",
        cmd,
        "```",
        "",
        "**This folder contains no reference code and no reference text.** It holds tensors and JSON produced",
        "by running the reference, plus notes written by us. The reference's generated model card (README.md)",
        "was deleted after `save_pretrained`.",
        "",
        "## Files",
        "",
    ]
    for name, info in model_info.items():
        cfg = info["config"]["model_config"]
        lines += [
            f"- `{name}/config.json`, `{name}/model.safetensors`, `{name}/gene_vocab.json`: written by the "
            f"reference `save_pretrained` (pooling={cfg['pooling']}, activation={cfg['activation']}, "
            f"layers={cfg['num_layers']}, ffn_dim={cfg['ffn_dim']}, {info['n_params']} parameters). Weights are "
            f"the reference init (seed {MODELS[name]['init_seed']}) plus {PERTURB_STD}*randn on every parameter "
            f"(seed {MODELS[name]['perturb_seed']}), so no LayerNorm/bias/padding row sits at its init value.",
            f"- `{name}/golden.safetensors`: inputs `input_ids`, `attention_mask` (int64), `values` (float32), "
            "`labels`, `bin_ids` (int64) of a B=3, S=12 batch (lengths 12, 9, 5; CLS at 0; two MASK ids per row) "
            "and the eval-mode, no-grad, float32 outputs: `forward.logits`, `forward.embeddings` (no labels), "
            "`loss.full` (labels + `bin_ids=`), `loss.gene_only` (labels only), `encode`, "
            "`forward_novalues.logits`, `forward_novalues.embeddings`, `encode_novalues` (values=None). "
            f"Max abs difference between PyTorch's fused eval fast path (used for the stored numbers) and the "
            f"plain path: {info['fastpath_max_abs_diff']:.2e}.",
        ]
    lines += [
        "- `tokenizers.safetensors` + `tokenizers.json`: the reference tokenizers on the first 8 cells x first "
        "200 genes of `examples/pbmc68k_test.h5ad` (see `tokenizers.json` for genes, calls, parameters, notes); "
        f"quantile fitting gave {tok_info['n_quantile_edges']} edges.",
        "",
        "The reference's own loader (`load_pretrained`) was run on each folder and reproduced the stored "
        "outputs exactly.",
        "",
        "## Observed reference semantics (checked against the source, stated in our words)",
        "",
        FACTS,
    ]
    (out / "PROVENANCE.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-src", type=Path, required=True, help="scModelForge `src` folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--commit", default=None, help="reference commit hash (if the src is not a git checkout)")
    args = parser.parse_args()

    warnings.filterwarnings("ignore", message=".*enable_nested_tensor.*")
    warnings.filterwarnings("ignore", message=".*mismatched src_key_padding_mask and mask.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_default_dtype(torch.float32)
    ref = import_reference(args.reference_src)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    model_info = {name: build_model_folder(ref, out, name, spec) for name, spec in MODELS.items()}
    tok_info = build_tokenizers(ref, out)
    commit = args.commit or git_commit(args.reference_src)
    cmd = " ".join(["python", "scripts/make_scmodelforge_golden.py", *sys.argv[1:]])
    write_provenance(out, commit, cmd, model_info, tok_info, args.reference_src)

    for f in out.rglob("*"):
        if f.is_file():
            f.chmod(0o644)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(
        json.dumps(
            {
                k: {kk: v[kk] for kk in ("n_params", "fastpath_max_abs_diff", "loss.full", "loss.gene_only")}
                for k, v in model_info.items()
            },
            indent=2,
        )
    )
    print(f"wrote {out} ({total / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
