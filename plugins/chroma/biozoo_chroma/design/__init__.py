"""Chroma's design network and Potts sequence design (issue 13, items 1-2).

:class:`ChromaDesign` (registry architecture ``chroma.design``) encodes a backbone and reads sequence models off it:
a Potts model (:mod:`~biozoo_chroma.design.potts` holds its energy, likelihoods and MCMC samplers), per-residue
marginals and an autoregressive decoder. :mod:`~biozoo_chroma.design.keys` maps the reference's checkpoint keys.
"""

from __future__ import annotations

from biozoo_chroma.design.complexity import lcp_penalty
from biozoo_chroma.design.keys import CHI_STAGE_PREFIXES, is_chi_stage_key, split_design_state_dict
from biozoo_chroma.design.network import ChromaDesign, DesignEncoding
from biozoo_chroma.design.potts import (
    composite_log_likelihood,
    fold_symmetry,
    potts_energy,
    pseudolikelihood,
    residue_log_likelihood,
    sample_potts,
)

__all__ = [
    "CHI_STAGE_PREFIXES",
    "ChromaDesign",
    "DesignEncoding",
    "composite_log_likelihood",
    "fold_symmetry",
    "is_chi_stage_key",
    "lcp_penalty",
    "potts_energy",
    "pseudolikelihood",
    "residue_log_likelihood",
    "sample_potts",
    "split_design_state_dict",
]
