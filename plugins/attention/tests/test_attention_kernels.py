"""The attention plugin's kernels: conformance, their own promises (memory, padding, approximation), a real model."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import math
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import biozoo
from biozoo.attention import AttentionCall, AttentionMask, explain, set_processor
from biozoo.errors import AttentionError
from biozoo.nn.attention import MultiHeadAttention
from biozoo.registry import get_registry, reset_registry
from biozoo_attention.conformance import check_kernel, conformance_checks, softmax_reference
from biozoo_attention.kernels.linear import LinearProcessor
from biozoo_attention.kernels.sliced import SlicedProcessor
from biozoo_attention.kernels.varlen import VarlenProcessor, VarlenSelfProcessor

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[3]
CELLS = ROOT / "examples" / "pbmc68k_test.h5ad"
PLUGIN_KERNELS = {"sliced", "flex", "varlen", "varlen-self", "linear", "flash", "xformers"}


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("BIOZOO_ATTENTION", raising=False)
    monkeypatch.delenv("BIOZOO_FLEX_COMPILE", raising=False)
    reset_registry()
    yield
    reset_registry()


def _names() -> list[str]:
    reset_registry()
    return get_registry().processors.names()


def _exact_available() -> list[str]:
    registry = get_registry()
    return [n for n in _names() if registry.processor(n).available()[0] and not registry.processor(n).caps.approximate]


def _padding_keep(lengths: list[int], total: int) -> torch.Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


# -- conformance ------------------------------------------------------------------------------------------------


def test_the_plugin_registers_every_kernel() -> None:
    assert set(_names()) >= PLUGIN_KERNELS
    registry = get_registry()
    assert registry.processor("linear").priority < 0 and registry.processor("sliced").priority < 10
    registry.processors_by_priority()
    assert not registry.processor_problems


@pytest.mark.parametrize("name", _names())
def test_every_available_kernel_passes_conformance(name: str) -> None:
    kernel = get_registry().processor(name)
    ok, why = kernel.available()
    if not ok:
        pytest.skip(why)
    own_reference = {"linear": _linear_reference, "varlen-self": _zero_padded_queries_reference}.get(name)
    device = "cpu" if "cpu" in kernel.caps.devices else "cuda"
    dtypes = [d for d in ("float32", "bfloat16") if d in kernel.caps.dtypes] or ["float16"]
    report = check_kernel(kernel, reference=own_reference, device=device, dtypes=dtypes)
    assert report.passed, report.to_markdown()
    if own_reference is not None or not kernel.caps.approximate:
        assert not [r for r in report.results if r.status == "skip"], report.to_markdown()
    if name in PLUGIN_KERNELS:  # ours also raise on direct calls they cannot honour (sdpa returns no weights)
        assert report.counts()["warn"] == 0, report.to_markdown()


def test_conformance_slices_and_chunks_for_real() -> None:
    """The default slice/chunk is larger than the suite's sequences; force several per call."""
    for kernel, reference in ((SlicedProcessor(slice_size=3), None), (LinearProcessor(chunk=3), _linear_reference)):
        report = check_kernel(kernel, reference=reference, dtypes=(torch.float32,))
        assert report.passed, report.to_markdown()


def test_conformance_reports_a_kernel_that_silently_drops_a_feature() -> None:
    class DropsTheMask(SlicedProcessor):
        name = "drops-the-mask"

        def __call__(self, q, k, v, call):
            return super().__call__(q, k, v, AttentionCall(causal=call.causal, scale=call.scale))

    report = check_kernel(DropsTheMask(), dtypes=(torch.float32,))
    assert not report.passed
    failed = {r.check for r in report.failures}
    assert "key_padding_self-float32" in failed and "bool_per_head-float32" in failed and "self-float32" not in failed


def test_conformance_checks_are_usable_as_pytest_parameters() -> None:
    checks = conformance_checks(VarlenProcessor(), dtypes=("float32",))
    ids = {c.id for c in checks}
    assert "key_padding_holes-float32" in ids and "bool_2d-float32-rejected" in ids
    for check in checks:
        check.assert_ok()


