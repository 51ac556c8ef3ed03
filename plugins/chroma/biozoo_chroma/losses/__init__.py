"""Chroma's reconstruction losses and backbone scores (issue 10, item 2): the ELBO, aligned MSEs at several
scales, distance errors and hydrogen-bond recovery. Pure PyTorch over ``biozoo_chroma.diffusion``; no weights."""

from biozoo_chroma.losses.hbonds import backbone_hbonds, contact_order, hbond_recovery, locality_mask
from biozoo_chroma.losses.reconstruction import (
    LOSS_TERMS,
    MAX_SAMPLES,
    METRICS,
    ReconstructionLosses,
    check_num_samples_and_tspan,
    check_structure,
)
from biozoo_chroma.losses.rmsd import (
    backbone_rmsd,
    collect_fragments,
    fragment_pair_rmsd,
    fragment_rmsd,
    neighborhood_rmsd,
    residue_distance_error,
)
from biozoo_chroma.losses.superpose import paired_superpose, rmsd_unaligned, top_eigenvector

__all__ = [
    "LOSS_TERMS",
    "MAX_SAMPLES",
    "METRICS",
    "ReconstructionLosses",
    "backbone_hbonds",
    "backbone_rmsd",
    "check_num_samples_and_tspan",
    "check_structure",
    "collect_fragments",
    "contact_order",
    "fragment_pair_rmsd",
    "fragment_rmsd",
    "hbond_recovery",
    "locality_mask",
    "neighborhood_rmsd",
    "paired_superpose",
    "residue_distance_error",
    "rmsd_unaligned",
    "top_eigenvector",
]
