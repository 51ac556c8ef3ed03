"""How good packed side chains are: per-residue side-chain RMSD and clash counts (the side-chain terms of
Chroma's ``GraphDesign.loss``; the reference's ``LossSideChainRMSD`` and ``LossSidechainClashes``).

* :func:`sidechain_rmsd`: the RMSD of each residue's side-chain atoms (no superposition: the backbone is shared),
  taking the better of the two namings of symmetric atoms (:func:`swap_symmetric_atoms` of the *first* argument),
  since which oxygen of an Asp is OD1 is arbitrary. As in the reference, the RMSD is smoothed,
  ``sqrt(sd / (n + eps) + eps)``, so a residue without side-chain atoms (Gly) scores ``sqrt(eps)`` = 0.1 Å, not 0.
* :func:`sidechain_clashes`: for each residue, how many (side-chain atom of i, any atom of neighbour j) pairs on a
  kNN graph are closer than PyMOL's bonding cutoff ``(r_i + r_j) / 2 + connect_cutoff`` (van der Waals radii by
  element). Only clashes *from* side-chain atoms of i count; the residue itself is not its own neighbour; bonded
  neighbours are not exempt (the cutoff, ~2 Å, is below any non-bonded contact). A smooth count (sigmoid of the
  margin) makes it differentiable in X.

Both compute in at least float32 and return X's dtype. With ``check=True`` (the default) the inputs are validated
once on entry (shapes, residue types, and that every protein has a residue with coordinates: host syncs);
``check=False`` skips that, leaving no host sync, for use inside a training step.
"""

from __future__ import annotations

from functools import cache

import torch
from torch import nn

from biozoo.errors import InvalidArgumentError
from biozoo.nn.checks import check_int, check_positive
from biozoo_chroma.constants import AA20_3, ATOMS_BB, NUM_ATOMS_ALL, RESIDUE_ATOMS
from biozoo_chroma.graph.builder import ProteinGraph
from biozoo_chroma.graph.geometry import compute_dtype
from biozoo_chroma.graph.ops import collect_neighbors
from biozoo_chroma.losses.reconstruction import check_structure
from biozoo_chroma.sidechains.symmetry import swap_symmetric_atoms
from biozoo_chroma.sidechains.tables import atom_mask

#: Smoothing of the per-residue RMSD (the reference's ``rmsd_eps``).
RMSD_EPS = 1e-2
#: Smoothing of interatomic distances in the clash count (the reference's ``distance_eps``).
CLASH_DISTANCE_EPS = 1e-3
#: PyMOL's ``connect_cutoff`` (https://pymolwiki.org/index.php/Connect_cutoff): atoms closer than half their
#: van der Waals diameter plus this many Angstrom would be drawn bonded.
CONNECT_CUTOFF = 0.35
#: Van der Waals radii (Angstrom) by element, Bondi (1964), the values the reference's clash loss uses.
VDW_RADII = {"C": 1.7, "N": 1.55, "O": 1.52, "S": 1.8}
_SIDE = len(ATOMS_BB)  # the first side-chain slot of an all-atom X


@cache
def vdw_radii_table() -> torch.Tensor:
    """``[20, 14]`` float32 radius of each atom slot of each residue type (0 where a type has no such atom)."""
    radii = torch.zeros(len(AA20_3), NUM_ATOMS_ALL)
    for aa, name in enumerate(AA20_3):
        for slot, atom in enumerate(RESIDUE_ATOMS[name]):
            radii[aa, slot] = VDW_RADII[atom[0]]  # the element is the name's first letter for these atoms
    return radii


def _shape(value: object) -> object:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def check_all_atom(X: torch.Tensor, C: torch.Tensor, S: torch.Tensor, X_target: torch.Tensor | None = None) -> None:
    """Refuse inputs that are not all-atom ``X [B, L, 14, 3]`` (and a target of the same shape), ``C``, ``S [B, L]``
    with residue types 0..19, or a protein with no residue that has coordinates (its losses would be all zero)."""
    all_atom = isinstance(X, torch.Tensor) and X.dim() == 4 and X.shape[2:] == (NUM_ATOMS_ALL, 3)
    if not all_atom or not X.is_floating_point():
        raise InvalidArgumentError(
            f"X must be a float all-atom tensor [B, L, {NUM_ATOMS_ALL}, 3], got {_shape(X)}",
            "pass all-atom coordinates (Protein.to_XCS(all_atom=True), or SideChainBuilder's output)",
        )
    if X_target is not None and (not isinstance(X_target, torch.Tensor) or X_target.shape != X.shape):
        raise InvalidArgumentError(
            f"X_target must have X's shape {tuple(X.shape)}, got {_shape(X_target)}",
            "compare two all-atom structures of the same residues (same batch, length and 14-atom layout)",
        )
    if not isinstance(S, torch.Tensor) or S.shape != X.shape[:2] or S.is_floating_point():
        raise InvalidArgumentError(
            f"S must be an integer sequence [B, L] = {tuple(X.shape[:2])}, got {_shape(S)}",
            "pass residue types as indices 0..19 in Chroma's alphabet (Protein.to_XCS() gives them)",
        )
    check_structure(X[:, :, : len(ATOMS_BB)], C)  # C's shape, empty and all-masked proteins, NaN backbones
    if bool((torch.lt(S, 0) | torch.ge(S, len(AA20_3))).any()):
        raise InvalidArgumentError(
            "S has residue types outside 0..19", "encode the sequence in Chroma's 20-letter alphabet (AA20)"
        )


