"""Train ``chroma/demo``: a small Chroma backbone diffusion model, and evaluate the backbones it samples.

Data: the 50 single chains of the TS50 set that mdanalysistests bundles (``data/dssp/*.pdb.gz``, 79-173
residues; PDB entries, public domain). ``HELD_OUT`` (every sixth chain in name order, fixed here) is never
trained on; the other 42 train the model.

Model: ``chroma.backbone`` with a small config (64-wide nodes and edges, 2 GNN layers, kNN 20, globular
covariance as in the public model, no dropout) and the reference's ``scale`` prediction type: X0 is a learned,
SNR-biased mix of the prediction and the input, so at low noise the denoiser is near the identity. (A first run
with plain ``X0`` prediction learnt almost nothing at low t, which the importance weight below all but ignores,
and its samples diverged.) The feature-centering buffers, which the reference computes from
PDB 2G3N, are the mean raw features of the clean training chains.

Objective: the reference's ``GraphBackbone.forward`` noises X at a random t and scores ``denoise`` with its
``ReconstructionLosses``; its training loop and loss weights were never published. Here one step draws one t ~
U(T_MIN, 1) per chain, noises the chain with the diffusion process, and minimises the sum of the five aligned,
normalised MSE terms (``batch_{global,fragment,pair,neighborhood,distance}_mse``): all five are in the same unit
(1 = as far from X as a second noised copy, times ``loss_scale`` and the importance weight 1/p(SSNR(t)) that
makes uniform t count uniformly in SSNR). Chains go through the model one at a time, the gradient accumulated
over a batch: padded residues have all-zero frame averages, whose SVD backward is NaN. The ELBO and the
pseudo-ELBO are left out: their SNR-derivative weight spans seven orders of magnitude over t and swamps a small
model's gradients. Adam with warm-up and
cosine decay, gradient clipping, and an exponential moving average of the weights (the reference's public model
was "trained with EMA"); the EMA weights ship. Dithers are off in training (deterministic under the seed).

Run: ``.venv/bin/python scripts/train_chroma_demo.py`` (trains, writes ``registry/chroma/demo``, evaluates;
training took 9 min on the shared 2-core machine) or ``... --evaluate`` (evaluates the shipped model only; about
15 min, mostly sampling). Results: docs/chroma.md. Needs mdanalysistests
(``pip install --no-deps mdanalysistests``) for the chains.

Evaluation: ``SAMPLES_PER_LENGTH`` backbones at each of ``EVAL_LENGTHS`` (near the held-out chains' lengths),
``EVAL_STEPS`` reverse-SDE steps at each of ``SETTINGS`` (the sampler's defaults; temperature 1), against the
held-out real chains and two baselines (a 3.8 A random walk, the same architecture with its random initial
weights): CA-CA distances, radius of gyration against 2.2 L^0.38 A, P-SEA secondary structure (biotite) and CA
clashes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "registry" / "chroma" / "demo"
SEED = 0
#: every sixth TS50 chain in name order (positions 2, 8, ..., 44): 8 chains of 83-169 residues, never trained on
HELD_OUT = ("1dx5I", "1or4A", "2cviA", "2va0A", "3e8mA", "3hklA", "3nbkA", "3q4oA")
ARCH = {
    "dim_nodes": 64,
    "dim_edges": 64,
    "num_neighbors": 20,
    "num_layers": 2,
    "dropout": 0.0,
    "prediction_type": "scale",
    "noise_covariance_model": "globular",
    "noise_complex_scaling": True,
}
TERMS = ("rmsd", "fragment", "pair", "neighborhood", "distance")
OBJECTIVE = ("batch_global_mse", "batch_fragment_mse", "batch_pair_mse", "batch_neighborhood_mse", "batch_distance_mse")
STEPS, BATCH, LR, WARMUP, CLIP, EMA = 200, 4, 2e-3, 20, 1.0, 0.98
T_MIN = 1e-3
VAL_TIMES = (0.1, 0.3, 0.5, 0.7, 0.9)
EVAL_LENGTHS = (90, 130, 160)
SAMPLES_PER_LENGTH = 8
EVAL_STEPS = 100
#: sampler settings evaluated: the reference's defaults (low temperature), and temperature 1 without Langevin
SETTINGS = {
    "defaults (1/T 10, langevin 2)": {},
    "1/T 1, langevin 0": {"inverse_temperature": 1.0, "langevin_factor": 0.0},
}
CLASH_A, CA_CA_BAND = 3.0, (3.6, 4.0)


def ts50_dir() -> Path:
    """mdanalysistests' TS50 folder, located without importing the package (it needs MDAnalysis)."""
    spec = importlib.util.find_spec("MDAnalysisTests")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("mdanalysistests is not installed: pip install --no-deps mdanalysistests")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "dssp"


