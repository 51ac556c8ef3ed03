"""Potts models over a protein graph: energies, likelihoods and MCMC sampling of sequences.

A Potts model here is the design network's output: fields ``h [B, L, Q]`` and couplings
``J [B, L, K, Q, Q]`` on the graph's edges (``J[b, i, k]`` couples residue i with ``edge_idx[b, i, k]``). Lower
energy is better: ``U(S) = sum_i h_i(S_i) + 1/2 sum_i sum_k J_ik(S_i, S_j)``.

Sampling is annealed MCMC: the temperature falls linearly from ``temperature_init`` to ``temperature`` over the
first ``annealing_fraction`` of the iterations. Two proposals, as in the reference (``chroma/layers/structure/
potts.py``): ``dlmc`` (discrete Langevin: every position may move at once, with the locally balanced rate of Sun
et al. 2023) and ``chromatic`` (Gibbs sampling of one colour class of a graph colouring at a time, followed by a
Metropolis-Hastings step). An optional penalty (the LCP regulariser) adds to the energy and, through its gradient
with respect to a one-hot sequence, to the proposals.

Every random draw takes a ``torch.Generator``; nothing here touches torch's global generator. The per-iteration
loop reads nothing back from the device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from biozoo.errors import InvalidArgumentError
from biozoo_chroma.graph.ops import collect_neighbors

Penalty = Callable[[torch.Tensor], torch.Tensor]
PROPOSALS = ("dlmc", "chromatic")


# -- energies and likelihoods -----------------------------------------------------------------------------------


def _couplings_at_neighbors(S: torch.Tensor, J: torch.Tensor, edge_idx: torch.Tensor) -> torch.Tensor:
    """``J_ik(a, S_j)`` for every state ``a`` of residue i: ``[B, L, K, Q]``."""
    S_j = collect_neighbors(S.unsqueeze(-1), edge_idx)  # [B, L, K, 1]
    S_j = S_j.unsqueeze(-1).expand(*S_j.shape[:3], J.shape[-2], 1)
    return torch.gather(J, -1, S_j).squeeze(-1)


def local_energies(
    S: torch.Tensor, h: torch.Tensor, J: torch.Tensor, edge_idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U_i, J_i)``: each residue's conditional energy of every state given the others, and its coupling part."""
    J_i = _couplings_at_neighbors(S, J, edge_idx).sum(2)
    return h + J_i, J_i


def potts_energy(
    S: torch.Tensor, h: torch.Tensor, J: torch.Tensor, edge_idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U [B], U_i [B, L, Q])``: total energy of ``S`` (each coupling counted once) and the local conditionals."""
    U_i, J_i = local_energies(S, h, J, edge_idx)
    s = S.unsqueeze(-1)
    U = (torch.gather(U_i, -1, s) - 0.5 * torch.gather(J_i, -1, s)).sum((1, 2))
    return U, U_i


def pseudolikelihood(S: torch.Tensor, h: torch.Tensor, J: torch.Tensor, edge_idx: torch.Tensor) -> torch.Tensor:
    """``log p(S_i = a | S_-i)`` for every residue and state ``[B, L, Q]``: the Boltzmann conditionals."""
    U_i, _ = local_energies(S, h, J, edge_idx)
    return F.log_softmax(-U_i, dim=-1)


def coupling_mask(edge_idx: torch.Tensor, mask_i: torch.Tensor, mask_ij: torch.Tensor | None) -> torch.Tensor:
    """Edges that carry a coupling: both ends present and not a self edge ``[B, L, K]``."""
    i = torch.arange(edge_idx.shape[1], device=edge_idx.device).view(1, -1, 1)
    not_self = torch.ne(edge_idx, i).to(mask_i.dtype)
    neighbor = collect_neighbors(mask_i.unsqueeze(-1), edge_idx).squeeze(-1)
    mask = not_self * mask_i.unsqueeze(-1) * neighbor
    return mask if mask_ij is None else mask_ij * mask


def transpose_edges(edge_idx: torch.Tensor, mask_ij: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each edge i->j, the flat index ``j * K + k'`` of the reverse edge j->i, and whether it exists."""
    B, L, K = edge_idx.shape
    flat = edge_idx.reshape(B, L * K, 1).expand(-1, -1, K)
    neighbors_of_j = torch.gather(edge_idx, 1, flat).reshape(B, L, K, K)
    i = torch.arange(L, device=edge_idx.device).view(1, -1, 1, 1)
    found, k_back = torch.eq(neighbors_of_j, i).to(mask_ij.dtype).max(-1)
    ij_to_ji = (edge_idx * K + k_back).reshape(B, -1)
    mask_ji = torch.gather(mask_ij.reshape(B, -1), -1, ij_to_ji).reshape(B, L, K)
    return ij_to_ji, mask_ij * found * mask_ji


