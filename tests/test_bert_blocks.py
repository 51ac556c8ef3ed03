"""BERT-order building blocks against Hugging Face's BERT (transformers, a test extra) on the same weights.

``core.bert_embedding`` -> ``core.transformer_encoder`` (post-norm, GELU) -> ``core.mlm_head`` assembled as
``core.masked_lm`` must compute ``BertForMaskedLM``'s logits and ``output_hidden_states`` in float32, with padding
and token types; the weights are Hugging Face's random initialisation, renamed key by key.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from biozoo.assembly import assemble  # noqa: E402
from biozoo.manifest.io import parse_manifest  # noqa: E402
from tests.support.models import BERT_SIZES, masked_lm_manifest  # noqa: E402

Z = BERT_SIZES
V, D, H, F, LAYERS, P = Z["vocab"], Z["d"], Z["heads"], Z["ff"], Z["layers"], Z["positions"]


def _hf_model() -> torch.nn.Module:
    config = transformers.BertConfig(
        vocab_size=V, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=H, intermediate_size=F,
        max_position_embeddings=P, type_vocab_size=2, hidden_act="gelu", pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(config).eval()
    with torch.no_grad():  # random LayerNorm and biases too, so a swapped or dropped one shows
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.normal_(mean=1.0 if name.endswith("weight") else 0.0, std=0.2)
    return model


def _ours() -> torch.nn.Module:
    return assemble(parse_manifest(masked_lm_manifest(dropout=0.1)), device="cpu").eval()


def _renamed(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in hf.items():
        k = key.removeprefix("bert.")
        if k.startswith("embeddings."):
            k = "embedding." + k.removeprefix("embeddings.").replace("LayerNorm", "norm")
        k = k.replace("encoder.layer.", "encoder.layers.")
        for a, b in (("attention.self.query", "self_attn.q_proj"), ("attention.self.key", "self_attn.k_proj"),
                     ("attention.self.value", "self_attn.v_proj"), ("attention.output.dense", "self_attn.out_proj"),
                     ("attention.output.LayerNorm", "norm1"), ("intermediate.dense", "linear1"),
                     ("output.dense", "linear2"), ("output.LayerNorm", "norm2")):  # fmt: skip
            k = k.replace(a, b)
        k = k.replace("cls.predictions.transform.dense", "head.dense")
        k = k.replace("cls.predictions.transform.LayerNorm", "head.norm")
        k = k.replace("cls.predictions.decoder", "head.decoder")
        if k in ("cls.predictions.bias", "embedding.position_ids", "embedding.token_type_ids"):
            continue  # the decoder's own bias (tied to this one in HF); buffers
        out[k] = value
    return out


def test_masked_lm_matches_bert_for_masked_lm_with_padding_and_token_types() -> None:
    hf, ours = _hf_model(), _ours()
    state = _renamed(hf.state_dict())
    state["head.decoder.weight"] = hf.cls.predictions.decoder.weight.detach().clone()  # untied here
    ours.load_state_dict(state, strict=True)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, V, (3, 11), generator=g)
    lengths = torch.tensor([11, 7, 3])
    keep = torch.arange(11)[None] < lengths[:, None]
    ids = ids.masked_fill(~keep, 0)
    types = (torch.arange(11)[None] >= 5).long().expand(3, -1).contiguous()
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=keep.long(), token_type_ids=types, output_hidden_states=True)
        got = ours(ids, padding_mask=~keep, token_type_ids=types)
        states = ours.hidden_states(ids, padding_mask=~keep, token_type_ids=types)
    valid = keep[..., None]
    assert float(((got["logits"] - want.logits) * valid).abs().max()) < 1e-5
    assert len(states) == len(want.hidden_states) == LAYERS + 1
    for ours_h, hf_h in zip(states, want.hidden_states, strict=True):
        assert float(((ours_h - hf_h) * valid).abs().max()) < 1e-5
    assert torch.equal(states[-1], got["hidden"])


def test_without_token_types_the_embedding_adds_type_zero() -> None:
    hf, ours = _hf_model(), _ours()
    state = _renamed(hf.state_dict())
    state["head.decoder.weight"] = hf.cls.predictions.decoder.weight.detach().clone()
    ours.load_state_dict(state, strict=True)
    ids = torch.randint(1, V, (2, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = hf(input_ids=ids).logits
        got = ours(ids)["logits"]
    assert float((got - want).abs().max()) < 1e-5


def test_more_tokens_than_positions_is_refused() -> None:
    with torch.no_grad(), pytest.raises(ValueError, match="max_positions=40"):
        _ours()(torch.ones(1, P + 1, dtype=torch.long))
