"""Train ``chroma/demo-design``: a small Chroma design network, and evaluate its designs on held-out chains.

Data: the TS50 chains of the backbone demo (``train_chroma_demo.py``: mdanalysistests' ``data/dssp``, PDB entries,
public domain) with the same split: its ``HELD_OUT`` chains are never trained on, the other 42 train.

Model: ``chroma.design`` with a small config (64-wide nodes and edges, the public-like design edge features of
``make_chroma_graph_golden.DESIGN_KWARGS``, kNN 20, 2 encoder layers and 1 layer per decoder stage, Potts
(factor) and marginals heads, the autoregressive sequence decoder and the two-stage chi decoder, a log-SNR time
embedding with the globular covariance). Feature-centering buffers: the mean raw features of the clean training
chains (the backbone demo's ``set_centering``).

Objective: the reference's ``GraphDesign.loss`` with ``sample_noise=True``: the backbone is noised by the diffusion
process at a time t, the side chains are rebuilt on it from the native chi angles, and the loss is the sum of the
per-residue negative log-likelihoods the network gives, each averaged over the batch's residues: autoregressive
``logp_S`` (teacher forced, in a random spatial decoding order, ``SpatialTraversal``), ``logp_S_potts`` (the Potts
head's composite likelihood), ``logp_S_marginals`` and ``logp_chi`` (averaged over the chi angles present); in
training mode the heads use label smoothing 0.1 as the reference's do. The reference's training loop was never
published; its ``sample_t`` draws t ~ U(0, 1) (correlated across a batch). Here t ~ U(0, ``T_MAX``) per chain:
at t = 0.5 the noise is about 3 A RMS per atom on these chains (0.4 A at 0.3), so the model learns both exact and
noise-augmented backbones up to the reference's ``design_t`` default (0.5) without spending a short run on
backbones noised beyond recognition. Adam with warm-up and cosine decay, gradient clipping, an EMA of the
weights (shipped), dropout 0.1, batches of padded chains; seeded, one thread.

Evaluation on the held-out chains (exact native backbones, t = 0): native sequence recovery of Potts design (DLMC
at the reference's defaults: temperature 0.01, 500 sweeps, LCP), autoregressive design at temperature 0.1 (LCP),
argmax of the marginals head, against the training set's amino-acid composition (sampled, and its most frequent
type everywhere) and uniformly random sequences, per chain and over ``EVAL_SEEDS``; side chains packed by
``pack`` with the native sequence (temperature 1e-3) against chi drawn uniformly at random: the fraction of chi1
and chi2 within 40 degrees of native (either naming of symmetric atoms) and the mean side-chain RMSD (residues
with a chi angle).

Run: ``.venv/bin/python scripts/train_chroma_design_demo.py`` (trains, writes ``registry/chroma/demo/design``,
evaluates) or ``... --evaluate`` (evaluates the shipped model only). Results: docs/chroma.md ("chroma/demo design
network"). Needs mdanalysistests (``pip install --no-deps mdanalysistests``).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from make_chroma_graph_golden import DESIGN_KWARGS  # noqa: E402
from train_chroma_demo import HELD_OUT, SEED, set_centering, ts50_dir  # noqa: E402

OUT = ROOT / "registry" / "chroma" / "demo" / "design"
MODEL_ID = "chroma/demo-design"
ARCH = {
    "dim_nodes": 64,
    "dim_edges": 64,
    "num_neighbors": 20,
    "node_features": DESIGN_KWARGS["node_features"],
    "edge_features": DESIGN_KWARGS["edge_features"],
    "num_layers": 1,  # each decoder stage (sequence, sequence re-encoder, chi); the folder stays under 2 MB
    "num_layers_encoder": 2,
    "dropout": 0.1,
    "decoder_num_hidden": 64,
    "label_smoothing": 0.1,
    "predict_S_marginals": True,
    "predict_S_potts": True,
    "potts_parameterization": "factor",
    "noise_schedule": "log_snr",
    "noise_covariance_model": "globular",
    "noise_complex_scaling": True,
    "sidechains": True,
    "separate_packing": True,
}
TERMS = ("logp_S", "logp_S_potts", "logp_S_marginals")  # per residue; logp_chi is per chi angle
STEPS, BATCH, LR, WARMUP, CLIP, EMA = 800, 4, 2e-3, 30, 1.0, 0.99
T_MAX = 0.5
#: outputs not stored as test vectors: the couplings J [2, 24, 20, 20, 20] alone are 1.5 MB (more than the weights);
#: h and logp_S_potts (which reads J on every edge) still check the Potts head
VECTORS_LEFT_OUT = ("J",)
EVAL_SEEDS = (0, 1, 2)
AR_TEMPERATURE = 0.1
CHI_TOLERANCE = 40.0  # degrees


# -- data ----------------------------------------------------------------------------------------------------------


def load_chains(all_atom: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Every TS50 chain as ``(X [1, L, 14 or 4, 3], C, S)`` by name (all-atom: residues missing atoms get C < 0)."""
    from biozoo_chroma import Protein

    chains = {p.name[:5]: Protein(p).to_XCS(all_atom=all_atom) for p in sorted(ts50_dir().glob("????[A-Z].pdb.gz"))}
    if len(chains) != 50 or not set(HELD_OUT) <= set(chains):
        sys.exit(f"expected the 50 TS50 chains with {HELD_OUT}, found {len(chains)}")
    return {k: (X.float(), C, S) for k, (X, C, S) in chains.items()}


