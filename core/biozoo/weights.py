"""Safe weights: safetensors only, checked, read into private memory, assigned without a further copy.

The path (measured in ``bench/load_50m.py``): the model is built on the meta
device, each safetensors file is read once into one buffer of the process's
own memory, and its tensors are views into that buffer which
``load_state_dict(assign=True)`` makes the model's parameters, so there is no
random init and no second copy. Before that, every key, shape and dtype is
compared and a mismatch is reported as a readable diff (the reference scGPT
code silently drops mismatching keys). Pickles are never read here.

Why not a memory map (the fastest path, and what this module once did): a
mapped file is *shared* with the file system. Editing the file after the
sha256 check changes the live parameters, and truncating it kills the process
with ``SIGBUS`` at the next forward pass. A private mapping (``MAP_PRIVATE``)
does not help on Linux: pages the process has not written still show later
edits of the file. Reading costs one copy from the page cache (about 0.1 s and
the weights' size in private memory for a 50M-parameter model, see
docs/benchmarks.md); what was checked is then what runs.

The safetensors format is parsed here (8-byte length, JSON header, one data
buffer) rather than by the ``safetensors`` package, with every check that
package makes (bounded header, known dtypes, offsets that tile the buffer
exactly), so the header can also be read alone: its element count bounds the
model a manifest may describe before assembly starts (a manifest claiming
100,000 layers fails in milliseconds), and floating tensors are checked for
NaN/Inf in bounded chunks the first time a file is verified.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from biozoo.errors import WeightsError
from biozoo.manifest.io import resolve_inside
from biozoo.manifest.schema import WeightFile, WeightsSpec
from biozoo.utils.hashing import HashMemo, sha256_file

_SHOW = 12
MAX_HEADER_BYTES = 100_000_000  # the safetensors package's own limit
MAX_INDEX_BYTES = 64 * 1024 * 1024
_FINITE_CHUNK = 4 * 1024 * 1024  # bytes per chunk of the NaN/Inf scan
_DTYPES: dict[str, torch.dtype] = {
    name: getattr(torch, attr)
    for name, attr in {
        "F64": "float64",
        "F32": "float32",
        "F16": "float16",
        "BF16": "bfloat16",
        "F8_E4M3": "float8_e4m3fn",
        "F8_E5M2": "float8_e5m2",
        "C64": "complex64",
        "I64": "int64",
        "I32": "int32",
        "I16": "int16",
        "I8": "int8",
        "U64": "uint64",
        "U32": "uint32",
        "U16": "uint16",
        "U8": "uint8",
        "BOOL": "bool",
    }.items()
    if hasattr(torch, attr)
}


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


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file: dtype, shape and byte range in the data buffer."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    entries: dict[str, TensorEntry]
    data_start: int  # file offset of the data buffer

    @property
    def elements(self) -> int:
        return sum(e.numel for e in self.entries.values())


def _unreadable(path: Path, why: str) -> WeightsError:
    return WeightsError(
        f"{path.name} is not a readable safetensors file: {why}",
        "it is probably truncated or not safetensors; download or convert it again",
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate tensor names in the header: {sorted({k for k in keys if keys.count(k) > 1})}")
    return dict(pairs)


def parse_header(path: Path, prefix: bytes, file_size: int) -> SafetensorsHeader:
    """Parse and check a header (``prefix`` holds at least its first 8 + length bytes); allocates nothing else."""
    if file_size < 8 or len(prefix) < 8:
        raise _unreadable(path, f"only {file_size} bytes")
    length = int.from_bytes(prefix[:8], "little")
    if length > MAX_HEADER_BYTES or 8 + length > file_size:
        raise _unreadable(path, f"header length {length} does not fit the file ({file_size} bytes)")
    if len(prefix) < 8 + length:
        raise _unreadable(path, "the header is cut short")
    try:
        raw = json.loads(bytes(prefix[8 : 8 + length]).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _unreadable(path, f"bad header: {exc}") from None
    if not isinstance(raw, dict):
        raise _unreadable(path, "the header is not a JSON object")
    data_size = file_size - 8 - length
    entries: dict[str, TensorEntry] = {}
    for name, info in raw.items():
        if name == "__metadata__":
            continue
        entries[name] = _entry(path, name, info, data_size)
    cursor = 0
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != cursor:
            raise _unreadable(path, f"tensor {name!r} starts at byte {entry.begin}, expected {cursor} (gap or overlap)")
        cursor = entry.end
    if cursor != data_size:
        raise _unreadable(path, f"the tensors cover {cursor} of {data_size} data bytes (truncated?)")
    return SafetensorsHeader(entries, 8 + length)


def _entry(path: Path, name: str, info: Any, data_size: int) -> TensorEntry:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise _unreadable(path, f"tensor {name!r} needs exactly dtype, shape and data_offsets")
    dtype = _DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
    if dtype is None:
        raise _unreadable(path, f"tensor {name!r} has unsupported dtype {info['dtype']!r}")
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise _unreadable(path, f"tensor {name!r} has a bad shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_size
    ):
        raise _unreadable(path, f"tensor {name!r} has bad data_offsets {offsets!r}")
    entry = TensorEntry(dtype, tuple(shape), offsets[0], offsets[1])
    if entry.numel * dtype.itemsize != entry.end - entry.begin:
        raise _unreadable(path, f"tensor {name!r}: {list(shape)} {info['dtype']} does not fill bytes {offsets}")
    return entry


def _read_exactly(handle: BinaryIO, into: memoryview, path: Path) -> None:
    done = 0
    while done < len(into):
        got = handle.readinto(into[done:])
        if not got:
            raise _unreadable(path, f"the file ended after {done} of {len(into)} bytes (changed while reading?)")
        done += got


def read_header(path: Path) -> SafetensorsHeader:
    """The header alone: a bounded read, no tensor data."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            prefix = handle.read(8)
            if len(prefix) == 8:
                prefix += handle.read(min(int.from_bytes(prefix, "little"), MAX_HEADER_BYTES))
    except OSError as exc:
        raise _unreadable(path, str(exc)) from None
    return parse_header(path, prefix, size)


