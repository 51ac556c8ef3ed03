"""``zoo convert chroma``: a reference-saved backbone ``.pt`` -> a model folder that denoises as the reference does.

The ``.pt`` files are made here the way the reference's ``save_model`` makes them (``torch.save`` of
``{"init_kwargs": model.kwargs, "model_state_dict": model.state_dict()}``), from the backbone golden files' random
weights and init_kwargs (golden/PROVENANCE.md): init_kwargs as ``GraphBackbone`` saves its ``locals()`` (every
argument, tuples, and the ``kwargs`` catch-all) and the reference's own state dict, buffers and constants included.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_chroma_backbone import TOL, golden, reference_state

import biozoo
from biozoo.errors import WeightsError
from biozoo.weights import read_safetensors
from biozoo_chroma.backbone import ChromaBackbone
from biozoo_chroma.convert import LICENSE, convert_checkpoint
from biozoo_chroma.graph import convert_reference_state_dict

# GraphBackbone's signature, as its saved init_kwargs carry it (tuples where the reference has tuples)
SIGNATURE = {
    k: p.default
    for k, p in inspect.signature(ChromaBackbone.__init__).parameters.items()
    if k not in ("self", "kwargs")
}


def as_tuples(value: object) -> object:
    """JSON lists back to the tuples a pickled init_kwargs holds."""
    if isinstance(value, list):
        return tuple(as_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: as_tuples(v) for k, v in value.items()}
    return value


def reference_checkpoint(name: str) -> dict:
    d, meta = golden(name)
    init_kwargs = {**SIGNATURE, **as_tuples(json.loads(meta["init_kwargs"])), "kwargs": {}}
    return {"init_kwargs": init_kwargs, "model_state_dict": reference_state(d)}


def save(tmp_path: Path, data: object, name: str = "chroma_backbone.pt") -> Path:
    path = tmp_path / name
    torch.save(data, path)
    return path


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "biozoo.cli.app", *args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd
    )


@pytest.mark.parametrize("name", ["knn", "random_log", "global"])
def test_converted_folder_denoises_as_the_reference(tmp_path: Path, name: str) -> None:
    out = convert_checkpoint(save(tmp_path, reference_checkpoint(name)), tmp_path / "out")
    model = biozoo.load(out)
    d, meta = golden(name)
    seed = int(meta["seed"])
    with torch.no_grad():
        for t in json.loads(meta["times"]):
            torch.manual_seed(seed + 1)  # random graphs drawn as the golden script drew them
            got = model.denoise(d[f"X_t.{t}"], d["C"], t, dither=False)
            assert float((got - d[f"X0.{t}"]).abs().max()) <= TOL, (name, t)
    # every tensor of the reference kept (buffers too), values untouched; only the constant tables dropped
    weights = read_safetensors(out / "model.safetensors")
    expected = convert_reference_state_dict(reference_state(d))
    assert set(weights) == set(expected) and any(".node_means_" in k for k in weights) and "time_features.B" in weights
    assert all(torch.equal(weights[k], v) for k, v in expected.items())
    assert all(check.ok for check in biozoo.verify(out))  # the test vectors, re-run
    manifest = model.zoo.manifest
    assert manifest.license == LICENSE and manifest.metadata["redistributable"] is False
    assert "academic" in manifest.metadata["license"] and "Do not publish" in manifest.metadata["license"]
    assert manifest.architecture.config["noise_log_snr_range"] == [-7.0, 13.5]  # tuples -> lists
    assert manifest.architecture.config["kwargs"] == {}


def test_forward_is_deterministic_in_eval_for_verification() -> None:
    """``zoo verify`` calls model(**inputs): in eval the dithers are off and random graphs seeded."""
    d, meta = golden("random_log")
    m = ChromaBackbone(**json.loads(meta["init_kwargs"])).eval()
    m.load_state_dict(convert_reference_state_dict(reference_state(d)))
    m.set_dither(True)
    X, C, t = d["X_t.0.5"], d["C"], torch.tensor([0.5, 0.5])
    with torch.no_grad():
        first, second = m(X, C, t)["X0"], m(X, C, t)["X0"]
        other_seed = m(X, C, t, seed=1)["X0"]
    assert torch.equal(first, second)
    assert not torch.equal(first, other_seed)  # the seed reaches the random graph
    assert m.dither  # the model's own setting is left as it was


def test_zoo_convert_then_verify_on_the_command_line(tmp_path: Path) -> None:
    source = save(tmp_path, reference_checkpoint("knn"))
    proc = run_cli("convert", "chroma", str(source), "-o", "converted", "--id", "lab/chroma-random", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert biozoo.load(tmp_path / "converted").zoo.manifest.id == "lab/chroma-random"
    proc = run_cli("verify", "converted", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


class Evil:
    """A pickle that runs code when loaded: it creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def _drop_one(c: dict) -> None:
    c["model_state_dict"].pop("encoders.0.feature_graph.node_means_0")


