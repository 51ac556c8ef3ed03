"""How well a design network explains a structure's own sequence and side chains (the reference's
``GraphDesign.loss``; what ``score_sequence`` reports).

Teacher-forced in one decoding order: the negative log-likelihood per residue of the sequence (autoregressive,
and the Potts and marginals heads when the network has them) and per chi angle of the side chains; then the side
chains are re-drawn from the chi decoder at a low temperature (0.01), each residue seeing the true chi of the
residues before it, and compared with the structure's own: side-chain RMSD per residue and clashes with the
residues decoded earlier. Averages are per system (``batched=False``) or over the batch, with the reference's
1e-5 in the denominators.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from biozoo.errors import InvalidArgumentError
from biozoo_chroma.design.network import ChromaDesign
from biozoo_chroma.design.traversal import SpatialTraversal
from biozoo_chroma.sidechains.losses import sidechain_clashes, sidechain_rmsd

#: The chi decoder's temperature when the side chains are re-drawn for RMSD and clashes (the reference's).
CHI_SAMPLE_TEMPERATURE = 0.01
#: Added to every denominator of an average (the reference's ``loss_eps``).
LOSS_EPS = 1e-5
#: The per-residue terms, each ``-log p`` averaged over residues (or chi angles).
NEGLOGP_TERMS = ("neglogp_S", "neglogp_S_marginals", "neglogp_S_potts", "neglogp_chi")


@contextmanager
def _chi_decoder_inputs(model: ChromaDesign) -> Iterator[dict[str, Any]]:
    """Record what ``forward`` hands the chi decoder (its graph) and the chi head (the decoded node embeddings).

    The loss re-draws chi from exactly the embeddings the teacher-forced pass scored; recording them keeps the
    forward pass in one place instead of re-implementing it here.
    """
    seen: dict[str, Any] = {}

    def graph(_: torch.nn.Module, args: tuple) -> None:
        seen["edge_idx"], seen["mask_ij"] = args[5], args[7]

    def head(_: torch.nn.Module, args: tuple) -> None:
        seen["node_h_chi"] = args[3]

    hooks = [
        model.decoder_chi.register_forward_pre_hook(graph),
        model.decoder_chi.decoder_chi.register_forward_pre_hook(head),
    ]
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()


def causal_edge_mask(edge_idx: torch.Tensor, mask_ij: torch.Tensor, permute_idx: torch.Tensor) -> torch.Tensor:
    """``mask_ij`` kept only on edges to residues decoded earlier in ``permute_idx`` (in the original order)."""
    rank = torch.argsort(permute_idx, dim=-1)
    rank_j = torch.gather(rank, 1, edge_idx.flatten(1)).view_as(edge_idx)
    return mask_ij * (rank_j < rank.unsqueeze(-1)).to(mask_ij.dtype)


def design_loss(
    model: ChromaDesign,
    X: torch.Tensor,
    C: torch.Tensor,
    S: torch.Tensor,
    t: float | torch.Tensor | None = None,
    permute_idx: torch.Tensor | None = None,
    batched: bool = True,
    uniforms: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The reference's ``GraphDesign.loss`` on an all-atom structure ``X [B, L, 14, 3]`` with sequence ``S``.

    Returns ``neglogp`` (the sum of the terms present), each of :data:`NEGLOGP_TERMS` the network has, ``rmsd``
    (Å per residue) and ``clash`` (per residue), each ``[B]`` (``batched=False``) or a scalar, and ``mask_chi``,
    ``permute_idx``, ``t``. ``permute_idx`` fixes the decoding order (default: a :class:`SpatialTraversal` drawn
    from ``generator``); the re-drawn chi use ``uniforms [B, L, 4]`` if given, else ``generator`` (after the
    order). ``t`` is the diffusion time the structure is treated as (None: exact).
    """
    if not isinstance(X, torch.Tensor) or X.dim() != 4 or X.shape[2] != 14:
        shape = list(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__
        raise InvalidArgumentError(
            f"the design loss scores side chains: X must be all-atom [B, L, 14, 3], got {shape}",
            "pass Protein.to_XCS(all_atom=True)",
        )
    model._require_packing()
    if not model.predict_S_autoregressive:
        raise InvalidArgumentError(
            "this design network has no autoregressive decoder, which the design loss scores",
            "use a checkpoint with the autoregressive decoder (sidechains=True)",
        )
    if permute_idx is None:  # on the all-atom X, as the reference: its side chains move the residue centroids
        permute_idx = SpatialTraversal()(X, C, generator=generator)
    with _chi_decoder_inputs(model) as seen:
        out = model(X, C, S, t=t, permute_idx=permute_idx)
    mask_i, mask_chi = out["mask_i"], out["mask_chi"]

    def average(mask: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        over = tuple(range(0 if batched else 1, value.dim()))
        mask = mask.to(value.dtype)
        return (mask * value).sum(over) / (mask.sum(over) + LOSS_EPS)

    losses: dict[str, torch.Tensor] = {
        "neglogp_S": -average(mask_i, out["logp_S"]),
        "neglogp_chi": -average(mask_chi, out["logp_chi"]),
    }
    neglogp = losses["neglogp_S"] + losses["neglogp_chi"]
    for head in ("marginals", "potts"):
        if f"logp_S_{head}" in out:
            losses[f"neglogp_S_{head}"] = -average(mask_i, out[f"logp_S_{head}"])
            neglogp = neglogp + losses[f"neglogp_S_{head}"]

    head = model.decoder_chi.decoder_chi
    chi = head.sample(
        S, mask_chi, seen["node_h_chi"], mask_i, CHI_SAMPLE_TEMPERATURE, uniforms=uniforms, generator=generator
    )
    X_sample = model.chi_to_X(X[:, :, :4], C, S, chi)[0]
    rmsd = sidechain_rmsd(X, X_sample, C, S)
    causal = causal_edge_mask(seen["edge_idx"], seen["mask_ij"], permute_idx)
    clashes = sidechain_clashes(X_sample, C, S, edge_idx=seen["edge_idx"], mask_ij=causal)
    B = C.shape[0]
    if t is None:
        t = torch.zeros(B, device=C.device)
    elif not isinstance(t, torch.Tensor) or t.dim() == 0:
        t = torch.full((B,), float(t), device=C.device)
    return {
        "neglogp": neglogp,
        **{k: losses[k] for k in NEGLOGP_TERMS if k in losses},
        "mask_chi": mask_chi,
        "rmsd": average(mask_i, rmsd),
        "clash": average(mask_i, clashes),
        "permute_idx": permute_idx,
        "t": t,
    }