def test_pytest_option_runs_the_suite_without_a_test_file(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess(
        "--biozoo-kernel=biozoo_attention.kernels.varlen:VarlenProcessor",
        "--biozoo-kernel=flash",
        "--biozoo-kernel-dtypes=float32",
        "-p",
        "no:cacheprovider",
    )
    outcomes = result.parseoutcomes()
    assert "failed" not in outcomes
    assert outcomes.get("passed", 0) >= len(conformance_checks(VarlenProcessor(), dtypes=("float32",)))
    if not get_registry().processor("flash").available()[0]:
        assert outcomes.get("skipped") == 1  # one item for an unavailable kernel, skipped with the reason
        result.stdout.no_fnmatch_line("*flash-self*")


# -- linear attention: its own reference, and not softmax ----------------------------------------------------


def _linear_reference(q, k, v, call: AttentionCall) -> torch.Tensor:
    """fast_transformers' linear attention written as an explicit (quadratic) float64 sum."""
    q, k, v = q.double(), k.double(), v.double()
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    phi_q = torch.where(q > 0, q + 1, torch.exp(q))  # elu(x) + 1
    phi_k = torch.where(k > 0, k + 1, torch.exp(k))
    a = phi_q @ phi_k.transpose(-2, -1)
    sq, skv = q.shape[2], k.shape[2]
    if call.mask is not None:
        a = a * call.mask.tensor.double()[:, None, None, :]
    if call.causal:
        a = a * torch.ones(sq, skv, dtype=torch.float64, device=a.device).tril(diagonal=skv - sq)
    return (a @ v) / (a.sum(dim=-1, keepdim=True) + 1e-6)


def test_linear_is_approximate_and_never_chosen_by_auto() -> None:
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 4, 9, 16, generator=g) for _ in range(3))
    call = AttentionCall(mask=AttentionMask("key_padding", _padding_keep([9, 5], 9)))
    linear = get_registry().processor("linear")
    got = linear(q, k, v, call).output
    torch.testing.assert_close(got.double(), _linear_reference(q, k, v, call), atol=1e-6, rtol=1e-6)
    softmax = softmax_reference(q, k, v, call)[0]
    assert (got.double() - softmax).abs().max() > 0.05  # a different function: must never pass as softmax
    assert linear.caps.approximate and not linear.caps.exact
    mha = MultiHeadAttention(16, 2).eval()
    with torch.no_grad():
        mha(torch.randn(2, 5, 16), key_padding_mask=~_padding_keep([5, 2], 5))
    assert explain(mha)[0]["ran"] == "sdpa"
    set_processor(mha, "linear")
    with torch.no_grad():
        mha(torch.randn(2, 5, 16), key_padding_mask=~_padding_keep([5, 2], 5))
    assert explain(mha)[0]["ran"] == "linear"


def test_linear_causal_chunks_agree_with_one_chunk() -> None:
    g = torch.Generator().manual_seed(4)
    q = torch.randn(1, 2, 37, 8, generator=g)
    k, v = torch.randn(1, 2, 41, 8, generator=g), torch.randn(1, 2, 41, 8, generator=g)
    call = AttentionCall(causal=True)
    whole = LinearProcessor(chunk=1000)(q, k, v, call).output
    torch.testing.assert_close(LinearProcessor(chunk=5)(q, k, v, call).output, whole, atol=1e-6, rtol=1e-6)


# -- varlen: padding-free and exact ------------------------------------------------------------------------------


