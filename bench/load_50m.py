"""Load a 50M-parameter model from local safetensors: biozoo vs a plain safetensors read.

The model has scGPT whole-human's shape (60,697-token vocabulary, 512 wide,
12 layers, 8 heads, 512 feed-forward), built with ``core.sequence_classifier``
and random weights. Every measurement runs in a fresh process so peak RSS is
its own; the page cache is warm (the file was just written) for both sides.

* ``plain``: ``safetensors.torch.load_file`` (what a user would do by hand);
* ``biozoo``: ``biozoo.load(folder)`` (assembly on meta, key check, one private read + assign),
  with the sha256 already verified once (the normal case) and, separately, the
  first load that hashes the file;
* ``+touch``: the same followed by reading every weight once (sum), which is
  what the first forward pass costs either way.

Run: ``python bench/load_50m.py`` (prints a Markdown table for docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPEATS = 5

CHILD = r"""
import json, sys, time
mode, folder = sys.argv[1], sys.argv[2]

def status():
    fields = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields

import torch, safetensors.torch, biozoo, biozoo.api, biozoo.assembly, biozoo.weights
torch.set_num_threads(1)
base = status()
t = time.perf_counter()
if mode == "plain+bytes":  # read the whole file into memory, then parse (no mmap)
    tensors = safetensors.torch.load(open(folder + "/model.safetensors", "rb").read())
elif mode.startswith("plain"):
    tensors = safetensors.torch.load_file(folder + "/model.safetensors")
else:
    model = biozoo.load(folder)
    tensors = model.state_dict()
elapsed = time.perf_counter() - t
if mode.endswith("touch"):
    total = sum(float(v.float().sum()) for v in tensors.values())
elapsed_touch = time.perf_counter() - t
end = status()
print(json.dumps({"seconds": elapsed, "seconds_touch": elapsed_touch,
                  "peak_delta_mb": end["VmHWM"] - base["VmHWM"],
                  "anon_delta_mb": end["RssAnon"] - base["RssAnon"],
                  "file_delta_mb": end["RssFile"] - base["RssFile"]}))
"""


def build(folder: Path) -> int:
    import torch
    import yaml
    from safetensors.torch import save_file

    from biozoo.assembly import assemble
    from biozoo.manifest.io import parse_manifest
    from biozoo.utils.hashing import sha256_file

    d = 512
    manifest = {
        "id": "bench/scgpt-shaped-50m",
        "architecture": {"name": "core.sequence_classifier"},
        "components": {
            "embedding": {"name": "core.token_embedding", "config": {"vocab_size": 60697, "d_model": d}},
            "encoder": {
                "name": "core.transformer_encoder",
                "config": {"d_model": d, "num_layers": 12, "num_heads": 8, "dim_feedforward": d, "dropout": 0.0},
            },
            "head": {"name": "core.pooled_classifier", "config": {"d_model": d, "num_classes": 10}},
        },
        "weights": {"source": ".", "files": [{"path": "model.safetensors", "sha256": "0" * 64}]},
    }
    torch.manual_seed(0)
    model = assemble(parse_manifest(manifest), device="cpu")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "model.safetensors")
    manifest["weights"]["files"][0]["sha256"] = sha256_file(folder / "model.safetensors")
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    return sum(v.numel() for v in state.values())


def run(mode: str, folder: Path, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(folder)], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        params = build(folder)
        size_mb = (folder / "model.safetensors").stat().st_size / 2**20
        env = {**os.environ, "BIOZOO_CACHE": str(folder / "cache")}
        first = run("biozoo", folder, env)  # hashes the file once (first use)
        results: dict[str, list[dict[str, float]]] = {}
        for _ in range(REPEATS):  # interleaved, so drift hits every mode alike
            for mode in ("plain", "biozoo", "plain+touch", "biozoo+touch", "plain+bytes"):
                results.setdefault(mode, []).append(run(mode, folder, env))
    print(f"model: {params:,} parameters, {size_mb:.1f} MiB fp32 safetensors; median of {REPEATS} fresh processes\n")
    print("| path | seconds | peak RSS increase MiB | ÷ weight bytes | private (anon) MiB | file-backed MiB |")
    print("|---|---|---|---|---|---|")
    for mode, rows in results.items():
        secs = statistics.median(r["seconds_touch"] for r in rows)
        med = {k: statistics.median(r[k] for r in rows) for k in ("peak_delta_mb", "anon_delta_mb", "file_delta_mb")}
        print(
            f"| {mode} | {secs:.4f} | {med['peak_delta_mb']:.0f} | {med['peak_delta_mb'] / size_mb:.2f} | "
            f"{med['anon_delta_mb']:.0f} | {med['file_delta_mb']:.0f} |"
        )
    print(
        f"| biozoo, first use (hashes the file) | {first['seconds']:.3f} | {first['peak_delta_mb']:.0f} | "
        f"{first['peak_delta_mb'] / size_mb:.2f} | {first['anon_delta_mb']:.0f} | {first['file_delta_mb']:.0f} |"
    )


if __name__ == "__main__":
    main()
