"""Conformance suite for attention kernels: run it on yours before anyone relies on it.

A kernel declares what it can honour (``ProcessorCaps``); this suite holds it
to that. For every case the caps claim (self and cross attention; each mask
kind, broadcast and per head; causal with ``Sq == Skv``, ``Sq < Skv`` and
``Sq > Skv``, alone and with each mask; custom scale; GQA and MQA; odd
lengths and head sizes; rows with nothing to attend to; weights and dropout
when declared) and for each dtype, the kernel's output is compared with a
float64 reference written here from the contract alone (no biozoo helper),
and the kernel must not modify its inputs. For every case the caps do *not*
claim, the suite checks that ``biozoo.attention.attend`` rejects the kernel
when it is named (``AttentionError``) and, calling the kernel directly, that
it raises rather than silently returning a wrong answer (a silent wrong
answer is reported as ``warn``: safe behind ``attend``, a trap for direct
callers).

Approximate kernels (``caps.approximate``, e.g. linear attention) compute a
different function: pass their own float64 ``reference=`` or the numeric
checks are skipped (shape, dtype and finiteness are still checked).

Use it three ways::

    # 1. a report (Markdown table via report.to_markdown())
    from biozoo_attention.conformance import check_kernel
    report = check_kernel(MyKernel(), dtypes=(torch.float32, torch.bfloat16), device="cpu")
    assert report.passed, report

    # 2. pytest, no test file needed (this module is a pytest11 plugin of biozoo-attention)
    pytest --biozoo-kernel=my_package.kernels:MyKernel --biozoo-kernel-dtypes=float32,bfloat16 -k conformance
    pytest --biozoo-kernel=sliced            # a registered processor name works too

    # 3. one pytest test per check, in your own test file
    @pytest.mark.parametrize("check", conformance_checks(MyKernel()), ids=lambda c: c.id)
    def test_my_kernel(check):
        check.assert_ok()

or from a shell: ``python -m biozoo_attention.conformance my_package.kernels:MyKernel``.

Tolerances (max over elements of ``|got - ref| - rtol * |ref|`` must stay below
``atol``; both equal): float64 1e-10, float32 1e-5, float16 3e-3, bfloat16 3e-2.
This module imports torch only when a check runs, so loading it as a pytest
plugin costs nothing.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest
    import torch

    from biozoo.attention.contract import AttentionCall

Reference = Callable[[Any, Any, Any, "AttentionCall"], Any]
TOLERANCE = {"float64": 1e-10, "float32": 1e-5, "float16": 3e-3, "bfloat16": 3e-2}
DEFAULT_DTYPES = ("float32", "bfloat16")


# -- the float64 reference, from the contract alone -------------------------------------------------------------


def softmax_reference(q: Any, k: Any, v: Any, call: AttentionCall) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention in float64: ``(output, probabilities)``; rows with no allowed key are zeros."""
    import torch

    q, k, v = q.double(), k.double(), v.double()
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    b, h, sq, d = q.shape
    skv = k.shape[2]
    scale = call.scale if call.scale is not None else 1.0 / math.sqrt(d)
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) * scale
    allowed = torch.ones(b, h, sq, skv, dtype=torch.bool, device=q.device)
    if call.mask is not None:
        t = call.mask.tensor.to(q.device)
        if call.mask.kind == "key_padding":
            allowed = allowed & t.bool()[:, None, None, :]
        elif call.mask.kind == "bool":
            allowed = allowed & t.bool()
        else:
            scores = scores + t.double()
    if call.causal:
        i = torch.arange(sq, device=q.device)[:, None]
        j = torch.arange(skv, device=q.device)[None, :]
        allowed = allowed & (j <= i + (skv - sq))
    scores = scores.masked_fill(~allowed, -math.inf)
    top = scores.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = torch.exp(scores - top)
    z = e.sum(dim=-1, keepdim=True)
    p = torch.where(z > 0, e / torch.where(z > 0, z, torch.ones_like(z)), torch.zeros_like(e))
    return p @ v, p


# -- cases ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One call shape and recipe: ``B, H, Hkv, Sq, Skv, D`` and what the call asks for."""

    name: str
    shape: tuple[int, int, int, int, int, int]
    mask: str | None = None  # recipe name, see _make_mask
    causal: bool = False
    scale: float | None = None
    dropout_p: float = 0.0
    need_weights: bool = False
    shared_qkv: bool = False  # q, k and v are one tensor (self-attention on the same storage)