def pad_batch(chains: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Chains padded to one length (C = 0, zeros) and stacked: ``X [B, L, A, 3], C [B, L], S [B, L], chi [B, L, 4]``."""
    L = max(c[1].shape[1] for c in chains)

    def pad(x: torch.Tensor) -> torch.Tensor:
        width = [0, 0] * (x.dim() - 2) + [0, L - x.shape[1]]
        return torch.nn.functional.pad(x, width)

    return tuple(torch.cat([pad(c[i]) for c in chains]) for i in range(len(chains[0])))


def composition(chains: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Amino-acid frequencies ``[20]`` of the residues with structure."""
    counts = sum(torch.bincount(S[C > 0], minlength=20).double() for _, C, S in chains)
    return counts / counts.sum()


# -- model ---------------------------------------------------------------------------------------------------------


def build_model(train: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """The demo design network at its seeded initial weights, centered on the clean training backbones."""
    from biozoo_chroma.design import ChromaDesign

    torch.manual_seed(SEED)
    model = ChromaDesign(**ARCH)
    set_centering(SimpleNamespace(encoders=[model.encoder]), [(X[:, :, :4], C) for X, C, _ in train])
    return model


def noise_process():
    """The diffusion process the design network's time embedding describes (as the reference's noise_perturb)."""
    from biozoo_chroma.diffusion import DiffusionProcess

    return DiffusionProcess(
        noise_schedule=ARCH["noise_schedule"],
        covariance_model=ARCH["noise_covariance_model"],
        complex_scaling=ARCH["noise_complex_scaling"],
    )


def objective(model, process, batch: tuple[torch.Tensor, ...], t: torch.Tensor, generator: torch.Generator):
    """The summed NLLs of one padded batch at times ``t`` (backbone noised, native chi rebuilt on it)."""
    from biozoo_chroma.design.traversal import SpatialTraversal

    X, C, S, chi = batch
    X_bb = X[:, :, :4]
    X_noised = process.noise(X_bb, C, t, torch.randn(X_bb.shape, generator=generator))
    X_noised = model.chi_to_X(X_noised, C, S, chi)[0]
    permute_idx = SpatialTraversal()(X_bb, C, generator=generator)
    out = model(X_noised, C, S, t=t, permute_idx=permute_idx)
    mask_i = out["mask_i"]
    terms = {k: -(out[k] * mask_i).sum() / mask_i.sum() for k in TERMS}
    terms["logp_chi"] = -(out["logp_chi"] * out["mask_chi"]).sum() / out["mask_chi"].sum()
    return sum(terms.values()), terms


def with_chi(chains: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, ...]]:
    """Each chain with its native chi angles (computed once; the rebuild on noised backbones reuses them)."""
    from biozoo_chroma.design.network import own_chi

    return [(X, C, S, own_chi(X, C, S)[0]) for X, C, S in chains]


@torch.no_grad()
def validation(model, process, held_out: list[tuple[torch.Tensor, ...]]) -> dict[str, float]:
    """Each NLL term on the held-out chains at t = 0 and 0.3, fixed noise and orders (comparable across runs)."""
    generator = torch.Generator().manual_seed(SEED + 1)
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    for chain in held_out:
        for t in (0.0, 0.3):
            for k, v in objective(model, process, chain, torch.tensor([t]), generator)[1].items():
                sums[k] = sums.get(k, 0.0) + float(v) / (2 * len(held_out))
    model.train(was_training)
    return {k: round(v, 4) for k, v in sums.items()}


def train_model() -> None:
    torch.set_num_threads(1)  # reproducible sums; and faster on the shared 2-core machine
    chains = load_chains(all_atom=True)
    train = [v for k, v in chains.items() if k not in HELD_OUT]
    held_out = with_chi([chains[k] for k in HELD_OUT])
    model = build_model(train)
    train = with_chi(train)
    process = noise_process()
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * min(s, STEPS) / STEPS))
    )
    generator = torch.Generator().manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    val_start = validation(model, process, held_out)
    print("held-out NLLs at initialisation:", val_start, flush=True)
    model.train()
    start, order, history, skipped = time.perf_counter(), [], [], 0
    for step in range(STEPS):
        if len(order) < BATCH:
            order += rng.permutation(len(train)).tolist()
        batch, order = pad_batch([train[i] for i in order[:BATCH]]), order[BATCH:]
        t = T_MAX * torch.rand(BATCH, generator=generator)
        optimizer.zero_grad()
        loss, terms = objective(model, process, batch, t, generator)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        if not torch.isfinite(norm):
            skipped += 1  # counted if it ever happens
            continue
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].mul_(EMA).add_(v.detach(), alpha=1 - EMA) if v.is_floating_point() else ema[k].copy_(v)
        history.append([float(loss.detach())] + [float(v.detach()) for v in terms.values()])
        if (step + 1) % 25 == 0:
            mean = np.mean(history[-25:], axis=0).round(3).tolist()
            print(f"step {step + 1}/{STEPS}  loss, {', '.join(terms)} (25): {mean}  "
                  f"{time.perf_counter() - start:.0f}s", flush=True)  # fmt: skip
    seconds = time.perf_counter() - start
    model.load_state_dict(ema)
    model.eval()
    report = {
        "steps": STEPS,
        "batch_size": BATCH,
        "seconds": round(seconds, 1),
        "train_chains": len(train),
        "held_out_chains": list(HELD_OUT),
        "held_out_nll_at_init": val_start,
        "held_out_nll_final": validation(model, process, held_out),
        "skipped_steps_non_finite_gradient": skipped,
        "train_loss_last_100_steps": round(float(np.mean([h[0] for h in history[-100:]])), 4),
    }
    write_model(model, report)
    print(json.dumps(report, indent=2))


