"""Chroma's side chains (issue 13, part 2): geometry tables, chi angles <-> all-atom coordinates, chi decoder head.

* :class:`SideChainBuilder`: backbone ``[B, L, 4, 3]`` + sequence + chi ``[B, L, 4]`` -> all-atom ``[B, L, 14, 3]``;
* :func:`chi_angles`: all-atom coordinates -> chi and its mask; :func:`protein_chi` for a Protein, refusing
  residues without side chains (:class:`SideChainError`);
* chi binning (:func:`chi_to_bins`, :func:`bins_to_chi`, :func:`sample_in_bins`) and the decoder head
  :class:`NodePredictorChi` (node embeddings in, ``logp_chi`` or sampled chi out);
* :func:`swap_symmetric_atoms`, :func:`atom_mask`, :func:`chi_mask`; state-dict mapping in ``.keys``.

The geometry is data (``biozoo_chroma/data/sidechain_geometry.json``), read by :mod:`.tables`.
"""

from __future__ import annotations

from biozoo_chroma.sidechains.builder import SideChainBuilder
from biozoo_chroma.sidechains.chi import bin_edges, bins_to_chi, chi_angles, chi_onehot, chi_to_bins, sample_in_bins
from biozoo_chroma.sidechains.head import NodeChiRBF, NodePredictorChi
from biozoo_chroma.sidechains.inputs import SideChainError, missing_side_chains, protein_chi
from biozoo_chroma.sidechains.keys import convert_sidechain_state_dict, reference_sidechain_key
from biozoo_chroma.sidechains.symmetry import swap_symmetric_atoms
from biozoo_chroma.sidechains.tables import atom_mask, chi_mask, tables

__all__ = [
    "NodeChiRBF",
    "NodePredictorChi",
    "SideChainBuilder",
    "SideChainError",
    "atom_mask",
    "bin_edges",
    "bins_to_chi",
    "chi_angles",
    "chi_mask",
    "chi_onehot",
    "chi_to_bins",
    "convert_sidechain_state_dict",
    "missing_side_chains",
    "protein_chi",
    "reference_sidechain_key",
    "sample_in_bins",
    "swap_symmetric_atoms",
    "tables",
]