def load_chains() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every TS50 chain as backbone ``(X [1, L, 4, 3], C [1, L])``, by name."""
    from biozoo_chroma import Protein

    chains = {}
    for path in sorted(ts50_dir().glob("????[A-Z].pdb.gz")):
        X, C, _ = Protein(path).to_XCS()
        chains[path.name[:5]] = (X[:, :, :4].float(), C)
    if len(chains) != 50 or not set(HELD_OUT) <= set(chains):
        sys.exit(f"expected the 50 TS50 chains with {HELD_OUT}, found {len(chains)}")
    return chains


@torch.no_grad()
def set_centering(model: torch.nn.Module, chains: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """The feature-centering buffers from the clean training chains (the reference uses PDB 2G3N's)."""
    for encoder in model.encoders:
        graph = encoder.feature_graph
        node_sums: list[torch.Tensor] | None = None
        edge_sums: list[torch.Tensor] | None = None
        n_nodes = n_edges = 0.0
        for X, C in chains:
            edge_idx, mask_ij = graph.graph_builder(X, C)
            nodes, edges = graph.features(X, C, edge_idx)
            mask_i = (C > 0).float()
            node_s = [(h * mask_i[..., None]).sum((0, 1)) for h in nodes]
            edge_s = [(h * mask_ij[..., None]).sum((0, 1, 2)) for h in edges]
            node_sums = node_s if node_sums is None else [a + b for a, b in zip(node_sums, node_s, strict=True)]
            edge_sums = edge_s if edge_sums is None else [a + b for a, b in zip(edge_sums, edge_s, strict=True)]
            n_nodes, n_edges = n_nodes + float(mask_i.sum()), n_edges + float(mask_ij.sum())
        for i, s in enumerate(node_sums or []):
            getattr(graph, f"node_means_{i}").copy_((s / n_nodes).reshape(1, 1, -1))
        for i, s in enumerate(edge_sums or []):
            getattr(graph, f"edge_means_{i}").copy_((s / n_edges).reshape(1, 1, -1))


def objective(model, losses, X: torch.Tensor, C: torch.Tensor, t: torch.Tensor, generator: torch.Generator):
    """The training loss at times ``t`` (one per chain): noise, denoise, sum of the normalised MSE terms."""
    Z = torch.randn(X.shape, generator=generator)
    X_t = model.diffusion.noise(X, C, t, Z)
    X0 = model.denoise(X_t, C, t, dither=False)
    out = losses(X0, X, C, t, terms=TERMS, generator=generator)
    return sum(out[k] for k in OBJECTIVE), out


@torch.no_grad()
def validation_loss(model, losses, held_out: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """The objective on the held-out chains at fixed times and fixed noise (comparable across runs)."""
    generator = torch.Generator().manual_seed(SEED + 1)
    values = []
    for X, C in held_out:
        for t in VAL_TIMES:
            values.append(float(objective(model, losses, X, C, torch.tensor([t]), generator)[0]))
    return float(np.mean(values))


def build_model(chains: list[tuple[torch.Tensor, torch.Tensor]]):
    """The demo architecture at its seeded initial weights, centered on the training chains."""
    from biozoo_chroma.backbone.model import ChromaBackbone

    torch.manual_seed(SEED)
    model = ChromaBackbone(**ARCH)
    set_centering(model, chains)
    return model


def train_model() -> None:
    from biozoo_chroma.losses import ReconstructionLosses

    torch.set_num_threads(1)  # reproducible sums; and faster on the shared 2-core machine
    chains = load_chains()
    train = [v for k, v in chains.items() if k not in HELD_OUT]
    held_out = [chains[k] for k in HELD_OUT]
    model = build_model(train)
    losses = ReconstructionLosses(model.diffusion, loss_scale=10.0, num_neighbors=ARCH["num_neighbors"], dither=False)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * min(s, STEPS) / STEPS))
    )
    generator = torch.Generator().manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    model.train()
    val_start = validation_loss(model, losses, held_out)
    print(f"validation objective at initialisation: {val_start:.3f}", flush=True)
    start, order, history, skipped = time.perf_counter(), [], [], 0
    for step in range(STEPS):
        if len(order) < BATCH:
            order += rng.permutation(len(train)).tolist()
        batch, order = [train[i] for i in order[:BATCH]], order[BATCH:]
        t = T_MIN + (1 - T_MIN) * torch.rand(BATCH, generator=generator)
        optimizer.zero_grad()
        loss = 0.0
        for (X, C), t_i in zip(batch, t, strict=True):  # one chain at a time: no padding (see above)
            value, _ = objective(model, losses, X, C, t_i.reshape(1), generator)
            (value / BATCH).backward()
            loss += float(value.detach()) / BATCH
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        if not torch.isfinite(norm):
            skipped += 1  # a degenerate SVD/eigh backward; never seen with unpadded chains, counted if it happens
            continue
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].mul_(EMA).add_(v.detach(), alpha=1 - EMA) if v.is_floating_point() else ema[k].copy_(v)
        history.append(loss)
        if (step + 1) % 50 == 0:
            elapsed = time.perf_counter() - start
            print(f"step {step + 1}/{STEPS}  loss(50) {np.mean(history[-50:]):.3f}  {elapsed:.0f}s", flush=True)
    seconds = time.perf_counter() - start
    model.load_state_dict(ema)
    model.eval()
    report = {
        "steps": STEPS,
        "batch_size": BATCH,
        "seconds": round(seconds, 1),
        "train_chains": len(train),
        "held_out_chains": list(HELD_OUT),
        "validation_objective_at_init": round(val_start, 4),
        "validation_objective_final": round(validation_loss(model, losses, held_out), 4),
        "skipped_steps_non_finite_gradient": skipped,
        "train_objective_last_100_steps": round(float(np.mean(history[-100:])), 4),
    }
    write_model(model, report)
    print(json.dumps(report, indent=2))