def symmetrize_couplings(J: torch.Tensor, edge_idx: torch.Tensor, mask_ij: torch.Tensor) -> torch.Tensor:
    """``(J_ij + J_ji^T) / 2`` on edges present in both directions, 0 on the others."""
    B, L, K, Q, _ = J.shape
    ij_to_ji, mask_ji = transpose_edges(edge_idx, mask_ij)
    flat = J.reshape(B, L * K, Q * Q)
    J_ji = torch.gather(flat, 1, ij_to_ji.unsqueeze(-1).expand(-1, -1, Q * Q)).reshape(B, L, K, Q, Q)
    return (0.5 * mask_ji).to(J.dtype).view(B, L, K, 1, 1) * (J + J_ji.transpose(-1, -2))


def composite_log_likelihood(
    S: torch.Tensor,
    h: torch.Tensor,
    J: torch.Tensor,
    edge_idx: torch.Tensor,
    mask_i: torch.Tensor,
    mask_ij: torch.Tensor,
    smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(S_i, S_j | S_rest) [B, L, K], mask)``: the pairwise conditionals the Potts head is trained on.

    With ``smoothing`` > 0, the label-smoothed version (per-token smoothing, squared for a pair of tokens).
    """
    B, L, K, Q, _ = J.shape
    S_j = collect_neighbors(S.unsqueeze(-1), edge_idx).unsqueeze(-1).expand(B, L, K, Q, 1)
    J_at_j = torch.gather(J, -1, S_j).squeeze(-1)  # J_ik(a, S_j)      [B, L, K, Q]
    S_i = S.view(B, L, 1, 1, 1).expand(B, L, K, 1, Q)
    J_at_i = torch.gather(J, -2, S_i)  # J_ik(S_i, b)           [B, L, K, 1, Q]
    r_i = h + J_at_j.sum(2)  # residue i's conditional energies  [B, L, Q]
    r_j = collect_neighbors(r_i, edge_idx)  # at the far end    [B, L, K, Q]
    logits = (r_i.view(B, L, 1, Q, 1) - J_at_j.unsqueeze(-1)) + (r_j.view(B, L, K, 1, Q) - J_at_i) + J
    logp = F.log_softmax(-logits.reshape(B, L, K, Q * Q), dim=-1).reshape(B, L, K, Q, Q)
    logp_j = torch.gather(logp, -1, S_j).squeeze(-1)
    logp_ij = torch.gather(logp_j, -1, S.view(B, L, 1, 1).expand(B, L, K, 1)).squeeze(-1)
    if smoothing > 0.0:
        keep = (1.0 - smoothing) ** 2
        background = (1.0 - keep) / float(Q * Q - 1)
        logp_ij = (keep - background) * logp_ij + background * logp.sum((-2, -1))
    mask = coupling_mask(edge_idx, mask_i, mask_ij)
    return mask * logp_ij, mask


def residue_log_likelihood(
    S: torch.Tensor,
    h: torch.Tensor,
    J: torch.Tensor,
    edge_idx: torch.Tensor,
    mask_i: torch.Tensor,
    mask_ij: torch.Tensor,
    smoothing: float = 0.0,
) -> torch.Tensor:
    """Per residue ``[B, L]``: half the mean pairwise composite log-likelihood over its edges (``logp_S_potts``)."""
    logp_ij, mask = composite_log_likelihood(S, h, J, edge_idx, mask_i, mask_ij, smoothing)
    return mask_i * (mask * logp_ij).sum(-1) / (2.0 * mask.sum(-1) + 1e-3)


# -- symmetry ---------------------------------------------------------------------------------------------------


def check_symmetry_order(order: int | None, length: int, num_chains: int | None = None) -> None:
    """An order that tiles the system: a positive integer dividing the residues (and the chains, when given)."""
    if order is None:
        return
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise InvalidArgumentError(
            f"symmetry order must be a positive integer, got {order!r}",
            "pass potts_symmetry_order=None for no symmetry, or the number of identical copies (2, 3, ...)",
        )
    if num_chains is not None and num_chains % order:
        raise InvalidArgumentError(
            f"symmetry order {order} does not divide the number of chains ({num_chains})",
            "the system must be `order` identical copies of an asymmetric unit: pick an order that divides "
            "the chain count, or leave potts_symmetry_order unset",
        )
    if length % order:
        raise InvalidArgumentError(
            f"symmetry order {order} does not divide the number of residues ({length})",
            "every copy of the asymmetric unit must have the same length (same chains in the same order)",
        )


def fold_symmetry(
    order: int,
    h: torch.Tensor,
    J: torch.Tensor,
    edge_idx: torch.Tensor,
    mask_i: torch.Tensor,
    mask_ij: torch.Tensor,
    normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Potts model of one asymmetric unit when all ``order`` copies share a sequence.

    Residue i of every copy folds onto residue ``i mod L/order``: fields and couplings are summed over the copies
    (averaged with ``normalize``), and the couplings become dense over the unit (``K = L/order``). A coupling
    between two copies of the same residue lands on the diagonal, as in the reference.
    """
    B, L, _, Q, _ = J.shape
    check_symmetry_order(order, L)
    n = L // order
    target = torch.remainder(edge_idx, n)

    def fold_pairs(T: torch.Tensor) -> torch.Tensor:
        extra = T.dim() - 3
        idx = target.reshape(*target.shape, *([1] * extra)).expand(*target.shape, *T.shape[3:])
        dense = torch.zeros(B, L, n, *T.shape[3:], dtype=T.dtype, device=T.device)
        dense.scatter_add_(2, idx, T)
        return dense.reshape(B, order, n, n, *T.shape[3:]).sum(1)

    J_fold = fold_pairs(J)
    mask_ij_fold = (fold_pairs(mask_ij) > 0).to(mask_ij.dtype)
    edge_idx_fold = torch.arange(n, device=edge_idx.device).view(1, 1, n).expand(B, n, n)
    # present edges first, as the reference orders them
    order_k = torch.sort(mask_ij_fold, dim=2, descending=True, stable=False)[1]
    edge_idx_fold = torch.gather(edge_idx_fold, 2, order_k)
    mask_ij_fold = torch.gather(mask_ij_fold, 2, order_k)
    J_fold = torch.gather(J_fold, 2, order_k[..., None, None].expand(B, n, n, Q, Q))
    h_fold = h.reshape(B, order, n, Q).sum(1)
    mask_i_fold = (mask_i.reshape(B, order, n).sum(1) > 0).to(mask_i.dtype)
    if normalize:
        h_fold, J_fold = h_fold / order, J_fold / order
    return h_fold, J_fold, edge_idx_fold, mask_i_fold, mask_ij_fold