def _check_graph(
    X: torch.Tensor, edge_idx: torch.Tensor | None, mask_ij: torch.Tensor | None, mask_j: torch.Tensor | None
) -> None:
    """Refuse a graph or masks whose shapes do not fit ``X [B, L, ...]``."""
    B, L = X.shape[:2]
    if mask_j is not None and (not isinstance(mask_j, torch.Tensor) or mask_j.shape != (B, L)):
        raise InvalidArgumentError(
            f"mask_j must be [B, L] = {(B, L)}, got {_shape(mask_j)}", "one weight per residue (1 counts, 0 not)"
        )
    if edge_idx is None:
        if mask_ij is not None:
            raise InvalidArgumentError(
                "mask_ij was given without the edge_idx it masks",
                "pass edge_idx too, or neither (a kNN graph is built)",
            )
        return
    if not isinstance(edge_idx, torch.Tensor) or edge_idx.dim() != 3 or edge_idx.shape[:2] != (B, L):
        raise InvalidArgumentError(
            f"edge_idx must be [B, L, K] with [B, L] = {(B, L)}, got {_shape(edge_idx)}",
            "pass the graph's edge_idx (ProteinGraph gives it), or none to build a kNN graph",
        )
    if edge_idx.is_floating_point():
        raise InvalidArgumentError("edge_idx must hold integer residue indices", "pass edge_idx as a long tensor")
    if mask_ij is not None and (not isinstance(mask_ij, torch.Tensor) or mask_ij.shape != edge_idx.shape):
        raise InvalidArgumentError(
            f"mask_ij must have edge_idx's shape {tuple(edge_idx.shape)}, got {_shape(mask_ij)}",
            "one weight per edge, as ProteinGraph returns with edge_idx",
        )


