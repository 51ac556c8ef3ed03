"""Attention: parity with torch.nn references, the processor contract, and selection."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from biozoo.attention import AttentionCall, AttentionMask, explain, set_processor, use_processor
from biozoo.attention.processors import EagerProcessor, SdpaProcessor
from biozoo.errors import AttentionError, UnknownNameError
from biozoo.nn.attention import KVCache, MultiHeadAttention
from biozoo.nn.transformer import TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer

PROCESSORS = ["eager", "sdpa"]


def _copy_mha(ours: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        if ref._qkv_same_embed_dim:
            q, k, v = ref.in_proj_weight.chunk(3)
        else:
            q, k, v = ref.q_proj_weight, ref.k_proj_weight, ref.v_proj_weight
        qb, kb, vb = ref.in_proj_bias.chunk(3)
        for lin, w, b in ((ours.q_proj, q, qb), (ours.k_proj, k, kb), (ours.v_proj, v, vb)):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        ours.out_proj.load_state_dict(ref.out_proj.state_dict())


def _copy_layer(ours: nn.Module, ref: nn.Module) -> None:
    sd = ref.state_dict()
    mapped = {}
    for key, value in sd.items():
        if key.endswith("in_proj_weight") or key.endswith("in_proj_bias"):
            prefix, kind = key.rsplit(".", 1)
            for name, chunk in zip("qkv", value.chunk(3), strict=True):
                mapped[f"{prefix}.{name}_proj.{'weight' if kind.endswith('weight') else 'bias'}"] = chunk
        else:
            mapped[key] = value
    ours.load_state_dict(mapped, strict=True)


def _padding(batch: int, length: int, lengths: list[int]) -> torch.Tensor:
    return torch.arange(length)[None, :] >= torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("processor", PROCESSORS)
def test_self_attention_matches_torch_multihead_attention(processor: str) -> None:
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    ours = MultiHeadAttention(32, 4).eval()
    _copy_mha(ours, ref)
    x = torch.randn(3, 7, 32)
    pad = _padding(3, 7, [7, 5, 2])
    float_mask = torch.randn(7, 7)
    bool_mask = torch.rand(7, 7) > 0.7
    bool_mask.fill_diagonal_(False)
    set_processor(ours, processor)
    with torch.no_grad():
        for kwargs in (
            {},
            {"key_padding_mask": pad},
            {"attn_mask": float_mask},
            {"attn_mask": bool_mask, "key_padding_mask": pad},
        ):
            want = ref(x, x, x, need_weights=False, **kwargs)[0]
            got = ours(x, **kwargs)[0]
            valid = ~pad if "key_padding_mask" in kwargs else torch.ones(3, 7, dtype=torch.bool)
            torch.testing.assert_close(got[valid], want[valid], atol=1e-6, rtol=1e-5)


def test_attention_weights_match_torch() -> None:
    torch.manual_seed(1)
    ref = nn.MultiheadAttention(16, 2, batch_first=True).eval()
    ours = MultiHeadAttention(16, 2).eval()
    _copy_mha(ours, ref)
    x = torch.randn(2, 5, 16)
    pad = _padding(2, 5, [5, 3])
    with torch.no_grad():
        _, want = ref(x, x, x, key_padding_mask=pad, need_weights=True, average_attn_weights=False)
        _, got = ours(x, key_padding_mask=pad, need_weights=True)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("processor", PROCESSORS)
def test_cross_attention_with_different_kv_dims_matches_torch(processor: str) -> None:
    torch.manual_seed(2)
    ref = nn.MultiheadAttention(24, 3, kdim=10, vdim=12, batch_first=True).eval()
    ours = MultiHeadAttention(24, 3, kdim=10, vdim=12).eval()
    _copy_mha(ours, ref)
    q, k, v = torch.randn(2, 4, 24), torch.randn(2, 6, 10), torch.randn(2, 6, 12)
    # our module takes one context tensor: feed the same as key and value
    ref_same = nn.MultiheadAttention(24, 3, kdim=10, vdim=10, batch_first=True).eval()
    ours_same = MultiHeadAttention(24, 3, kdim=10, vdim=10).eval()
    _copy_mha(ours_same, ref_same)
    pad = _padding(2, 6, [6, 4])
    set_processor(ours_same, processor)
    with torch.no_grad():
        want = ref_same(q, k, k, key_padding_mask=pad, need_weights=False)[0]
        got = ours_same(q, k, key_padding_mask=pad)[0]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert v.shape[-1] == 12 and ours.v_proj.in_features == 12


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("processor", PROCESSORS)
def test_encoder_layer_matches_torch(norm_first: bool, activation: str, processor: str) -> None:
    torch.manual_seed(3)
    ref = nn.TransformerEncoderLayer(
        32, 4, 64, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).eval()
    ours = TransformerEncoderLayer(32, 4, 64, dropout=0.0, activation=activation, norm_first=norm_first).eval()
    _copy_layer(ours, ref)
    set_processor(ours, processor)
    x = torch.randn(3, 9, 32)
    pad = _padding(3, 9, [9, 6, 1])
    causal = nn.Transformer.generate_square_subsequent_mask(9)
    with torch.no_grad():
        want = ref(x, src_key_padding_mask=pad)
        got = ours(x, src_key_padding_mask=pad)
        torch.testing.assert_close(got[~pad], want[~pad], atol=1e-5, rtol=1e-5)
        want_c = ref(x, src_mask=causal, is_causal=True)
        got_c = ours(x, is_causal=True)
        torch.testing.assert_close(got_c, want_c, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("processor", PROCESSORS)
def test_packed_encoder_stack_loads_torch_state_dict_as_is(processor: str) -> None:
    """packed_qkv keeps PyTorch's key names: a torch encoder's state dict loads unchanged."""
    torch.manual_seed(5)
    layer = nn.TransformerEncoderLayer(32, 4, 48, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
    ref = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    ours = TransformerEncoder(32, 2, 4, 48, dropout=0.0, activation="gelu", norm_first=True, packed_qkv=True).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    set_processor(ours, processor)
    x = torch.randn(3, 9, 32)
    pad = _padding(3, 9, [9, 6, 2])
    causal = nn.Transformer.generate_square_subsequent_mask(9)
    with torch.no_grad():
        want = ref(x, src_key_padding_mask=pad)
        got = ours(x, pad)
        torch.testing.assert_close(got[~pad], want[~pad], atol=1e-5, rtol=1e-5)
        want_c = ref(x, mask=causal, src_key_padding_mask=pad)
        got_c = ours(x, pad, causal=True)
        torch.testing.assert_close(got_c[~pad], want_c[~pad], atol=1e-5, rtol=1e-5)


def test_packed_cross_attention_matches_torch() -> None:
    torch.manual_seed(6)
    ref = nn.MultiheadAttention(16, 2, batch_first=True).eval()
    ours = MultiHeadAttention(16, 2, packed_projections=True).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    q, kv = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(q, kv)[0], ref(q, kv, kv, need_weights=False)[0], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="packed_projections"):
        MultiHeadAttention(16, 2, kdim=8, packed_projections=True)


def test_causal_stack_with_kv_cache_matches_full_pass() -> None:
    """Decoding token by token through the cache gives the full causal pass's outputs."""
    torch.manual_seed(7)
    stack = TransformerEncoder(16, 2, 2, 32, dropout=0.0, norm_first=True, causal=True, packed_qkv=True).eval()
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        full = stack(x)
        cache = KVCache()
        steps = [stack(x[:, t : t + 1], cache=cache, position_offset=t) for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_static_kv_cache_gives_the_growing_caches_outputs_and_drops_rows() -> None:
    """Buffers written in place (prefill of 2, then 1 token at a time) = the concatenating cache, bit for bit."""
    torch.manual_seed(8)
    stack = TransformerEncoder(16, 2, 2, 32, dropout=0.0, norm_first=True, causal=True, packed_qkv=True).eval()
    x = torch.randn(3, 6, 16)
    chunks = [(0, 2), (2, 3), (3, 4), (4, 5), (5, 6)]
    with torch.no_grad():
        growing, static = KVCache(), KVCache(max_length=6)
        want = [stack(x[:, a:b], cache=growing, position_offset=a) for a, b in chunks]
        got = [stack(x[:, a:b], cache=static, position_offset=a) for a, b in chunks]
        assert static.length() == 6 and all(k.shape == (3, 2, 6, 8) for k, _ in static.layers.values())
        for a, b in zip(want, got, strict=True):
            assert torch.equal(a, b)
        static.select(torch.tensor([True, False, True]))  # a finished row leaves the batch
        assert all(k.shape[0] == 2 for k, _ in static.layers.values())
        with pytest.raises(ValueError, match="holds 6 positions"):
            stack(x[:2, :1], cache=static, position_offset=6)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch(norm_first: bool) -> None:
    torch.manual_seed(4)
    ref = nn.TransformerDecoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=norm_first).eval()
    ours = TransformerDecoderLayer(16, 2, 32, dropout=0.0, norm_first=norm_first).eval()
    _copy_layer(ours, ref)
    tgt, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    mem_pad = _padding(2, 7, [7, 4])
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    with torch.no_grad():
        want = ref(tgt, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=mem_pad)
        got = ours(tgt, memory, tgt_is_causal=True, memory_key_padding_mask=mem_pad)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# -- the processor contract against a float64 reference (torch SDPA math in float64) -----------------------------


