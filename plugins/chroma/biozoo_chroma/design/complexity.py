"""The low-complexity (LCP) regulariser of sequence design: a penalty on low-entropy local compositions.

Designed sequences at low temperature tend to repeat a few residues (poly-E, poly-K helices). LCP looks at a
window of ``w`` residues around each position (same chain only) and penalises windows whose composition has a
perplexity ``exp(H)`` below ``exp(entropy_min)``: ``U = sum_i (min(0, exp(H_i) - exp(entropy_min)))^2``.

For a one-hot float sequence the penalty is differentiable, and its gradient is exact per mutation: the
derivative with respect to ``S[i, a]`` is the change of every window containing i if residue i became ``a``.
That gradient is what the Potts samplers add to their proposals.

Faithful to the reference (``chroma/layers/complexity.py``), including a quirk: a window never counts the
chain map's first position (index 0), whatever its chain.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from biozoo_chroma.graph.ops import collect_neighbors

NUM_STATES = 20


def entropy(N: torch.Tensor, eps: float = 1e-11) -> torch.Tensor:
    """Plug-in entropy (nats) of counts ``N [..., Q]``."""
    N = N.float()
    return -_plogp(N, N.sum(-1, keepdim=True), eps).sum(-1)


def _plogp(n: torch.Tensor, total: torch.Tensor, eps: float = 1e-11) -> torch.Tensor:
    """``p log p`` with ``p = n / total``: one state's term of the entropy (the reference's eps placement)."""
    p = n / (total + eps)
    return p * torch.log(p + eps)


def windows(
    S: torch.Tensor, C: torch.Tensor, w: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(counts [B, L, Q], window_idx [B, L, w], mask_i [B, L], mask_ij [B, L, w])`` of each residue's window.

    ``S`` is ``[B, L]`` (states) or ``[B, L, Q]`` (one-hot, possibly requiring grad).
    """
    present = (C > 0).to(torch.float32)
    if S.dim() == 2:
        S = F.one_hot(S, NUM_STATES).float()
    onehot = present.unsqueeze(-1) * S
    L = S.shape[1]
    offsets = torch.arange(w, device=S.device) - w // 2
    idx = torch.arange(L, device=S.device).view(1, L, 1) + offsets.view(1, 1, w)
    inside = (idx > 0) & (idx < L)
    idx = idx.clamp(0, L - 1).expand(S.shape[0], L, w)
    C_i = C.unsqueeze(-1)
    C_j = collect_neighbors(C_i, idx)[..., 0]
    mask_ij = (inside & C_j.eq(C_i) & (C_i > 0) & (C_j > 0)).to(torch.float32)
    N = (mask_ij.unsqueeze(-1) * collect_neighbors(onehot, idx)).sum(2)
    mask_i = ((N.sum(-1) > 0) & (C > 0)).to(torch.float32)
    return N, idx, mask_i, mask_i.unsqueeze(-1) * mask_ij


def lcp_penalty(
    S: torch.Tensor,
    C: torch.Tensor,
    w: int = 30,
    entropy_min: float = 2.32,
    min_coverage: float = 0.9,
) -> torch.Tensor:
    """LCP penalty per system ``[B]``; differentiable (per-mutation exact) for a one-hot ``S [B, L, Q]``.

    Windows shorter than ``min_coverage * w`` residues (chain ends) are not penalised; ``w`` shrinks to L for a
    shorter system.
    """
    w = min(w, S.shape[1])
    N, idx, mask_i, mask_ij = windows(S, C, w)
    covered = N.sum(-1) > int(min_coverage * w)
    floor = math.exp(entropy_min)
    U = covered * (torch.exp(entropy(N)) - floor).clamp(max=0).square()
    if S.dim() == 3 and S.requires_grad:
        # the entropy of each window j around i if residue i took state a. A swap s -> a changes two of window
        # j's counts (n_s - 1, clamped at 0 where j's window lacks i; n_a + 1), so two of its Q entropy terms
        # change: O(w Q) per residue instead of building every swapped count vector (O(w Q^2)), the same values
        N_j = collect_neighbors(N, idx)  # [B, L, w, Q]
        covered_j = collect_neighbors(covered.unsqueeze(-1).float(), idx)
        s = S.detach().unsqueeze(2)  # residue i's state, one-hot [B, L, 1, Q]
        n_s = (N_j * s).sum(-1, keepdim=True)
        total = N_j.sum(-1, keepdim=True) + n_s.eq(0).to(N_j.dtype)  # a clamped n_s - 1 leaves the total + 1
        terms = _plogp(N_j, total)
        changed_s = _plogp((n_s - 1).clamp(min=0), total) - _plogp(n_s, total)
        H_swap = -(terms.sum(-1, keepdim=True) + changed_s + _plogp(N_j + 1, total) - terms)
        H_swap = torch.where(s > 0, entropy(N_j).unsqueeze(-1), H_swap)  # a = s leaves the window as it is
        U_swap = (torch.exp(H_swap) - floor).clamp(max=0).square()
        U_swap = mask_ij.unsqueeze(-1) * covered_j * U_swap
        linear = (U_swap.detach() * S.unsqueeze(2)).sum((-1, -2))
        U = U.detach() + linear - linear.detach()
    return (mask_i * U).sum(1)
