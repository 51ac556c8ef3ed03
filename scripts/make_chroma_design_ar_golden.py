"""Make the golden file the chroma plugin's autoregressive-design tests compare against (issue 13, rung 7 for AR).

The reference is generate-chroma 1.0.0, importable without its dependencies as for the other chroma golden scripts
(this one reuses make_chroma_design_golden.py's model config, seed and inputs, and its helpers' stand-in modules
and offline centering patch):

    .venv/bin/pip install --no-deps --target /tmp/chroma_ref generate-chroma==1.0.0
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python scripts/make_chroma_design_ar_golden.py

It installs and downloads nothing, and writes ``chroma_design_ar.safetensors``: the reference ``GraphDesign``'s
random weights (``ref.``, the same model as chroma_design.safetensors: same init_kwargs and seed) and

* decoding orders of ``ProteinTraversalSpatial`` (``trav.*``): ``deterministic=True``, and the random path after
  ``torch.manual_seed`` (keys, then the smoothing strength, from the global generator), with and without a
  priority, on the design inputs (14-atom X as ``GraphDesign.sample`` passes it) and on 4E43 (408 residues, two
  chains) and 1ahsA;
* the top-p filter ``_filter_logits_top_p`` on given logits (some ``-inf``, as banned types are) at several p;
* the decoding LCP bias ``complexity_scores_lcp_t`` at every step of a decode order, on low-complexity sequences
  (inputs: permuted sequence, chain map, positions, causal edges), ``lcp.*``, one system per call;
* autoregressive design through ``GraphDesign.sample(sampling_method="autoregressive")`` with a fixed
  ``permute_idx`` at ``temperature_S=1e-5`` (effectively argmax, so comparable although the random streams
  differ): the sampled ``S`` and ``scores["logp_S"]`` for the configurations in the ``designs`` metadata (LCP or
  not, a position mask, a per-position allowed-type mask, banned residues, top-p).
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
from make_chroma_design_golden import INIT_KWARGS, SEED, TIMES, inputs  # noqa: E402
from make_chroma_graph_golden import patch_centering, structures  # noqa: E402
from make_chroma_structure_golden import stub_modules  # noqa: E402

TEMPERATURE = 1e-5
TOP_P = (0.05, 0.3, 0.7, 0.95, 1.0)
#: name -> GraphDesign.sample options (besides the fixed permute_idx and temperature); "mask" names a mask below
DESIGNS = {
    "plain": {"regularization": None},
    "lcp": {"regularization": "LCP"},
    "masked": {"regularization": "LCP", "mask": "positions", "ban_S": ["C", "W", "M", "P"], "top_p_S": 0.6},
    "allowed": {"regularization": "LCP", "mask": "types", "top_p_S": 0.9},
    "top_p": {"regularization": None, "top_p_S": 0.3, "ban_S": ["A", "L", "E"]},
}


def traversal_cases(out: dict[str, torch.Tensor], s: dict[str, torch.Tensor], X14, C, priority) -> None:
    from chroma.models.graph_design import ProteinTraversalSpatial

    out["trav.design.priority"] = priority
    out["trav.design.deterministic"] = ProteinTraversalSpatial(deterministic=True)(X14, C)
    out["trav.design.deterministic_priority"] = ProteinTraversalSpatial(deterministic=True)(X14, C, priority)
    for name, kwargs in (("random", {}), ("fixed_alpha", {"smooth_randomize": False, "smooth_alpha": 0.7})):
        torch.manual_seed(SEED + 10)
        out[f"trav.design.{name}"] = ProteinTraversalSpatial(**kwargs)(X14, C)
        torch.manual_seed(SEED + 11)
        out[f"trav.design.{name}_priority"] = ProteinTraversalSpatial(**kwargs)(X14, C, priority)
    for pdb in ("4E43", "1ahsA"):
        X, C_pdb = s[f"{pdb}.bb.X"], s[f"{pdb}.bb.C"]
        out[f"trav.{pdb}.X"], out[f"trav.{pdb}.C"] = X, C_pdb
        torch.manual_seed(SEED + 12)
        out[f"trav.{pdb}.random"] = ProteinTraversalSpatial()(F.pad(X, [0, 0, 0, 10]), C_pdb)
        out[f"trav.{pdb}.deterministic"] = ProteinTraversalSpatial(deterministic=True)(X, C_pdb)


def top_p_cases(out: dict[str, torch.Tensor], gen: torch.Generator) -> None:
    from chroma.models.graph_design import _filter_logits_top_p

    logits = 3.0 * torch.randn(4, 6, 20, generator=gen)
    logits[0, :, :5] = -float("inf")  # banned types
    logits[1] = F.log_softmax(logits[1], -1)  # log-probabilities, as the decoder passes them
    out["top_p.logits"] = logits
    out["top_p.p"] = torch.tensor(TOP_P)
    out["top_p.filtered"] = torch.stack([_filter_logits_top_p(logits, p=p) for p in TOP_P])


def lcp_cases(out: dict[str, torch.Tensor], model, X, C, t, permute_idx, gen: torch.Generator) -> None:
    from chroma.layers import complexity, graph

    _, _, edge_idx_p, _, mask_ij_p = graph.permute_graph_embeddings(*model.encode(X, C, t=t), permute_idx)
    mask_ij_p = graph.edge_mask_causal(edge_idx_p, mask_ij_p)
    B, L = C.shape
    S = torch.randint(0, 20, (B, L), generator=gen)
    S[0, :14] = torch.tensor([3, 8] * 7)  # EK repeats
    S[1, 4:16] = 0  # poly-A
    S_p = graph.permute_tensor(S, 1, permute_idx)
    C_p = graph.permute_tensor(C, 1, permute_idx)
    idx_p = graph.permute_tensor(torch.arange(L).expand(B, L), 1, permute_idx)
    out.update({"lcp.S": S, "lcp.edge_idx_p": edge_idx_p, "lcp.mask_ij_p": mask_ij_p})
    # one system per call: batched, the reference compares residue t's position and chain ([B, 1]) with its
    # neighbours' ([B, 1, K]), which broadcasts across the batch ([B, B, K]) and gives a [B, B, Q] bias
    for key, w in (("lcp.bias", 30), ("lcp.bias_w8", 8)):
        steps = []
        for t_step in range(L):
            e_t, m_t = edge_idx_p[:, t_step : t_step + 1], mask_ij_p[:, t_step : t_step + 1]
            steps.append(torch.cat([
                complexity.complexity_scores_lcp_t(t_step, S_p[b : b + 1], C_p[b : b + 1], idx_p[b : b + 1],
                                                   e_t[b : b + 1], m_t[b : b + 1], w=w)
                for b in range(B)
            ]))  # fmt: skip
        out[key] = torch.stack(steps)  # [L, B, 1, Q]


def design_cases(out: dict[str, torch.Tensor], model, X, C, t, permute_idx, S_native, gen: torch.Generator) -> None:
    B, L = C.shape
    positions = (torch.rand(B, L, generator=gen) < 0.6).float()
    types = (torch.rand(B, L, 20, generator=gen) < 0.3).float()
    types[:, :3] = 0  # all-zero rows keep their residue
    out.update({"design.S": S_native, "design.mask.positions": positions, "design.mask.types": types})
    for name, opts in DESIGNS.items():
        opts = dict(opts)
        mask = opts.pop("mask", None)
        S_rows, logp_rows = [], []
        for b in range(B):  # one system per call: batched, the reference's per-step type mask broadcasts across
            one = slice(b, b + 1)  # the batch ([B, Q] against [B, 1, Q]) and sampling fails
            torch.manual_seed(SEED + 20)
            _, S_out, perm, scores = model.sample(
                X[one], C[one], S=S_native[one], t=t[one], permute_idx=permute_idx[one],
                mask_sample=None if mask is None else out[f"design.mask.{mask}"][one],
                temperature_S=TEMPERATURE, sampling_method="autoregressive", return_scores=True, **opts,
            )  # fmt: skip
            assert torch.equal(perm, permute_idx[one])
            S_rows.append(S_out)
            logp_rows.append(scores["logp_S"])
        out[f"design.{name}.S"], out[f"design.{name}.logp_S"] = torch.cat(S_rows), torch.cat(logp_rows)

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=GOLDEN)
    args = parser.parse_args()
    stub_modules()
    import chroma  # noqa: F401  (the reference, importable via PYTHONPATH)
    from chroma.models.graph_design import GraphDesign

    s = structures()
    patch_centering(s)
    X, C = inputs(s)
    B, L = C.shape
    torch.manual_seed(SEED)
    model = GraphDesign(**INIT_KWARGS).eval()
    gen = torch.Generator().manual_seed(SEED + 3)
    permute_idx = torch.stack([torch.randperm(L, generator=gen) for _ in range(B)])
    S_native = torch.randint(0, 20, (B, L), generator=gen)
    # no kept residue of a type "masked" bans (C, M, P, W): the reference would ban it there too (ours keeps it)
    S_native[torch.isin(S_native, torch.tensor([1, 10, 12, 18]))] = 5
    t = torch.tensor(TIMES)
    out: dict[str, torch.Tensor] = {"X": X, "C": C, "t": t, "permute_idx": permute_idx}
    out.update({f"ref.{k}": v.detach().clone() for k, v in model.state_dict().items()})
    X14 = F.pad(X, [0, 0, 0, 10])
    priority = (torch.rand(B, L, generator=gen) < 0.5).float()
    with torch.no_grad():
        traversal_cases(out, s, X14, C, priority)
        top_p_cases(out, gen)
        lcp_cases(out, model, X, C, t, permute_idx, gen)
        design_cases(out, model, X, C, t, permute_idx, S_native, gen)
    meta = {
        "reference": "generate-chroma 1.0.0", "torch": torch.__version__, "init_kwargs": json.dumps(INIT_KWARGS),
        "seed": str(SEED), "times": json.dumps(TIMES), "temperature": str(TEMPERATURE),
        "designs": json.dumps(DESIGNS),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "chroma_design_ar.safetensors"
    save_file({k: v.detach().contiguous() for k, v in out.items()}, str(path), metadata=meta)
    print("wrote", path, f"{path.stat().st_size / 1e6:.2f} MB")
    for name in DESIGNS:
        print(name, "".join("ACDEFGHIKLMNPQRSTVWY"[i] for i in out[f"design.{name}.S"][0]))


if __name__ == "__main__":
    main()