class _RecordSdpa(TorchDispatchMode):
    """Records the (query, key) lengths of every fused attention op: shows what was computed."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "scaled_dot_product" in func.__name__ or "flash_attention" in func.__name__:
            self.calls.append((args[0].shape[-2], args[1].shape[-2]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_varlen_equals_sdpa_on_ragged_right_padded_batches(causal: bool, kv_heads: int) -> None:
    g = torch.Generator().manual_seed(5)
    lengths = [37, 5, 23, 37, 1, 30]
    s = max(lengths)
    q = torch.randn(6, 4, s, 32, generator=g)
    k, v = torch.randn(6, kv_heads, s, 32, generator=g), torch.randn(6, kv_heads, s, 32, generator=g)
    keep = _padding_keep(lengths, s)
    call = AttentionCall(mask=AttentionMask("key_padding", keep), causal=causal)
    want = get_registry().processor("sdpa")(q, k, v, call).output
    with _RecordSdpa() as rec:
        got = VarlenProcessor()(q, k, v, call).output
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)  # every row, padded queries included
    assert sorted(kv for _, kv in rec.calls) == sorted(set(lengths))  # one call per length; keys never padded
    with _RecordSdpa() as rec:
        got_self = VarlenSelfProcessor()(q, k, v, call).output
    valid = keep[:, None, :, None]
    torch.testing.assert_close(got_self * valid, want * valid, atol=2e-6, rtol=1e-5)
    assert bool((got_self.masked_select(~valid.expand_as(got_self)) == 0).all())  # zeros at padded queries
    assert sorted(rec.calls) == sorted((n, n) for n in set(lengths))  # no compute on padding at all


@dataclass(frozen=True)
class _CallWithQueryPadding(AttentionCall):
    """The proposed core field ``AttentionCall.query_keep``, duck-typed until the core has it."""

    query_keep: torch.Tensor | None = None


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_skips_padded_queries_when_the_call_says_which_they_are(causal: bool) -> None:
    g = torch.Generator().manual_seed(8)
    q = torch.randn(4, 2, 9, 16, generator=g)
    k, v = torch.randn(4, 2, 12, 16, generator=g), torch.randn(4, 2, 12, 16, generator=g)
    keys, queries = _padding_keep([12, 4, 7, 12], 12), _padding_keep([9, 2, 9, 5], 9)
    queries[2, 3] = False  # a hole: not right padding
    call = _CallWithQueryPadding(mask=AttentionMask("key_padding", keys), causal=causal, query_keep=queries)
    want = softmax_reference(q, k, v, call)[0]
    with _RecordSdpa() as rec:
        got = VarlenProcessor()(q, k, v, call).output
    rows = queries[:, None, :, None]
    torch.testing.assert_close(got.double() * rows, want * rows, atol=2e-6, rtol=1e-5)
    assert bool((got.masked_select(~rows.expand_as(got)) == 0).all())
    assert sorted(rec.calls) == [(2, 4), (5, 12), (8, 7), (9, 12)]  # only real queries, only valid keys


def _zero_padded_queries_reference(q, k, v, call: AttentionCall) -> torch.Tensor:
    """varlen-self's function: softmax attention, with padded query rows of self-attention set to zero."""
    out = softmax_reference(q, k, v, call)[0]
    if call.mask is not None and q.shape[2] == k.shape[2]:
        out = out * call.mask.tensor.to(out.dtype)[:, None, :, None]
    return out


# -- sliced: the memory bound ------------------------------------------------------------------------------------


class _LargestTensor(TorchDispatchMode):
    """The largest tensor any op allocated while active (views excluded): a device-independent peak-memory proxy."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
        }
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.largest = max(self.largest, t.numel())
        return out


def test_sliced_never_materialises_more_than_one_slice_of_scores() -> None:
    g = torch.Generator().manual_seed(6)
    b, h, s, d = 1, 2, 256, 8
    q, k, v = (torch.randn(b, h, s, d, generator=g) for _ in range(3))
    keep = torch.rand(b, 1, s, s, generator=g) > 0.2
    call = AttentionCall(mask=AttentionMask("bool", keep), causal=True)
    with _LargestTensor() as eager_peak:
        want = get_registry().processor("eager")(q, k, v, call).output
    with _LargestTensor() as peak:
        result = SlicedProcessor(slice_size=16)(q, k, v, call)
    torch.testing.assert_close(result.output, want, atol=1e-6, rtol=1e-5)
    assert result.extras == {"query_slices": s // 16, "slice_rows": 16}
    assert eager_peak.largest >= b * h * s * s
    assert peak.largest <= b * h * 16 * s  # one slice of scores; output and inputs are smaller here
    auto = SlicedProcessor(max_elements=b * h * 32 * s)
    assert auto.rows_per_slice(b, h, s, s) == 32
    torch.testing.assert_close(auto(q, k, v, call).output, want, atol=1e-6, rtol=1e-5)


# -- flex: causal is never dropped -------------------------------------------------------------------------------


def test_flex_keeps_causal_without_a_mask() -> None:
    """diffusers' flex backend ignores is_causal when no mask is given; ours must not."""
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(1, 2, 6, 8, generator=g) for _ in range(3))
    flex = get_registry().processor("flex")
    causal = flex(q, k, v, AttentionCall(causal=True)).output
    torch.testing.assert_close(causal.double(), softmax_reference(q, k, v, AttentionCall(causal=True))[0])
    assert (causal - flex(q, k, v, AttentionCall()).output).abs().max() > 0.1


# -- kernels that cannot run here --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["flash", "xformers"])
def test_unavailable_kernels_say_why_and_raise_when_named(name: str) -> None:
    kernel = get_registry().processor(name)
    ok, why = kernel.available()
    if ok:
        pytest.skip(f"{name} is available here; its conformance runs above")
    assert "pip install" in why or "CUDA" in why
    mha = MultiHeadAttention(16, 2).eval()
    set_processor(mha, name)
    with pytest.raises(AttentionError, match=f"'{name}' is not available here: .*{why.split(' ')[0]}"):
        mha(torch.randn(1, 3, 16))
    report = check_kernel(kernel)
    assert not report.available and report.reason == why and not report.failures
    set_processor(mha, "auto")
    mha(torch.randn(1, 3, 16))
    assert explain(mha)[0]["ran"] == "sdpa"  # auto skips it


