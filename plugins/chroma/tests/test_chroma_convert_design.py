"""``zoo convert chroma BACKBONE.pt DESIGN.pt -o OUT``: the backbone and the design network in one model folder.

The ``.pt`` files are made here the way the reference's ``save_model`` makes them (``torch.save`` of
``{"init_kwargs": model.kwargs, "model_state_dict": model.state_dict()}``) from golden random weights: the
backbone's from chroma_backbone_knn.safetensors (as test_chroma_convert.py does), the design network's from
chroma_pack.safetensors (its whole reference state dict, side-chain tables included).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from test_chroma_convert import as_tuples, reference_checkpoint, run_cli, save
from test_chroma_pack import CHI_TOL, X_TOL, golden, init_kwargs, reference_state

import biozoo
from biozoo.errors import WeightsError
from biozoo.weights import read_safetensors
from biozoo_chroma.convert import DESIGN_SUBFOLDER, LICENSE, convert_checkpoint, design_folder
from biozoo_chroma.design import ChromaDesign
from biozoo_chroma.design.keys import convert_design_state_dict
from biozoo_chroma.sidechains import chi_angles

# GraphDesign's signature, as its saved init_kwargs carry it
DESIGN_SIGNATURE = {
    k: p.default
    for k, p in inspect.signature(ChromaDesign.__init__).parameters.items()
    if k not in ("self", "kwargs")
}


def design_checkpoint() -> dict:
    kwargs = {**DESIGN_SIGNATURE, **as_tuples(init_kwargs()), "kwargs": {}}
    return {"init_kwargs": kwargs, "model_state_dict": reference_state()}


def sources(tmp_path: Path) -> tuple[Path, Path]:
    return save(tmp_path, reference_checkpoint("knn")), save(tmp_path, design_checkpoint(), "chroma_design.pt")


def test_one_folder_holds_the_backbone_and_the_design_network(tmp_path: Path) -> None:
    backbone, design = sources(tmp_path)
    out = convert_checkpoint(backbone, tmp_path / "out", design, model_id="lab/chroma")
    assert biozoo.load(out).zoo.manifest.architecture.name == "chroma.backbone"  # zoo sample / score as before
    folder = design_folder(out)
    assert folder == out / DESIGN_SUBFOLDER
    model = biozoo.load(folder)
    manifest = model.zoo.manifest
    assert isinstance(model, ChromaDesign) and manifest.id == "lab/chroma-design"
    assert manifest.license == LICENSE and manifest.metadata["redistributable"] is False
    assert manifest.architecture.config["kwargs"] == {} and manifest.architecture.config["separate_packing"] is True
    # every mapped tensor kept as it is; the packed structure is the reference's
    weights = read_safetensors(folder / "model.safetensors")
    expected = convert_design_state_dict(reference_state())
    assert set(weights) == set(expected) and all(torch.equal(weights[k], v) for k, v in expected.items())
    d, _ = golden()
    X, C, S = d["X"], d["C"], d["S"]
    with torch.no_grad():
        packed = model.pack(X, C, S, permute_idx=d["permute_idx"], uniforms=d["pack.0.001.uniforms"])
    assert float((packed.X - d["pack.0.001.X"]).abs().max()) <= X_TOL
    assert float((chi_angles(packed.X, C, S)[0] - d["pack.0.001.chi"]).abs().max()) <= CHI_TOL
    for path in (out, folder):
        assert all(check.ok for check in biozoo.verify(path))  # both test vectors re-run
    outputs = {k.removeprefix("output.") for k in read_safetensors(folder / "test_vectors.safetensors")}
    assert {"logp_chi", "logp_S", "logp_S_potts", "logp_S_marginals", "h", "J"} <= outputs  # every head verified

def test_a_backbone_alone_converts_as_before(tmp_path: Path) -> None:
    out = convert_checkpoint(save(tmp_path, reference_checkpoint("knn")), tmp_path / "out")
    assert design_folder(out) is None and not (out / DESIGN_SUBFOLDER).exists()


def test_swapped_checkpoints_are_named_and_leave_nothing(tmp_path: Path) -> None:
    backbone, design = sources(tmp_path)
    for first, second, words in (
        (design, None, "is a design network checkpoint (GraphDesign), given where the backbone model is expected"),
        (backbone, backbone, "is a backbone network checkpoint (GraphBackbone), given where the design model"),
    ):
        with pytest.raises(WeightsError) as info:
            convert_checkpoint(first, tmp_path / "out", second)
        assert words in info.value.message, info.value.message
        assert "zoo convert chroma chroma_backbone_v1.0.pt chroma_design_v1.0.pt" in info.value.hint
        assert not (tmp_path / "out").exists()


def _bad_table(c: dict) -> None:
    c["model_state_dict"]["decoder_chi.chi_to_X._Z"] = c["model_state_dict"]["decoder_chi.chi_to_X._Z"] + 1.0


def _drop_chi_key(c: dict) -> None:
    c["model_state_dict"].pop("decoder_chi.embed_chi.embed.weight")


def _one_stage(c: dict) -> None:
    c["init_kwargs"]["separate_packing"] = False


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_bad_table, "decoder_chi.chi_to_X._Z does not hold Chroma's side-chain table"),
        (_drop_chi_key, "missing from the weights (1):\n    decoder_chi.embed_chi.embed.weight"),
        (_one_stage, "do not build the design model"),
    ],
)
def test_bad_design_checkpoints_are_refused(tmp_path: Path, edit, words: str) -> None:
    checkpoint = design_checkpoint()
    checkpoint = {k: dict(v) for k, v in checkpoint.items()}
    edit(checkpoint)
    backbone = save(tmp_path, reference_checkpoint("knn"))
    with pytest.raises(WeightsError) as info:
        convert_checkpoint(backbone, tmp_path / "out", save(tmp_path, checkpoint, "design.pt"))
    assert words in info.value.message, info.value.message
    assert "chroma_design_v1.0.pt" in info.value.hint
    assert not (tmp_path / "out").exists()


def test_zoo_convert_with_two_checkpoints_on_the_command_line(tmp_path: Path) -> None:
    backbone, design = sources(tmp_path)
    proc = run_cli("convert", "chroma", str(backbone), str(design), "-o", "both", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli("verify", f"both/{DESIGN_SUBFOLDER}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli("convert", "chroma", str(backbone), str(design), str(design), "-o", "three", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "error: converter 'chroma' does not take 3 checkpoints" in proc.stderr and "hint:" in proc.stderr
    assert not (tmp_path / "three").exists()
