"""Weights: strict keys with a readable diff, sha256, truncation, shards, mmap, dtype."""

from __future__ import annotations

import json
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
    assert model.zoo_report.parameters == sum(v.numel() for v in state.values())
    assert not model.training


def _mapped_ranges(path: Path) -> list[tuple[int, int]]:
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path.resolve())):
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            ranges.append((start, end))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_weights_are_memory_mapped_not_copied(tmp_path: Path) -> None:
    write_model(tmp_path)
    model = biozoo.load(tmp_path)
    ranges = _mapped_ranges(tmp_path / "model.safetensors")
    assert ranges, "the weights file is not memory-mapped"
    for name, param in model.named_parameters():
        ptr = param.data_ptr()
        assert any(start <= ptr < end for start, end in ranges), f"{name} was copied out of the mapping"


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
