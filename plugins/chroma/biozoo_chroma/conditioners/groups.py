"""Point groups as stacks of rotation matrices ``[|G|, 3, 3]``: cyclic ``Cn`` and dihedral ``Dn``.

The matrices and their order follow the reference (generate-chroma 1.0.0, ``symmetry.get_Cn_groups`` /
``get_Dn_groups``): Cn is the rotations about z by 2 pi k / n (k = 0..n-1) with cos/sin rounded to 4 decimals; Dn
interleaves each power r^(k+2) (k = 0..n-1) of the rotation r by 2 pi / n (cos/sin rounded to 8 decimals) with its
product by the 2-fold flip about x. The order matters: the symmetry conditioner's seed chain and chain ids index it,
and the rounding is what the reference's samples were made with.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from biozoo_chroma.conditioners.errors import ConditionerError

MAX_ORDER = 60  # larger assemblies than the reference's icosahedral group are beyond what the sampler handles
_NAME = re.compile(r"^([CD])_?(\d+)$")
_HINT = "name a cyclic or dihedral group: C2, C3, ... (or C_3 as the reference spells it), D2, D3, ..."


def _rotation_z(angle: float, decimals: int) -> torch.Tensor:
    c, s = (float(np.round(v, decimals)) for v in (math.cos(angle), math.sin(angle)))  # numpy's rounding, as made
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def cyclic_group(n: int) -> torch.Tensor:
    """The n rotations of Cn about z, identity first ``[n, 3, 3]`` float32."""
    return torch.stack([_rotation_z(2 * math.pi * k / n, 4) for k in range(n)]).float()


def dihedral_group(n: int) -> torch.Tensor:
    """The 2n rotations of Dn ``[2n, 3, 3]`` float32: rotations about z, each followed by its x-flipped copy."""
    step = _rotation_z(2 * math.pi / n, 8)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    elements, power = [], step
    for _ in range(n):
        power = power @ step
        elements += [power, flip @ power]
    return torch.stack(elements).float()


def group_order(name: str) -> int:
    """|G| of a group name, checked (for validating chain counts before anything is built)."""
    kind, n = _parse(name)
    return n if kind == "C" else 2 * n


def point_group(name: str) -> torch.Tensor:
    """The rotation matrices of ``name`` (``"C3"``, ``"C_3"``, ``"D2"``, ...)."""
    kind, n = _parse(name)
    return cyclic_group(n) if kind == "C" else dihedral_group(n)


def _parse(name: str) -> tuple[str, int]:
    match = _NAME.match(name.strip().upper()) if isinstance(name, str) else None
    if match is None:
        raise ConditionerError(f"unknown symmetry group {name!r}", _HINT)
    kind, n = match.group(1), int(match.group(2))
    order = n if kind == "C" else 2 * n
    if n < 1 or order > MAX_ORDER:
        raise ConditionerError(
            f"symmetry group {name!r} has order {order}, outside 1..{MAX_ORDER}", f"{_HINT}; at most {MAX_ORDER} copies"
        )
    return kind, n
