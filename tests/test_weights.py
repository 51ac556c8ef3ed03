"""Weights: strict keys with a readable diff, sha256, truncation, shards, private memory, dtypes, NaN."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

import biozoo
from biozoo.errors import WeightsError
from tests.support.models import random_state, sha256, tiny_manifest, write_model


def _inputs() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    return {"input_ids": ids, "padding_mask": ids.eq(0)}


def test_loaded_model_uses_exactly_the_stored_weights(tmp_path: Path) -> None:
    state = random_state(tiny_manifest(), seed=3)
    write_model(tmp_path, state=state)
    model = biozoo.load(tmp_path)
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    assert model.zoo.report.parameters == sum(v.numel() for v in state.values())
    assert not model.training


_EDIT_AFTER_LOAD = r"""
import os, sys, torch, biozoo
folder = sys.argv[1]
path = os.path.join(folder, "model.safetensors")
model = biozoo.load(folder)
before = {k: v.clone() for k, v in model.state_dict().items()}
size = os.path.getsize(path)
with open(path, "r+b") as f:  # zero the second half in place: same file, same inode, same size
    f.seek(size // 2)
    f.write(bytes(size - size // 2))
changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
assert not changed, f"live parameters followed the file: {changed}"
os.truncate(path, 16)
ids = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
with torch.no_grad():
    out = model(input_ids=ids, padding_mask=ids.eq(0))
assert torch.isfinite(out["logits"]).all()
print("unchanged")
"""


def test_loaded_weights_do_not_follow_the_file(tmp_path: Path) -> None:
    """Once checked, the weights are the process's own: editing or truncating the file changes nothing.

    Runs in a child process: with a shared mapping, the truncation ends it with SIGBUS.
    """
    write_model(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", _EDIT_AFTER_LOAD, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"rc {proc.returncode}: {proc.stderr[-2000:]}"
    assert "unchanged" in proc.stdout


def test_memo_is_not_fooled_by_a_restored_mtime(tmp_path: Path) -> None:
    """Rewritten in place at the same size with its mtime put back: the ctime still changed, so it is re-hashed."""
    write_model(tmp_path)
    biozoo.load(tmp_path)  # verified and remembered
    path = tmp_path / "model.safetensors"
    before = path.stat()
    with open(path, "r+b") as handle:  # same inode, same size
        handle.seek(-4, os.SEEK_END)
        handle.write(b"\x01\x02\x03\x04")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    for _ in range(1000):  # the kernel's clock is coarse: touch until the ctime moves (it always does)
        if path.stat().st_ctime_ns != before.st_ctime_ns:
            break
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        biozoo.load(tmp_path)


def test_missing_unexpected_and_misshaped_keys_are_listed(tmp_path: Path) -> None:
    state = random_state(tiny_manifest())
    del state["head.out.bias"]
    state["head.extra.weight"] = torch.zeros(2)
    state["embedding.embedding.weight"] = torch.zeros(5, 16)
    write_model(tmp_path, state=state)
    with pytest.raises(WeightsError) as info:
        biozoo.load(tmp_path)
    text = str(info.value)
    assert "missing from the weights (1):\n    head.out.bias" in text
    assert "unexpected in the weights (1):\n    head.extra.weight" in text
    assert "embedding.embedding.weight: model wants [11, 16], file has [5, 16]" in text


def test_sha256_mismatch(tmp_path: Path) -> None:
    write_model(tmp_path)
    manifest = yaml.safe_load((tmp_path / "manifest.yaml").read_text())
    manifest["weights"]["files"][0]["sha256"] = "f" * 64
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(WeightsError, match="sha256 mismatch for model.safetensors"):
        biozoo.load(tmp_path)


def test_file_changed_after_first_verification_is_caught(tmp_path: Path) -> None:
    write_model(tmp_path)
    biozoo.load(tmp_path)  # verified and remembered
    path = tmp_path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        biozoo.load(tmp_path)


def test_truncated_safetensors(tmp_path: Path) -> None:
    write_model(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    manifest = yaml.safe_load((tmp_path / "manifest.yaml").read_text())
    manifest["weights"]["files"][0]["sha256"] = sha256(path)  # hash matches: the format check must catch it
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(WeightsError, match="not a readable safetensors file.*truncated|truncated"):
        biozoo.load(tmp_path)


def test_missing_weights_file(tmp_path: Path) -> None:
    write_model(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="is missing"):
        biozoo.load(tmp_path)


def test_sharded_weights_with_index(tmp_path: Path) -> None:
    manifest = tiny_manifest()
    state = random_state(manifest, seed=5)
    keys = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    files = []
    for name, names in shards.items():
        save_file({k: state[k] for k in names}, tmp_path / name)
        files.append({"path": name, "sha256": sha256(tmp_path / name)})
    index = {"metadata": {}, "weight_map": {k: n for n, ks in shards.items() for k in ks}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    files.append({"path": "model.safetensors.index.json", "sha256": sha256(tmp_path / "model.safetensors.index.json")})
    manifest["weights"] = {"source": ".", "index": "model.safetensors.index.json", "files": files}
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    model = biozoo.load(tmp_path)
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value)


def test_dtype_option_casts_floating_weights(tmp_path: Path) -> None:
    write_model(tmp_path)
    model = biozoo.load(tmp_path, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        out = model(**_inputs())
    assert out["logits"].dtype == torch.bfloat16
    with pytest.raises(Exception, match="unknown dtype 'float8'"):
        biozoo.load(tmp_path, dtype="float8")


def test_identical_outputs_to_a_cpu_built_model(tmp_path: Path) -> None:
    """The meta-built, assigned model computes what the same model built normally computes."""
    from biozoo.assembly import assemble
    from biozoo.manifest.io import parse_manifest

    torch.manual_seed(0)
    reference = assemble(parse_manifest(tiny_manifest()), device="cpu").eval()
    write_model(tmp_path, state={k: v.clone() for k, v in reference.state_dict().items()})
    loaded = biozoo.load(tmp_path)
    with torch.no_grad():
        a, b = reference(**_inputs()), loaded(**_inputs())
    assert torch.equal(a["logits"], b["logits"])


def _rewrite_weights(folder: Path, state: dict[str, torch.Tensor]) -> None:
    """Replace the weights and put their true sha256 in the manifest (the hash check passes)."""
    save_file(state, folder / "model.safetensors")
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    manifest["weights"]["files"] = [{"path": "model.safetensors", "sha256": sha256(folder / "model.safetensors")}]
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))


def test_manifest_far_bigger_than_its_weights_fails_before_building_it(tmp_path: Path) -> None:
    """`num_layers: 100000` used to build every layer on meta (86 s, 4.9 GB) before the key check."""
    manifest = tiny_manifest()
    write_model(tmp_path, manifest=manifest)
    data = yaml.safe_load((tmp_path / "manifest.yaml").read_text())
    data["components"]["encoder"]["config"]["num_layers"] = 100_000
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(WeightsError, match=r"components.encoder: the manifest describes a model with far more para"):
        biozoo.load(tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_when_first_verified(tmp_path: Path, bad: float) -> None:
    state = random_state(tiny_manifest())
    state["head.out.weight"][1, 2] = bad
    write_model(tmp_path, state=state)  # the sha256 matches: the file is exactly what the manifest names
    for _ in range(2):  # a refused file is not remembered as checked
        with pytest.raises(WeightsError, match=r"model.safetensors holds NaN/Inf values in tensor 'head.out.weight'"):
            biozoo.load(tmp_path)


def test_a_hash_remembered_without_the_finite_check_is_checked_again(tmp_path: Path) -> None:
    """Files verified elsewhere (the Hub download verifies hashes only) still get the NaN check at load."""
    from biozoo.manifest.schema import WeightFile
    from biozoo.weights import verify_file

    state = random_state(tiny_manifest())
    state["encoder.layers.0.linear1.bias"][0] = float("nan")
    write_model(tmp_path, state=state)
    path = tmp_path / "model.safetensors"
    verify_file(path, WeightFile(path="model.safetensors", sha256=sha256(path)))  # remembered: hash only
    with pytest.raises(WeightsError, match="NaN/Inf values in tensor 'encoder.layers.0.linear1.bias'"):
        biozoo.load(tmp_path)
    biozoo.load(tmp_path, verify_hashes=False)  # not verifying means not checking either


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_integer_weights_for_a_float_model_are_refused(tmp_path: Path, dtype: torch.dtype) -> None:
    write_model(tmp_path)
    state = {k: v.to(dtype) for k, v in random_state(tiny_manifest()).items()}
    _rewrite_weights(tmp_path, state)
    kind = str(dtype).removeprefix("torch.")
    with pytest.raises(WeightsError, match=rf"wrong kind of dtype:\n    \S+: model wants float32, file has {kind}"):
        biozoo.load(tmp_path)


def test_mixed_float_dtypes_are_refused_unless_cast(tmp_path: Path) -> None:
    write_model(tmp_path)
    state = random_state(tiny_manifest())
    state["head.out.weight"] = state["head.out.weight"].half()
    _rewrite_weights(tmp_path, state)
    with pytest.raises(WeightsError, match=r"mix floating dtypes \(float32: \d+ tensor\(s\); float16: 1 tensor\(s\) "):
        biozoo.load(tmp_path)
    with pytest.raises(WeightsError, match=r"\(head.out.weight\)"):
        biozoo.load(tmp_path)
    model = biozoo.load(tmp_path, dtype="float32")  # asked for one dtype: every tensor is cast to it
    assert {p.dtype for p in model.parameters()} == {torch.float32}


@pytest.mark.parametrize(
    "weight_map",
    [["a.safetensors"], "a.safetensors", {"head.out.weight": 3}, {"head.out.weight": None}],
)
def test_malformed_shard_index_is_a_weights_error(tmp_path: Path, weight_map: object) -> None:
    write_model(tmp_path)
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": weight_map}))
    manifest = yaml.safe_load((tmp_path / "manifest.yaml").read_text())
    manifest["weights"]["index"] = index.name
    manifest["weights"]["files"].append({"path": index.name, "sha256": sha256(index)})
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(WeightsError, match="'weight_map' must map tensor names to file names"):
        biozoo.load(tmp_path)


def _safetensors_bytes(header: object, data: bytes = b"") -> bytes:
    """A hand-made file; JSON headers are padded to 8 bytes, as writers do, so data starts aligned."""
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    raw += b" " * (-len(raw) % 8) if not isinstance(header, bytes) else b""
    return len(raw).to_bytes(8, "little") + raw + data


@pytest.mark.parametrize(
    "content",
    [
        b"\x01",
        (10**12).to_bytes(8, "little") + b"{}",
        _safetensors_bytes(b"{not json"),
        _safetensors_bytes(b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {}}', bytes(4)),
        _safetensors_bytes([1, 2]),
        _safetensors_bytes({"a": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}}, bytes(4)),
        _safetensors_bytes({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, bytes(4)),
        _safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4)),
        _safetensors_bytes({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)),
        _safetensors_bytes({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(8)),
        _safetensors_bytes({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 99]}}, bytes(4)),
        _safetensors_bytes({"a": {"dtype": "F32", "shape": [1]}}, bytes(4)),
        _safetensors_bytes({"a": {"dtype": "F32", "shape": [10**12, 10**12], "data_offsets": [0, 4]}}, bytes(4)),
    ],
)
def test_malformed_safetensors_are_refused(tmp_path: Path, content: bytes) -> None:
    """Every reader (header only, NaN scan, full read) refuses a malformed file with one clear error."""
    from biozoo.weights import check_finite, read_header, read_safetensors

    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    for read in (read_header, check_finite, read_safetensors):
        with pytest.raises(WeightsError, match="x.safetensors is not a readable safetensors file: "):
            read(path)


def test_tensors_at_unaligned_offsets_read_correctly(tmp_path: Path) -> None:
    """The format does not align tensors: an f32 after three f16 values starts at an odd multiple of 2."""
    from biozoo.weights import read_safetensors

    half, single = torch.tensor([1.5, -2.0, 3.25], dtype=torch.float16), torch.tensor([[7.0, -0.5]])
    header = {
        "__metadata__": {"format": "pt"},
        "h": {"dtype": "F16", "shape": [3], "data_offsets": [0, 6]},
        "s": {"dtype": "F32", "shape": [1, 2], "data_offsets": [6, 14]},
    }
    path = tmp_path / "x.safetensors"
    path.write_bytes(_safetensors_bytes(header, half.numpy().tobytes() + single.numpy().tobytes()))
    tensors = read_safetensors(path)
    assert torch.equal(tensors["h"], half) and torch.equal(tensors["s"], single)


def _copy_tiny_transformer(tmp_path: Path) -> Path:
    import shutil

    from biozoo._core_plugin import registry_dir

    folder = tmp_path / "tiny"
    shutil.copytree(registry_dir() / "core" / "tiny-transformer", folder)
    return folder


def test_explain_checks_the_test_vectors_sha256_as_verify_does(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from biozoo import api

    folder = _copy_tiny_transformer(tmp_path)
    vectors = load_file(str(folder / "test_vectors.safetensors"))
    vectors["input.input_ids"] = torch.randint(0, 2, vectors["input.input_ids"].shape)
    save_file(vectors, folder / "test_vectors.safetensors")  # replaced; the manifest's sha256 is unchanged
    for run in (api.explain_model, api.verify):
        with pytest.raises(WeightsError, match="sha256 mismatch for test_vectors.safetensors"):
            run(folder)


def test_nan_in_a_registry_model_is_refused_by_the_cli(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tests.support.cli import zoo

    folder = _copy_tiny_transformer(tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    key = sorted(k for k, v in state.items() if v.is_floating_point())[-1]
    state[key].view(-1)[0] = float("nan")
    save_file(state, folder / "model.safetensors")
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    manifest["weights"]["files"][0].update(sha256=sha256(folder / "model.safetensors"), size=None)
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    proc = zoo("load", str(folder))
    assert proc.returncode == 1, proc.stdout
    assert f"holds NaN/Inf values in tensor {key!r}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_loaded_model_carries_one_typed_record() -> None:
    import biozoo
    from biozoo.api import LoadReport, ZooRecord, zoo_record

    model = biozoo.load("core/tiny-transformer")
    assert isinstance(model.zoo, ZooRecord) and zoo_record(model) is model.zoo
    assert model.zoo.manifest.id == "core/tiny-transformer" and isinstance(model.zoo.report, LoadReport)
    assert model.zoo.location.file("manifest.yaml").is_file()
    assert not [name for name in vars(model) if name.startswith("zoo_")]  # no loose zoo_* attributes left
    assert zoo_record(object()) is None