def _reference(q, k, v, call: AttentionCall) -> torch.Tensor:
    """torch's own SDPA in float64, with masks built independently of biozoo's helpers."""
    q, k, v = q.double(), k.double(), v.double()
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    sq, skv = q.shape[-2], k.shape[-2]
    mask = torch.zeros(q.shape[0], 1, sq, skv, dtype=torch.float64)
    if call.mask is not None:
        t = call.mask.tensor
        if call.mask.kind == "key_padding":
            mask = mask.masked_fill(~t[:, None, None, :], float("-inf"))
        elif call.mask.kind == "bool":
            mask = mask.masked_fill(~t, float("-inf"))
        else:
            mask = mask + t.double()
    if call.causal:
        allowed = torch.ones(sq, skv, dtype=torch.bool).tril(diagonal=skv - sq)
        mask = mask.masked_fill(~allowed, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=call.scale)


def _cases() -> list[tuple[str, dict, tuple[int, int, int, int]]]:
    g = torch.Generator().manual_seed(7)
    keep = torch.rand(2, 1, 5, 7, generator=g) > 0.3
    keep[..., 0] = True
    return [
        ("plain", {}, (4, 4, 5, 5)),
        ("key_padding", {"mask": AttentionMask("key_padding", _padding(2, 7, [7, 3]).logical_not())}, (4, 4, 5, 7)),
        ("bool", {"mask": AttentionMask("bool", keep)}, (4, 4, 5, 7)),
        ("additive", {"mask": AttentionMask("additive", torch.randn(2, 4, 5, 7, generator=g))}, (4, 4, 5, 7)),
        ("causal", {"causal": True}, (4, 4, 6, 6)),
        ("causal_kv_cache", {"causal": True}, (4, 4, 3, 8)),
        (
            "causal_and_padding",
            {"causal": True, "mask": AttentionMask("key_padding", _padding(2, 6, [6, 6]).logical_not())},
            (4, 4, 6, 6),
        ),
        ("custom_scale", {"scale": 0.37}, (4, 4, 5, 5)),
        ("gqa", {}, (8, 2, 5, 5)),
        (
            "mqa_with_padding",
            {"mask": AttentionMask("key_padding", _padding(2, 9, [9, 2]).logical_not())},
            (4, 1, 3, 9),
        ),
        ("odd_lengths", {}, (3, 3, 13, 11)),
    ]


