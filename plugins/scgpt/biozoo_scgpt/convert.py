"""``zoo convert scgpt DIR -o OUT``: an official scGPT checkpoint folder -> a biozoo model folder.

The official folder holds ``args.json``, ``vocab.json`` and ``best_model.pt`` (a
pickled state dict). This is the only place biozoo reads a pickle, and it does
so with ``torch.load(weights_only=True)``, which refuses anything but tensors
and plain containers. Unlike the reference's ``load_pretrained`` (which keeps
only keys that happen to match and drops the rest silently), every key must
map onto the model: a missing or unexpected key is an error that lists them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from biozoo.errors import WeightsError
from biozoo.manifest.io import parse_manifest
from biozoo.utils.hashing import sha256_file
from biozoo_scgpt.reference_config import manifest_data, model_components

SPECIALS = ("<pad>", "<cls>", "<eoc>")
_QKV = re.compile(r"^(?P<prefix>.*\.self_attn)\.(?:_impl\.)?(?:Wqkv|in_proj)[._](?P<kind>weight|bias)$")
_OUT = re.compile(r"^(?P<prefix>.*\.self_attn)\._impl\.out_proj\.(?P<rest>.+)$")


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference key names (PyTorch ``in_proj_*``, flash-attn 1 ``Wqkv``, HEAD's ``_impl``) -> biozoo names.

    The fused ``[q; k; v]`` projection is split into ``q_proj``, ``k_proj``, ``v_proj``;
    every other key keeps its name.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _QKV.match(key)
        if match:
            for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0), strict=True):
                out[f"{match['prefix']}.{name}_proj.{match['kind']}"] = part.contiguous()
            continue
        match = _OUT.match(key)
        out[f"{match['prefix']}.out_proj.{match['rest']}" if match else key] = value.contiguous()
    return out


def load_vocab(path: Path) -> dict[str, int]:
    """``vocab.json`` plus any of ``<pad>``, ``<cls>``, ``<eoc>`` it lacks (appended, as the reference does)."""
    try:
        vocab = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {path}: {exc}", "the official folder needs vocab.json") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise WeightsError(f"{path} is not a token -> id mapping")
    for token in SPECIALS:
        if token not in vocab:
            vocab[token] = len(vocab)
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise WeightsError(f"{path}: token ids are not 0..{len(vocab) - 1} without gaps")
    return vocab


def infer_options(state: dict[str, torch.Tensor], args: dict[str, Any]) -> dict[str, Any]:
    """``TransformerModel`` options read off the checkpoint's keys (what the official loaders hard-code)."""
    keys = set(state)
    opts: dict[str, Any] = {
        "do_mvc": any(k.startswith("mvc_decoder.") for k in keys),
        "do_dab": any(k.startswith("grad_reverse_discriminator.") for k in keys),
        "use_batch_labels": "batch_encoder.embedding.weight" in keys,
        "explicit_zero_prob": any(k.startswith("decoder.zero_logit.") for k in keys),
    }
    if "value_encoder.embedding.weight" in keys:
        opts["input_emb_style"] = "category"
        opts["n_input_bins"] = state["value_encoder.embedding.weight"].shape[0]
    elif "value_encoder.linear1.weight" in keys:
        opts["input_emb_style"] = "continuous"
    else:
        opts["input_emb_style"] = "scaling"
    if any(k.startswith("dsbn.") for k in keys):
        opts["domain_spec_batchnorm"] = "dsbn"
        opts["num_batch_labels"] = 1 + max(int(k.split(".")[2]) for k in keys if k.startswith("dsbn.bns."))
    elif any(k.startswith("bn.") for k in keys):
        opts["domain_spec_batchnorm"] = "batchnorm"
    if opts["use_batch_labels"]:
        opts["num_batch_labels"] = state["batch_encoder.embedding.weight"].shape[0]
    if opts["do_dab"]:
        opts["num_batch_labels"] = state["grad_reverse_discriminator.out_layer.weight"].shape[0]
    if "mvc_decoder.fc1.weight" in keys:
        d = state["encoder.embedding.weight"].shape[1]
        opts["mvc_decoder_style"] = (
            "concat query"
            if state["mvc_decoder.gene2query.weight"].shape[0] == 64 and (state["mvc_decoder.fc1.weight"].shape[1] != d)
            else "sum query"
        )
    elif "mvc_decoder.W.weight" in keys:
        opts["mvc_decoder_style"] = "inner product"
    if "cls_decoder.out_layer.weight" in keys:
        opts["n_cls"] = state["cls_decoder.out_layer.weight"].shape[0]
    opts["pre_norm"] = bool(args.get("pre_norm", False))
    return opts


