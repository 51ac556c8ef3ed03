"""`zoo manifest hash FOLDER [--check]`: after re-training, the manifest's sha256 and sizes follow the files.

Re-saving the weights with different safetensors metadata changes their bytes (sha256, size) but not the
tensors, so after the refresh the model must load *and* reproduce its test vectors.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file

from biozoo.manifest.rehash import FileHash, rewrite

TINY = Path(__file__).resolve().parents[1] / "registry" / "core" / "tiny-transformer"
SHA_A, SHA_B = "a" * 64, "b" * 64


def zoo(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "biozoo.cli.app", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))


def retrained(tmp_path: Path) -> Path:
    """A copy of the tiny model whose weights and test vectors were written again (same tensors, new bytes)."""
    folder = tmp_path / "tiny"
    shutil.copytree(TINY, folder)
    for name in ("model.safetensors", "test_vectors.safetensors"):
        save_file(load_file(folder / name), folder / name, metadata={"retrained": "2026-12-05"})
    return folder


def test_hash_refreshes_a_retrained_folder_and_keeps_everything_else(tmp_path: Path) -> None:
    folder = retrained(tmp_path)
    manifest = folder / "manifest.yaml"
    before = "# written by hand: keep this comment\n" + manifest.read_text()
    manifest.write_text(before)
    os.chmod(manifest, 0o640)
    assert zoo("load", str(folder)).returncode == 1  # sha256 mismatch

    check = zoo("manifest", "hash", str(folder), "--check")
    assert check.returncode == 1 and "Traceback" not in check.stderr, check.stderr
    assert "differs model.safetensors" in check.stdout and "differs test_vectors.safetensors" in check.stdout
    assert check.stderr.startswith("error: 2 file(s) differ") and "hint: run `zoo manifest hash" in check.stderr
    assert manifest.read_text() == before  # --check writes nothing

    done = zoo("manifest", "hash", str(folder))
    assert done.returncode == 0, done.stderr
    assert "updated model.safetensors" in done.stdout and "core/tiny-transformer assembles" in done.stdout
    old, new = yaml.safe_load(before), yaml.safe_load(manifest.read_text())
    weights = folder / "model.safetensors"
    assert new["weights"]["files"][0]["size"] == weights.stat().st_size != old["weights"]["files"][0]["size"]
    expected = before
    for key in ("weights", "test_vectors"):
        entry = old[key]["files"][0] if key == "weights" else old[key]
        entry_new = new[key]["files"][0] if key == "weights" else new[key]
        expected = expected.replace(entry["sha256"], entry_new["sha256"])
    expected = expected.replace(f"size: {old['weights']['files'][0]['size']}", f"size: {weights.stat().st_size}")
    assert manifest.read_text() == expected  # only the hashes and the size changed, the comment is kept
    assert stat.S_IMODE(manifest.stat().st_mode) == 0o640

    assert zoo("manifest", "hash", str(folder), "--check").returncode == 0
    verify = zoo("verify", str(folder))
    assert verify.returncode == 0 and "reproduces its test vectors" in verify.stdout, verify.stderr
    again = zoo("manifest", "hash", str(folder))
    assert again.returncode == 0 and "is up to date" in again.stdout


def test_a_missing_size_is_added(tmp_path: Path) -> None:
    folder = retrained(tmp_path)
    manifest = folder / "manifest.yaml"
    lines = [ln for ln in manifest.read_text().splitlines(keepends=True) if not ln.strip().startswith("size:")]
    manifest.write_text("".join(lines))
    assert zoo("manifest", "hash", str(folder)).returncode == 0
    data = yaml.safe_load(manifest.read_text())
    assert data["weights"]["files"][0]["size"] == (folder / "model.safetensors").stat().st_size
    assert zoo("load", str(folder)).returncode == 0


def test_nothing_is_written_when_the_model_does_not_assemble(tmp_path: Path) -> None:
    folder = retrained(tmp_path)
    manifest = folder / "manifest.yaml"
    broken = manifest.read_text().replace("num_heads: 4", "num_heads: 3")  # 64 is not divisible by 3
    manifest.write_text(broken)
    proc = zoo("manifest", "hash", str(folder))
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert manifest.read_text() == broken


def test_weights_on_the_hub_are_refused(tmp_path: Path) -> None:
    folder = retrained(tmp_path)
    manifest = folder / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("source: .", "source: hf://lab/tiny@main"))
    proc = zoo("manifest", "hash", str(folder))
    assert proc.returncode == 1 and "are on the Hub" in proc.stderr and "hint: " in proc.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # flow style, quoted values, a comment after the hash, CRLF line ends
            f'weights:\r\n  files: [{{path: m.safetensors, sha256: "{SHA_A}"}}]  # c\r\n',
            f'weights:\r\n  files: [{{path: m.safetensors, sha256: "{SHA_B}", size: 7}}]  # c\r\n',
        ),
        (  # block style, size missing, the sha256 on the last line without a newline
            f"weights:\n  files:\n  - path: m.safetensors\n    sha256: '{SHA_A}'",
            f"weights:\n  files:\n  - path: m.safetensors\n    sha256: '{SHA_B}'\n    size: 7",
        ),
        (  # a comment after the hash stays on its line; the size goes below
            f"weights:\n  files:\n    - sha256: {SHA_A}  # old\n      path: m.safetensors\nlicense: x\n",
            f"weights:\n  files:\n    - sha256: {SHA_B}  # old\n      size: 7\n      path: m.safetensors\nlicense: x\n",
        ),
    ],
)
def test_rewrite_changes_only_the_values(text: str, expected: str) -> None:
    assert rewrite(text, [FileHash("m.safetensors", SHA_A, None, SHA_B, 7)]) == expected
