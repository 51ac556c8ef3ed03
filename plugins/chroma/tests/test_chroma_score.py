"""``ChromaBackbone.score_backbone`` and ``zoo score`` (issue 10, items 3 and 6).

Parity uses golden/chroma_score.safetensors, made by scripts/make_chroma_score_golden.py: the reference's
``Chroma.score_backbone`` on the knn backbone golden's random weights, both dithers off, its prior draws taken
from a generator seeded like ours (so the noise is aligned by draw order, not injected). Run this file as a
script to print the parity table that docs/chroma.md quotes:

    .venv/bin/python plugins/chroma/tests/test_chroma_score.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import torch
from test_chroma_backbone import TOL, model
from test_chroma_convert import reference_checkpoint

import biozoo
from biozoo.cli import app as cli
from biozoo.errors import InvalidArgumentError
from biozoo_chroma import Protein, StructureError
from biozoo_chroma.backbone.sampling import MAX_RESIDUES
from biozoo_chroma.backbone.scoring import Coordinates, Score
from biozoo_chroma.convert import convert_checkpoint
from biozoo_chroma.losses import MAX_SAMPLES, METRICS
from biozoo_chroma.tasks import score

GOLDEN = Path(__file__).parent / "golden" / "chroma_score.safetensors"
RTOL = 1e-5  # scores (time averages): worst |ours - reference| / max(1, max |reference|), fp32
RTOL_PER_T = 2e-5  # one time's value: the denoiser's ~1e-4 Å, amplified by the fragment MSEs (measured 8.5e-6)


@cache
def golden() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(GOLDEN), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())  # noqa: SIM118 (not a dict)


def proteins(names: list[str]) -> list[Protein]:
    g, _ = golden()
    return [Protein.from_XCS(g[f"{n}.X"], g[f"{n}.C"], g[f"{n}.S"]) for n in names]


def relative(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.double().reshape(ref.shape), ref.double()
    return float((ours - ref).abs().max()) / max(1.0, float(ref.abs().max()))


@cache
def parity() -> dict[tuple[str, str], float]:
    """(run, what) -> worst relative difference (Å for the coordinates) against the reference."""
    g, meta = golden()
    m, rows = model("knn"), {}
    for tag, run in json.loads(meta["runs"]).items():
        items = proteins(run["proteins"])
        result = m.score_backbone(items if len(items) > 1 else items[0], run["num_samples"], seed=int(meta["seed"]))
        assert isinstance(result, list) == (len(items) > 1)  # the reference's return shapes
        results = result if isinstance(result, list) else [result]
        rows[tag, "t"] = relative(torch.tensor(results[0]["t"]), g[f"{tag}.t"])
        for key in METRICS:
            per_t = torch.tensor([r[key].subcomponents for r in results]).T  # [T, B], as the reference's samples
            rows[tag, f"{key} (every t)"] = relative(per_t, g[f"{tag}.samples.{key}"])
            scores = torch.tensor([r[key].score for r in results])
            rows[tag, f"{key} (score)"] = relative(scores, g[f"{tag}.score.{key}"])
        X0, ref = [r["X0_pred"] for r in results], g[f"{tag}.metrics.X0_pred"]
        rows[tag, "X0_pred mean (Å)"] = max(
            float((x.value[0] - ref[i, : x.value.shape[1]]).abs().max()) for i, x in enumerate(X0)
        )
        if f"{tag}.samples.X0_pred" in g:
            ref = g[f"{tag}.samples.X0_pred"]
            rows[tag, "X0_pred every t (Å)"] = max(
                float((x.samples[:, 0] - ref[:, i, : x.value.shape[1]]).abs().max()) for i, x in enumerate(X0)
            )
    return rows


def test_score_backbone_matches_the_reference() -> None:
    """Rung 7 with the real denoiser: every metric at every time, the scores and the predictions."""
    for (tag, what), worst in parity().items():
        tol = TOL if "Å" in what else RTOL_PER_T if "every t" in what else RTOL
        assert worst <= tol, (tag, what, worst)


def test_the_batch_is_padded_as_the_reference_pads_it() -> None:
    from biozoo_chroma.backbone.scoring import _batch

    g, meta = golden()
    X, C = _batch(proteins(json.loads(meta["runs"])["list"]["proteins"]), torch.device("cpu"))
    assert torch.equal(X, g["list.X"]) and torch.equal(C, g["list.C"])


def test_a_list_gives_each_protein_its_own_values_cut_to_its_length() -> None:
    """The reference indexes each list member's subcomponents by *time* (``vs[idx]``); here they are its own."""
    items = proteins(["1ahsA_gap", "4E43_pair"])
    results = model("knn").score_backbone(items, num_samples=2)
    assert [type(r) for r in results] == [dict, dict]
    for i, (protein, result) in enumerate(zip(items, results, strict=True)):
        assert list(result) == ["t", "X", "X0_pred", *METRICS] and len(result["t"]) == 2
        for key in METRICS:
            assert isinstance(result[key], Score) and len(result[key].subcomponents) == 2
            assert result[key].score == pytest.approx(sum(result[key].subcomponents) / 2, rel=1e-6)
        L = len(protein)
        assert isinstance(result["X"], Coordinates) and result["X"].value.shape == (1, L, 4, 3)
        assert result["X0_pred"].samples.shape == (2, 1, L, 4, 3)
        present = (protein.to_XCS()[1] > 0)[0]
        torch.testing.assert_close(result["X"].value[0, present], protein.to_XCS()[0][0, present], atol=1e-4, rtol=0)
        assert i == 0 or result["elbo"].subcomponents != results[0]["elbo"].subcomponents