def write_model(model: torch.nn.Module, report: dict) -> None:
    """The registry folder: weights, test vectors from the eval forward (as ``zoo convert chroma``), manifest."""
    from safetensors.torch import save_file

    from biozoo.manifest.io import parse_manifest, write_manifest
    from biozoo.utils.atomic import atomic_directory
    from biozoo.utils.hashing import sha256_file
    from biozoo_chroma.convert import VECTOR_TOLERANCE, test_vector_inputs

    if OUT.exists():
        shutil.rmtree(OUT)  # re-training replaces the shipped model
    with atomic_directory(OUT) as folder:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        inputs = test_vector_inputs(model)
        with torch.no_grad():
            expected = model(**inputs)
        vectors = {f"input.{k}": v for k, v in inputs.items()} | {f"output.{k}": v for k, v in expected.items()}
        save_file({k: v.contiguous() for k, v in vectors.items()}, folder / "test_vectors.safetensors")
        data = {
            "format_version": 1,
            "id": "chroma/demo",
            "description": (
                "A small Chroma backbone diffusion model (64-wide, 2 GNN layers, kNN 20, scale prediction; 0.19M "
                "parameters) trained "
                "by biozoo from random initialisation for ~10 CPU minutes on 42 real chains of the TS50 set (8 held "
                "out). It samples protein backbones with `zoo sample`. A demonstration model: its samples are far "
                "from protein-like (see docs/chroma.md); it is not Chroma's published model."
            ),
            "architecture": {"name": "chroma.backbone", "config": dict(ARCH)},
            "weights": {"files": [{"path": "model.safetensors", "sha256": sha256_file(folder / "model.safetensors")}]},
            "test_vectors": {
                "file": "test_vectors.safetensors",
                "sha256": sha256_file(folder / "test_vectors.safetensors"),
                "tolerance": VECTOR_TOLERANCE,
                "provenance": "outputs of this model's eval forward (dithers off) at training time, on the inputs "
                "zoo convert chroma uses (ideal helices plus seeded noise); a regression check, no reference exists",
            },
            "license": "MIT",
            "authors": ["biozoo developers"],
            "tags": ["chroma", "protein", "structure", "diffusion", "demo"],
            "references": ["https://github.com/generatebio/chroma", "https://doi.org/10.1093/protein/gzs017"],
            "metadata": {
                "training": report,
                "objective": "sum of ReconstructionLosses batch_{global,fragment,pair,neighborhood,distance}_mse at "
                f"t ~ U({T_MIN}, 1) per chain; Adam lr {LR}, warm-up {WARMUP}, cosine decay, clip {CLIP}, EMA {EMA}",
                "data": "TS50 chains (Chuang et al., PEDS 2012) as bundled by mdanalysistests (LGPL-2.1+ package); "
                "the coordinates are PDB entries, public domain (wwPDB: CC0). The weights are MIT like biozoo.",
                "script": "scripts/train_chroma_demo.py",
            },
        }
        write_manifest(parse_manifest(data), folder)