def _sdpa_bottom_right(q, k, v, scale, causal):
    """``[S, H, D]``-layout attention with flash-attn's conventions (bottom-right causal, native GQA)."""
    q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    rep = q.shape[0] // k.shape[0]
    k, v = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
    mask = None
    if causal:
        mask = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool).tril(k.shape[1] - q.shape[1])
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    if mask is not None:
        out = out.masked_fill(~mask.any(-1)[:, None], 0.0)
    return out.transpose(0, 1)


def _fake_flash() -> types.ModuleType:
    """flash_attn's two entry points, written from its documented semantics, to exercise our mapping on CPU."""
    mod = types.ModuleType("flash_attn")

    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False):
        return torch.stack([_sdpa_bottom_right(*t, softmax_scale, causal) for t in zip(q, k, v, strict=True)])

    def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, **kw):
        assert max_seqlen_k == int((cu_seqlens_k[1:] - cu_seqlens_k[:-1]).max())
        outs = []
        for i in range(len(cu_seqlens_q) - 1):
            qs, ks = slice(cu_seqlens_q[i], cu_seqlens_q[i + 1]), slice(cu_seqlens_k[i], cu_seqlens_k[i + 1])
            if ks.stop == ks.start:
                outs.append(torch.full_like(q[qs], float("nan")))  # whatever flash returns there: we must zero it
                continue
            outs.append(_sdpa_bottom_right(q[qs], k[ks], v[ks], kw.get("softmax_scale"), kw.get("causal", False)))
        return torch.cat(outs)

    mod.flash_attn_func, mod.flash_attn_varlen_func = flash_attn_func, flash_attn_varlen_func
    return mod


def _fake_xformers() -> dict[str, types.ModuleType]:
    class LowerTriangularFromBottomRightMask:
        pass

    def memory_efficient_attention(q, k, v, attn_bias=None, p=0.0, scale=None):
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if isinstance(attn_bias, LowerTriangularFromBottomRightMask):
            keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril(k.shape[-2] - q.shape[-2])
            attn_bias = torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
        else:
            assert attn_bias is None or attn_bias.stride(-2) % 8 == 0  # xformers wants aligned bias rows
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=scale)
        return out.transpose(1, 2)

    ops, fmha, bias = (
        types.ModuleType(n) for n in ("xformers.ops", "xformers.ops.fmha", "xformers.ops.fmha.attn_bias")
    )
    ops.memory_efficient_attention = memory_efficient_attention
    bias.LowerTriangularFromBottomRightMask = LowerTriangularFromBottomRightMask
    root = types.ModuleType("xformers")
    root.ops, ops.fmha, fmha.attn_bias = ops, fmha, bias
    return {"xformers": root, "xformers.ops": ops, "xformers.ops.fmha": fmha, "xformers.ops.fmha.attn_bias": bias}


