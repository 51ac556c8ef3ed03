"""Make the golden file the chroma plugin's design tests compare against: the reference's GraphDesign (rung 6).

The reference is generate-chroma 1.0.0 (generatebio/chroma 929407c), importable without its dependencies as for
scripts/make_chroma_structure_golden.py (whose stand-in modules, and the graph script's offline centering patch,
inputs and design feature set, this script reuses):

    .venv/bin/pip install --no-deps --target /tmp/chroma_ref generate-chroma==1.0.0
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python scripts/make_chroma_design_golden.py

It installs and downloads nothing. It builds a reference ``GraphDesign`` with random weights and public-like but
small init_kwargs (metadata ``init_kwargs``: the design feature set of make_chroma_graph_golden.DESIGN_KWARGS,
Potts and marginals heads, a log-SNR time embedding, two-stage packing), and writes
``chroma_design.safetensors`` (and the couplings ``J`` alone in ``chroma_design_J.safetensors``, so that each file
stays under 1 MB) with its whole state dict (``ref.``) and, on a batch of a two-chain system (4E43,
with a gap) and a one-chain system (1ahsA, padded), at fixed diffusion times ``t``:

* the encoder's outputs (``enc.*``; also ``enc_t0.node_h`` for t = None), the Potts head's ``h`` and ``J``;
* for three sequences ``S_eval``: ``compute_potts_energy`` (``energy.U``, ``energy.U_i``), the pseudo-likelihood,
  ``logp_S_potts``, ``logp_S_marginals`` and the teacher-forced ``logp_S`` with a fixed ``permute_idx``;
* the autoregressive decoder's sequential decode, clamped (``ar.clamped_logp_S``) and sampled at temperature
  1e-4 (``ar.S_lowT``: effectively argmax, so comparable despite different random streams);
* one DLMC and one Gibbs proposal (``proposal.*``) with the LCP penalty, the LCP penalty and its gradient on
  low-complexity sequences, one system per call (``lcp.*``; ``lcp.U_batched`` is the reference's batched call,
  which gives every system the first one's penalty), and the Potts model folded for 2-fold symmetry (``fold.*``);
* sampling statistics (the random streams differ, so only distributions compare): final Potts energies of
  ``NUM_SEEDS`` runs each of DLMC and chromatic sampling at matched settings (``stats.*``, settings in the
  ``sampling`` metadata), and energies of uniformly random sequences as the scale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "plugins/chroma/tests/golden"
sys.path.insert(0, str(ROOT / "scripts"))
from make_chroma_graph_golden import DESIGN_KWARGS, layout, patch_centering, structures  # noqa: E402
from make_chroma_structure_golden import stub_modules  # noqa: E402

INIT_KWARGS = {
    **DESIGN_KWARGS,
    "num_neighbors": 10,
    "num_layers": 1,
    "num_layers_encoder": 2,
    "decoder_num_hidden": 32,
    "predict_S_marginals": True,
    "predict_S_potts": True,
    "potts_parameterization": "factor",
    "noise_schedule": "log_snr",
    "noise_covariance_model": "globular",
    "noise_complex_scaling": True,
    "sidechains": True,
    "separate_packing": True,
}
LENGTH = 24
TIMES = (0.5, 0.2)
SEED = 20261300
NUM_SEEDS = 16
LCP_WINDOW = 8  # the proposals' LCP window: the default 30 exceeds these chains, so it would never penalise
SAMPLING = {  # matched settings of the statistical comparison
    "coupling_scale": 30.0,  # h and J scaled up so random weights give a landscape worth sampling
    "temperature": 0.5,
    "temperature_init": 1.0,
    "sweeps_dlmc": 40,
    "sweeps_chromatic": 6,
}


def inputs(s: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A two-chain system with a gap (4E43 windows) and a one-chain system (1ahsA) padded to LENGTH."""
    X0, C0 = layout([(1, 9), (-1, 2), (1, 4), (2, 9)], LENGTH, s)
    X1 = torch.zeros(LENGTH, 4, 3)
    X1[:20] = s["1ahsA.bb.X"][0][:20]
    C1 = torch.cat([torch.ones(20, dtype=torch.long), torch.zeros(LENGTH - 20, dtype=torch.long)])
    return torch.stack([X0, X1]).contiguous(), torch.stack([C0, C1]).contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=GOLDEN)
    args = parser.parse_args()
    stub_modules()
    import chroma  # noqa: F401  (the reference, importable via PYTHONPATH)
    from chroma.layers import complexity
    from chroma.layers.structure import potts
    from chroma.models.graph_design import GraphDesign

    s = structures()
    patch_centering(s)
    X, C = inputs(s)
    B, L = C.shape
    torch.manual_seed(SEED)
    model = GraphDesign(**INIT_KWARGS).eval()
    gen = torch.Generator().manual_seed(SEED + 1)
    S_eval = torch.randint(0, 20, (3, B, L), generator=gen)
    permute_idx = torch.stack([torch.randperm(L, generator=gen) for _ in range(B)])
    t = torch.tensor(TIMES)
    out: dict[str, torch.Tensor] = {"X": X, "C": C, "t": t, "S_eval": S_eval, "permute_idx": permute_idx}
    out.update({f"ref.{k}": v.detach().clone() for k, v in model.state_dict().items()})
    X14 = F.pad(X, [0, 0, 0, 10])
    with torch.no_grad():
        node_h, edge_h, edge_idx, mask_i, mask_ij = model.encode(X, C, t=t)
        out.update({"enc.node_h": node_h, "enc.edge_h": edge_h, "enc.edge_idx": edge_idx, "enc.mask_i": mask_i,
                    "enc.mask_ij": mask_ij})  # fmt: skip
        out["enc_t0.node_h"] = model.encode(X, C)[0]
        head = model.decoder_S_potts
        h, J = head(node_h, edge_h, edge_idx, mask_i, mask_ij)
        out["h"], out["J"] = h, J
        keys = ("energy.U", "energy.U_i", "pseudolikelihood", "logp_S_potts", "logp_S_marginals", "logp_S")
        rows: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        for S in S_eval:
            U, U_i = potts.compute_potts_energy(S, h, J, edge_idx)
            rows["energy.U"].append(U)
            rows["energy.U_i"].append(U_i)
            rows["pseudolikelihood"].append(head.pseudolikelihood(S, h, J, edge_idx))
            rows["logp_S_potts"].append(head.loss(S, node_h, edge_h, edge_idx, mask_i, mask_ij))
            rows["logp_S_marginals"].append(model.decoder_S_marginals(S, node_h, mask_i)[0])
            rows["logp_S"].append(model.decoder(X14, C, S, node_h, edge_h, edge_idx, mask_i, mask_ij, permute_idx)[0])
        out.update({k: torch.stack(v) for k, v in rows.items()})
        dec = model.decoder
        args_dec = (X14, C, S_eval[0], node_h, edge_h, edge_idx, mask_i, mask_ij, permute_idx)
        out["ar.clamped_logp_S"] = dec.decode(*args_dec, sample=False)[2]
        torch.manual_seed(SEED + 2)
        S_low, _, logp_low, _, _ = dec.decode(*args_dec, temperature_S=1e-4, sample=True)
        out["ar.S_lowT"], out["ar.logp_S_lowT"] = S_low, logp_low

        # proposals on the two-chain system alone (the reference's LCP is right for one system at a time), with a
        # low-complexity stretch and windows of 8 (LCP_WINDOW) so that the penalty and its gradient are not 0
        S_prop = S_eval[1, :1].clone()
        S_prop[:, 1:15] = torch.tensor([3, 8] * 7)
        out["proposal.S"] = S_prop
        penalty = lambda x: complexity.complexity_lcp(x, C[:1], w=LCP_WINDOW)  # noqa: E731
        for name, fn in (("dlmc", potts._potts_proposal_dlmc), ("gibbs", potts._potts_proposal_gibbs)):
            U, logq = fn(S_prop, h[:1], J[:1], edge_idx[:1], T=0.5, penalty_func=penalty)
            out[f"proposal.{name}.U"], out[f"proposal.{name}.logq"] = U, logq
        out["proposal.penalty"] = complexity.complexity_lcp(S_prop, C[:1], w=LCP_WINDOW)

        S_lcp = torch.randint(0, 20, (3, 60), generator=gen)
        S_lcp[0, 5:50] = torch.tensor([3, 8] * 22 + [3])  # EK repeats: low complexity
        S_lcp[1, 10:40] = 0  # poly-A
        C_lcp = torch.tensor([[1] * 35 + [2] * 25, [1] * 58 + [0] * 2, [-1] * 3 + [1] * 57])
        # one system per call: batched, the reference gives every system the first one's penalty (its window index
        # has batch size 1, so the gathers read system 0 only); stored as lcp.U_batched to document that
        U_rows, grad_rows, long_rows = [], [], []
        for b in range(S_lcp.shape[0]):
            onehot = F.one_hot(S_lcp[b : b + 1], 20).float().requires_grad_(True)
            with torch.enable_grad():
                U_b = complexity.complexity_lcp(onehot, C_lcp[b : b + 1])
                (grad,) = torch.autograd.grad(U_b.sum(), [onehot])
            U_rows.append(U_b.detach())
            grad_rows.append(grad)
            long_rows.append(complexity.complexity_lcp(S_lcp[b : b + 1], C_lcp[b : b + 1]))
        out.update({"lcp.S": S_lcp, "lcp.C": C_lcp, "lcp.U": torch.cat(U_rows), "lcp.grad": torch.cat(grad_rows)})
        out["lcp.U_long"] = torch.cat(long_rows)
        out["lcp.U_batched"] = complexity.complexity_lcp(S_lcp, C_lcp)

        h_f, J_f, e_f, mi_f, mij_f = potts.fold_symmetry(2, h, J, edge_idx, mask_i, mask_ij)
        S_au = S_eval[:, :, : L // 2]
        out.update({"fold.h": h_f, "fold.edge_idx": e_f, "fold.mask_i": mi_f, "fold.mask_ij": mij_f})
        out["fold.U"] = torch.stack([potts.compute_potts_energy(S, h_f, J_f, e_f)[0] for S in S_au])

        k = SAMPLING["coupling_scale"]
        hs, Js = k * h, k * J
        stats = {"dlmc": [], "chromatic": []}
        for i in range(NUM_SEEDS):
            for proposal, sweeps in (("dlmc", SAMPLING["sweeps_dlmc"]), ("chromatic", SAMPLING["sweeps_chromatic"])):
                torch.manual_seed(SEED + 100 + i)
                _, U = potts.sample_potts(
                    hs, Js, edge_idx, mask_i, mask_ij, S=S_eval[0], num_sweeps=sweeps,
                    temperature=SAMPLING["temperature"], temperature_init=SAMPLING["temperature_init"],
                    proposal=proposal, rejection_step=proposal == "chromatic", verbose=False,
                )  # fmt: skip
                stats[proposal].append(U)
        out["stats.U_dlmc"] = torch.stack(stats["dlmc"])
        out["stats.U_chromatic"] = torch.stack(stats["chromatic"])
        S_rand = torch.randint(0, 20, (NUM_SEEDS, B, L), generator=gen)
        out["stats.U_random"] = torch.stack([potts.compute_potts_energy(S, hs, Js, edge_idx)[0] for S in S_rand])
    meta = {
        "reference": "generate-chroma 1.0.0", "torch": torch.__version__, "init_kwargs": json.dumps(INIT_KWARGS),
        "seed": str(SEED), "times": json.dumps(TIMES), "sampling": json.dumps({**SAMPLING, "seeds": NUM_SEEDS}),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    couplings = {"J": out.pop("J")}  # its own file: each golden stays under 1 MB
    for name, tensors in (("chroma_design", out), ("chroma_design_J", couplings)):
        path = args.out / f"{name}.safetensors"
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
        print("wrote", path, f"{path.stat().st_size / 1e6:.2f} MB")
    for name in ("U_random", "U_dlmc", "U_chromatic"):
        v = out[f"stats.{name}"]
        print(name, "mean", v.mean(0).tolist(), "sd", v.std(0).tolist())


if __name__ == "__main__":
    main()