def write_model(model: torch.nn.Module, report: dict) -> None:
    """The registry folder: weights, test vectors of every head (the converter's inputs), manifest; hashed by
    ``zoo manifest hash``'s refresh."""
    from safetensors.torch import save_file

    from biozoo.manifest.io import parse_manifest, write_manifest
    from biozoo.manifest.rehash import refresh
    from biozoo.utils.atomic import atomic_directory
    from biozoo_chroma.convert import VECTOR_TOLERANCE, test_vector_inputs

    if OUT.exists():
        shutil.rmtree(OUT)  # re-training replaces the shipped model
    unset = "0" * 64  # refreshed below
    with atomic_directory(OUT) as folder:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        inputs = test_vector_inputs(model)
        with torch.no_grad():
            expected = model(**inputs)
        expected = {k: v for k, v in expected.items() if k not in VECTORS_LEFT_OUT}
        vectors = {f"input.{k}": v for k, v in inputs.items()} | {f"output.{k}": v for k, v in expected.items()}
        save_file({k: v.contiguous() for k, v in vectors.items()}, folder / "test_vectors.safetensors")
        data = {
            "format_version": 1,
            "id": MODEL_ID,
            "description": (
                "A small Chroma design network (64-wide, 2 encoder GNN layers, 1 per decoder stage, kNN 20; Potts, "
                "marginals and autoregressive sequence heads, two-stage chi decoder) trained by biozoo from random "
                "initialisation for about 18 CPU minutes on 42 TS50 chains (8 held out). A demonstration model: its "
                "designs recover far fewer native residues than Chroma's published design network (see docs/chroma.md)."
            ),
            "architecture": {"name": "chroma.design", "config": dict(ARCH)},
            "weights": {"files": [{"path": "model.safetensors", "sha256": unset}]},
            "test_vectors": {
                "file": "test_vectors.safetensors",
                "sha256": unset,
                "tolerance": VECTOR_TOLERANCE,
                "provenance": "every head (Potts h and logp_S_potts, J left out for size; marginals, autoregressive, "
                "teacher-forced chi) of this model at "
                "training time, on the inputs zoo convert chroma uses for design networks (ideal helices plus "
                "seeded noise, ideal side chains, a seeded sequence, the identity order); a regression check",
            },
            "license": "MIT",
            "authors": ["biozoo developers"],
            "tags": ["chroma", "protein", "design", "sequence", "demo"],
            "references": ["https://github.com/generatebio/chroma", "https://doi.org/10.1093/protein/gzs017"],
            "metadata": {
                "training": report,
                "objective": "GraphDesign.loss terms: neglogp_S (random spatial order) + neglogp_S_potts + "
                f"neglogp_S_marginals + neglogp_chi, backbone noised at t ~ U(0, {T_MAX}), native chi rebuilt; "
                f"Adam lr {LR}, warm-up {WARMUP}, cosine decay, clip {CLIP}, EMA {EMA}, dropout 0.1",
                "data": "TS50 chains (Chuang et al., PEDS 2012) as bundled by mdanalysistests (LGPL-2.1+ package); "
                "the coordinates are PDB entries, public domain (wwPDB: CC0). The weights are MIT like biozoo.",
                "script": "scripts/train_chroma_design_demo.py",
            },
        }
        write_manifest(parse_manifest(data), folder)
    refresh(OUT)