@pytest.mark.parametrize("name", ["flash", "xformers"])
def test_gpu_kernels_map_the_call_correctly_onto_their_library(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The libraries are not installable here: stand-ins with their documented semantics check our side."""
    fakes = {"flash_attn": _fake_flash()} if name == "flash" else _fake_xformers()
    for module_name, module in fakes.items():
        module.__spec__ = importlib.machinery.ModuleSpec(module_name, None)
        monkeypatch.setitem(sys.modules, module_name, module)
    kernel = get_registry().processor(name)
    on_cpu = type(kernel)()
    on_cpu.caps = dataclasses.replace(kernel.caps, devices=frozenset({"cpu"}), dtypes=frozenset({"float32"}))
    on_cpu.available = lambda: (True, "")
    report = check_kernel(on_cpu, dtypes=("float32",))
    dropout = {"dropout-float32"}  # the stand-ins do not implement dropout
    assert not [r for r in report.failures if r.check not in dropout], report.to_markdown()
    assert report.counts()["warn"] == 0, report.to_markdown()


def test_declarations_and_package_import_without_torch() -> None:
    code = (
        "import sys, biozoo_attention, biozoo_attention.plugin as p; "
        "assert biozoo_attention.__version__ == '0.1.0'; "
        "names = [d.name for d in p.biozoo_attention_processors()]; "
        "assert 'torch' not in sys.modules, 'torch imported'; print(names)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert set(eval(out.stdout)) == PLUGIN_KERNELS


# -- a real model: scGPT gives the same cells whatever exact kernel runs ----------------------------------


def test_scgpt_embeddings_are_the_same_with_every_exact_kernel() -> None:
    import anndata as ad

    from biozoo_scgpt import tasks

    model = biozoo.load("scgpt/cls")
    cells = ad.read_h5ad(CELLS)[:16].copy()  # two ragged batches of 8
    outputs = {}
    names = [*_exact_available(), "varlen-self"]  # varlen-self: scGPT discards padded positions, so it fits too
    assert {"eager", "sdpa", "sliced", "varlen", "flex"} <= set(names)
    for name in names:
        set_processor(model, name)
        outputs[name], _ = tasks.cell_embeddings(model, cells, batch_size=8, progress=False)
        assert {r["ran"] for r in explain(model)} == {name}
    for name, emb in outputs.items():
        np.testing.assert_allclose(emb, outputs["sdpa"], atol=1e-5, rtol=0, err_msg=name)
    assert math.isclose(float(np.linalg.norm(outputs["varlen"][0])), 1.0, abs_tol=1e-5)


# -- varlen's packed path (flash varlen on CUDA), its packing checked on CPU -------------------------------------


def _loop_varlen_kernel(q, k, v, cu_q, cu_k, max_q, max_k, scale):  # type: ignore[no-untyped-def]
    """flash-attention's varlen function written as a loop over sequences (packed ``[tokens, H, D]`` in and out).

    Rows of ``q`` past the last sequence are left unwritten, as flash does: NaN here, which must not leak.
    """
    assert int((cu_q[1:] - cu_q[:-1]).max()) <= max_q and int((cu_k[1:] - cu_k[:-1]).max()) <= max_k
    out = []
    for i in range(len(cu_q) - 1):
        qs, ks, vs = (t[int(c[i]) : int(c[i + 1])].transpose(0, 1) for t, c in ((q, cu_q), (k, cu_k), (v, cu_k)))
        if ks.shape[1] == 0:
            o = torch.zeros_like(qs)
        else:
            o = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, scale=scale)
        out.append(o.transpose(0, 1))
    tail = torch.full((q.shape[0] - int(cu_q[-1]), *q.shape[1:-1], v.shape[-1]), float("nan"))
    return torch.cat([*out, tail])


@pytest.mark.parametrize("query_rows", ["all", "kept"])
@pytest.mark.parametrize(("heads", "kv_heads", "scale"), [(4, 4, None), (4, 2, 0.3)])
def test_varlen_packed_path_packs_and_unpacks_exactly(query_rows: str, heads: int, kv_heads: int, scale) -> None:
    """Holes in the mask, a row with no key, GQA and a custom scale, against the float64 contract reference."""
    from biozoo_attention.kernels.varlen import packed_attention

    g = torch.Generator().manual_seed(0)
    b, s, d = 4, 9, 8
    q = torch.randn(b, heads, s, d, generator=g)
    k, v = (torch.randn(b, kv_heads, s, d, generator=g) for _ in range(2))
    keep = torch.rand(b, s, generator=g) > 0.4
    keep[0] = True
    keep[1] = False  # nothing to attend to: zeros
    keep[2, :5], keep[2, 5:] = True, False  # right padding
    query_keep = keep if query_rows == "kept" else None
    got = packed_attention(q, k, v, keep, query_keep, scale, _loop_varlen_kernel)
    call = AttentionCall(mask=AttentionMask("key_padding", keep), scale=scale)
    want = softmax_reference(q, k, v, call)[0]
    if query_keep is not None:
        want = want * query_keep[:, None, :, None]
    assert got.shape == want.shape
    assert float((got.double() - want).abs().max()) < 1e-5


def test_a_stand_in_module_without_a_spec_reads_as_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Some code (scgpt's reference tests) puts a bare flash_attn stand-in in sys.modules; find_spec then raises
    ValueError, which broke every caller of available() (e.g. the conformance suite of a third-party kernel)."""
    from biozoo_attention.kernels.flash import FlashProcessor
    from biozoo_attention.kernels.xformers import XformersProcessor

    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))
    monkeypatch.setitem(sys.modules, "xformers", types.ModuleType("xformers"))
    for kernel in (FlashProcessor(), XformersProcessor()):
        usable, why = kernel.available()
        assert not usable and "not installed" in why
