"""The design API on Proteins (design, pack, score_sequence), the design loss, and zoo design / pack / score --sequence.

Parity (rung 7) against ``chroma_design_api.safetensors`` from ``scripts/make_chroma_design_api_golden.py`` (see
golden/PROVENANCE.md): the reference's ``GraphDesign.loss`` with a fixed and with a seeded order, and
``GraphDesign.sample`` (autoregressive, low temperature, fixed order) with packing. The model is the packing
golden's random-weight ``GraphDesign``. Run this file as a script to print the parity table:

    .venv/bin/python plugins/chroma/tests/test_chroma_design_api.py
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
import torch
from test_chroma_convert_design import sources
from test_chroma_pack import X_TOL, absolute, model, rel
from test_chroma_sidechains import TS50, needs_data
from test_chroma_structures import COMPLEXES

from biozoo.errors import InvalidArgumentError
from biozoo_chroma import Protein
from biozoo_chroma.convert import convert_checkpoint
from biozoo_chroma.design.api import SEQUENCE_SCORES, design, design_xcs, pack, score_sequence
from biozoo_chroma.design.loss import design_loss
from biozoo_chroma.design.selection import SelectionError
from biozoo_chroma.sidechains import SideChainError

GOLDEN = Path(__file__).parent / "golden"
TOL = 1e-5  # fp32, worst |difference| / max(1, max |reference|)
FAST = {"potts_mcmc_depth": 3}  # Potts sweeps in tests: what is checked does not need a converged design


@cache
def golden() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    st = pytest.importorskip("safetensors")
    with st.safe_open(str(GOLDEN / "chroma_design_api.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())  # noqa: SIM118 (not a dict)


@cache
def net() -> torch.nn.Module:
    return model()


def loss_cases() -> dict[str, dict]:
    d, meta = golden()
    return {
        "fixed": {"t": d["t"], "permute_idx": d["permute_idx"], "batched": False, "uniforms": d["loss.fixed.uniforms"]},
        "batched": {"permute_idx": d["permute_idx"], "batched": True, "uniforms": d["loss.batched.uniforms"]},
        "random": {"batched": False, "generator": torch.Generator().manual_seed(int(meta["loss_seed"]))},
    }


def check_loss(name: str) -> dict[str, float]:
    d, _ = golden()
    with torch.no_grad():
        out = design_loss(net(), d["X"], d["C"], d["S"], **loss_cases()[name])
    diffs = {k: rel(v, d[f"loss.{name}.{k}"]) for k, v in out.items() if f"loss.{name}.{k}" in d}
    if name == "random":
        diffs["permute_idx mismatches"] = float((out["permute_idx"] != d["loss.random.permute_idx"]).sum())
    return diffs


def check_design(name: str) -> tuple[int, float]:
    """Designed-S mismatches and packed-X difference (Å) on residues with structure."""
    d, meta = golden()
    b, options = json.loads(meta["designs"])[name]
    one = slice(b, b + 1)
    got = design_xcs(
        net(), d["X"][one], d["C"][one], d["S"][one], method="autoregressive", t=float(meta["design_t"]),
        temperature_S=float(meta["temperature_S"]), temperature_chi=float(meta["temperature_chi"]),
        mask_sample=d["design.mask"][one] if options.get("mask") else None, ban_S=options.get("ban_S"),
        regularization=options["regularization"], permute_idx=d["permute_idx"][one],
        chi_uniforms=d[f"design.{name}.uniforms"],
    )  # fmt: skip
    present = d["C"][one] > 0
    mismatches = int((d[f"design.{name}.S"] != got.S)[present].sum())
    return mismatches, absolute(got.X[present], d[f"design.{name}.X"][present])


# -- parity (rung 7) --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fixed", "batched", "random"])
def test_design_loss_matches_the_reference(name: str) -> None:
    diffs = check_loss(name)
    assert set(diffs) >= {"neglogp", *SEQUENCE_SCORES[1:], "mask_chi", "t"}
    assert all(v <= TOL for v in diffs.values()), diffs


@pytest.mark.parametrize("name", ["plain1", "lcp0", "masked0"])
def test_low_temperature_design_with_a_fixed_order_matches_the_reference(name: str) -> None:
    mismatches, x = check_design(name)
    assert mismatches == 0 and x <= X_TOL, (mismatches, x)


# -- the API on Proteins ----------------------------------------------------------------------------------------


def golden_protein(b: int = 0) -> Protein:
    """A golden all-atom system as a Protein (3e8mA's first 48 residues for b = 0)."""
    d, _ = golden()
    return Protein.from_XCS(d["X"][b : b + 1], d["C"][b : b + 1], d["S"][b : b + 1])


def sequence(p: Protein) -> torch.Tensor:
    return p.to_XCS()[2][0]


@pytest.mark.parametrize("method", ["potts", "autoregressive"])
def test_design_keeps_what_is_not_selected_bans_and_packs_every_side_chain(method: str) -> None:
    p = golden_protein()
    state = torch.get_rng_state()
    q = design(net(), p, design_method=method, design_selection="A:10-30", design_ban_S=["A", "G"],
               temperature_S=0.5, seed=3, **FAST)  # fmt: skip
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is never used
    S0, S1 = sequence(p), sequence(q)
    selected = torch.zeros(len(p), dtype=torch.bool)
    selected[9:30] = True
    assert torch.equal(S1[~selected], S0[~selected]) and not torch.equal(S1[selected], S0[selected])
    assert not bool(torch.isin(S1[selected], torch.tensor([0, 5])).any())  # A, G
    X14, C14, _ = q.to_XCS(all_atom=True)
    assert bool((C14 > 0).all())  # every residue has all its side-chain atoms
    assert torch.allclose(X14[0, :, :4], p.to_XCS()[0][0], atol=1e-5)  # the backbone stays
    assert q.chain_ids == p.chain_ids and list(q.residue_ids) == list(p.residue_ids)
    again = design(net(), p, design_method=method, design_selection="A:10-30", design_ban_S=["A", "G"],
                   temperature_S=0.5, seed=3, **FAST)  # fmt: skip
    assert torch.equal(again.to_XCS(all_atom=True)[0], X14) and torch.equal(sequence(again), S1)


def test_symmetric_potts_design_tiles_one_sequence() -> None:
    d, _ = golden()
    X, C, S = d["X"][:1, :24], d["C"][:1, :24], d["S"][:1, :24]
    twin = Protein.from_XCS(torch.cat([X, X + 30.0], 1), torch.cat([C, C + 1], 1), torch.cat([S, S], 1))
    q = design(net(), twin, potts_symmetry_order=2, temperature_S=0.5, seed=0, **FAST)
    S1 = sequence(q)
    assert torch.equal(S1[:24], S1[24:])
    with pytest.raises(InvalidArgumentError, match="does not divide the number of chains") as err:
        design(net(), twin, potts_symmetry_order=3, seed=0, **FAST)
    assert "order" in err.value.hint


def test_pack_keeps_backbone_and_sequence_and_clamped_needs_side_chains(tmp_path: Path) -> None:
    p = golden_protein()
    q = pack(net(), p, seed=1)
    X14, C14, S14 = q.to_XCS(all_atom=True)
    assert bool((C14 > 0).all()) and torch.equal(S14[0], sequence(p))
    assert torch.allclose(X14[0, :, :4], p.to_XCS()[0][0], atol=1e-5)
    # clamped: the structure's own side chains rebuilt from their chi, nothing drawn
    clamped = pack(net(), p, clamped=True).to_XCS(all_atom=True)[0]
    X, C, S = p.to_XCS(all_atom=True)
    assert absolute(clamped, net().pack(X, C, S, clamped=True).X) < 1e-5
    backbone = Protein.from_XCS(*p.to_XCS())
    assert bool((backbone.to_XCS(all_atom=True)[1] < 0).any())
    with pytest.raises(SideChainError, match="no side chains|lack side-chain atoms") as err:
        pack(net(), backbone, clamped=True)
    assert "all-atom" in err.value.hint
    pack(net(), backbone, seed=0)  # unclamped, a backbone is all packing needs


def test_score_sequence_is_the_design_loss_per_protein() -> None:
    p = golden_protein()
    X, C, S = p.to_XCS(all_atom=True)
    one = score_sequence(net(), p, seed=5)
    loss = design_loss(net(), X, C, S, batched=False, generator=torch.Generator().manual_seed(5))
    assert set(one) == {*SEQUENCE_SCORES, "mask_chi", "permute_idx", "t"}
    for k in SEQUENCE_SCORES:
        assert one[k].dim() == 0 and float(one[k]) == pytest.approx(float(loss[k][0]), abs=1e-6), k
    assert torch.equal(one["permute_idx"], loss["permute_idx"][0]) and float(one["t"]) == 0.0
    assert float(score_sequence(net(), p, seed=5)["neglogp"]) == float(one["neglogp"])  # the default seed repeats
    pair = score_sequence(net(), [p, golden_protein(1)], t=0.3)
    assert isinstance(pair, list) and len(pair) == 2 and float(pair[1]["t"]) == pytest.approx(0.3)
    assert pair[0]["mask_chi"].shape == (len(p), 4)


def test_bad_input_is_named_with_a_hint() -> None:
    p = golden_protein()
    X4, C4, S4 = p.to_XCS()
    alanines = Protein.from_XCS(X4, C4, torch.zeros_like(S4))  # a backbone: no residue has its side chain
    cases = [
        (lambda: design(net(), p, design_selection="A:40-60"), SelectionError, "residue 60 is not in chain A"),
        (lambda: design(net(), p, design_selection="B"), SelectionError, "chain 'B' does not exist"),
        (lambda: design(net(), p, design_ban_S=list("ACDEFGHIKLMNPQRSTVWY")), InvalidArgumentError, "every residue"),
        (lambda: design(net(), p, temperature_S=0.0), InvalidArgumentError, "temperature_S must be"),
        (lambda: design(net(), p, temperature_chi=-1.0), InvalidArgumentError, "temperature_chi must be"),
        (lambda: pack(net(), p, temperature_chi=0.0), InvalidArgumentError, "temperature_chi must be"),
        (lambda: design(net(), p, design_method="greedy"), InvalidArgumentError, "unknown design method"),
        (lambda: design(net(), p, top_p_S=0.9), InvalidArgumentError, "Potts design does not use it"),
        (lambda: design(net(), p, design_method="autoregressive", potts_symmetry_order=1), InvalidArgumentError,
         "Potts design only"),
        (lambda: design(net(), p, potts_symmetry_order=2), InvalidArgumentError, "does not divide the number"),
        (lambda: design(net(), p.to_XCS()), InvalidArgumentError, "must be a biozoo_chroma.Protein"),
        (lambda: score_sequence(net(), []), InvalidArgumentError, "no proteins"),
        (lambda: score_sequence(net(), alanines), InvalidArgumentError, "zoo pack"),
    ]  # fmt: skip
    for call, kind, words in cases:
        with pytest.raises(kind) as err:
            call()
        assert words in str(err.value) + err.value.hint, (words, str(err.value))
        assert err.value.hint


@needs_data
@pytest.mark.parametrize("path", [*TS50[:2], *COMPLEXES[:1]], ids=lambda p: p.name.split(".")[0])
def test_real_structures_design_pack_and_score(path: Path) -> None:
    """A few real chains (scripts/check_chroma_design_structures.py runs every TS50 chain, 4E43 and 3PWP)."""
    p = Protein(path)
    q = design(net(), p, design_method="autoregressive", seed=0)
    observed = torch.from_numpy(p.observed)
    assert bool((q.to_XCS(all_atom=True)[1][0][observed] > 0).all())
    scores = score_sequence(net(), q)
    assert all(bool(torch.isfinite(scores[k])) for k in SEQUENCE_SCORES)


# -- the command line -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A converted folder with its design network (backbone and design golden weights), and one without."""
    tmp = tmp_path_factory.mktemp("design_cli")
    backbone, design_pt = sources(tmp)
    return convert_checkpoint(backbone, tmp / "both", design_pt), convert_checkpoint(backbone, tmp / "backbone")


def test_zoo_design_pack_and_score_sequence(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    from test_chroma_convert import run_cli

    from biozoo_chroma.tasks import read_header

    both, backbone_only = folders
    golden_protein().to_PDB(tmp_path / "in.pdb")
    args = ["design", str(both), "in.pdb", "-o", "out.pdb", "--method", "autoregressive", "--selection", "A:5-20",
            "--ban", "C,W", "--temperature", "0.5", "--seed", "4"]  # fmt: skip
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "designed 48 residues" in proc.stdout
    q = Protein(tmp_path / "out.pdb")
    assert bool((q.to_XCS(all_atom=True)[1] > 0).all())
    header = read_header(tmp_path / "out.pdb")
    assert header["method"] == "autoregressive" and header["selection"] == "A:5-20" and header["seed"] == "4"
    assert header["generator"].startswith("biozoo zoo design") and header["model"].endswith("-design")
    first = (tmp_path / "out.pdb").read_bytes()
    proc = run_cli(*args, cwd=tmp_path)  # the output exists
    assert proc.returncode == 1 and "--overwrite" in proc.stderr
    proc = run_cli(*args, "--overwrite", cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "out.pdb").read_bytes() == first  # same seed, same bytes

    # the design model folder itself, and pack
    proc = run_cli("pack", str(both / "design"), "out.pdb", "-o", "packed.cif", "--seed", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.equal(Protein(tmp_path / "packed.cif").to_XCS()[2], q.to_XCS()[2])
    assert read_header(tmp_path / "packed.cif")["temperature_chi"] == "0.001"

    proc = run_cli("score", str(both), "out.pdb", "in.pdb", "--sequence", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)["structures"]
    assert [r["file"] for r in rows] == ["out.pdb", "in.pdb"]
    expected = score_sequence(net(), Protein(tmp_path / "in.pdb"), seed=0)
    assert rows[1]["scores"]["neglogp"] == pytest.approx(float(expected["neglogp"]), rel=1e-5)

    # errors after the model is loaded: error:/hint: lines, nothing written
    for bad, words in [
        (["design", str(backbone_only), "in.pdb", "-o", "x.pdb"], "zoo convert chroma BACKBONE.pt DESIGN.pt"),
        (["design", str(both), "in.pdb", "-o", "x.pdb", "--selection", "A:40-99"], "chain A has residues 1-48"),
        (["design", str(both), "in.pdb", "-o", "x.pdb", "--symmetry-order", "2"], "does not divide"),
        (["score", str(both / "design"), "in.pdb"], "add --sequence"),
    ]:
        proc = run_cli(*bad, cwd=tmp_path)
        assert proc.returncode == 1 and proc.stderr.startswith("error: "), proc.stderr[-3000:]
        assert "\nhint: " in proc.stderr and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "x.pdb").exists()


DEMO_DESIGN = Path(__file__).resolve().parents[3] / "registry/chroma/demo/design/manifest.yaml"


@needs_data
@pytest.mark.skipif(not DEMO_DESIGN.is_file(), reason="chroma/demo-design is not in the registry")
def test_zoo_design_with_the_demo_design_network(tmp_path: Path) -> None:
    from test_chroma_convert import run_cli

    Protein(TS50[3]).to_PDB(tmp_path / "in.pdb")
    proc = run_cli("design", "chroma/demo-design", "in.pdb", "-o", "out.pdb", "--method", "autoregressive",
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    designed = Protein(tmp_path / "out.pdb")
    assert len(designed) == len(Protein(tmp_path / "in.pdb"))
    assert bool((designed.to_XCS(all_atom=True)[1] > 0).all())


if __name__ == "__main__":
    print("| compared | worst |\n|---|---|")
    for case in ("fixed", "batched", "random"):
        for key, value in check_loss(case).items():
            print(f"| loss ({case}) {key} | {value:.2g} |")
    for design_name in json.loads(golden()[1]["designs"]):
        wrong, worst = check_design(design_name)
        print(f"| design {design_name}: S mismatches / X (Å) | {wrong} / {worst:.2g} |")


def test_zoo_sample_design_samples_then_designs_each_backbone(tmp_path: Path) -> None:
    """`zoo sample chroma/demo --design`: backbones from the demo, then sequences and side chains from its design/."""
    from test_chroma_convert import run_cli

    args = ("sample", "chroma/demo", "--length", "24", "-n", "1", "--steps", "30", "--inverse-temperature", "1",
            "--langevin-factor", "0", "-o", "out")  # fmt: skip  (settings under which the weak demo stays compact)
    proc = run_cli(*args, "--design", "autoregressive", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    designed = Protein(tmp_path / "out" / "sample_000.pdb")
    X, C, _ = designed.to_XCS(all_atom=True)
    assert X.shape[-2] == 14 and bool((C > 0).all()) and len(set(designed.sequence())) > 1
    atoms = int((X.abs().sum(-1) > 0).sum())
    assert atoms > 4 * len(designed)  # side chains were built: more than the backbone's four atoms each
    assert "design" in json.loads((tmp_path / "out" / "samples.json").read_text())["provenance"]
    refused = run_cli(*args[:-1], "sym", "--chains", "12,12", "--symmetry", "C2", "--design", "autoregressive",
                      cwd=tmp_path)  # fmt: skip
    assert refused.returncode == 1 and "use --design potts with --symmetry" in refused.stderr
    assert not (tmp_path / "sym").exists()


@needs_data
def test_zoo_design_pack_and_sample_run_in_bf16(tmp_path: Path) -> None:
    """`--dtype bfloat16` on the structure commands: weights cast (the design network of a backbone folder too),
    outputs complete and near float32's, and the dtype in the header (it changes what a seed gives)."""
    from test_chroma_convert import run_cli

    from biozoo_chroma.tasks import read_header

    source = str(TS50[0])
    for dtype in ("bfloat16", "float32"):
        done = run_cli("design", "chroma/demo-design", source, "-o", f"{dtype}.pdb", "--method", "autoregressive",
                       "--dtype", dtype, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        done = run_cli("pack", "chroma/demo-design", source, "-o", f"pack_{dtype}.pdb", "--dtype", dtype, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    low, full = Protein(tmp_path / "bfloat16.pdb"), Protein(tmp_path / "float32.pdb")
    same = sum(a == b for a, b in zip(low.sequence(), full.sequence(), strict=True)) / len(full)
    assert same > 0.4  # measured 0.60: decoding at T 0.01, where one changed choice changes what follows
    assert read_header(tmp_path / "bfloat16.pdb")["dtype"] == "bfloat16"
    assert "dtype" not in read_header(tmp_path / "float32.pdb")
    A, C, _ = Protein(tmp_path / "pack_bfloat16.pdb").to_XCS(all_atom=True)
    B, C_full, _ = Protein(tmp_path / "pack_float32.pdb").to_XCS(all_atom=True)
    assert torch.equal(C, C_full)
    assert float((A - B).norm(dim=-1).mean()) < 0.5  # Å over all atoms; measured 0.14 (a few chi flip bins)
    args = ("sample", "chroma/demo", "--length", "24", "--steps", "30", "--inverse-temperature", "1",
            "--langevin-factor", "0", "--design", "autoregressive", "--dtype", "bfloat16", "-o", "out")  # fmt: skip
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    sample = tmp_path / "out" / "sample_000.pdb"
    assert read_header(sample)["dtype"] == "bfloat16" and len(Protein(sample)) == 24
    bad = run_cli("design", "chroma/demo-design", source, "-o", "bad.pdb", "--dtype", "float8", cwd=tmp_path)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "hint:" in bad.stderr
    assert not (tmp_path / "bad.pdb").exists()