# -- evaluation ----------------------------------------------------------------------------------------------------


def recovery(S_design: torch.Tensor, S: torch.Tensor, C: torch.Tensor) -> float:
    """Fraction of residues with structure whose designed type is the native one."""
    present = C > 0
    return float((S_design == S)[present].double().mean())


def chi_metrics(X_packed: torch.Tensor, X: torch.Tensor, C: torch.Tensor, S: torch.Tensor) -> dict[str, float]:
    """chi1/chi2 within ``CHI_TOLERANCE`` of native (the better naming of symmetric atoms), mean side-chain RMSD."""
    from biozoo_chroma.sidechains import chi_angles, swap_symmetric_atoms
    from biozoo_chroma.sidechains.losses import sidechain_rmsd

    chi, mask = chi_angles(X_packed, C, S)
    native = [chi_angles(Y, C, S)[0] for Y in (X, swap_symmetric_atoms(X, S))]
    diff = torch.stack([torch.remainder(chi - n + math.pi, 2 * math.pi) - math.pi for n in native]).abs().amin(0)
    ok = diff < math.radians(CHI_TOLERANCE)
    rmsd = sidechain_rmsd(X_packed, X, C, S)
    has_chi = mask[..., 0] > 0
    return {
        "chi1": float(ok[..., 0][mask[..., 0] > 0].double().mean()),
        "chi2": float(ok[..., 1][mask[..., 1] > 0].double().mean()),
        "rmsd": float(rmsd[has_chi].double().mean()),
    }


@torch.no_grad()
def design_recoveries(model, X: torch.Tensor, C: torch.Tensor, S: torch.Tensor, seed: int) -> dict[str, float]:
    """Recovery of each design method on one backbone (exact, t = 0) with one seed."""
    from biozoo_chroma.design.autoregressive import design_autoregressive

    enc = model.encode(X, C)
    S_potts, _ = model.design_potts(X, C, generator=torch.Generator().manual_seed(seed))
    S_ar = design_autoregressive(
        model, enc, X, C, temperature=AR_TEMPERATURE, generator=torch.Generator().manual_seed(seed)
    ).S
    return {
        "potts (DLMC, T 0.01, 500 sweeps, LCP)": recovery(S_potts, S, C),
        f"autoregressive (T {AR_TEMPERATURE}, LCP)": recovery(S_ar, S, C),
        "marginals argmax": recovery(model.marginals(enc).argmax(-1), S, C),
    }