# -- sampling ---------------------------------------------------------------------------------------------------


def sample_categorical(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of ``logits [..., Q]`` (Gumbel-max, in float32), from ``generator``."""
    logits = logits.float()
    u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp_(1e-20, 1.0)
    return torch.argmax(logits - torch.log(-torch.log(u)), dim=-1)


def sampling_masks(
    num_states: int,
    S: torch.Tensor,
    mask_sample: torch.Tensor | None = None,
    ban_S: list[int] | None = None,
    generator: torch.Generator | None = None,
    logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(allowed [B, L, Q], mutable [B, L], S_init)`` from a design mask and banned states.

    ``mask_sample`` is ``[B, L]`` (1: the position may change; 0: it keeps its state in ``S``) or ``[B, L, Q]``
    (the allowed states per position; an all-zero row keeps ``S``). ``S_init`` is drawn from the allowed states,
    uniformly or by ``softmax(logits)``. ``ban_S`` removes states from the positions being designed (a kept
    position keeps its residue; the reference would ban it there too and redraw it). Refused: a designed position
    left with no allowed state.
    """
    onehot = F.one_hot(S, num_states).float()
    if mask_sample is None:
        allowed = torch.ones_like(onehot)
    elif mask_sample.dim() == 2:
        m = mask_sample.float().unsqueeze(-1)
        allowed = m + (1 - m) * onehot
    elif mask_sample.dim() == 3:
        free = (mask_sample.float().sum(-1, keepdim=True) == 0).float()
        allowed = ((free * onehot + mask_sample.float()) > 0).float()
    else:
        raise InvalidArgumentError(
            f"mask_sample has {mask_sample.dim()} dimensions",
            "pass a [B, L] mask of positions to design or a [B, L, 20] mask of allowed residues per position",
        )
    if ban_S:  # on designed positions only: a kept residue stays even if its type is banned
        banned = torch.zeros(num_states, device=allowed.device)
        banned[list(ban_S)] = 1.0
        allowed = allowed * (1.0 - (allowed.sum(-1, keepdim=True) > 1).float() * banned)
    if bool((allowed.sum(-1) == 0).any()):
        raise InvalidArgumentError(
            "the banned residues leave some positions with no residue to choose",
            "ban fewer residues (design_ban_S), or exclude those positions from the design selection",
        )
    mutable = (allowed.sum(-1) > 1).float()
    S_init = sample_categorical(1000.0 * allowed + (0.0 if logits is None else logits.float()), generator)
    return allowed, mutable, S_init


def _penalty_gradient(penalty: Penalty, S: torch.Tensor, num_states: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The penalty of ``S`` ``[B]`` and its gradient with respect to the one-hot sequence ``[B, L, Q]``."""
    with torch.enable_grad():
        onehot = F.one_hot(S, num_states).float().requires_grad_(True)
        U = penalty(onehot)
        (grad,) = torch.autograd.grad(U.sum(), [onehot])
    return U.detach(), grad.detach()


def proposal_gibbs(
    S: torch.Tensor, h: torch.Tensor, J: torch.Tensor, edge_idx: torch.Tensor, T: float, penalty: Penalty | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U [B], log q [B, L, Q])``: the Boltzmann conditionals at ``T`` (half the penalty's gradient added)."""
    U, U_i = potts_energy(S, h, J, edge_idx)
    if penalty is not None:
        U_pen, grad = _penalty_gradient(penalty, S, h.shape[-1])
        U_i, U = U_i + 0.5 * grad, U + U_pen
    return U, F.log_softmax(-U_i / T, dim=-1)


def proposal_dlmc(
    S: torch.Tensor,
    h: torch.Tensor,
    J: torch.Tensor,
    edge_idx: torch.Tensor,
    T: float,
    penalty: Penalty | None,
    dt: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U [B], log q [B, L, Q])``: per-position transition probabilities of one discrete Langevin step.

    Moving from state s to a: rate ``sigmoid(log p(a) - log p(s)) / p(a)`` of the local conditionals ``p`` at
    ``T``, integrated over ``dt``; the rest of the probability stays at s.
    """
    U, U_i = potts_energy(S, h, J, edge_idx)
    s = S.unsqueeze(-1)
    if penalty is not None:
        U_pen, grad = _penalty_gradient(penalty, S, h.shape[-1])
        U_i, U = U_i + (grad - torch.gather(grad, -1, s)), U + U_pen
    logp = F.log_softmax(-U_i / T, dim=-1)
    onehot = F.one_hot(S, h.shape[-1]).to(logp.dtype)
    log_balance = F.logsigmoid(logp - torch.gather(logp, -1, s))
    rate = torch.exp(log_balance - logp)
    log_move = logp + torch.log(-torch.expm1(-dt * rate))
    p_move = ((1.0 - onehot) * log_move.exp()).sum(-1, keepdim=True)
    log_stay = (1.0 - p_move).clamp(1e-5).log()
    return U, (1.0 - onehot) * log_move + onehot * log_stay


def color_graph(
    edge_idx: torch.Tensor, mask_ij: torch.Tensor, generator: torch.Generator | None, max_iter: int = 100
) -> torch.Tensor:
    """A colouring ``[B, L]`` in which no two neighbours share a colour (random greedy repair, K + 2 colours).

    Runs once before sampling; it checks for clashes on the host after each repair round.
    """
    B, L, K = edge_idx.shape
    num_colors = K + 2
    colors = torch.randint(0, num_colors, (B, L), device=edge_idx.device, generator=generator)
    i = torch.arange(L, device=edge_idx.device).view(1, -1, 1)
    mask = (mask_ij.float() * torch.ne(edge_idx, i).float()).unsqueeze(-1)
    for _ in range(max_iter):
        onehot = F.one_hot(colors, num_colors).float()
        used = (mask * collect_neighbors(onehot, edge_idx)).sum(2)
        clashes = (onehot * used).sum(-1)
        if not bool((clashes > 0).any()):
            break
        free = torch.where(used > 0, torch.full_like(used, -float("inf")), used)
        colors = torch.where(clashes > 0, sample_categorical(free, generator), colors)
    return colors


def annealing_schedule(num_iterations: int, temperature: float, temperature_init: float, fraction: float) -> list:
    """Temperatures per iteration: linear from ``temperature_init`` to ``temperature`` over ``fraction``, then flat."""
    n = int(fraction * num_iterations)
    ramp = torch.linspace(temperature_init, temperature, n, dtype=torch.float64).tolist() if n > 0 else []
    return ramp + [temperature] * (num_iterations - n)


def check_temperature(name: str, value: float) -> float:
    """A finite temperature > 0 (0 would divide the energies by zero)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or value == float("inf"):
        raise InvalidArgumentError(
            f"{name} must be a finite number > 0, got {value!r}",
            f"pass a small positive {name} (e.g. 0.1) for near-greedy designs; 1.0 samples the model as trained",
        )
    return float(value)


@torch.no_grad()
def sample_potts(
    h: torch.Tensor,
    J: torch.Tensor,
    edge_idx: torch.Tensor,
    mask_i: torch.Tensor,
    mask_ij: torch.Tensor,
    S: torch.Tensor,
    mask_sample: torch.Tensor | None = None,
    num_sweeps: int = 100,
    temperature: float = 1.0,
    temperature_init: float = 1.0,
    annealing_fraction: float = 0.8,
    penalty: Penalty | None = None,
    proposal: Literal["dlmc", "chromatic"] = "dlmc",
    rejection_step: bool | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Annealed MCMC: returns ``(S [B, L], U [B])`` with U the Potts energy (without the penalty).

    Positions that ``mask_sample`` fixes keep their states in ``S``; the others start from a draw by
    ``softmax(-h)`` over their allowed states, as in the reference. Disallowed states get a field far above
    every other. ``rejection_step`` (default: on for ``chromatic``, off for ``dlmc``, as the reference runs them)
    adds a Metropolis-Hastings correction.
    """
    check_temperature("temperature", temperature)
    check_temperature("temperature_init", temperature_init)
    if proposal not in PROPOSALS:
        raise InvalidArgumentError(f"unknown Potts proposal {proposal!r}", f"use one of: {', '.join(PROPOSALS)}")
    if isinstance(num_sweeps, bool) or not isinstance(num_sweeps, int) or num_sweeps < 1:
        raise InvalidArgumentError(
            f"the number of Potts sweeps must be an integer >= 1, got {num_sweeps!r}",
            "pass potts_mcmc_depth (sweeps) such as 500, the reference's default",
        )
    rejection_step = (proposal == "chromatic") if rejection_step is None else rejection_step
    allowed, mutable, S = sampling_masks(h.shape[-1], S, mask_sample, generator=generator, logits=-h)
    ceiling = h.max() + 1e3 * max(1.0, temperature)
    h = torch.where(allowed > 0, h, ceiling.expand_as(h))
    if proposal == "chromatic":
        colors = color_graph(edge_idx, mask_ij, generator)
        num_colors = int(colors.max()) + 1
        num_iterations = num_colors * num_sweeps
        propose = proposal_gibbs
    else:
        colors, num_colors, num_iterations, propose = None, 1, num_sweeps, proposal_dlmc
    temperatures = annealing_schedule(num_iterations, temperature, temperature_init, annealing_fraction)
    free = mutable > 0
    for i, T in enumerate(temperatures):
        update = free if colors is None else free & colors.eq(i % num_colors)
        U, logq = propose(S, h, J, edge_idx, T, penalty)
        S_new = torch.where(update, sample_categorical(logq, generator), S)
        if rejection_step:
            U_new, logq_new = propose(S_new, h, J, edge_idx, T, penalty)
            m = update.to(logq.dtype)

            def flux(U_: torch.Tensor, logq_: torch.Tensor, S_: torch.Tensor, m: torch.Tensor = m, T: float = T):
                return -U_ / T + (m * torch.gather(logq_, -1, S_.unsqueeze(-1)).squeeze(-1)).sum(1)

            accept = torch.exp(flux(U_new, logq_new, S) - flux(U, logq, S_new)).clamp(max=1.0)
            u = torch.rand(accept.shape, generator=generator, device=accept.device)
            S = torch.where((u < accept).unsqueeze(-1), S_new, S)
        else:
            S = S_new
    U, _ = potts_energy(S, h, J, edge_idx)
    return S, U