def _rmsd(X_side: torch.Tensor, target_side: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    sd = mask * ((X_side - target_side) ** 2).sum(-1)
    return torch.sqrt(sd.sum(-1) / (mask.sum(-1) + eps) + eps)


def sidechain_rmsd(
    X: torch.Tensor,
    X_target: torch.Tensor,
    C: torch.Tensor,
    S: torch.Tensor,
    include_symmetry: bool = True,
    eps: float = RMSD_EPS,
    check: bool = True,
) -> torch.Tensor:
    """Per-residue side-chain RMSD ``[B, L]`` of all-atom ``X`` against ``X_target`` (0 where C <= 0).

    With ``include_symmetry`` each residue takes the smaller of the RMSDs of X as named and of X with its
    symmetric atoms exchanged. Differentiable in X and X_target.
    """
    if check:
        check_all_atom(X, C, S, X_target)
    dtype = compute_dtype(X.dtype)
    mask = atom_mask(C, S)[:, :, _SIDE:].to(dtype)
    target = X_target[:, :, _SIDE:].to(dtype)
    rmsd = _rmsd(X[:, :, _SIDE:].to(dtype), target, mask, eps)
    if include_symmetry:
        alternate = _rmsd(swap_symmetric_atoms(X, S)[:, :, _SIDE:].to(dtype), target, mask, eps)
        rmsd = torch.stack([rmsd, alternate], -1).min(-1).values
    return ((C > 0).to(dtype) * rmsd).to(X.dtype)


def sidechain_clashes(
    X: torch.Tensor,
    C: torch.Tensor,
    S: torch.Tensor,
    edge_idx: torch.Tensor | None = None,
    mask_j: torch.Tensor | None = None,
    mask_ij: torch.Tensor | None = None,
    num_neighbors: int = 30,
    connect_cutoff: float = CONNECT_CUTOFF,
    smooth_alpha: float | None = None,
    distance_eps: float = CLASH_DISTANCE_EPS,
    check: bool = True,
) -> torch.Tensor:
    """Clashes from each residue's side chain to its graph neighbours, ``[B, L]`` (0 where C <= 0).

    The graph is ``edge_idx [B, L, K]`` (with optional edge weights ``mask_ij``, e.g. a causal mask so only
    clashes with residues packed earlier count), or else the ``num_neighbors``-nearest-neighbour graph of X's
    backbone. ``mask_j [B, L]`` weights the residues that may be clashed *with*. ``smooth_alpha`` replaces the
    hard count by ``sigmoid(smooth_alpha * (cutoff - D))`` (the reference's ``use_smooth_cutoff``), which is
    differentiable in X; the hard count has no gradient.
    """
    if check:
        check_all_atom(X, C, S)
        _check_graph(X, edge_idx, mask_ij, mask_j)
    out_dtype, dtype = X.dtype, compute_dtype(X.dtype)
    X = X.to(dtype)
    if edge_idx is None:
        with torch.no_grad():  # indices only: no gradient flows through the choice of neighbours
            edge_idx, mask_ij = ProteinGraph(num_neighbors)(X[:, :, : len(ATOMS_BB)].detach(), C)
    B, L, K = edge_idx.shape

    # which (side-chain atom of i, atom of j) pairs count: [B, L, K, 10, 14]
    atoms = atom_mask(C, S).to(dtype)
    atoms_j = atoms if mask_j is None else atoms * mask_j.to(dtype).unsqueeze(-1)
    pairs = atoms[:, :, None, _SIDE:, None] * collect_neighbors(atoms_j, edge_idx)[:, :, :, None, :]
    edge_weight = (edge_idx != torch.arange(L, device=edge_idx.device).view(1, L, 1)).to(dtype)
    if mask_ij is not None:
        edge_weight = edge_weight * mask_ij.to(dtype)
    pairs = pairs * edge_weight[..., None, None]

    X_j = collect_neighbors(X.reshape(B, L, NUM_ATOMS_ALL * 3), edge_idx).reshape(B, L, K, NUM_ATOMS_ALL, 3)
    D = torch.sqrt(((X[:, :, None, _SIDE:, None] - X_j[:, :, :, None]) ** 2).sum(-1) + distance_eps)
    radii = vdw_radii_table().to(device=X.device, dtype=dtype)[S]  # [B, L, 14]
    radii_j = collect_neighbors(radii, edge_idx)
    cutoff = (radii[:, :, None, _SIDE:, None] + radii_j[:, :, :, None, :]) / 2.0 + connect_cutoff
    hard = smooth_alpha is None
    clash = torch.lt(D, cutoff).to(dtype) if hard else torch.sigmoid(smooth_alpha * (cutoff - D))
    return (pairs * clash).sum((2, 3, 4)).to(out_dtype)


class SideChainRMSDLoss(nn.Module):
    """:func:`sidechain_rmsd` as a module (``GraphDesign.loss_rmsd``); it holds no tables or weights."""

    def __init__(self, eps: float = RMSD_EPS) -> None:
        super().__init__()
        self.eps = check_positive("eps", eps)

    def forward(
        self,
        X: torch.Tensor,
        X_target: torch.Tensor,
        C: torch.Tensor,
        S: torch.Tensor,
        include_symmetry: bool = True,
        check: bool = True,
    ) -> torch.Tensor:
        return sidechain_rmsd(X, X_target, C, S, include_symmetry, self.eps, check)


class SideChainClashLoss(nn.Module):
    """:func:`sidechain_clashes` as a module (``GraphDesign.loss_clash``), with the reference's arguments."""

    def __init__(
        self,
        num_neighbors: int = 30,
        distance_eps: float = CLASH_DISTANCE_EPS,
        connect_cutoff: float = CONNECT_CUTOFF,
        use_smooth_cutoff: bool = False,
        smooth_cutoff_alpha: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_neighbors = check_int("num_neighbors", num_neighbors)
        self.distance_eps = check_positive("distance_eps", distance_eps)
        self.connect_cutoff = check_positive("connect_cutoff", connect_cutoff)
        alpha = check_positive("smooth_cutoff_alpha", smooth_cutoff_alpha)
        self.smooth_alpha = alpha if use_smooth_cutoff else None

    def forward(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        S: torch.Tensor,
        edge_idx: torch.Tensor | None = None,
        mask_j: torch.Tensor | None = None,
        mask_ij: torch.Tensor | None = None,
        check: bool = True,
    ) -> torch.Tensor:
        return sidechain_clashes(
            X, C, S, edge_idx, mask_j, mask_ij, self.num_neighbors, self.connect_cutoff, self.smooth_alpha,
            self.distance_eps, check,
        )
