"""Backbone geometry the graph features are built from (Chroma's smoothed conventions).

Every length is ``sqrt(|v|^2 + eps)`` rather than ``|v|``, as in the reference, so features stay differentiable
at zero (coincident atoms, zero-filled gaps). Functions take any float dtype; the feature graph calls them in at
least float32 because squared distances over 256 Å overflow float16.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulate in at least float32: chain sums over thousands of atoms lose too much in bf16/fp16."""
    return torch.promote_types(dtype, torch.float32)


def normed_vec(v: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``v / sqrt(|v|^2 + eps)`` along the last axis."""
    return v / torch.sqrt((v**2).sum(-1, keepdim=True) + eps)


def normed_cross(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Smoothed unit normal ``a x b``."""
    return normed_vec(torch.cross(a, b, dim=-1), eps)


def bond_lengths(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Smoothed distances ``|b - a|`` over the last axis."""
    return torch.sqrt(((b - a) ** 2).sum(-1) + eps)


def bond_angles(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Angle a-b-c in radians."""
    cos = (normed_vec(a - b, eps) * normed_vec(c - b, eps)).sum(-1)
    return torch.acos(cos.clamp(-1, 1))


def dihedrals(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Signed dihedral a-b-c-d in radians."""
    u_ab, u_bc, u_cd = normed_vec(b - a, eps), normed_vec(c - b, eps), normed_vec(d - c, eps)
    n_abc, n_bcd = normed_cross(u_ab, u_bc, eps), normed_cross(u_bc, u_cd, eps)
    cos = (n_abc * n_bcd).sum(-1).clamp(-1, 1)
    return torch.sign((u_ab * n_bcd).sum(-1)) * torch.acos(cos)


def pairwise_distances(points: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Smoothed distances between all points ``[..., N, 3] -> [..., N, N]``; entry ``[a, b]`` is ``|p_b - p_a|``."""
    diff = points.unsqueeze(-3) - points.unsqueeze(-2)
    return torch.sqrt((diff**2).sum(-1) + eps)


def internal_coords(
    X: torch.Tensor, C: torch.Tensor, eps: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backbone dihedrals, angle complements and bond lengths per residue, each ``[B, L, 4]``, with their masks.

    Along the N-CA-C chain, column 0..2 of residue ``i`` hold the terms that start at its N, CA and C (dihedrals
    are shifted by one atom: column 0 is the torsion ending at N, i.e. omega of the previous peptide bond, then
    phi, psi). Column 3 is the carbonyl: O dihedral (N of the next residue, CA, C, O), CA-C-O angle, C-O length.
    A term is kept only when all its atoms lie in one chain, on residues with structure; angles are ``pi - angle``.
    """
    B, L = C.shape
    mask = (C > 0).to(X.dtype)
    chain = X[:, :, :3].reshape(B, 3 * L, 3)
    lengths = bond_lengths(chain[:, 1:], chain[:, :-1], eps)
    angles = math.pi - bond_angles(chain[:, :-2], chain[:, 1:-1], chain[:, 2:], eps)
    torsions = dihedrals(chain[:, :-3], chain[:, 1:-2], chain[:, 2:-1], chain[:, 3:], eps)
    N, CA, C_atom, O_atom = X.unbind(2)
    o_length = bond_lengths(C_atom, O_atom, eps)
    o_angle = math.pi - bond_angles(CA, C_atom, O_atom, eps)
    o_torsion = dihedrals(N[:, 1:], CA[:, :-1], C_atom[:, :-1], O_atom[:, :-1], eps)

    # An atom's chain id (0 where the residue has no structure); a term needs all of its atoms in one chain.
    atom_chain = (C * (C > 0)).repeat_interleave(3, dim=1)
    same = [atom_chain[:, s : 3 * L - n + s] for n in (1, 2, 3) for s in range(n + 1)]
    mask_len = (same[0] == same[1]).to(X.dtype)
    mask_ang = ((same[2] == same[3]) & (same[2] == same[4])).to(X.dtype)
    mask_dih = ((same[5] == same[6]) & (same[5] == same[7]) & (same[5] == same[8])).to(X.dtype)
    chain_res = C * (C > 0)
    mask_o_dih = (chain_res[:, :-1] == chain_res[:, 1:]).to(X.dtype)

    def per_residue(dih: torch.Tensor, ang: torch.Tensor, bond: torch.Tensor, o_dih, o_ang, o_bond):
        """Pad the chain-wise terms to 3 per residue and append the carbonyl column."""
        dih = F.pad(dih, (1, 2)).reshape(B, L, 3)
        ang = F.pad(ang, (0, 2)).reshape(B, L, 3)
        bond = F.pad(bond, (0, 1)).reshape(B, L, 3)
        o_dih = F.pad(o_dih, (0, 1))
        return tuple(torch.cat([x, o.unsqueeze(-1)], -1) for x, o in ((dih, o_dih), (ang, o_ang), (bond, o_bond)))

    D, A, Lb = per_residue(torsions, angles, lengths, o_torsion, o_angle, o_length)
    mask_D, mask_A, mask_L = per_residue(mask_dih, mask_ang, mask_len, mask_o_dih, mask, mask)
    m = mask.unsqueeze(-1)
    mask_D, mask_A, mask_L = m * mask_D, m * mask_A, m * mask_L
    return mask_D * D, mask_A * A, mask_L * Lb, mask_D, mask_A, mask_L


def frames_from_backbone(X: torch.Tensor, eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Residue frames ``R`` (columns: CA->N, normal of the N-CA-C plane, their cross) and origins (CA)."""
    N, CA, C_atom = X[..., 0, :], X[..., 1, :], X[..., 2, :]
    n1 = normed_vec(N - CA, eps)
    n2 = normed_cross(n1, normed_vec(C_atom - CA, eps), eps)
    n3 = normed_cross(n1, n2, eps)
    return torch.stack([n1, n2, n3], -1), CA


def quaternions_from_rotations(R: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Unit quaternions ``[w, x, y, z]`` of rotation matrices ``[..., 3, 3]``, smoothed near the singular axes."""
    r = R.reshape(*R.shape[:-2], 9)
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = r.unbind(-1)

    def root(v: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(F.relu(v) + eps)

    w = root(1 + r00 + r11 + r22).unsqueeze(-1)
    xyz = root(1 + torch.stack([r00 - r11 - r22, -r00 + r11 - r22, -r00 - r11 + r22], -1))
    signs = torch.sign(torch.stack([r21 - r12, r02 - r20, r10 - r01], -1))
    return normed_vec(torch.cat([w, signs * xyz], -1), eps)


def chain_average(h: torch.Tensor, C: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each residue's chain mean of ``h`` ``[B, L, D]`` over residues with structure; 0 where ``C <= 0``.

    Done as a ``[B, L, L]`` same-chain matrix product rather than the reference's loop bound ``max(C)``, so the
    number of chains never has to be read back from the device.
    """
    same = ((C.unsqueeze(2) == C.unsqueeze(1)) & (C > 0).unsqueeze(1)).to(h.dtype)
    return (same @ h) / (same.sum(-1, keepdim=True) + eps)


def rotations_from_quaternions(q: torch.Tensor, normalize: bool = False, eps: float = 1e-3) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` of quaternions ``[..., 4]`` ordered ``[w, x, y, z]``.

    With ``normalize`` the quaternion is first smoothed to unit length (``q / sqrt(|q|^2 + eps)``), which is how
    the denoiser turns unconstrained network outputs into rotations.
    """
    if normalize:
        q = normed_vec(q, eps)
    a, b, c, d = q.unbind(-1)
    a2, b2, c2, d2 = a**2, b**2, c**2, d**2
    R = torch.stack(
        [
            a2 + b2 - c2 - d2,
            2 * b * c - 2 * a * d,
            2 * b * d + 2 * a * c,
            2 * b * c + 2 * a * d,
            a2 - b2 + c2 - d2,
            2 * c * d - 2 * a * b,
            2 * b * d - 2 * a * c,
            2 * c * d + 2 * a * b,
            a2 - b2 - c2 + d2,
        ],
        -1,
    )
    return R.reshape(*q.shape[:-1], 3, 3)


def extend_atoms(
    X_1: torch.Tensor,
    X_2: torch.Tensor,
    X_3: torch.Tensor,
    lengths: torch.Tensor,
    angles: torch.Tensor,
    dihedrals: torch.Tensor,
    eps: float = 1e-3,
) -> torch.Tensor:
    """Place atom 4 from atoms 1-3 and internal coordinates (radians): bond 3-4, angle 2-3-4, dihedral 1-2-3-4."""
    n_1 = normed_vec(X_2 - X_3, eps)
    n_2 = normed_cross(n_1, X_2 - X_1, eps)
    n_3 = normed_cross(n_1, n_2, eps)
    lengths, angles, dihedrals = lengths.unsqueeze(-1), angles.unsqueeze(-1), dihedrals.unsqueeze(-1)
    return X_3 + lengths * (
        torch.cos(angles) * n_1
        + (torch.sin(angles) * torch.sin(dihedrals)) * n_2
        + (torch.sin(angles) * torch.cos(dihedrals)) * n_3
    )