CASES: tuple[Case, ...] = (
    Case("self", (2, 4, 4, 6, 6, 16)),
    Case("self_shared_qkv", (2, 4, 4, 6, 6, 16), shared_qkv=True),
    Case("cross", (2, 4, 4, 5, 9, 16)),
    Case("key_padding_self", (2, 4, 4, 7, 7, 16), mask="key_padding_right"),
    Case("key_padding_cross", (2, 4, 4, 5, 9, 16), mask="key_padding_right"),
    Case("key_padding_holes", (3, 2, 2, 6, 8, 16), mask="key_padding_holes"),
    Case("bool_broadcast_heads", (2, 4, 4, 5, 7, 16), mask="bool_b1"),
    Case("bool_per_head", (2, 4, 4, 5, 7, 16), mask="bool_bh"),
    Case("bool_2d", (2, 4, 4, 6, 6, 16), mask="bool_2d"),
    Case("additive_per_head", (2, 4, 4, 5, 7, 16), mask="additive_bh"),
    Case("additive_broadcast_with_inf", (2, 4, 4, 5, 7, 16), mask="additive_11_inf"),
    Case("causal", (2, 4, 4, 6, 6, 16), causal=True),
    Case("causal_fewer_queries", (2, 4, 4, 3, 8, 16), causal=True),
    Case("causal_more_queries", (2, 4, 4, 8, 3, 16), causal=True),
    Case("causal_key_padding", (2, 4, 4, 6, 6, 16), mask="key_padding_right", causal=True),
    Case("causal_key_padding_cross", (2, 4, 4, 4, 9, 16), mask="key_padding_right", causal=True),
    Case("causal_bool", (2, 4, 4, 6, 6, 16), mask="bool_b1", causal=True),
    Case("causal_additive", (2, 4, 4, 5, 9, 16), mask="additive_bh", causal=True),
    Case("custom_scale", (2, 4, 4, 5, 5, 16), scale=0.37),
    Case("custom_scale_key_padding", (2, 4, 4, 5, 9, 16), mask="key_padding_right", scale=2.0),
    Case("gqa", (2, 8, 2, 5, 5, 16)),
    Case("gqa_causal", (2, 6, 3, 7, 7, 16), causal=True),
    Case("gqa_bool_per_head", (2, 4, 2, 5, 7, 16), mask="bool_bh"),
    Case("mqa_key_padding", (2, 4, 1, 3, 9, 16), mask="key_padding_right"),
    Case("odd_lengths_and_head_dim", (3, 3, 3, 13, 11, 20)),
    Case("long_key_padding", (2, 2, 2, 150, 150, 16), mask="key_padding_long"),
    Case("dead_rows_key_padding", (2, 2, 2, 4, 6, 16), mask="key_padding_dead"),
    Case("dead_rows_bool", (2, 2, 2, 4, 6, 16), mask="bool_dead"),
    Case("dead_rows_additive", (2, 2, 2, 4, 6, 16), mask="additive_dead"),
    Case("dropout", (2, 2, 2, 8, 8, 16), dropout_p=0.5),
    Case("weights", (2, 2, 2, 5, 7, 16), mask="key_padding_right", need_weights=True),
)


