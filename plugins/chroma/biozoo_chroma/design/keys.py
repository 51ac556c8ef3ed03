"""From the reference's ``GraphDesign`` state-dict keys to :class:`~biozoo_chroma.design.network.ChromaDesign`'s.

The module tree mirrors the reference's (``encoder.``, ``time_features.fourier_features.``, ``decoder.W_S``,
``decoder.gnn.``, ``decoder.decoder_S.``, ``decoder_S_marginals.``, ``decoder_S_potts.``), so the graph modules'
rules (:func:`biozoo_chroma.graph.keys.convert_reference_state_dict`: ``.weights`` of the norms becomes
``.weight``; constant tables such as ``noise_perturb.loss_rmsd.rmsd.R_to_F`` are checked and dropped) are the only
renaming. Everything else keeps its name.

The side-chain stage is set apart, under the reference's names, for the module that implements it: the
sequence-conditioned re-encoder and chi decoder (``embed_S.``, ``encoder_S_gnn.``, ``decoder_chi.``) and the
side-chain geometry tables the reference keeps as buffers (``chi_to_X.``, ``X_to_chi.``, ``loss_rmsd.``, also
inside ``decoder.``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from biozoo_chroma.graph.keys import convert_reference_state_dict

#: Key prefixes of the reference's side-chain stage (and its geometry tables).
CHI_STAGE_PREFIXES = ("embed_S.", "encoder_S_gnn.", "decoder_chi.", "chi_to_X.", "X_to_chi.", "loss_rmsd.")


def is_chi_stage_key(key: str) -> bool:
    """A key of the side-chain stage: under one of :data:`CHI_STAGE_PREFIXES`, at the top or in ``decoder.``."""
    return key.startswith(CHI_STAGE_PREFIXES) or key.removeprefix("decoder.").startswith(CHI_STAGE_PREFIXES[3:])


def split_design_state_dict(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(ours, chi_stage)``: the sequence network's entries under our keys, the side-chain stage's as they are.

    ``ours`` loads into :class:`~biozoo_chroma.design.network.ChromaDesign` with ``strict=True``.
    """
    chi_stage = {k: v for k, v in state.items() if is_chi_stage_key(k)}
    ours = convert_reference_state_dict({k: v for k, v in state.items() if k not in chi_stage})
    return ours, chi_stage
