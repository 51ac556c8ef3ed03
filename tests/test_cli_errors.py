"""No traceback for a user error: every bad invocation exits non-zero with ``error:`` and ``hint:`` lines.

One table, one row per mistake a user makes. Exit codes (docs/cli.md): 1 for a biozoo error,
2 for a usage error (unknown option, value out of range). Outputs are checked before any model
is loaded: the rows that give a model that does not exist prove it, since the output error wins.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pbmc68k_test.h5ad"
SCGPT = importlib.util.find_spec("biozoo_scgpt") is not None
AUTOREGRESSIVE = importlib.util.find_spec("biozoo_autoregressive") is not None
needs_scgpt = pytest.mark.skipif(not SCGPT, reason="needs the scgpt plugin")
needs_ar = pytest.mark.skipif(not AUTOREGRESSIVE, reason="needs the autoregressive plugin")

EMBED = ["embed", "scgpt/cls", "IN"]
GEN = ["generate", "autoregressive/pbmc-small"]
FT = ["finetune", "scgpt/cls", "IN", "-o", "ft", "-l", "bulk_labels"]
SAMPLE = ["sample", "nosuch/model", "-o", "samples"]  # option checks come before the model is looked up
SCORE = ["score", "nosuch/model", "in.pdb"]  # in.pdb: a file that exists (not a structure: never read)
DESIGN = ["design", "nosuch/model", "in.pdb", "-o", "out.pdb"]
PACK = ["pack", "nosuch/model", "in.pdb", "-o", "out.pdb"]

# (args, exit code, words in stderr, marks); IN = the example cells, EXISTING = a file that exists
CASES = [
    (["load", "core/tiny-transformer", "--dtype", "int8"], 1, "unknown dtype 'int8'", ()),
    (["load", "core/tiny-transformer", "--device", "tpu"], 1, "device 'tpu'", ()),
    (["load", "core/tiny-transformer", "--device", "nonsense:x"], 1, "unknown device", ()),
    (["list", "--kind", "nope"], 2, "Invalid value for '--kind'", ()),
    (["load"], 2, "Missing argument 'MODEL'", ()),
    (["load", "core/tiny-transformer", "--no-such-flag"], 2, "No such option", ()),
    (["info", "nope/missing"], 1, "no model named 'nope/missing'", ()),
    ([*EMBED, "-o", "out.csv"], 1, "must end in .h5ad", ()),
    (["embed", "nosuch/model", "IN", "-o", "EXISTING"], 1, "already exists", ()),
    (["embed", "nosuch/model", "IN", "-o", "afolder.h5ad"], 1, "is a folder", ()),
    (["embed", "nosuch/model", "IN", "-o", "EXISTING/out.h5ad"], 1, "is not a folder", ()),
    (["embed", "nosuch/model", "IN", "-o", "/proc/biozoo-out.h5ad"], 1, "cannot write into /proc", ()),
    (["embed", "nosuch/model", "missing.h5ad", "-o", "out.h5ad"], 1, "missing.h5ad is missing", ()),
    (["embed", "nosuch/model", "IN", "-o", "IN"], 1, "would overwrite the input", ()),
    ([*EMBED, "-o", "out.h5ad", "--device", "tpu"], 1, "device 'tpu'", (needs_scgpt,)),
    ([*EMBED, "-o", "out.h5ad", "--batch-size", "0"], 2, "--batch-size", ()),
    ([*EMBED, "-o", "out.h5ad", "--dtype", "int8"], 1, "unknown dtype 'int8'", ()),
    (["embed", "nosuch/model", "IN", "-o", "out.h5ad", "--dtype", "fp8"], 1, "unknown dtype 'fp8'", ()),
    (["embed", "nosuch/model", "IN", "-o", "out.h5ad", "--autocast", "--device", "tpu"], 1, "device 'tpu'", ()),
    (["embed", "nosuch/model", "IN", "-o", "out.h5ad", "--device", "cpu", "--devices", "cpu"], 1, "both given", ()),
    (["embed", "nosuch/model", "IN", "-o", "out.h5ad", "--devices", "cpu,cpu"], 1, "names a device twice", ()),
    (["embed", "nosuch/model", "IN", "-o", "out.h5ad", "--devices", " , "], 1, "names no device", ()),
    (["embed", "nosuch/model", "IN", "-o", "out.h5ad", "--devices", "cpu,tpu"], 1, "device 'tpu'", ()),
    (["annotate", "nosuch/model", "IN", "-o", "out.h5ad", "--dtype", "half"], 1, "unknown dtype 'half'", ()),
    (["generate", "nosuch/model", "--dtype", "int8"], 1, "unknown dtype 'int8'", ()),
    (["finetune", "nosuch/model", "IN", "-o", "ft", "-l", "x", "--dtype", "int4"], 1, "unknown dtype 'int4'", ()),
    (["finetune", "nosuch/model", "IN", "-o", "ft", "-l", "x", "--dtype", "float64"], 1, "float64 is not", ()),
    ([*EMBED, "-o", "out.h5ad", "--seed", "-1"], 2, "--seed", ()),
    (["annotate", "scgpt/cls", "IN", "-o", "EXISTING"], 1, "already exists", ()),
    ([*GEN, "-n", "0"], 2, "--n-cells", ()),
    ([*GEN, "-n", "-3"], 2, "--n-cells", ()),
    ([*GEN, "--temperature", "-1"], 2, "--temperature", ()),
    ([*GEN, "--temperature", "nan"], 2, "nan is not a number >= 0", ()),
    ([*GEN, "--top-p", "2"], 2, "--top-p", ()),
    ([*GEN, "--top-p", "0"], 2, "--top-p", ()),
    ([*GEN, "--top-k", "0"], 2, "--top-k", ()),
    ([*GEN, "--max-length", "0"], 2, "--max-length", ()),
    ([*GEN, "-o", "EXISTING"], 1, "already exists", ()),
    ([*GEN, "-o", "afolder.h5ad"], 1, "is a folder", ()),
    ([*FT, "--epochs", "0"], 2, "--epochs", ()),
    ([*FT, "--lr", "nan"], 2, "nan is not a positive number", ()),
    ([*FT, "--lr", "0"], 2, "--lr", ()),
    ([*FT, "--val-fraction", "1.5"], 2, "--val-fraction", ()),
    ([*FT, "--patience", "-1"], 2, "--patience", ()),
    (["finetune", "nosuch/model", "IN", "-o", "afolder", "-l", "x"], 1, "already exists", ()),
    (["finetune", "nosuch/model", "IN", "-o", "afolder", "-l", "x", "--overwrite"], 1, "not a model folder", ()),
    (["convert", "nosuch", "IN", "-o", "converted"], 1, "nosuch", ()),
    ([*SAMPLE, "--length", "0"], 2, "--length", ()),
    ([*SAMPLE, "--length", "20000"], 1, "20,000 residues in all is more than 10,000", ()),
    ([*SAMPLE, "--chains", "60,0"], 2, "--chains", ()),
    ([*SAMPLE, "--chains", "60,x"], 2, "--chains", ()),
    ([*SAMPLE, "--chains", "6000,6000"], 1, "12,000 residues", ()),
    ([*SAMPLE, "--length", "100", "--chains", "60,30"], 1, "--length 100 does not match --chains 60,30", ()),
    ([*SAMPLE, "--steps", "0"], 2, "--steps", ()),
    ([*SAMPLE, "--samples", "0"], 2, "--samples", ()),
    ([*SAMPLE, "--batch-size", "0"], 2, "--batch-size", ()),
    ([*SAMPLE, "--seed", "-1"], 2, "--seed", ()),
    ([*SAMPLE, "--integrator", "rk4"], 2, "--integrator", ()),
    ([*SAMPLE, "--sde", "brownian"], 2, "--sde", ()),
    ([*SAMPLE, "--format", "xyz"], 2, "--format", ()),
    ([*SAMPLE, "--inverse-temperature", "0"], 2, "--inverse-temperature", ()),
    ([*SAMPLE, "--langevin-factor", "nan"], 2, "nan is not a number >= 0", ()),
    (["sample", "nosuch/model", "-o", "afolder"], 1, "already exists", ()),
    (["sample", "nosuch/model", "-o", "afolder", "--overwrite"], 1, "not one this command wrote", ()),
    (["sample", "nosuch/model", "-o", "EXISTING"], 1, "is a file", ()),
    (["sample", "chroma/public", "-o", "out"], 1, "must be converted", ()),
    (["load", "chroma/public"], 1, "must be converted", ()),
    (["score", "nosuch/model"], 2, "Missing argument 'STRUCTURE...'", ()),
    (["score", "nosuch/model", "missing.pdb"], 1, "missing.pdb is missing", ()),
    (["score", "nosuch/model", "in.pdb", "afolder"], 1, "afolder is a folder", ()),
    (["score", "nosuch/model", "IN"], 1, "is not named as a structure file", ()),
    ([*SCORE, "--num-samples", "0"], 2, "--num-samples", ()),
    ([*SCORE, "--num-samples", "1001"], 2, "--num-samples", ()),
    ([*SCORE, "--seed", "-1"], 2, "--seed", ()),
    ([*SCORE, "-o", "scores.csv"], 1, "must end in .json", ()),
    ([*SCORE, "-o", "afolder.json"], 1, "is a folder", ()),
    ([*SCORE, "-o", "old.json"], 1, "already exists", ()),
    (["score", "chroma/public", "in.pdb"], 1, "must be converted", ()),
    ([*DESIGN, "--temperature", "0"], 2, "--temperature", ()),
    ([*DESIGN, "--temperature", "nan"], 2, "nan is not a positive number", ()),
    ([*DESIGN, "--ban", ",".join("ACDEFGHIKLMNPQRSTVWY")], 2, "bans every residue type", ()),
    ([*DESIGN, "--ban", "C,X1"], 2, "--ban", ()),
    ([*DESIGN, "--method", "greedy"], 2, "--method", ()),
    ([*DESIGN, "--sweeps", "0"], 2, "--sweeps", ()),
    ([*DESIGN, "--symmetry-order", "2", "--method", "autoregressive"], 1, "Potts design only", ()),
    (["design", "nosuch/model", "missing.pdb", "-o", "out.pdb"], 1, "missing.pdb is missing", ()),
    (["design", "nosuch/model", "IN", "-o", "out.pdb"], 1, "is not named as a structure file", ()),
    (["design", "nosuch/model", "in.pdb", "-o", "out.txt"], 1, "must end in .pdb or .cif", ()),
    (["design", "nosuch/model", "in.pdb", "-o", "in.pdb"], 1, "would overwrite the input", ()),
    (["design", "nosuch/model", "in.pdb", "-o", "old.pdb"], 1, "already exists", ()),
    (["design", "chroma/public", "in.pdb", "-o", "out.pdb"], 1, "must be converted", ()),
    ([*PACK, "--temperature", "-1"], 2, "--temperature", ()),
    (["pack", "nosuch/model", "in.pdb", "-o", "afolder.pdb"], 1, "is a folder", ()),
    (["manifest", "hash", "missing"], 1, "missing does not exist", ()),
    (["manifest", "hash", "afolder"], 1, "afolder has no manifest.yaml", ()),
    (["manifest", "hash", "EXISTING", "--check"], 1, "must be a mapping", ()),
    (["manifest", "hash"], 2, "Missing argument 'FOLDER'", ()),
    (["hub", "serve", "--root", "EXISTING"], 1, "is not a folder", ()),
    (["hub", "serve", "--port", "70000"], 2, "--port", ()),
    (["hub", "serve", "--protect-reads"], 1, "protecting reads needs a token", ()),
    (["hub", "serve", "--max-upload-mb", "0"], 2, "--max-upload-mb", ()),
    (["plugin", "new"], 2, "Missing argument 'NAME'", ()),
    (["plugin", "new", "Demo"], 1, "'Demo' is not a valid plugin name", ()),
    (["plugin", "new", "gene-mini"], 1, "use 'gene_mini' (`zoo plugin new gene_mini`)", ()),
    (["plugin", "new", "9lives"], 1, "'9lives' is not a valid plugin name", ()),
    (["plugin", "new", "demo.x"], 1, "use 'demo_x'", ()),
    (["plugin", "new", "core"], 1, "reserved for biozoo itself", ()),
    (["plugin", "new", "scgpt"], 1, "a plugin named 'scgpt' is already installed", (needs_scgpt,)),
    (["plugin", "new", "demo", "--dir", "afolder"], 1, "already exists", ()),
    (["plugin", "new", "demo", "--dir", "afolder", "--overwrite"], 1, "not one this command wrote", ()),
    (["plugin", "new", "demo", "--dir", "EXISTING"], 1, "is a file", ()),
]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "biozoo.cli.app", *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd
    )


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [pytest.param(a, c, w, marks=m, id=" ".join(a)) for a, c, w, m in CASES],
)
def test_bad_invocations_fail_cleanly(tmp_path: Path, args: list[str], code: int, words: str) -> None:
    existing = tmp_path / "existing.h5ad"
    existing.write_bytes(b"precious")
    for name in ("in.pdb", "old.json", "old.pdb"):
        (tmp_path / name).write_text("precious")
    for folder in ("afolder", "afolder.h5ad", "afolder.json", "afolder.pdb"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "data.txt").write_text("precious")
    args = [str(EXAMPLE) if a == "IN" else a.replace("EXISTING", str(existing)) for a in args]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    proc = _run(args, tmp_path)
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.startswith("error: "), proc.stderr[-3000:]
    assert "\nhint: " in proc.stderr, proc.stderr
    assert words in proc.stderr, proc.stderr
    assert existing.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, nothing left behind


@needs_scgpt
def test_cuda_on_a_cpu_only_torch_is_one_clear_message(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    proc = _run([*EMBED[:2], str(EXAMPLE), "-o", "out.h5ad", "--device", "cuda"], tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "--device cuda:" in proc.stderr and "hint: use --device cpu" in proc.stderr
    assert not (tmp_path / "out.h5ad").exists()


def test_no_arguments_prints_the_usage(tmp_path: Path) -> None:
    proc = _run([], tmp_path)
    assert proc.returncode == 2 and "Usage: zoo" in proc.stderr and "Traceback" not in proc.stderr


def test_usage_lines_name_arguments_in_capitals(tmp_path: Path) -> None:
    proc = _run(["embed", "--help"], tmp_path)
    assert proc.returncode == 0
    assert "MODEL" in proc.stdout and "SOURCE" in proc.stdout
    assert "{model}" not in proc.stdout and "{source}" not in proc.stdout
    annotate = _run(["annotate", "--help"], tmp_path).stdout
    assert "``" not in annotate  # no reStructuredText markup in help