# -- evaluation ----------------------------------------------------------------------------------------------------


def ca_of(X: torch.Tensor, C: torch.Tensor) -> np.ndarray:
    """CA coordinates of the present residues of one chain ``[L, 3]``."""
    return X[0, (C[0] > 0), 1].detach().double().numpy()


def structure_metrics(ca: np.ndarray) -> dict:
    """CA-CA steps, radius of gyration, P-SEA fractions and clashes of one chain's CA trace."""
    import biotite.structure as struc

    L = len(ca)
    if not np.isfinite(ca).all():
        return {"L": L, "finite": False}
    steps = np.linalg.norm(np.diff(ca, axis=0), axis=1)
    rg = float(np.sqrt(((ca - ca.mean(0)) ** 2).sum(1).mean()))
    atoms = struc.AtomArray(L)
    atoms.coord = ca.astype(np.float32)
    atoms.atom_name[:] = "CA"
    atoms.element[:] = "C"
    atoms.res_name[:] = "ALA"
    atoms.res_id[:] = np.arange(1, L + 1)
    atoms.chain_id[:] = "A"
    atoms.hetero[:] = False
    sse = struc.annotate_sse(atoms)
    d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
    i, j = np.triu_indices(L, k=3)
    clashes = int((d[i, j] < CLASH_A).sum())
    return {
        "L": L,
        "finite": True,
        "steps": steps,
        "rg": rg,
        "helix": float((sse == "a").mean()),
        "strand": float((sse == "b").mean()),
        "coil": float((sse == "c").mean()),
        "clashes": clashes,
        "pairs": len(i),
    }