@pytest.mark.parametrize("processor", [EagerProcessor(), SdpaProcessor()], ids=PROCESSORS)
@pytest.mark.parametrize(("case", "kwargs", "shape"), _cases(), ids=[c[0] for c in _cases()])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_processor_conformance(processor, case: str, kwargs: dict, shape: tuple, dtype: torch.dtype) -> None:
    h, hkv, sq, skv = shape
    g = torch.Generator().manual_seed(11)
    q = torch.randn(2, h, sq, 16, generator=g).to(dtype)
    k = torch.randn(2, hkv, skv, 16, generator=g).to(dtype)
    v = torch.randn(2, hkv, skv, 16, generator=g).to(dtype)
    call = AttentionCall(**kwargs)
    got = processor(q, k, v, call).output
    want = _reference(q, k, v, call)
    tol = {torch.float32: 2e-6, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(got.double(), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("processor", [EagerProcessor(), SdpaProcessor()], ids=PROCESSORS)
def test_fully_masked_rows_are_zero_not_nan(processor) -> None:
    q = torch.randn(1, 2, 3, 8)
    keep = torch.zeros(1, 3, dtype=torch.bool)
    out = processor(q, q, q, AttentionCall(mask=AttentionMask("key_padding", keep))).output
    assert torch.equal(out, torch.zeros_like(out))


# -- selection ---------------------------------------------------------------------------------------------------


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        TransformerEncoderLayer(16, 2, 32, dropout=0.0), TransformerEncoderLayer(16, 2, 32, dropout=0.0)
    ).eval()


def _run(model: nn.Module, **kwargs) -> torch.Tensor:
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for layer in model:
            x = layer(x, **kwargs)
    return x


def test_auto_picks_sdpa_and_explain_says_why() -> None:
    model = _model()
    _run(model)
    rows = explain(model)
    assert [r["module"] for r in rows] == ["0.self_attn", "1.self_attn"]
    assert all(r["ran"] == "sdpa" and r["requested"] == "auto (default)" for r in rows)


def test_per_module_glob_partial_map_and_predicate() -> None:
    model = _model()
    assert set_processor(model, "eager", where="1.*") == ["1.self_attn"]
    _run(model)
    ran = {r["module"]: r["ran"] for r in explain(model)}
    assert ran == {"0.self_attn": "sdpa", "1.self_attn": "eager"}
    set_processor(model, "eager", where=lambda path, module: path.startswith("0"))
    _run(model)
    assert {r["ran"] for r in explain(model)} == {"eager"}
    with pytest.raises(AttentionError, match="no attention module matches 'decoder.*'"):
        set_processor(model, "eager", where="decoder.*")


def test_context_manager_is_scoped_and_does_not_leak_across_threads() -> None:
    model = _model()
    seen: dict[str, str] = {}

    def other_thread() -> None:
        other = _model()
        _run(other)
        seen["thread"] = explain(other)[0]["ran"]

    with use_processor("eager"):
        _run(model)
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert explain(model)[0]["ran"] == "eager"
    assert seen["thread"] == "sdpa"
    _run(model)
    assert explain(model)[0]["ran"] == "sdpa"  # restored on exit


def test_module_setting_beats_context_which_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    monkeypatch.setenv("BIOZOO_ATTENTION", "eager")
    _run(model)
    assert explain(model)[0]["requested"] == "eager (BIOZOO_ATTENTION)"
    with use_processor("sdpa"):
        _run(model)
        assert explain(model)[0]["ran"] == "sdpa"
        set_processor(model, "eager", where="0.*")
        _run(model)
        assert explain(model)[0]["ran"] == "eager"


def test_named_processor_that_cannot_honour_a_call_raises() -> None:
    model = _model()
    set_processor(model, "sdpa")
    layer = model[0].self_attn
    x = torch.randn(1, 4, 16)
    with pytest.raises(AttentionError) as info:
        layer(x, need_weights=True)
    text = str(info.value)
    assert "'sdpa'" in text and "returning attention weights" in text and "processors that can: eager" in text
    set_processor(model, "auto")
    _, weights = layer(x, need_weights=True)  # auto falls to eager, which can
    assert weights is not None and explain(model)[0]["ran"] == "eager"


def test_switching_processors_keeps_outputs() -> None:
    model = _model()
    pad = _padding(2, 5, [5, 2])
    outs = {}
    for name in PROCESSORS:
        set_processor(model, name)
        outs[name] = _run(model, src_key_padding_mask=pad)
    torch.testing.assert_close(outs["eager"][~pad], outs["sdpa"][~pad], atol=1e-6, rtol=1e-5)


def test_unknown_processor_name() -> None:
    with pytest.raises(Exception, match=r"(?s)no attention processor named 'sdpx'.*did you mean sdpa"):
        set_processor(_model(), "sdpx")


def test_gqa_and_qk_norm_module() -> None:
    torch.manual_seed(5)
    mha = MultiHeadAttention(32, 8, num_kv_heads=2, qk_norm="rms_norm").eval()
    assert mha.k_proj.out_features == 2 * 4
    x = torch.randn(2, 6, 32)
    outs = []
    for name in PROCESSORS:
        set_processor(mha, name)
        outs.append(mha(x, is_causal=True)[0])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=1e-5)


