"""Safe weights: safetensors only, checked, read into private memory, assigned without a further copy.

The path (measured in ``bench/load_50m.py``): the model is built on the meta
device, each safetensors file is validated by the ``safetensors`` package and
then read once into one buffer of the process's own memory, and
``load_state_dict(assign=True)`` makes views into that buffer the model's
parameters, so there is no random init and no second copy.
Before that, every key, shape and dtype is compared and a mismatch is reported as a readable diff (the reference scGPT
code silently drops mismatching keys). Pickles are never read here.

Why not a memory map (the fastest path, and what this module once did): a
mapped file is *shared* with the file system. Editing the file after the
sha256 check changes the live parameters, and truncating it kills the process
with ``SIGBUS`` at the next forward pass. A private mapping (``MAP_PRIVATE``)
does not help on Linux: pages the process has not written still show later
edits of the file. Reading costs one copy from the page cache (about 0.1 s and
the weights' size in private memory for a 50M-parameter model, see
docs/benchmarks.md); what was checked is then what runs.

Files are opened with the ``safetensors`` package, which checks the header
(bounded size, known dtypes, offsets that tile the data exactly) before
anything is read. Its header alone bounds the model a manifest may describe
before assembly starts (a manifest claiming 100,000 layers fails in
milliseconds), and floating tensors are checked for NaN/Inf in bounded slices
the first time a file is verified.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from biozoo.errors import WeightsError
from biozoo.manifest.io import resolve_inside
from biozoo.manifest.schema import WeightFile, WeightsSpec
from biozoo.ties import drop_aliases, tie_parameters
from biozoo.utils.hashing import HashMemo, sha256_file

_SHOW = 12
MAX_INDEX_BYTES = 64 * 1024 * 1024
_FINITE_CHUNK = 4 * 1024 * 1024  # bytes per slice of the NaN/Inf scan
_FLOATS = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}  # safetensors dtype -> bytes
_TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "C64": torch.complex64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip


@dataclass(frozen=True)
class KeyDiff:
    missing: list[str]
    unexpected: list[str]
    misshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # key, expected, found

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.misshaped)

    def render(self) -> str:
        def block(title: str, items: list[str]) -> list[str]:
            if not items:
                return []
            shown = [f"    {i}" for i in items[:_SHOW]]
            more = [f"    ... and {len(items) - _SHOW} more"] if len(items) > _SHOW else []
            return [f"  {title} ({len(items)}):", *shown, *more]

        shapes = [f"{k}: model wants {list(e)}, file has {list(f)}" for k, e, f in self.misshaped]
        lines = block("missing from the weights", self.missing)
        lines += block("unexpected in the weights", self.unexpected)
        lines += block("wrong shape", shapes)
        return "\n".join(lines)


def diff_keys(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]) -> KeyDiff:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = sorted(
        (k, tuple(expected[k]), tuple(found[k]))
        for k in set(expected) & set(found)
        if tuple(expected[k]) != tuple(found[k])
    )
    return KeyDiff(missing, unexpected, misshaped)


def verify_file(path: Path, expected: WeightFile, memo: HashMemo | None = None, *, finite: bool = False) -> None:
    """Check size and sha256 the first time a file is used (remembered by path, size, mtime, ctime and inode).

    With ``finite``, a safetensors file's floating tensors must also hold no NaN/Inf
    (checked with the hash, so once per file, and remembered with it).
    """
    if not path.is_file():
        raise WeightsError(
            f"file {expected.path!r} named by the manifest is missing ({path})", "re-download or re-convert the model"
        )
    if expected.size is not None and path.stat().st_size != expected.size:
        raise WeightsError(
            f"{expected.path} has {path.stat().st_size} bytes, the manifest says {expected.size}",
            "the file is truncated or replaced; delete it (`zoo cache rm`) and download it again",
        )
    checks = ("finite",) if finite and path.name.endswith(".safetensors") else ()
    memo = memo or HashMemo()
    if memo.known(path, expected.sha256, checks):
        return
    actual = sha256_file(path)
    if actual != expected.sha256:
        raise WeightsError(
            f"sha256 mismatch for {expected.path}: manifest says {expected.sha256}, file has {actual}",
            "the file is corrupt or not the one the manifest was made for; download it again (`zoo cache rm`)",
        )
    if checks:
        check_finite(path, expected.path)
    memo.remember(path, actual, checks)


def _unreadable(path: Path, why: str) -> WeightsError:
    return WeightsError(
        f"{path.name} is not a readable safetensors file: {why}",
        "it is probably truncated or not safetensors; download or convert it again",
    )


@contextmanager
def _open(path: Path) -> Iterator[Any]:
    """``safe_open`` with its errors (bad header, offsets, dtypes, short file) as a :class:`WeightsError`."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            yield handle
    except (SafetensorError, OSError, ValueError) as exc:
        raise _unreadable(path, str(exc)) from None


