"""Write ``manifests/tiny``: a tiny Geneformer-style model whose test vectors come from Hugging Face's BERT.

Run ``python -m biozoo_geneformer_mini.make_model`` (needs the ``test`` extra: transformers, and anndata) to write
the folder again. What it does, in the order an author porting a real checkpoint would:

1. **vocabulary and medians** from ``examples/pbmc68k_test.h5ad``: the 600 genes expressed in the most cells
   (``<pad>`` = 0, ``<mask>`` = 1, then the genes in ``var`` order) and each gene's non-zero median
   (:func:`biozoo.singlecell.rank.nonzero_medians`), as Geneformer's token dictionary and gene median file;
2. **the reference**: a randomly initialised ``transformers.BertForMaskedLM`` with Geneformer's settings (ReLU,
   post-norm, eps 1e-12, tied decoder), LayerNorms and biases randomised too, so a swapped one shows;
3. **weights**: its state dict renamed to this plugin's keys (:mod:`biozoo_geneformer_mini.weights`), loaded into
   the model biozoo assembles from :data:`MANIFEST`, saved with the tied decoder stored once;
4. **test vectors**: three real cells, rank-value tokenized, and the *reference's* outputs on them;
5. **manifest** with the sha256 and sizes filled in (:func:`biozoo.manifest.rehash.refresh`, i.e.
   ``zoo manifest hash``), which also assembles it on the meta device; the folder is replaced atomically.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

MODEL_ID = "geneformer_mini/tiny"  # 'namespace/name'; `zoo list` shows it, `zoo load geneformer_mini/tiny` loads it
FOLDER = Path(__file__).resolve().parent / "manifests" / "tiny"
DATA = Path(__file__).resolve().parents[2] / "pbmc68k_test.h5ad"  # examples/ in the biozoo repository
N_GENES, D_MODEL, LAYERS, HEADS, FFN, MAX_LEN = 600, 32, 2, 4, 64, 256
VOCAB_SIZE = N_GENES + 2
VECTOR_CELLS, VECTOR_GENES = (0, 1, 2), (12, 8, 3)  # test-vector cells and how many of their top genes each keeps
NO_HASH = "0" * 64  # filled in by refresh() once the files exist
BERT = {"d_model": D_MODEL, "layer_norm_eps": 1e-12}

MANIFEST: dict[str, Any] = {
    "format_version": 1,
    "id": MODEL_ID,
    "description": "Tiny random-weight Geneformer-style rank-value BERT over 600 PBMC genes, for trying the "
    "geneformer_mini example plugin; not for biology. Test vectors from transformers' BertForMaskedLM.",
    "architecture": {
        "name": "geneformer_mini.rank_value_bert",
        "config": {"token_meaning": "rank-value-gene-ids", "embedding_layer": -1},
    },
    "components": {
        "embedding": {
            "name": "core.bert_embedding",
            "config": {
                **BERT, "vocab_size": VOCAB_SIZE, "max_positions": MAX_LEN, "type_vocab_size": 2, "padding_idx": 0,
                "dropout": 0.02, "token_meaning": "rank-value-gene-ids",
            },
        },
        "encoder": {
            "name": "core.transformer_encoder",
            "config": {
                **BERT, "num_layers": LAYERS, "num_heads": HEADS, "dim_feedforward": FFN, "activation": "relu",
                "dropout": 0.02,
            },
        },
        "head": {"name": "core.mlm_head", "config": {**BERT, "vocab_size": VOCAB_SIZE, "activation": "relu"}},
    },
    "tie": {"head.decoder.weight": "embedding.word_embeddings.weight"},  # BERT's tied decoder, stored once
    "preprocessing": {
        "name": "geneformer_mini.rank_value",
        "files": {"vocabulary": "vocab.json", "gene_medians": "gene_medians.json"},
        "config": {"max_len": MAX_LEN, "target_sum": 10000},
    },
    "weights": {"source": ".", "files": [{"path": "model.safetensors", "sha256": NO_HASH}]},
    "test_vectors": {
        "file": "test_vectors.safetensors",
        "sha256": NO_HASH,
        "tolerance": {"atol": 1e-5, "rtol": 1e-5},
        "provenance": "",  # filled in by write_model: the reference and its version
    },
    "license": "Apache-2.0",
    "authors": ["biozoo developers"],
    "tags": ["example", "single-cell", "rank-value"],
    "references": ["https://doi.org/10.1038/s41586-023-06139-9"],  # Theodoris et al. 2023 (Geneformer)
}  # fmt: skip


def choose_genes(adata: Any, n: int = N_GENES) -> list[str]:
    """The ``n`` genes expressed in the most cells (ties: ``var`` order), returned in ``var`` order."""
    import numpy as np

    expressing = np.asarray((adata.X > 0).sum(axis=0)).ravel()
    chosen = np.sort(np.argsort(-expressing, kind="stable")[:n])
    return [str(g) for g in adata.var_names[chosen]]


def gene_medians(adata: Any, genes: list[str]) -> dict[str, float]:
    """Each gene's median non-zero ``count / cell total * 10,000`` (totals over all genes), as Geneformer ships."""
    import numpy as np

    from biozoo.singlecell.rank import nonzero_medians

    totals = np.asarray(adata.X.sum(axis=1, dtype=np.float64)).ravel()
    medians = nonzero_medians(adata[:, genes].X, totals=totals)
    return {g: float(m) for g, m in zip(genes, medians, strict=True)}