def test_scores_are_repeatable_by_seed_and_leave_the_global_generator_alone() -> None:
    m = model("knn")
    item = proteins(["4E43_pair"])[0]
    state = torch.random.get_rng_state()
    a = m.score_backbone(item, num_samples=2, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = m.score_backbone(item, num_samples=2, seed=3)
    c = m.score_backbone(item, num_samples=2, seed=4)
    assert all(a[k] == b[k] for k in METRICS) and torch.equal(a["X0_pred"].value, b["X0_pred"].value)
    assert a["elbo"] != c["elbo"]


def test_random_graphs_and_dithers_draw_from_the_seeded_generator() -> None:
    m = model("random_log")
    item = proteins(["4E43_pair"])[0]
    for dither in (False, True):
        a = m.score_backbone(item, num_samples=2, seed=1, dither=dither)
        b = m.score_backbone(item, num_samples=2, seed=1, dither=dither)
        assert all(a[k] == b[k] for k in METRICS), dither
    off = m.score_backbone(item, num_samples=2, seed=1)
    assert not torch.equal(a["X0_pred"].value, off["X0_pred"].value)  # the dithers did something


def test_scores_are_of_the_model_in_eval_mode_and_its_mode_is_restored() -> None:
    m = model("knn")
    item = proteins(["4E43_pair"])[0]
    expected = m.score_backbone(item, num_samples=2)
    m.train()
    got = m.score_backbone(item, num_samples=2)
    assert m.training and all(got[k] == expected[k] for k in METRICS)


@pytest.mark.parametrize(
    ("proteins_", "kwargs", "words"),
    [
        ([], {}, "empty list"),
        ("x.pdb", {}, "not str"),
        (None, {"num_samples": 0}, "num_samples"),
        (None, {"num_samples": MAX_SAMPLES + 1}, "num_samples"),
        (None, {"tspan": (1.0, 0.5)}, "tspan"),
        (None, {"seed": 1.5}, "seed"),
    ],
)
def test_bad_arguments_are_clear_errors(proteins_: object, kwargs: dict, words: str) -> None:
    item = proteins(["4E43_pair"])[0] if proteins_ is None else proteins_
    with pytest.raises(InvalidArgumentError, match=words):
        model("knn").score_backbone(item, **kwargs)


def test_a_batch_too_large_is_refused_before_anything_runs() -> None:
    X = torch.zeros(1, MAX_RESIDUES // 2 + 1, 4, 3)
    big = Protein.from_XCS(X, torch.ones(1, X.shape[1], dtype=torch.long), torch.zeros(1, X.shape[1], dtype=torch.long))
    with pytest.raises(InvalidArgumentError, match="in one batch"):
        model("knn").score_backbone([big, big])


def test_a_protein_without_structure_is_a_clear_error() -> None:
    g, _ = golden()
    C = -g["2xdgA.C"].abs()
    item = Protein.from_XCS(torch.zeros_like(g["2xdgA.X"]), C, g["2xdgA.S"])
    with pytest.raises(InvalidArgumentError, match="no residue with coordinates"):
        model("knn").score_backbone(item, num_samples=1)


# -- the task and zoo score ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chroma")
    torch.save(reference_checkpoint("knn"), root / "backbone.pt")
    return convert_checkpoint(root / "backbone.pt", root / "model", model_id="lab/chroma-random")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("structures")
    a, b = proteins(["4E43_pair", "1ahsA_gap"])
    return [a.to_PDB(root / "pair.pdb"), b.to_CIF(root / "gap.cif")]


def zoo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "biozoo.cli.app", *args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd
    )


def test_the_task_scores_each_file_alone(folder: Path, files: list[Path]) -> None:
    """A file's scores do not depend on the other files given (the ELBO would, in one batch)."""
    loaded = biozoo.load(folder)
    both = score(loaded, files, num_samples=2, seed=0, progress=False)
    alone = score(loaded, files[1:], num_samples=2, seed=0, progress=False)
    assert [s["file"] for s in both["structures"]] == [str(f) for f in files]
    assert both["structures"][1]["scores"] == alone["structures"][0]["scores"]
    direct = loaded.score_backbone(Protein(files[1]), num_samples=2, seed=0)
    assert both["structures"][1]["scores"] == {k: direct[k].score for k in METRICS}
    assert both["structures"][0]["residues"] == 60 and both["structures"][0]["chains"] == 2
    assert both["model"] == "lab/chroma-random" and both["num_samples"] == 2 and len(both["t"]) == 2


def test_the_task_reads_every_file_before_scoring(folder: Path, files: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.pdb"
    bad.write_text("HEADER    nothing here\n")
    with pytest.raises(StructureError, match="bad.pdb"):
        score(biozoo.load(folder), [*files, bad], num_samples=1, progress=False)


def test_zoo_score_prints_a_row_per_structure(folder: Path, files: list[Path], tmp_path: Path) -> None:
    proc = zoo("score", str(folder), *map(str, files), "--num-samples", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if "pair.pdb" in line or "gap.cif" in line]
    assert len(lines) == 2 and "elbo" in proc.stdout and "hb_nonlocal" in proc.stdout

    proc = zoo("score", str(folder), *map(str, files), "--num-samples", "2", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert [s["file"] for s in data["structures"]] == [str(f) for f in files]
    assert set(data["structures"][0]["scores"]) == set(METRICS)
    assert len(data["structures"][0]["per_time"]["elbo"]) == 2 and data["seed"] == 0


def test_zoo_score_writes_json_with_the_output_policy(folder: Path, files: list[Path], tmp_path: Path) -> None:
    args = ["score", str(folder), str(files[0]), "--num-samples", "1", "--seed", "2"]
    proc = zoo(*args, "-o", "scores.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "scores.json").read_text())
    assert data["seed"] == 2 and data["structures"][0]["file"] == str(files[0])
    proc = zoo(*args, "-o", "scores.json", cwd=tmp_path)
    assert proc.returncode == 1 and "already exists" in proc.stderr
    assert zoo(*args, "-o", "scores.json", "--overwrite", cwd=tmp_path).returncode == 0


def test_zoo_score_an_unreadable_structure_is_an_error(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.pdb").write_text("")
    proc = zoo("score", str(folder), "empty.pdb", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "empty.pdb is empty" in proc.stderr and "hint:" in proc.stderr


def test_the_cli_knows_the_scoring_limits_and_structure_suffixes() -> None:
    """zoo score checks these before loading anything: they must be the plugin's."""
    from biozoo_chroma.structures import _CIF_SUFFIXES, _PDB_SUFFIXES

    assert cli.MAX_SCORE_SAMPLES == MAX_SAMPLES
    assert set(cli.STRUCTURE_SUFFIXES) == set(_PDB_SUFFIXES + _CIF_SUFFIXES)


if __name__ == "__main__":
    print("| run | what | worst relative difference (Å for coordinates) |\n|---|---|---|")
    for (tag, what), worst in parity().items():
        print(f"| {tag} | {what} | {worst:.2g} |")
