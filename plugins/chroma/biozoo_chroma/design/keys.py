"""From the reference's ``GraphDesign`` state-dict keys to :class:`~biozoo_chroma.design.network.ChromaDesign`'s.

The module tree mirrors the reference's (``encoder.``, ``time_features.fourier_features.``, ``decoder.W_S``,
``decoder.gnn.``, ``decoder.decoder_S.``, ``decoder_S_marginals.``, ``decoder_S_potts.``, and the side-chain
stage's ``embed_S.``, ``encoder_S_gnn.``, ``decoder_chi.W_S``, ``decoder_chi.embed_chi.``, ``decoder_chi.gnn.``,
``decoder_chi.decoder_chi.``), so two existing mappings are all the renaming, applied in this order:

* :func:`biozoo_chroma.sidechains.keys.convert_sidechain_state_dict`: the side-chain geometry tables the reference
  keeps as buffers (``chi_to_X.``, ``X_to_chi.``, ``loss_rmsd.renamer.``, also inside ``decoder.`` and
  ``decoder_chi.``) and the chi head's bin edges are checked to be Chroma's and dropped;
* :func:`biozoo_chroma.graph.keys.convert_reference_state_dict`: ``.weights`` of the norms becomes ``.weight``;
  constant tables such as ``noise_perturb.loss_rmsd.rmsd.R_to_F`` are checked and dropped.

Everything else keeps its name, and the result loads with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from biozoo_chroma.graph.keys import convert_reference_state_dict, reference_key
from biozoo_chroma.sidechains.keys import convert_sidechain_state_dict, reference_sidechain_key

#: Key prefixes of the reference's side-chain stage (and its geometry tables).
CHI_STAGE_PREFIXES = ("embed_S.", "encoder_S_gnn.", "decoder_chi.", "chi_to_X.", "X_to_chi.", "loss_rmsd.")


def is_chi_stage_key(key: str) -> bool:
    """A key of the side-chain stage: under one of :data:`CHI_STAGE_PREFIXES`, at the top or in ``decoder.``."""
    return key.startswith(CHI_STAGE_PREFIXES) or key.removeprefix("decoder.").startswith(CHI_STAGE_PREFIXES[3:])


def convert_design_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference's whole ``GraphDesign`` state dict under our keys (constants checked and dropped).

    Raises ``ValueError`` naming a constant table that does not hold Chroma's values.
    """
    return convert_reference_state_dict(convert_sidechain_state_dict(state))


def split_design_state_dict(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(ours, dropped)``: every parameter and buffer under our keys (loads into
    :class:`~biozoo_chroma.design.network.ChromaDesign` with ``strict=True``), and the constant tables that were
    checked and dropped, under the reference's names."""
    dropped = {k: v for k, v in state.items() if reference_sidechain_key(k) is None or reference_key(k) is None}
    return convert_design_state_dict(state), dropped