def reference_model(seed: int = 0) -> Any:
    """A random ``BertForMaskedLM`` with Geneformer's settings at this size (the reference implementation)."""
    import torch
    import transformers

    config = transformers.BertConfig(
        vocab_size=VOCAB_SIZE, hidden_size=D_MODEL, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, max_position_embeddings=MAX_LEN, type_vocab_size=2, hidden_act="relu",
        layer_norm_eps=1e-12, hidden_dropout_prob=0.02, attention_probs_dropout_prob=0.02, pad_token_id=0,
        tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = transformers.BertForMaskedLM(config).eval()
    with torch.no_grad():  # random LayerNorms and biases too, so a swapped or dropped one changes the outputs
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.normal_(mean=1.0 if name.endswith("weight") else 0.0, std=0.2)
    return model


def reference_outputs(hf: Any, input_ids: Any, padding_mask: Any) -> dict[str, Any]:
    """The reference's ``hidden``, ``logits`` (zero at padding) and ``cell_embedding`` (mean over genes)."""
    import torch

    keep = ~padding_mask
    with torch.no_grad():
        out = hf(input_ids=input_ids, attention_mask=keep.long(), output_hidden_states=True)
    mask = keep.unsqueeze(-1)
    hidden = out.hidden_states[-1] * mask
    return {
        "hidden": hidden,
        "logits": out.logits * mask,
        "cell_embedding": hidden.sum(dim=1) / mask.sum(dim=1),
    }


def example_inputs(adata: Any, vocab: Any, medians: dict[str, float]) -> dict[str, Any]:
    """``input_ids``/``padding_mask`` of :data:`VECTOR_CELLS`, each cell's top genes by rank-value encoding."""
    import numpy as np
    import torch

    from biozoo.singlecell.tokenize import pad_cells
    from biozoo_geneformer_mini.cells import SPECIALS, RankValueContract, prepare

    table = np.ones(len(vocab))
    table[len(SPECIALS) :] = [medians[vocab.token(i)] for i in range(len(SPECIALS), len(vocab))]
    contract = RankValueContract(vocabulary=vocab, medians=table, max_len=MAX_LEN)
    cells = prepare(adata[list(VECTOR_CELLS)].copy(), contract).cells
    batch = pad_cells(cells, pad_id=0, pad_value=0.0, max_len=max(VECTOR_GENES), truncation="head")
    padding = np.arange(batch.genes.shape[1])[None, :] >= np.asarray(VECTOR_GENES)[:, None]
    ids = np.where(padding, 0, batch.genes)
    return {"input_ids": torch.from_numpy(ids), "padding_mask": torch.from_numpy(padding)}


def write_model(folder: Path = FOLDER, data: Path = DATA, seed: int = 0) -> Path:
    """Write (or replace, atomically) ``folder``: weights, test vectors, vocabulary, gene medians, manifest."""
    import anndata
    import torch
    import transformers
    import yaml
    from safetensors.torch import save_file

    from biozoo.assembly import assemble
    from biozoo.manifest.io import MANIFEST_NAME, parse_manifest
    from biozoo.manifest.rehash import refresh
    from biozoo.singlecell.vocab import GeneVocabulary
    from biozoo.ties import savable_state
    from biozoo.utils.atomic import staged_output
    from biozoo_geneformer_mini.cells import SPECIALS
    from biozoo_geneformer_mini.weights import from_hf_state

    adata = anndata.read_h5ad(data)
    genes = choose_genes(adata)
    vocab = GeneVocabulary.from_tokens([*SPECIALS, *genes])
    medians = gene_medians(adata, genes)
    hf = reference_model(seed)
    inputs = example_inputs(adata, vocab, medians)
    expected = reference_outputs(hf, **inputs)

    manifest = {**MANIFEST, "test_vectors": {**MANIFEST["test_vectors"]}}
    manifest["test_vectors"]["provenance"] = (
        f"transformers {transformers.__version__} BertForMaskedLM (random init, seed {seed}) on cells "
        f"{list(VECTOR_CELLS)} of examples/pbmc68k_test.h5ad, torch {torch.__version__}; "
        "biozoo_geneformer_mini.make_model"
    )
    model = assemble(parse_manifest(manifest), device="cpu")  # the model biozoo builds from this manifest
    model.load_state_dict(from_hf_state(hf.state_dict()), strict=True)
    vectors = {f"input.{k}": v for k, v in inputs.items()} | {f"output.{k}": v for k, v in expected.items()}
    with staged_output(folder, overwrite=True, folder=True) as stage:
        stage.mkdir()
        save_file(savable_state(model, manifest["tie"]), stage / "model.safetensors")
        save_file({k: v.contiguous() for k, v in vectors.items()}, stage / "test_vectors.safetensors")
        vocab.to_json(stage / "vocab.json")
        (stage / "gene_medians.json").write_text(json.dumps(medians, indent=1) + "\n")
        (stage / MANIFEST_NAME).write_text(yaml.safe_dump(manifest, sort_keys=False, width=100))
        refresh(stage)  # sha256 and sizes of the files just written; validates and assembles the manifest
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=FOLDER, help=f"model folder to write (default {FOLDER})")
    parser.add_argument("--data", type=Path, default=DATA, help="raw-count .h5ad the vocabulary is chosen from")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"wrote {write_model(args.output, args.data, args.seed)}")


if __name__ == "__main__":
    main()