def _add_one(c: dict) -> None:
    c["model_state_dict"]["encoders.0.gnn.extra.weight"] = torch.zeros(3)


def _misshape(c: dict) -> None:
    c["model_state_dict"]["backbone_updates.0.W_q.weight"] = torch.zeros(5, 5)


def _edit_kwargs(c: dict) -> None:
    c["init_kwargs"]["predict_S_potts"] = True


def _bad_constant(c: dict) -> None:
    c["model_state_dict"]["backbone_updates.0.frame_builder._R_atom"] = torch.zeros(1, 1, 1, 3, 3)


def _bad_value(c: dict) -> None:
    c["init_kwargs"]["dim_nodes"] = -4


BAD = {
    "not a dict": (lambda c: [c["model_state_dict"]], "holds a list, not the reference's checkpoint dict"),
    "no state dict": (lambda c: {"init_kwargs": c["init_kwargs"]}, "has no 'model_state_dict'"),
    "a bare state dict": (lambda c: c["model_state_dict"], "has no 'init_kwargs' or 'model_state_dict'"),
    "state dict not tensors": (lambda c: {**c, "model_state_dict": {"a": 1}}, "not a dict of named tensors"),
    "unknown init kwarg": (_edit_kwargs, "does not take: 'predict_S_potts'"),
    "init kwarg that builds nothing": (_bad_value, "do not build the backbone model"),
    "missing key": (_drop_one, "missing from the weights (1):\n    encoders.0.feature_graph.node_means_0"),
    "extra key": (_add_one, "unexpected in the weights (1):\n    encoders.0.gnn.extra.weight"),
    "misshaped key": (_misshape, "backbone_updates.0.W_q.weight: model wants [4, 32], file has [5, 5]"),
    "wrong constant": (_bad_constant, "_R_atom is not the constant table"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_checkpoints_are_refused_clearly_and_leave_nothing(tmp_path: Path, case: str) -> None:
    edit, words = BAD[case]
    checkpoint = reference_checkpoint("knn")
    checkpoint = {**checkpoint, "init_kwargs": dict(checkpoint["init_kwargs"])}
    checkpoint["model_state_dict"] = dict(checkpoint["model_state_dict"])
    data = edit(checkpoint)
    (tmp_path / "in").mkdir()
    source = save(tmp_path / "in", checkpoint if data is None else data)
    with pytest.raises(WeightsError) as info:
        convert_checkpoint(source, tmp_path / "out")
    assert words in info.value.message, info.value.message
    assert info.value.hint and "chroma_backbone_v1.0.pt" in info.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no output folder, no staging leftovers


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    checkpoint = reference_checkpoint("knn") | {"init_kwargs": Evil(marker)}
    source = save(tmp_path, checkpoint)
    proc = run_cli("convert", "chroma", str(source), "-o", "out", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.startswith("error: ") and "cannot be read safely" in proc.stderr
    assert "hint: only plain tensors and containers are accepted" in proc.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()
    assert b"touch" in source.read_bytes()  # the payload is in the file (never unpickled unsafely, even here)


def test_a_folder_or_a_missing_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="is a folder"):
        convert_checkpoint(tmp_path, tmp_path / "out")
    with pytest.raises(WeightsError, match="is missing"):
        convert_checkpoint(tmp_path / "nothing.pt", tmp_path / "out")


def test_public_manifest_says_how_to_convert_and_load_refuses_clearly(tmp_path: Path) -> None:
    info = biozoo.info("chroma/public")
    conversion = info["manifest"]["conversion"]
    assert conversion["converter"] == "chroma" and "zoo convert chroma" in conversion["instructions"]
    assert "chroma-weights.generatebiomedicines.com" in conversion["instructions"]
    assert "weights" not in info["manifest"]  # nothing hosted
    assert info["manifest"]["metadata"]["redistributable"] is False
    proc = run_cli("load", "chroma/public", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "must be converted" in proc.stderr and "hint:" in proc.stderr and "zoo convert chroma" in proc.stderr
