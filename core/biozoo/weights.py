"""Safe weights: safetensors only, checked, memory-mapped, assigned without a copy.

The fast path (measured in ``bench/``): the model is built on the meta device,
the safetensors files are memory-mapped, and ``load_state_dict(assign=True)``
makes the model's parameters *be* the mapped tensors, so there is no random
init and no second copy. Before that, every key and shape is compared and a
mismatch is reported as a readable diff (the reference scGPT code silently
drops mismatching keys). Pickles are never read here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from biozoo.errors import WeightsError
from biozoo.manifest.io import resolve_inside
from biozoo.manifest.schema import WeightFile, WeightsSpec
from biozoo.utils.hashing import HashMemo, sha256_file

_SHOW = 12


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


def verify_file(path: Path, expected: WeightFile, memo: HashMemo | None = None) -> None:
    """Check size and sha256 the first time a file is used (remembered by path+size+mtime)."""
    if not path.is_file():
        raise WeightsError(
            f"file {expected.path!r} named by the manifest is missing ({path})", "re-download or re-convert the model"
        )
    if expected.size is not None and path.stat().st_size != expected.size:
        raise WeightsError(
            f"{expected.path} has {path.stat().st_size} bytes, the manifest says {expected.size}",
            "the file is truncated or replaced; delete it (`zoo cache rm`) and download it again",
        )
    memo = memo or HashMemo()
    if memo.known(path, expected.sha256):
        return
    actual = sha256_file(path)
    if actual != expected.sha256:
        raise WeightsError(
            f"sha256 mismatch for {expected.path}: manifest says {expected.sha256}, file has {actual}",
            "the file is corrupt or not the one the manifest was made for; download it again (`zoo cache rm`)",
        )
    memo.remember(path, actual)


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(
            f"{path.name} is not a readable safetensors file: {exc}",
            "it is probably truncated or not safetensors; download or convert it again",
        ) from None


def shard_paths(folder: Path, spec: WeightsSpec, trusted_root: Path | None = None) -> list[Path]:
    """The safetensors files to read: the listed ones, or the shards named by the index."""
    if spec.index is None:
        return [resolve_inside(folder, f.path, trusted_root) for f in spec.files]
    index_path = resolve_inside(folder, spec.index, trusted_root)
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(
            f"shard index {spec.index} is unreadable: {exc}", "it must be JSON with a 'weight_map'"
        ) from None
    listed = {f.path for f in spec.files}
    shards = sorted(set(weight_map.values()))
    unlisted = [s for s in shards if s not in listed]
    if unlisted:
        raise WeightsError(
            f"shard index names files the manifest does not list (so no sha256): {', '.join(unlisted)}",
            "add each shard with its sha256 to weights.files",
        )
    return [resolve_inside(folder, s, trusted_root) for s in shards]


def read_state_dict(files: Iterable[Path]) -> dict[str, torch.Tensor]:
    """Memory-map every tensor of every file (no copy); duplicate keys across shards are an error."""
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for path in files:
        with _open(path) as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open handles are not mappings
                if key in state:
                    raise WeightsError(f"tensor {key!r} is in both {origin[key]} and {path.name}")
                try:
                    state[key] = handle.get_tensor(key)
                except (SafetensorError, RuntimeError) as exc:
                    raise WeightsError(
                        f"{path.name}: tensor {key!r} cannot be read ({exc})",
                        "the file is probably truncated; download or convert it again",
                    ) from None
                origin[key] = path.name
    return state


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