def header_elements(paths: Iterable[Path]) -> int:
    """How many values the files hold, from their headers: the most parameters a model may have to match them."""
    return sum(read_header(path).elements for path in paths)


def check_finite(path: Path, name: str | None = None) -> None:
    """Refuse a file whose floating tensors hold NaN or Inf, reading it in bounded chunks."""
    header = read_header(path)
    scratch = torch.empty(_FINITE_CHUNK, dtype=torch.uint8)
    bad: list[str] = []
    with open(path, "rb") as handle:
        for key, entry in header.entries.items():
            if not (entry.dtype.is_floating_point or entry.dtype.is_complex):
                continue
            step = _FINITE_CHUNK - _FINITE_CHUNK % entry.dtype.itemsize
            handle.seek(header.data_start + entry.begin)
            for offset in range(entry.begin, entry.end, step):
                n = min(step, entry.end - offset)
                _read_exactly(handle, memoryview(scratch.numpy())[:n], path)
                values = scratch[:n].view(entry.dtype)
                if entry.dtype.itemsize == 1:  # float8: no isfinite kernel
                    values = values.float()
                if not bool(torch.isfinite(values).all()):
                    bad.append(key)
                    break
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
    """Every tensor of one file, read into one private buffer (views into it; no mapping of the file)."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            buffer = torch.empty(size, dtype=torch.uint8)
            _read_exactly(handle, memoryview(buffer.numpy()), path)
    except OSError as exc:
        raise _unreadable(path, str(exc)) from None
    header = parse_header(path, memoryview(buffer.numpy())[: 8 + MAX_HEADER_BYTES], size)
    tensors = {}
    for key, entry in header.entries.items():
        raw = buffer[header.data_start + entry.begin : header.data_start + entry.end]
        if (header.data_start + entry.begin) % entry.dtype.itemsize:  # unaligned for its dtype: copy (rare)
            aligned = torch.empty(entry.numel, dtype=entry.dtype)
            aligned.view(torch.uint8).copy_(raw)
            raw = aligned
        tensors[key] = raw.view(entry.dtype).reshape(entry.shape)
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
) -> nn.Module:
    """Strictly assign ``state`` to a (meta-built) model; cast/move only when asked."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}
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
    if _plain_modules(model):
        _assign(model, state)
    else:
        model.load_state_dict(state, strict=True, assign=True)
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