def baseline_recoveries(freq: torch.Tensor, S: torch.Tensor, C: torch.Tensor, seed: int) -> dict[str, float]:
    """Composition-only and random sequences on one chain with one seed."""
    generator = torch.Generator().manual_seed(seed)
    composition_sample = torch.multinomial(freq, S.numel(), replacement=True, generator=generator).reshape(S.shape)
    uniform = torch.randint(0, 20, S.shape, generator=generator)
    return {
        "composition, sampled": recovery(composition_sample, S, C),
        "composition, argmax (all " + "ACDEFGHIKLMNPQRSTVWY"[int(freq.argmax())] + ")": recovery(
            torch.full_like(S, int(freq.argmax())), S, C
        ),
        "random (uniform)": recovery(uniform, S, C),
    }


@torch.no_grad()
def packing_metrics(model, X: torch.Tensor, C: torch.Tensor, S: torch.Tensor, seed: int) -> dict[str, dict]:
    """Packed side chains (native sequence, T 1e-3) against uniformly random chi, on the native backbone."""
    generator = torch.Generator().manual_seed(seed)
    packed = model.pack(X[:, :, :4], C, S, temperature_chi=1e-3, generator=generator)
    random_chi = (2 * torch.rand(*C.shape, 4, generator=generator) - 1) * math.pi
    rebuilt = model.chi_to_X(X[:, :, :4], C, S, random_chi)[0]
    return {"pack (T 1e-3)": chi_metrics(packed.X, X, C, S), "random chi": chi_metrics(rebuilt, X, C, S)}


def evaluate(source: str | Path = MODEL_ID, names: tuple[str, ...] = HELD_OUT) -> dict:
    """The recovery and side-chain tables of the model at ``source`` on the held-out chains ``names``."""
    import biozoo

    torch.set_num_threads(1)
    backbones = load_chains(all_atom=False)
    all_atom = load_chains(all_atom=True)
    freq = composition([v for k, v in backbones.items() if k not in HELD_OUT])
    model = biozoo.load(source).eval()
    recoveries: dict[str, dict[str, list[float]]] = {}
    packing: dict[str, dict[str, list[dict]]] = {}
    for name in names:
        X, C, S = backbones[name]
        rows: dict[str, list[float]] = {}
        for seed in EVAL_SEEDS:
            start = time.perf_counter()
            values = design_recoveries(model, X, C, S, seed) | baseline_recoveries(freq, S, C, seed)
            for k, v in values.items():
                rows.setdefault(k, []).append(v)
            for k, v in packing_metrics(model, *all_atom[name], seed).items():
                packing.setdefault(k, {}).setdefault(name, []).append(v)
            print(name, seed, {k: round(v, 3) for k, v in values.items()}, f"{time.perf_counter() - start:.0f}s",
                  flush=True)  # fmt: skip
        recoveries[name] = rows
    methods = list(next(iter(recoveries.values())))
    table = {
        m: {
            "per_chain": {n: round(float(np.mean(recoveries[n][m])), 3) for n in names},
            "mean": round(float(np.mean([np.mean(recoveries[n][m]) for n in names])), 3),
            "sd_over_seeds": round(float(np.std(np.mean([recoveries[n][m] for n in names], axis=0))), 3),
        }
        for m in methods
    }
    side_chains = {
        m: {
            k: round(float(np.mean([r[k] for rows in by_chain.values() for r in rows])), 3)
            for k in ("chi1", "chi2", "rmsd")
        }
        for m, by_chain in packing.items()
    }
    result = {
        "held_out": {n: int((backbones[n][1] > 0).sum()) for n in names},
        "seeds": list(EVAL_SEEDS),
        "recovery": table,
        "side_chains": side_chains,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    if "--evaluate" not in sys.argv:
        train_model()
    evaluate()
