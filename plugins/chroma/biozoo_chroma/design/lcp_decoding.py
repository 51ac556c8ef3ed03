"""The LCP regulariser as a bias of autoregressive decoding: one step at a time, no gradient needed.

Potts design penalises the whole sequence's low-complexity windows (:mod:`~biozoo_chroma.design.complexity`).
Autoregressive design cannot: at step t only the residues decoded so far exist. The reference's
``complexity_scores_lcp_t`` (``chroma/layers/complexity.py``) scores each candidate type ``a`` of residue t by the
composition of the already-decoded residues that are its graph neighbours, on its chain, within ``w / 2`` positions
in sequence, plus ``a`` itself; a composition whose perplexity ``exp(H)`` falls below ``exp(entropy_min)`` gets the
bias ``-(exp(H) - exp(entropy_min))^2``, added to the log-probabilities before sampling.

H is the Chao-Shen coverage-adjusted entropy estimate (a window here holds few counts, where the plug-in estimate
is biased low). Faithful to its quirk: a composition of singletons only has estimated coverage 0 and entropy 0,
the same for every candidate, so it shifts all log-probabilities equally and changes nothing.

Unlike the reference, systems in a batch are independent: its batched call compares residue t's position and chain
``[B, 1]`` with its neighbours' ``[B, 1, K]``, which broadcasts across the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from biozoo_chroma.design.complexity import NUM_STATES
from biozoo_chroma.graph.ops import collect_neighbors

WINDOW = 30
ENTROPY_MIN = 2.515  # the reference's default for decoding (Potts design uses 2.32 with the plug-in estimate)


def chao_shen_entropy(N: torch.Tensor, eps: float = 1e-11) -> torch.Tensor:
    """Coverage-adjusted entropy (nats) of counts ``N [..., Q]`` (Chao & Shen 2003), in float32."""
    N = N.float()
    total = N.sum(-1, keepdim=True)
    P = N / (total + eps)
    singletons = N.eq(1).sum(-1, keepdim=True).float()
    coverage = 1.0 - singletons / (total + eps)
    P_cov = coverage * P
    inclusion = (1.0 - (1.0 - P_cov) ** total).clamp(min=eps)
    return -(P_cov * torch.log(P_cov.clamp(min=eps)) / inclusion).sum(-1)


def lcp_bias(
    t: int,
    S_p: torch.Tensor,
    C_p: torch.Tensor,
    idx_p: torch.Tensor,
    edge_idx_t: torch.Tensor,
    mask_ij_t: torch.Tensor,
    w: int = WINDOW,
    entropy_min: float = ENTROPY_MIN,
) -> torch.Tensor:
    """The LCP bias ``[B, 1, Q]`` (<= 0) of each type for step ``t`` of a decode in permuted order.

    ``S_p``, ``C_p``, ``idx_p`` ``[B, L]``: types decoded so far, chain map and original positions, in decoding
    order; ``edge_idx_t``, ``mask_ij_t`` ``[B, 1, K]``: step t's edges and causal mask (decoded neighbours only).
    This is :data:`~biozoo_chroma.design.decoder.BiasFunction`'s signature.
    """
    onehot_j = collect_neighbors(F.one_hot(S_p, NUM_STATES).float(), edge_idx_t)
    idx_j = collect_neighbors(idx_p.unsqueeze(-1), edge_idx_t).squeeze(-1)
    C_j = collect_neighbors(C_p.unsqueeze(-1), edge_idx_t).squeeze(-1)
    near = (idx_p[:, t : t + 1, None] - idx_j).abs() <= w / 2
    valid = near & C_j.eq(C_p[:, t : t + 1, None]) & (mask_ij_t > 0)
    counts = (valid.unsqueeze(-1).float() * onehot_j).sum(-2)  # [B, 1, Q]
    eye = torch.eye(NUM_STATES, device=counts.device)
    H = chao_shen_entropy(counts.unsqueeze(-2) + eye)  # [B, 1, Q]: residue t taking each type
    return -(torch.exp(H) - math.exp(entropy_min)).clamp(max=0).square()