def test_module_setting_beats_model_setting_regardless_of_order() -> None:
    model = _model()
    set_processor(model, "eager", where="0.*")
    set_processor(model, "sdpa")  # model-wide, later: must not erase the module's own setting
    _run(model)
    assert {r["module"]: r["ran"] for r in explain(model)} == {"0.self_attn": "eager", "1.self_attn": "sdpa"}


def test_manifest_default_yields_to_context_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    set_processor(model, "eager", level="manifest")
    _run(model)
    assert explain(model)[0]["requested"] == "eager (the model's manifest)"
    with use_processor("sdpa"):
        _run(model)
        assert explain(model)[0]["ran"] == "sdpa"
    monkeypatch.setenv("BIOZOO_ATTENTION", "sdpa")
    _run(model)
    assert explain(model)[0]["ran"] == "sdpa"


def test_a_broken_plugin_processor_does_not_break_auto(fake_plugins) -> None:
    fake_plugins.add(
        "badkernel",
        """
from biozoo.plugins import ProcessorDecl, hookimpl
@hookimpl
def biozoo_attention_processors():
    return [ProcessorDecl("badkernel", "no_such_module_anywhere:Kernel", priority=100)]
""",
    )
    from biozoo.registry import get_registry

    model = _model()
    _run(model)
    assert explain(model)[0]["ran"] == "sdpa"
    assert "badkernel" in get_registry().processor_problems


