"""From the reference's state-dict keys to ours, for the side-chain modules and the chi decoder head.

Extends :mod:`biozoo_chroma.graph.keys` (apply this first, then that; keys neither knows pass through). The
reference keeps its side-chain tables as persistent buffers, so a design checkpoint carries them under
``chi_to_X.`` (``_Z``, ``_parents``, ``_chi_ix``), ``X_to_chi.`` (``_chi_atom_sets``) and ``*.renamer.``
(``_symmetry_indices``), and the chi head's bin edges as ``bins_left`` / ``bins_right``. Here they are
constants (the data file's tables, non-persistent buffers): each is checked to hold exactly what our tables
give in the reference's layout, then dropped. A checkpoint whose tables differ is not the reference's geometry
and is refused rather than silently rebuilt with other values. The head's parameters keep their names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from biozoo_chroma.sidechains.chi import bin_edges
from biozoo_chroma.sidechains.tables import NUM_CHI, NUM_SIDECHAIN_ATOMS, tables


def _chi_ix() -> torch.Tensor:
    """``[4, 20]``: side-chain atom whose dihedral chi k sets; 10 (a padding slot) where there is no chi k."""
    t = tables()
    out = torch.full((NUM_CHI, t.num_chi.shape[0]), NUM_SIDECHAIN_ATOMS, dtype=torch.long)
    aa, atom = (t.chi_of_atom >= 0).nonzero(as_tuple=True)
    out[t.chi_of_atom[aa, atom], aa] = atom
    return out


# suffix -> the constant it must hold, given the stored tensor (the bin edges depend on the number of bins)
_TABLES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "chi_to_X._Z": lambda v: tables().internal.permute(2, 1, 0),
    "chi_to_X._parents": lambda v: tables().parents.permute(2, 1, 0),
    "chi_to_X._chi_ix": lambda v: _chi_ix(),
    "X_to_chi._chi_atom_sets": lambda v: tables().chi_quartets,
    "renamer._symmetry_indices": lambda v: tables().symmetry,
    "bins_left": lambda v: bin_edges(v.shape[-1])[:-1].reshape(1, 1, 1, -1),
    "bins_right": lambda v: bin_edges(v.shape[-1])[1:].reshape(1, 1, 1, -1),
}


def _constant_for(key: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The constant a key must hold when it is one of the side-chain buffers (under any module prefix)."""
    return next((make for suffix, make in _TABLES.items() if key == suffix or key.endswith("." + suffix)), None)


def reference_sidechain_key(key: str) -> str | None:
    """Our key for a reference key; ``None`` for a side-chain table or bin-edge buffer (dropped)."""
    return None if _constant_for(key) is not None else key


def convert_sidechain_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the side-chain constants after checking them; keep every other key as it is."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        make = _constant_for(key)
        if make is None:
            out[key] = value
            continue
        expected = make(value)
        if value.shape != expected.shape or not torch.equal(value.cpu().to(expected.dtype), expected):
            raise ValueError(
                f"{key} does not hold Chroma's side-chain table; the checkpoint's geometry differs from the "
                "reference's (sidechain_geometry.json)"
            )
    return out