def read_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (safetensors dtype, shape)}`` from the header alone: no tensor data is read."""
    with _open(path) as handle:
        return {
            key: (piece.get_dtype(), tuple(piece.get_shape()))
            for key in handle.keys()  # noqa: SIM118 - safe_open handles are not mappings
            for piece in [handle.get_slice(key)]
        }


def header_elements(paths: Iterable[Path]) -> int:
    """How many values the files hold, from their headers: the most parameters a model may have to match them."""
    return sum(math.prod(shape) for path in paths for _, shape in read_header(path).values())


def check_finite(path: Path, name: str | None = None) -> None:
    """Refuse a file whose floating tensors hold NaN or Inf, reading slices of about 4 MiB at a time."""
    bad: list[str] = []
    with _open(path) as handle:
        for key in handle.keys():  # noqa: SIM118
            piece = handle.get_slice(key)
            dtype, shape = piece.get_dtype(), piece.get_shape()
            if dtype not in _FLOATS:
                continue
            if not shape:
                chunks: Iterable[torch.Tensor] = [handle.get_tensor(key)]
            else:
                rows = max(1, _FINITE_CHUNK // max(1, math.prod(shape[1:]) * _FLOATS[dtype]))
                chunks = (piece[i : i + rows] for i in range(0, shape[0], rows))
            # float8 has no isfinite kernel: widen it
            if not all(bool(torch.isfinite(c.float() if _FLOATS[dtype] == 1 else c).all()) for c in chunks):
                bad.append(key)
    if bad:
        shown = ", ".join(repr(k) for k in bad[:_SHOW]) + (f" and {len(bad) - _SHOW} more" if len(bad) > _SHOW else "")
        raise WeightsError(
            f"{name or path.name} holds NaN/Inf values in tensor{'s' if len(bad) > 1 else ''} {shown}",
            "the weights are broken (a diverged training run or a bad conversion); a model with them computes "
            "nothing meaningful: re-download, re-convert or re-train it",
        )


def shard_paths(folder: Path, spec: WeightsSpec, trusted_root: Path | None = None) -> list[Path]:
    """The safetensors files to read: the listed ones, or the shards named by the index."""
    if spec.index is None:
        return [resolve_inside(folder, f.path, trusted_root) for f in spec.files]
    index_path = resolve_inside(folder, spec.index, trusted_root)
    hint = 'it must be JSON like {"weight_map": {"tensor.name": "model-00001-of-00002.safetensors", ...}}'
    try:
        if index_path.stat().st_size > MAX_INDEX_BYTES:
            raise ValueError(f"over {MAX_INDEX_BYTES:,} bytes")
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"shard index {spec.index} is unreadable: {exc}", hint) from None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise WeightsError(
            f"shard index {spec.index}: 'weight_map' must map tensor names to file names "
            f"(strings), got {type(weight_map).__name__}"
            + ("" if not isinstance(weight_map, dict) else " with non-string entries"),
            hint,
        )
    listed = {f.path for f in spec.files}
    shards = sorted(set(weight_map.values()))
    unlisted = [s for s in shards if s not in listed]
    if unlisted:
        raise WeightsError(
            f"shard index names files the manifest does not list (so no sha256): {', '.join(unlisted)}",
            "add each shard with its sha256 to weights.files",
        )
    return [resolve_inside(folder, s, trusted_root) for s in shards]


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of one file, read into one buffer of the process's own memory (nothing stays mapped).

    The ``safetensors`` package validates the file first (:func:`read_header`); the tensors are then
    views into a plain read of it, which must have the layout that was validated (else the file
    changed in between). One copy, no mapping: peak memory is the file's size, not twice it.
    """
    layout = read_header(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            buffer = torch.empty(size, dtype=torch.uint8)
            view = memoryview(buffer.numpy())
            done = 0
            while done < size and (got := handle.readinto(view[done:])):
                done += got
    except OSError as exc:
        raise _unreadable(path, str(exc)) from None
    changed = _unreadable(path, "it changed while it was read; run the command again")
    length = int.from_bytes(view[:8], "little") if done == size >= 8 else -1
    try:
        header = json.loads(bytes(view[8 : 8 + length])) if 0 < length <= size - 8 else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise changed
    tensors = {}
    for key, (name, shape) in layout.items():
        info, dtype = header.get(key), _TORCH_DTYPES[name]
        if not isinstance(info, dict) or info.get("dtype") != name or tuple(info.get("shape", ())) != shape:
            raise changed
        begin, end = (8 + length + offset for offset in info["data_offsets"])
        if end - begin != math.prod(shape) * dtype.itemsize or end > size:
            raise changed
        raw = buffer[begin:end]
        if begin % dtype.itemsize:  # the format does not align tensors; views need alignment: copy (rare)
            raw = raw.clone()
        tensors[key] = raw.view(dtype).reshape(shape)
    return tensors


def read_state_dict(files: Iterable[Path]) -> dict[str, torch.Tensor]:
    """Every tensor of every file, in private memory; duplicate keys across shards are an error."""
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for path in files:
        for key, tensor in read_safetensors(path).items():
            if key in state:
                raise WeightsError(f"tensor {key!r} is in both {origin[key]} and {path.name}")
            state[key] = tensor
            origin[key] = path.name
    return state


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_dtypes(model: nn.Module, state: Mapping[str, torch.Tensor], *, cast: bool) -> None:
    """Refuse weights whose dtypes the model cannot run: integers for floats, or a mix of float dtypes.

    Unless ``cast`` (a dtype was asked for, so every floating tensor becomes that one).
    """
    expected = model.state_dict(keep_vars=True)

    def kind(t: torch.Tensor) -> str:
        return "floating" if t.is_floating_point() or t.is_complex() else "bool" if t.dtype == torch.bool else "integer"

    wrong = [
        f"{k}: model wants {_name(expected[k].dtype)}, file has {_name(v.dtype)}"
        for k, v in state.items()
        if k in expected and kind(v) != kind(expected[k])
    ]
    if wrong:
        raise WeightsError(
            f"the weights hold {len(wrong)} tensor(s) of the wrong kind of dtype:\n"
            + "\n".join(f"    {w}" for w in wrong[:_SHOW])
            + (f"\n    ... and {len(wrong) - _SHOW} more" if len(wrong) > _SHOW else ""),
            "a float parameter cannot hold integers or booleans (nor the reverse): re-convert the checkpoint, "
            "or re-save each tensor with the kind of dtype the model has",
        )
    by_dtype: dict[torch.dtype, list[str]] = {}
    for k, v in state.items():
        if v.is_floating_point():
            by_dtype.setdefault(v.dtype, []).append(k)
    if len(by_dtype) > 1 and not cast:
        groups = sorted(by_dtype.items(), key=lambda item: -len(item[1]))
        detail = "; ".join(
            f"{_name(dt)}: {len(keys)} tensor(s)"
            + (f" ({', '.join(sorted(keys)[:_SHOW])}{' ...' if len(keys) > _SHOW else ''})" if i else "")
            for i, (dt, keys) in enumerate(groups)
        )
        raise WeightsError(
            f"the weights mix floating dtypes ({detail})",
            "save them in one dtype, or load with a dtype to cast them all (--dtype float32, dtype= in Python)",
        )


def load_into(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    ties: Mapping[str, str] | None = None,
) -> nn.Module:
    """Strictly assign ``state`` to a (meta-built) model; cast/move only when asked.

    ``ties`` (the manifest's ``tie``, alias -> source): the file holds each source only (an alias it also
    carries must be equal), and the alias is the source's Parameter again after loading.
    """
    ties = ties or {}
    state = drop_aliases(state, ties)
    expected = {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items() if k not in ties}
    found = {k: tuple(v.shape) for k, v in state.items()}
    diff = diff_keys(expected, found)
    if not diff.ok:
        raise WeightsError(
            "the weights do not match the model the manifest describes:\n" + diff.render(),
            "check the manifest's component configs against the checkpoint; "
            "for a reference checkpoint use `zoo convert`",
        )
    check_dtypes(model, state, cast=dtype is not None)
    if dtype is not None or device is not None:
        target_device = torch.device(device) if device is not None else None
        state = {
            k: v.to(device=target_device, dtype=dtype if (dtype is not None and v.is_floating_point()) else None)
            for k, v in state.items()
        }
    state = {**state, **{alias: state[source] for alias, source in ties.items()}}  # views, no copies
    if _plain_modules(model):
        _assign(model, state)
    else:
        model.load_state_dict(state, strict=True, assign=True)
    tie_parameters(model, ties)  # assignment gave the alias a Parameter of its own
    materialize_non_persistent(model, device or "cpu")
    return model


def _plain_modules(model: nn.Module) -> bool:
    """True when no module customises state-dict loading, so tensors can be assigned directly."""
    for module in model.modules():
        if module._load_state_dict_pre_hooks or module._load_state_dict_post_hooks:
            return False
        if type(module)._load_from_state_dict is not nn.Module._load_from_state_dict:
            return False
    return True


def _assign(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """What ``load_state_dict(assign=True)`` does for plain modules, without its per-module machinery.

    Keys and shapes were already checked to match exactly.
    """
    modules = dict(model.named_modules())
    for key, tensor in state.items():
        owner, _, name = key.rpartition(".")
        module = modules[owner]
        if name in module._parameters:
            old = module._parameters[name]
            module._parameters[name] = nn.Parameter(tensor, requires_grad=old.requires_grad)
        else:
            module._buffers[name] = tensor


def materialize_non_persistent(model: nn.Module, device: str | torch.device) -> None:
    """Buffers outside the state dict are still on meta after assign: let modules rebuild them, then check."""
    for module in model.modules():
        reset = getattr(module, "reset_non_persistent_buffers", None)
        if callable(reset):
            reset(torch.device(device))
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise WeightsError(
            f"tensors still uninitialised after loading: {', '.join(left[:_SHOW])}",
            "a component keeps a non-persistent buffer; it must define reset_non_persistent_buffers(device)",
        )