def _read_args(folder: Path) -> dict[str, Any]:
    path = folder / "args.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsError(
            f"{folder} has no args.json", "an official scGPT folder has args.json, vocab.json, best_model.pt"
        ) from None
    except ValueError as exc:
        raise WeightsError(f"{path} is not valid JSON: {exc}") from None


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"{path} is missing", "an official scGPT folder has args.json, vocab.json, best_model.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never arbitrary unpickling
    except Exception as exc:
        raise WeightsError(
            f"{path.name} cannot be read safely: {type(exc).__name__}: {exc}",
            "only plain tensor state dicts are accepted (torch.load weights_only=True)",
        ) from None
    if isinstance(state, dict) and "model_state_dict" in state:
        state = state["model_state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path.name} is not a state dict of tensors")
    return state


def convert_checkpoint(source: Path | str, output: Path | str, *, model_id: str | None = None) -> Path:
    """Convert an official scGPT folder; the output folder appears whole or not at all."""
    from safetensors.torch import save_file

    from biozoo.assembly import assemble
    from biozoo.utils.atomic import atomic_write_text
    from biozoo.weights import diff_keys

    source, output = Path(source), Path(output)
    if output.exists():
        raise WeightsError(f"{output} already exists", "choose a new output folder (nothing is overwritten)")
    from biozoo.utils.atomic import atomic_directory

    args = _read_args(source)
    vocab = load_vocab(source / "vocab.json")
    state = convert_state_dict(_read_checkpoint(source / "best_model.pt"))
    pad_token = args.get("pad_token", "<pad>")
    rows = state.get("encoder.embedding.weight")
    if rows is not None and rows.shape[0] != len(vocab):
        raise WeightsError(
            f"the checkpoint embeds {rows.shape[0]} tokens but vocab.json (with specials) has {len(vocab)}",
            "use the vocab.json that was saved with this checkpoint",
        )
    options = infer_options(state, args)
    arch, components = model_components(
        ntoken=len(vocab),
        d_model=int(args.get("embsize", args.get("d_model", 512))),
        nhead=int(args.get("nheads", args.get("nhead", 8))),
        d_hid=int(args.get("d_hid", 512)),
        nlayers=int(args.get("nlayers", 12)),
        nlayers_cls=int(args.get("n_layers_cls", 3)),
        pad_token_id=vocab[pad_token],
        dropout=float(args.get("dropout", 0.2)),
        pad_value=args.get("pad_value", -2),
        **{k: v for k, v in options.items() if k != "n_cls"},
        n_cls=options.get("n_cls", 1),
    )
    if "n_cls" not in options:  # pretrained checkpoints carry no classifier: leave the head out
        components.pop("cls_decoder")
    name = model_id or f"scgpt/{re.sub(r'[^a-z0-9_.-]+', '-', source.name.lower()).strip('-') or 'converted'}"
    data = manifest_data(name, arch, components)
    model = assemble(parse_manifest({**data, "conversion": {"converter": "scgpt"}}))
    diff = diff_keys(
        {k: tuple(v.shape) for k, v in model.state_dict().items()}, {k: tuple(v.shape) for k, v in state.items()}
    )
    if not diff.ok:
        raise WeightsError(
            "the checkpoint does not match the model its args.json describes:\n" + diff.render(),
            "check that args.json, vocab.json and best_model.pt belong together",
        )
    with atomic_directory(output) as staging:
        save_file(state, staging / "model.safetensors", metadata={"format": "pt", "converted_from": "scGPT"})
        atomic_write_text(staging / "vocab.json", json.dumps(vocab, indent=2))
        manifest = {
            **data,
            "description": f"scGPT checkpoint converted from {source.name} by biozoo",
            "preprocessing": preprocessing_section(args),
            "weights": {
                "source": ".",
                "files": [{"path": "model.safetensors", "sha256": sha256_file(staging / "model.safetensors")}],
            },
            "license": "MIT",
            "tags": ["scgpt", "single-cell"],
            "metadata": {
                "converted_from": str(source.name),
                "args": {k: v for k, v in args.items() if isinstance(v, str | int | float | bool)},
            },
        }
        from biozoo.manifest.io import write_manifest

        write_manifest(parse_manifest(manifest), staging)
    return output


def preprocessing_section(args: dict[str, Any]) -> dict[str, Any]:
    """The input contract of an scGPT checkpoint, as its training arguments describe it."""
    return {
        "name": "scgpt.preprocessor",
        "files": {"vocabulary": "vocab.json"},
        "config": {
            "n_bins": int(args.get("n_bins", 51)),
            "max_seq_len": int(args.get("max_seq_len", 1200)),
            "pad_token": args.get("pad_token", "<pad>"),
            "cls_token": "<cls>",
            "pad_value": args.get("pad_value", -2),
            "cls_value": args.get("pad_value", -2),
            "input_style": args.get("input_style", "binned"),
            "gene_column": "index",
        },
    }
