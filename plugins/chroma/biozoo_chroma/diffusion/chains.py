"""Chain-map bookkeeping for backbone tensors, in O(L) time and memory and without host syncs.

Chroma's chain map C ``[B, L]`` holds chain k as ``k`` (present residue), ``-k`` (residue without structure) and 0
(padding). The covariance works on the flattened atoms ``[B, 4L, 3]`` (N, CA, C, O per residue). The reference
expands every chain into its own copy of the sequence (``[B, 4L, num_chains, 3]``); here each chain is a segment
of one sequence, found from where |C| changes, so the cost does not grow with the number of chains. This assumes
(as every XCS tensor does) that each chain is one contiguous run of positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ATOMS = 4  # the backbone atoms per residue that the covariance acts on


@dataclass(frozen=True)
class ChainLayout:
    """Where each chain starts and ends among the flattened atoms, and which segment each atom belongs to."""

    in_chain: torch.Tensor  # [B, N] bool: the atom belongs to a chain (C != 0), with or without structure
    start: torch.Tensor  # [B, N] bool: first atom of its chain
    end: torch.Tensor  # [B, N] bool: last atom of its chain
    segment: torch.Tensor  # [B, N] long: 1..S for chain atoms, 0 for padding
    num_chains: torch.Tensor  # [B] float: chains present in each batch element
    num_slots: torch.Tensor  # [] float: the largest |C| in the batch (the reference's number of chain slots)

    @classmethod
    def from_chain_map(cls, C: torch.Tensor, atoms: int = ATOMS) -> ChainLayout:
        """Build the layout of ``C`` ``[B, L]`` for ``atoms`` atoms per residue."""
        c_abs = C.abs()
        in_res = c_abs > 0
        start_res = in_res & (c_abs != F.pad(c_abs[:, :-1], (1, 0)))
        end_res = in_res & (c_abs != F.pad(c_abs[:, 1:], (0, 1)))
        segment_res = torch.cumsum(start_res.long(), 1) * in_res
        first = torch.zeros(atoms, dtype=torch.bool, device=C.device)
        first[0] = True
        last = torch.zeros_like(first)
        last[-1] = True

        def per_atom(x: torch.Tensor) -> torch.Tensor:
            return x.repeat_interleave(atoms, dim=1)

        return cls(
            in_chain=per_atom(in_res),
            start=(start_res[..., None] & first).flatten(1),
            end=(end_res[..., None] & last).flatten(1),
            segment=per_atom(segment_res),
            num_chains=start_res.sum(1).float(),
            num_slots=c_abs.max().float() if c_abs.numel() else torch.zeros((), device=C.device),
        )

    @property
    def table_size(self) -> int:
        """Rows of a per-segment table: segment ids are at most L (one per residue), row 0 is padding."""
        return self.segment.shape[1] // ATOMS + 1

    def segment_sum(self, X: torch.Tensor) -> torch.Tensor:
        """Per-segment sums of ``X`` ``[B, N, D]`` (padding excluded) as a table ``[B, S+1, D]``."""
        X = X * self.in_chain[..., None]
        index = self.segment[..., None].expand(-1, -1, X.shape[-1])
        table = X.new_zeros(X.shape[0], self.table_size, X.shape[-1])
        return table.scatter_add_(1, index, X)

    def segment_count(self, dtype: torch.dtype) -> torch.Tensor:
        """Atoms per segment ``[B, S+1]`` (row 0, padding, is 0)."""
        return self.segment_sum(self.in_chain[..., None].to(dtype))[..., 0]

    def per_atom(self, table: torch.Tensor) -> torch.Tensor:
        """Look up each atom's segment row of a table ``[B, S+1, D]`` -> ``[B, N, D]``."""
        index = self.segment[..., None].expand(-1, -1, table.shape[-1])
        return table.gather(1, index)

    def segment_mean(self, X: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
        """Each atom's chain mean of ``X`` ``[B, N, D]``, with the reference's ``+ eps`` in the count."""
        count = self.segment_count(X.dtype)[..., None]
        return self.per_atom(self.segment_sum(X) / (count + eps))

    def segment_first(self, X: torch.Tensor) -> torch.Tensor:
        """Each atom's value of ``X`` at the first atom of its chain."""
        return self.per_atom(self.segment_sum(X * self.start[..., None]))


def linear_recurrence(z: torch.Tensor, coeff: torch.Tensor, reset: torch.Tensor, block: int = 32) -> torch.Tensor:
    """x_i = z_i + coeff_i * x_{i-1} along dim 1, restarting with x_i = z_i wherever ``reset``.

    ``z`` is ``[B, N, D]``, ``coeff`` and ``reset`` ``[B, N]``; ``coeff`` must be constant between two resets
    (one decay per chain). Work is O(N * block): within blocks of ``block`` positions the recurrence is a small
    matrix product with entries coeff^(i-j), and the blocks' ends are joined by the same recurrence one level up.
    Every weight is a power of a coefficient <= 1, so nothing overflows (unlike a cumsum of z_j / coeff^j).
    """
    n = z.shape[1]
    if n <= block:
        return _within_block(z, coeff, reset)[0]
    num_blocks = -(-n // block)
    pad = num_blocks * block - n
    z = F.pad(z, (0, 0, 0, pad))
    coeff = F.pad(coeff, (0, pad), value=1.0)
    reset = F.pad(reset, (0, pad), value=True)
    shape = (z.shape[0], num_blocks, block)
    y, carry = _within_block(z.reshape(*shape, z.shape[-1]), coeff.reshape(shape), reset.reshape(shape))
    ends = linear_recurrence(y[:, :, -1], coeff.reshape(shape)[..., -1] ** block, reset.reshape(shape).any(-1), block)
    x = y + carry[..., None] * F.pad(ends[:, :-1], (0, 0, 1, 0))[:, :, None, :]
    return x.reshape(z.shape)[:, :n]


def _within_block(z: torch.Tensor, coeff: torch.Tensor, reset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence inside each block of the last-but-one dim, started from 0; and each position's weight on
    the value carried in from before the block (0 once a reset has occurred in the block)."""
    k = z.shape[-2]
    idx = torch.arange(k, device=z.device)
    lag = idx[:, None] - idx[None, :]
    run = torch.cumsum(reset.long(), -1)
    same_run = (run[..., :, None] == run[..., None, :]) & (lag >= 0)
    weights = torch.where(same_run, coeff[..., :, None] ** lag.clamp(min=0).to(coeff.dtype), 0.0)
    carry = torch.where(run == 0, coeff ** (idx + 1).to(coeff.dtype), 0.0)
    return weights @ z, carry


def _atom_mask(C: torch.Tensor, atoms: int, dtype: torch.dtype) -> torch.Tensor:
    return (C > 0).to(dtype)[:, :, None, None].expand(-1, -1, atoms, 1)


def _present_mean(X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # A batch element with no present residue has no mean; 0 keeps it finite (the reference gives NaN).
    return (mask * X).sum([1, 2], keepdim=True) / mask.sum([1, 2], keepdim=True).clamp(min=1)


def center_X(X: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Move each complex's present atoms to the origin; zero the rest."""
    mask = _atom_mask(C, X.shape[2], X.dtype)
    return mask * (X - _present_mean(X, mask))


def scale_around_mean(X: torch.Tensor, C: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Scale present atoms by ``scale`` ``[B]`` (or ``[1]``) about their complex's mean; zero the rest."""
    mask = _atom_mask(C, X.shape[2], X.dtype)
    mean = _present_mean(X, mask)
    return mask * (scale.reshape(-1, 1, 1, 1) * (X - mean) + mean)


def impute_masked_X(X: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Fill atoms without structure (C <= 0) with the Brownian-bridge posterior mean along their chain.

    Between two present atoms of the same chain that is the linear interpolant; past a chain's last (or before
    its first) present atom it is that atom; a chain with no present atom, and padding, get 0.
    """
    batch, length, atoms, _ = X.shape
    flat = X.reshape(batch, length * atoms, 3)
    n = flat.shape[1]
    present = (C > 0).repeat_interleave(atoms, dim=1)
    chain = C.abs().repeat_interleave(atoms, dim=1)
    ix = torch.arange(n, device=X.device).expand(batch, -1)
    left = torch.cummax(torch.where(present, ix, -1), dim=1).values
    right = torch.cummin(torch.where(present, ix, n).flip(1), dim=1).values.flip(1)
    has_left = (left >= 0) & (chain.gather(1, left.clamp(min=0)) == chain)
    has_right = (right < n) & (chain.gather(1, right.clamp(max=n - 1)) == chain)
    left, right = left.clamp(min=0), torch.where(right < n, right, 0)
    x_left = flat.gather(1, left[..., None].expand(-1, -1, 3))
    x_right = flat.gather(1, right[..., None].expand(-1, -1, 3))
    theta = ((right - ix).abs() / ((ix - left).abs() + (right - ix).abs() + 1e-5)).to(X.dtype)[..., None]
    both, only_left, only_right = (
        (has_left & has_right)[..., None],
        (has_left & ~has_right)[..., None],
        (has_right & ~has_left)[..., None],
    )
    fill = both * (theta * x_left + (1 - theta) * x_right) + only_right * x_right + only_left * x_left
    return torch.where(present[..., None], flat, fill.to(X.dtype)).reshape(X.shape)