def _make_mask(recipe: str, g: Any, b: int, h: int, sq: int, skv: int, dtype: Any) -> Any:
    """The mask tensor for a recipe (True = attend); deterministic given the generator."""
    import torch

    from biozoo.attention.contract import AttentionMask

    def lengths(*values: int) -> torch.Tensor:
        n = torch.tensor([values[i % len(values)] for i in range(b)])
        return torch.arange(skv)[None, :] < n[:, None]

    if recipe == "key_padding_right":
        return AttentionMask("key_padding", lengths(skv, max(1, skv // 3)))
    if recipe == "key_padding_long":
        return AttentionMask("key_padding", lengths(skv, 77))
    if recipe == "key_padding_dead":
        return AttentionMask("key_padding", lengths(skv, 0))
    if recipe == "key_padding_holes":
        keep = torch.rand(b, skv, generator=g) > 0.4
        keep[:, 1] = True
        keep[-1] = keep[0]  # two rows share a pattern (kernels that group rows must keep them apart correctly)
        return AttentionMask("key_padding", keep)
    if recipe in ("bool_b1", "bool_bh", "bool_2d", "bool_dead"):
        shape = {"bool_b1": (b, 1, sq, skv), "bool_bh": (b, h, sq, skv), "bool_2d": (sq, skv)}.get(
            recipe, (b, 1, sq, skv)
        )
        keep = torch.rand(*shape, generator=g) > 0.35
        keep[..., 0] = True
        if recipe == "bool_dead":
            keep[0, 0, 1] = False
            keep[1, 0, 3] = False
        return AttentionMask("bool", keep)
    if recipe == "additive_bh":
        return AttentionMask("additive", torch.randn(b, h, sq, skv, generator=g).to(dtype))
    if recipe == "additive_11_inf":
        bias = torch.randn(1, 1, sq, skv, generator=g)
        bias[..., 2] = -math.inf
        return AttentionMask("additive", bias.to(dtype))
    if recipe == "additive_dead":
        bias = torch.randn(b, 1, sq, skv, generator=g)
        bias[1, 0, 2] = -math.inf
        return AttentionMask("additive", bias.to(dtype))
    raise ValueError(f"unknown mask recipe {recipe!r}")


def _inputs(case: Case, dtype_name: str, device: str) -> tuple[Any, Any, Any, AttentionCall]:
    import torch

    from biozoo.attention.contract import AttentionCall, AttentionMask

    dtype = getattr(torch, dtype_name)
    b, h, hkv, sq, skv, d = case.shape
    g = torch.Generator().manual_seed(sum(map(ord, case.name)))
    q = torch.randn(b, h, sq, d, generator=g).to(dtype)
    k = torch.randn(b, hkv, skv, d, generator=g).to(dtype)
    v = torch.randn(b, hkv, skv, d, generator=g).to(dtype)
    if case.shared_qkv:
        k = v = q
    mask = None
    if case.mask is not None:
        made = _make_mask(case.mask, g, b, h, sq, skv, dtype)
        mask = AttentionMask(made.kind, made.tensor.to(device))
    call = AttentionCall(
        mask=mask, causal=case.causal, scale=case.scale, dropout_p=case.dropout_p, need_weights=case.need_weights
    )
    return q.to(device), k.to(device), v.to(device), call


class _Stub:
    """Just enough of a tensor for ``unsupported()`` (shape, dtype, device) to plan checks without allocating."""

    def __init__(self, shape: tuple[int, ...], dtype: Any, device: str) -> None:
        import torch

        self.shape = shape
        self.dtype = dtype
        self.device = torch.device(device)


# -- checks and reports -----------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    """One check's outcome: ``pass``, ``fail``, ``warn`` (works behind ``attend`` only) or ``skip``."""

    check: str
    status: str
    max_abs_diff: float | None = None
    tolerance: float | None = None
    detail: str = ""


@dataclass
class ConformanceReport:
    """Per-check results for one kernel; ``passed`` when nothing failed (warnings allowed)."""

    kernel: str
    available: bool
    reason: str = ""
    results: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.available and all(r.status != "fail" for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail"]

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "fail": 0, "warn": 0, "skip": 0}
        for r in self.results:
            out[r.status] += 1
        return out

    def worst_diff(self, dtype: str) -> float | None:
        """Largest max |diff| among the numeric checks of one dtype (for summaries)."""
        diffs = [r.max_abs_diff for r in self.results if r.check.endswith(f"-{dtype}") and r.max_abs_diff is not None]
        return max(diffs) if diffs else None

    def to_markdown(self) -> str:
        lines = [
            f"**{self.kernel}**: {'available' if self.available else 'unavailable: ' + self.reason}; "
            + ", ".join(f"{n} {s}" for s, n in self.counts().items()),
            "",
            "| check | status | max abs diff | tolerance | detail |",
            "|---|---|---|---|---|",
        ]
        for r in self.results:
            diff = "" if r.max_abs_diff is None else f"{r.max_abs_diff:.2e}"
            tol = "" if r.tolerance is None else f"{r.tolerance:.0e}"
            lines.append(f"| {r.check} | {r.status} | {diff} | {tol} | {r.detail} |")
        return "\n".join(lines)

    def __str__(self) -> str:
        verdict = "UNAVAILABLE" if not self.available else "PASSED" if self.passed else "FAILED"
        head = f"{self.kernel}: {verdict} ({self.counts()})"
        if not self.available:
            head += f": {self.reason}"
        bad = [f"  {r.check}: {r.status} {r.detail}" for r in self.results if r.status in ("fail", "warn")]
        return "\n".join([head, *bad])


@dataclass(frozen=True)
class Check:
    """One planned check of one kernel: a case at a dtype, either run (``claimed``) or expected to be rejected."""

    kernel: Any
    case: Case
    dtype: str
    device: str
    claimed: bool
    reference: Reference | None = None

    @property
    def id(self) -> str:
        return f"{self.case.name}-{self.dtype}" + ("" if self.claimed else "-rejected")

    def run(self) -> CheckResult:
        try:
            return self._run_claimed() if self.claimed else self._run_rejected()
        except Exception as exc:  # a crash on a claimed case is a failure, with the reason
            return CheckResult(self.id, "fail", detail=f"raised {type(exc).__name__}: {exc}")

    def assert_ok(self) -> None:
        """For pytest: fail on ``fail``, skip on ``skip``; ``warn`` passes (it is in the report)."""
        result = self.run()
        if result.status == "fail":
            raise AssertionError(f"{self.kernel.name} {result.check}: {result.detail}")
        if result.status == "skip":
            import pytest

            pytest.skip(result.detail)

    # -- claimed: compare with the reference --------------------------------------------------------------------

    def _run_claimed(self) -> CheckResult:
        import torch

        q, k, v, call = _inputs(self.case, self.dtype, self.device)
        before = [t.clone() for t in (q, k, v)] + ([call.mask.tensor.clone()] if call.mask is not None else [])
        if call.dropout_p > 0:
            torch.manual_seed(0)
        result = self.kernel(q, k, v, call)
        out = result.output
        after = [q, k, v] + ([call.mask.tensor] if call.mask is not None else [])
        if any(not torch.equal(x, y) for x, y in zip(before, after, strict=True)):
            return CheckResult(self.id, "fail", detail="modified its inputs in place")
        want_shape = (*q.shape[:-1], v.shape[-1])
        if tuple(out.shape) != want_shape or out.dtype != q.dtype:
            return CheckResult(
                self.id, "fail", detail=f"output {tuple(out.shape)} {out.dtype}, expected {want_shape} {q.dtype}"
            )
        if not bool(torch.isfinite(out).all()):
            return CheckResult(self.id, "fail", detail="non-finite output (NaN/inf; dead rows must be zeros)")
        tol = TOLERANCE[self.dtype]
        if self.kernel.caps.approximate and self.reference is None:
            return CheckResult(self.id, "skip", detail="approximate kernel and no reference= given: structure only")
        if call.dropout_p > 0:
            want = self._expected(q, k, v, _without_dropout(call))
            diff = float((out.double() - want).abs().max())
            if diff <= tol:
                return CheckResult(self.id, "fail", diff, tol, "dropout_p=0.5 gave the dropout-free output")
            detail = f"finite; differs from the dropout-free output by up to {diff:.2g}"
            return CheckResult(self.id, "pass", None, tol, detail)  # not a reference diff: kept out of worst_diff
        want = self._expected(q, k, v, call)
        diff, ok = _compare(out, want, tol)
        if not ok:
            return CheckResult(self.id, "fail", diff, tol, "output differs from the float64 reference")
        if call.need_weights:
            if result.weights is None:
                return CheckResult(self.id, "fail", diff, tol, "need_weights=True but no weights returned")
            _, probs = softmax_reference(q, k, v, call)
            wdiff, wok = _compare(result.weights, probs, tol)
            if not wok:
                return CheckResult(self.id, "fail", wdiff, tol, "weights differ from the float64 reference")
            diff = max(diff, wdiff)
        return CheckResult(self.id, "pass", diff, tol)

    def _expected(self, q: Any, k: Any, v: Any, call: AttentionCall) -> torch.Tensor:
        if self.reference is not None:
            return self.reference(q, k, v, call).double()
        return softmax_reference(q, k, v, call)[0]

    # -- not claimed: must be rejected --------------------------------------------------------------------------

    def _run_rejected(self) -> CheckResult:
        from biozoo.attention.contract import unsupported
        from biozoo.errors import AttentionError

        q, k, v, call = _inputs(self.case, self.dtype, self.device)
        lacks = ", ".join(unsupported(self.kernel.caps, call, q, k))
        try:
            with registered(self.kernel):
                _attend_named(self.kernel.name, q, k, v, call)
        except AttentionError:
            pass
        else:
            return CheckResult(self.id, "fail", detail=f"attend() ran it although it lacks {lacks}")
        try:
            out = self.kernel(q, k, v, call)
        except Exception as exc:
            detail = f"lacks {lacks}: rejected by attend(), raises {type(exc).__name__}"
            return CheckResult(self.id, "pass", detail=detail)
        if call.dropout_p > 0 or call.need_weights or (self.kernel.caps.approximate and self.reference is None):
            return CheckResult(
                self.id, "warn", detail=f"lacks {lacks}: rejected by attend(), but runs when called directly"
            )
        want = self._expected(q, k, v, call)
        diff, ok = _compare(out.output, want, TOLERANCE[self.dtype])
        if ok:
            return CheckResult(
                self.id, "pass", diff, TOLERANCE[self.dtype], f"lacks {lacks} per caps, yet correct (under-declared)"
            )
        return CheckResult(
            self.id,
            "warn",
            diff if math.isfinite(diff) else None,
            TOLERANCE[self.dtype],
            f"lacks {lacks}: rejected by attend(), but a direct call returns a wrong answer silently",
        )


def _without_dropout(call: AttentionCall) -> AttentionCall:
    from dataclasses import replace

    return replace(call, dropout_p=0.0)


def _compare(got: Any, want: Any, tol: float) -> tuple[float, bool]:
    """``(max |diff|, within atol + rtol*|want|)`` with ``atol == rtol == tol``; NaN never passes."""
    import torch

    diff = (got.double() - want).abs()
    ok = bool(torch.isfinite(got).all()) and bool((diff <= tol + tol * want.abs()).all())
    worst = float(diff.max()) if diff.numel() else 0.0
    return worst, ok


def _attend_named(name: str, q: Any, k: Any, v: Any, call: AttentionCall) -> Any:
    from biozoo.attention.selection import AttentionSettable, attend

    probe = type("ConformanceProbe", (AttentionSettable,), {})()  # a stand-in module; resolved like any model's
    probe.processor_name = name
    return attend(probe, q, k, v, call)


@contextlib.contextmanager
def registered(kernel: Any) -> Iterator[None]:
    """Make ``kernel`` what the registry returns for its name, for the duration (unregistered kernels too)."""
    from biozoo.registry import get_registry

    registry = get_registry()
    override = getattr(registry, "processor_override", None)  # proposed public API; used when the core has it
    if override is not None:
        with override(kernel):
            yield
        return
    registry.processors_by_priority()  # build auto's candidate list first, so it never caches this kernel
    cache = registry._processors  # the registry's instance cache
    missing = object()
    previous = cache.get(kernel.name, missing)
    cache[kernel.name] = kernel
    try:
        yield
    finally:
        if previous is missing:
            cache.pop(kernel.name, None)
        else:
            cache[kernel.name] = previous


# -- planning and running ---------------------------------------------------------------------------------------


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def conformance_checks(
    kernel: Any,
    *,
    dtypes: Sequence[Any] = DEFAULT_DTYPES,
    device: str = "cpu",
    reference: Reference | None = None,
    cases: Sequence[Case] = CASES,
) -> list[Check]:
    """Every check the suite runs on ``kernel``: claimed cases are compared, unclaimed ones must be rejected."""
    import torch

    from biozoo.attention.contract import unsupported

    checks = []
    for dtype in map(_dtype_name, dtypes):
        if dtype not in TOLERANCE:
            raise ValueError(f"no tolerance for dtype {dtype!r}; use one of {', '.join(TOLERANCE)}")
        tdtype = getattr(torch, dtype)
        for case in cases:
            b, h, hkv, sq, skv, d = case.shape
            call = _plan_call(case)
            lacks = unsupported(
                kernel.caps, call, _Stub((b, h, sq, d), tdtype, device), _Stub((b, hkv, skv, d), tdtype, device)
            )
            checks.append(Check(kernel, case, dtype, device, claimed=not lacks, reference=reference))
    return checks


def _plan_call(case: Case) -> AttentionCall:
    """The call of a case without tensors (mask kind only), for planning."""
    from biozoo.attention.contract import AttentionCall, AttentionMask

    mask = None
    if case.mask is not None:
        kind = "key_padding" if case.mask.startswith("key_padding") else case.mask.split("_")[0]
        mask = AttentionMask(kind, None)
    return AttentionCall(
        mask=mask, causal=case.causal, scale=case.scale, dropout_p=case.dropout_p, need_weights=case.need_weights
    )


def check_kernel(
    kernel: Any,
    *,
    dtypes: Sequence[Any] = DEFAULT_DTYPES,
    device: str = "cpu",
    reference: Reference | None = None,
    cases: Sequence[Case] = CASES,
) -> ConformanceReport:
    """Run the whole suite on ``kernel`` (an instance) and report per check; see the module docstring."""
    name = getattr(kernel, "name", type(kernel).__name__)
    ok, why = kernel.available()
    report = ConformanceReport(name, ok, why)
    if not ok:
        report.results.append(_check_unavailable(kernel, why))
        return report
    for check in conformance_checks(kernel, dtypes=dtypes, device=device, reference=reference, cases=cases):
        report.results.append(check.run())
    return report


def _check_unavailable(kernel: Any, why: str) -> CheckResult:
    """An unavailable kernel must say why, and naming it must raise ``AttentionError`` with that reason."""
    import torch

    from biozoo.attention.contract import AttentionCall
    from biozoo.errors import AttentionError

    if not why:
        return CheckResult("unavailable-named", "fail", detail="available() is False but gives no reason")
    q = torch.zeros(1, 1, 2, 8)
    try:
        with registered(kernel):
            _attend_named(kernel.name, q, q, q, AttentionCall())
    except AttentionError as exc:
        if why in str(exc):
            return CheckResult("unavailable-named", "skip", detail=f"unavailable here: {why}")
        return CheckResult("unavailable-named", "fail", detail=f"AttentionError without the reason: {exc}")
    return CheckResult("unavailable-named", "fail", detail="attend() ran a kernel whose available() is False")


def load_kernel(spec: str) -> Any:
    """``package.module:Attr`` (a class is instantiated) or a registered processor name."""
    if ":" in spec:
        from biozoo.plugins.declarations import resolve_target

        target = resolve_target(spec)
        return target() if isinstance(target, type) else target
    from biozoo.registry import get_registry

    return get_registry().processor(spec)


# -- pytest plugin (entry point pytest11) -----------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("biozoo", "biozoo attention kernel conformance")
    group.addoption(
        "--biozoo-kernel",
        action="append",
        default=[],
        metavar="MODULE:ATTR|NAME",
        help="run the attention conformance suite on this kernel (repeatable)",
    )
    group.addoption("--biozoo-kernel-dtypes", default=",".join(DEFAULT_DTYPES), help="comma-separated dtypes")
    group.addoption("--biozoo-kernel-device", default="cpu", help="device for the conformance tensors")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[Any]) -> None:
    specs = config.getoption("biozoo_kernel", default=[])
    if not specs:
        return
    item_class = _item_class()
    dtypes = [d.strip() for d in config.getoption("biozoo_kernel_dtypes").split(",") if d.strip()]
    device = config.getoption("biozoo_kernel_device")
    for spec in specs:
        kernel = load_kernel(spec)
        ok, why = kernel.available()
        if not ok:
            name = f"conformance[{kernel.name}-unavailable]"
            items.append(item_class.from_parent(session, name=name, unavailable=why))
            continue
        for check in conformance_checks(kernel, dtypes=dtypes, device=device):
            items.append(item_class.from_parent(session, name=f"conformance[{kernel.name}-{check.id}]", check=check))


def _item_class() -> type:
    import pytest

    class ConformanceItem(pytest.Item):
        """One conformance check as a pytest item (no test file needed)."""

        def __init__(self, *, check: Check | None = None, unavailable: str = "", **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.check, self.unavailable = check, unavailable

        def runtest(self) -> None:
            if self.check is None:
                pytest.skip(f"kernel unavailable here: {self.unavailable}")
            self.check.assert_ok()

        def reportinfo(self) -> tuple[Any, int | None, str]:
            return self.path, None, self.name

    return ConformanceItem


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m biozoo_attention.conformance SPEC [--dtypes float32,bfloat16] [--device cpu]``."""
    import argparse

    parser = argparse.ArgumentParser(description="attention kernel conformance")
    parser.add_argument("kernel", nargs="+", help="package.module:Attr or a registered processor name")
    parser.add_argument("--dtypes", default=",".join(DEFAULT_DTYPES))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    failed = False
    for spec in args.kernel:
        report = check_kernel(load_kernel(spec), dtypes=args.dtypes.split(","), device=args.device)
        print(report.to_markdown(), end="\n\n")
        failed = failed or (report.available and not report.passed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