def summarise(rows: list[dict]) -> dict:
    """One table row from per-structure metrics (non-finite structures are counted, not averaged)."""
    ok = [r for r in rows if r["finite"]]
    if not ok:
        return {"n": len(rows), "finite": 0}
    steps = np.concatenate([r["steps"] for r in ok])
    rg_ratio = [r["rg"] / (2.2 * r["L"] ** 0.38) for r in ok]
    lo, hi = CA_CA_BAND
    return {
        "n": len(rows),
        "finite": len(ok),
        "ca_ca_mean": float(steps.mean()),
        "ca_ca_sd": float(steps.std()),
        "ca_ca_in_band": float(((steps >= lo) & (steps <= hi)).mean()),
        "rg_mean": float(np.mean([r["rg"] for r in ok])),
        "rg_over_law_mean": float(np.mean(rg_ratio)),
        "rg_over_law_sd": float(np.std(rg_ratio)),
        "helix": float(np.mean([r["helix"] for r in ok])),
        "strand": float(np.mean([r["strand"] for r in ok])),
        "coil": float(np.mean([r["coil"] for r in ok])),
        "clashes_per_100_residues": float(100 * sum(r["clashes"] for r in ok) / sum(r["L"] for r in ok)),
        "clash_pair_fraction": float(sum(r["clashes"] for r in ok) / sum(r["pairs"] for r in ok)),
        "structures_with_clash": float(np.mean([r["clashes"] > 0 for r in ok])),
    }


def random_walk(length: int, rng: np.random.Generator) -> np.ndarray:
    """A freely jointed chain of 3.8 A steps in uniformly random directions."""
    v = rng.normal(size=(length - 1, 3))
    v = 3.8 * v / np.linalg.norm(v, axis=1, keepdims=True)
    return np.concatenate([np.zeros((1, 3)), np.cumsum(v, axis=0)])


@torch.no_grad()
def sampled_metrics(model: torch.nn.Module, steps: int = EVAL_STEPS, **settings: float) -> dict[int, list[dict]]:
    """``SAMPLES_PER_LENGTH`` samples per length (seed SEED + length), each measured."""
    from biozoo.errors import BiozooError

    model.eval()
    out = {}
    for length in EVAL_LENGTHS:
        try:
            proteins = model.sample(
                samples=SAMPLES_PER_LENGTH, steps=steps, chain_lengths=[length], seed=SEED + length, **settings
            )
        except (RuntimeError, BiozooError) as exc:  # diverged: non-finite frames make the SVD fail
            print(f"length {length}: sampling diverged ({type(exc).__name__})", flush=True)
            out[length] = [{"L": length, "finite": False}] * SAMPLES_PER_LENGTH
            continue
        out[length] = [structure_metrics(ca_of(*p.to_XCS()[:2])) for p in proteins]
    return out


def evaluate() -> dict:
    import biozoo

    torch.set_num_threads(1)  # reproducible sums; and faster on the shared 2-core machine
    chains = load_chains()
    held = [structure_metrics(ca_of(*chains[k])) for k in HELD_OUT]
    rng = np.random.default_rng(SEED)
    walks = [structure_metrics(random_walk(n, rng)) for n in EVAL_LENGTHS for _ in range(SAMPLES_PER_LENGTH)]
    trained = biozoo.load("chroma/demo")
    random_weights = build_model([v for k, v in chains.items() if k not in HELD_OUT])
    result: dict = {
        "settings": {
            "lengths": list(EVAL_LENGTHS),
            "samples_per_length": SAMPLES_PER_LENGTH,
            "steps": EVAL_STEPS,
            "sampler": "reverse_sde, euler_maruyama, tspan (1, 0.001)",
            "seed": f"{SEED} + length",
        },
        "held-out real chains": summarise(held) | {"lengths": [r["L"] for r in held]},
        "random walk (3.8 A)": summarise(walks),
    }
    for label, settings in SETTINGS.items():
        for name, model in (("chroma/demo", trained), ("random weights", random_weights)):
            by_length = sampled_metrics(model, **settings)
            rows = [r for rows in by_length.values() for r in rows]
            result[f"{name}, {label}"] = summarise(rows) | {
                "rg_by_length": {n: summarise(r).get("rg_mean") for n, r in by_length.items()}
            }
            print(label, name, json.dumps(result[f"{name}, {label}"]), flush=True)
    result["law 2.2 L^0.38 by length"] = {n: 2.2 * n**0.38 for n in EVAL_LENGTHS}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    if "--evaluate" not in sys.argv:
        train_model()
    evaluate()