def test_auto_never_picks_a_kernel_not_attested_as_conformant(fake_plugins) -> None:
    fake_plugins.add("fastish", """
from biozoo.plugins import ProcessorDecl, hookimpl
@hookimpl
def biozoo_attention_processors():
    return [ProcessorDecl("fastish", "biozoo.attention.processors:EagerProcessor", priority=100)]
""")
    model = _model()
    _run(model)
    assert explain(model)[0]["ran"] == "sdpa"  # priority 100, but no auto=True attestation
    set_processor(model, "fastish")  # named use still works
    _run(model)
    assert explain(model)[0]["requested"].startswith("fastish")


def test_processor_settings_carry_to_another_copy_of_the_model() -> None:
    """What a Ray actor does with the driver's settings: a fresh copy runs the processors the driver's would."""
    from biozoo.attention.selection import apply_processor_settings, processor_settings

    driver = _model()
    set_processor(driver, "sdpa")
    set_processor(driver, "eager", where="1.*")
    copy = _model()
    apply_processor_settings(copy, processor_settings(driver))
    _run(copy)
    assert {r["module"]: (r["requested"], r["ran"]) for r in explain(copy)} == {
        "0.self_attn": ("sdpa (set on the model)", "sdpa"),
        "1.self_attn": ("eager (set on this module)", "eager"),
    }
    with pytest.raises(UnknownNameError, match="no-such-kernel"):
        apply_processor_settings(copy, [("0.self_attn", "no-such-kernel", None)])
