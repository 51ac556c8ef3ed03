"""Ideal alpha-helical backbones: where the reference's sampler starts before noising (``_init_backbones``).

Built like the reference's ``BackboneBuilder`` (NeRF recurrence over N, CA, C with Engh & Huber lengths and
angles, phi -60, psi -45, omega 179.3 degrees; O along the bisector of CA->C and N(next)->C) and centred. At the
sampler's start time it is scaled by alpha(1) (0.03 for the default schedule) under the noise, so it sets a
small but real offset, which parity with the reference needs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LENGTHS = (1.336, 1.459, 1.525)  # C-N, N-CA, CA-C: the bonds that place N, CA, C
ANGLES = (117.2, 121.7, 111.0)  # CA-C-N, C-N-CA, N-CA-C
OMEGA, PHI, PSI = 179.3, -60.0, -45.0
LENGTH_C_O = 1.229


def alpha_helix(num_residues: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None):
    """One centred ideal alpha helix, ``[1, num_residues, 4, 3]``."""
    rad = math.pi / 180.0
    angles = torch.tensor([math.pi - a * rad for a in ANGLES], dtype=torch.float32)
    dihedrals = torch.tensor([PSI * rad, OMEGA * rad, PHI * rad], dtype=torch.float32)
    v = torch.stack([angles.cos(), angles.sin() * dihedrals.cos(), angles.sin() * dihedrals.sin()], -1)
    lengths = torch.tensor(LENGTHS, dtype=torch.float32)
    x = torch.zeros(3)
    u2, u1 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    atoms = []
    for i in range(3 * (num_residues + 1)):  # one extra residue, for the last O
        n_a = F.normalize(torch.linalg.cross(u2, u1), dim=-1)
        n_b = torch.linalg.cross(n_a, u1)
        u_new = torch.stack([u1, n_b, n_a], 1) @ v[i % 3]
        x = x + lengths[i % 3] * u_new
        u2, u1 = u1, u_new
        atoms.append(x)
    X = torch.stack(atoms).reshape(1, num_residues + 1, 3, 3)
    u_1 = F.normalize(X[:, :-1, 2] - X[:, :-1, 1], dim=-1)
    u_2 = F.normalize(X[:, :-1, 2] - X[:, 1:, 0], dim=-1)
    X = X[:, :-1]
    X_O = X[:, :, 2] + LENGTH_C_O * F.normalize(u_1 + u_2, dim=-1)
    X = torch.cat([X, X_O.unsqueeze(2)], 2)
    X = X - X.mean([1, 2, 3], keepdim=True)
    X = X - X.reshape(1, -1, 3).mean(1, keepdim=True).unsqueeze(1)  # the reference centres once more (rigid body)
    return X.to(dtype=dtype, device=device)
