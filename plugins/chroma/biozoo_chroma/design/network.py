"""Chroma's design network (the reference's ``GraphDesign``): sequence given a backbone, as a registry architecture.

The backbone (optionally noised, at diffusion time ``design_t``) is encoded once by a graph encoder, with the
noise level embedded into the nodes; heads then read the embeddings:

* the Potts head: fields and couplings of a sequence energy, ``U(S)``, for MCMC design (:meth:`potts`,
  :meth:`design_potts`);
* the marginals head: independent per-residue log-probabilities;
* the autoregressive decoder: ``log p(S_i | S_<i, X)`` in a decoding order;
* the side-chain stage (two-stage packing, the reference's ``separate_packing``): the encoding is re-processed
  with the sequence (``embed_S``, ``encoder_S_gnn``: :meth:`encode_sequence`), then the chi decoder
  (:class:`~biozoo_chroma.design.packing.ChiDecoder`) gives ``log p(chi_i | chi_<i, S, X)`` in a decoding order;
  :meth:`pack` samples chi residue by residue and builds the side chains.

The constructor takes the reference's ``init_kwargs`` by name, so a checkpoint's saved kwargs are the config as they
are; module names mirror the reference's, so its keys map mechanically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from biozoo.components.base import Architecture
from biozoo.components.ports import Port
from biozoo.errors import InvalidArgumentError
from biozoo.nn.checks import ConfigError, check_int
from biozoo_chroma.backbone.model import TIME
from biozoo_chroma.constants import AA20
from biozoo_chroma.design.complexity import lcp_penalty
from biozoo_chroma.design.decoder import SequenceDecoder
from biozoo_chroma.design.heads import PottsHead, SequenceHead
from biozoo_chroma.design.packing import CHI_EMBEDDINGS, ChiDecoder
from biozoo_chroma.design.potts import (
    PROPOSALS,
    check_symmetry_order,
    check_temperature,
    fold_symmetry,
    potts_energy,
    sample_potts,
    sampling_masks,
)
from biozoo_chroma.design.selection import banned_states
from biozoo_chroma.design.traversal import DECODING_ORDER, SpatialTraversal
from biozoo_chroma.diffusion import NoiseSchedule, as_time, check_backbone
from biozoo_chroma.graph.encoder import GraphEncoder
from biozoo_chroma.graph.feature_graph import BACKBONE, CHAIN_MAP
from biozoo_chroma.graph.features import FourierFeaturization
from biozoo_chroma.graph.geometry import compute_dtype
from biozoo_chroma.graph.gnn import GraphNN
from biozoo_chroma.graph.keys import split_encoder_kwargs
from biozoo_chroma.sidechains.builder import SideChainBuilder
from biozoo_chroma.sidechains.chi import chi_angles
from biozoo_chroma.sidechains.inputs import SideChainError
from biozoo_chroma.sidechains.tables import NUM_CHI, atom_mask, chi_mask

SEQUENCE = "protein-sequence"


class DesignEncoding(NamedTuple):
    """The encoder's graph embeddings, which every head (and the side-chain stage) reads."""

    node_h: torch.Tensor  # [B, L, dim_nodes]
    edge_h: torch.Tensor  # [B, L, K, dim_edges]
    edge_idx: torch.Tensor  # [B, L, K]
    mask_i: torch.Tensor  # [B, L]
    mask_ij: torch.Tensor  # [B, L, K]


def own_chi(X: torch.Tensor, C: torch.Tensor, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A structure's chi angles in at least float32: chi rounded to bf16 can cross a bin edge, or pass +pi."""
    return chi_angles(X.to(compute_dtype(X.dtype)), C, S)


class PackResult(NamedTuple):
    """What :meth:`ChromaDesign.pack` returns."""

    X: torch.Tensor  # [B, L, 14, 3] all-atom, side chains built from chi
    chi: torch.Tensor  # [B, L, 4] radians (0 where a residue has no such chi)
    logp_chi: torch.Tensor  # [B, L, 4] log-likelihood of each chi under the decoder
    mask_chi: torch.Tensor  # [B, L, 4] which chi angles each residue has
    permute_idx: torch.Tensor  # [B, L] the decoding order used


class NoiseTimeEmbedding(nn.Module):
    """Random Fourier features of log SNR(t) ``[T, 1, dim]``: tells the encoder how noisy its input backbone is."""

    def __init__(self, dim_embedding: int, schedule: NoiseSchedule, rff_scale: float = 0.8) -> None:
        super().__init__()
        self.schedule = schedule
        self.fourier_features = FourierFeaturization(1, dim_embedding, trainable=False, scale=rff_scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.fourier_features(self.schedule.log_SNR(t).float()[:, None, None])


class ChromaDesign(Architecture):
    """The design network with its sequence heads; :meth:`encode`, :meth:`potts`, :meth:`forward` and
    :meth:`design_potts` are the API."""

    slots: ClassVar[dict] = {}

    def __init__(
        self,
        dim_nodes: int = 128,
        dim_edges: int = 128,
        num_neighbors: int = 30,
        node_features: Sequence[Any] = (("internal_coords", {"log_lengths": True}),),
        edge_features: Sequence[Any] = ("distances_2mer", "orientations_2mer", "distances_chain"),
        sequence_embedding: str = "linear",
        sidechain_embedding: str = "chi_rbf",
        sidechains: bool = True,
        num_layers: int = 3,
        num_layers_encoder: int | None = None,
        dropout: float = 0.1,
        node_mlp_layers: int = 1,
        node_mlp_dim: int | None = None,
        edge_update: bool = True,
        edge_mlp_layers: int = 1,
        edge_mlp_dim: int | None = None,
        skip_connect_input: bool = False,
        mlp_activation: str = "softplus",
        num_alphabet: int = 20,
        num_chi_bins: int = 20,
        decoder_num_hidden: int = 512,
        label_smoothing: float = 0.1,
        separate_packing: bool = True,
        graph_criterion: str = "knn",
        graph_random_min_local: int = 20,
        graph_attentional: bool = False,
        graph_num_attention_heads: int = 4,
        predict_S_marginals: bool = False,
        predict_S_potts: bool = False,
        potts_parameterization: str = "factor",
        potts_num_factors: int | None = None,
        potts_symmetric_J: bool = True,
        noise_schedule: str | None = None,
        noise_covariance_model: str = "brownian",
        noise_complex_scaling: bool = False,
        noise_beta_range: Sequence[float] = (0.2, 70.0),
        noise_log_snr_range: Sequence[float] = (-7.0, 13.5),
        checkpoint_gradients: bool = False,
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """The reference's ``GraphDesign`` arguments. ``sidechain_embedding`` and ``num_chi_bins`` configure the
        side-chain stage. Options of training (``noise_covariance_model``, ``noise_complex_scaling``,
        ``noise_beta_range``) and unused ones (``graph_attentional*``, ``potts_num_factors`` for ``factor``) are
        accepted so any saved init_kwargs load; ``kwargs`` is the reference's saved catch-all."""
        super().__init__()
        if sequence_embedding != "linear":
            raise ConfigError("sequence_embedding", f"must be 'linear' (the reference's only option), got "
                                                    f"{sequence_embedding!r}")  # fmt: skip
        if sidechains and not separate_packing:
            raise ConfigError(
                "separate_packing",
                "False (one-stage decoding, sequence and chi interleaved) is not supported; Chroma's public "
                "design model packs in two stages (separate_packing=True)",
            )
        self.num_alphabet = check_int("num_alphabet", num_alphabet)
        self.dim_nodes, self.dim_edges = check_int("dim_nodes", dim_nodes), check_int("dim_edges", dim_edges)
        gnn_kwargs = {
            "dim_nodes": dim_nodes, "dim_edges": dim_edges, "num_neighbors": num_neighbors,
            "node_features": node_features, "edge_features": edge_features, "num_layers": num_layers,
            "node_mlp_layers": node_mlp_layers, "node_mlp_dim": node_mlp_dim, "edge_update": edge_update,
            "edge_mlp_layers": edge_mlp_layers, "edge_mlp_dim": edge_mlp_dim, "mlp_activation": mlp_activation,
            "dropout": dropout, "skip_connect_input": skip_connect_input, "graph_criterion": graph_criterion,
            "graph_random_min_local": graph_random_min_local, "checkpoint_gradients": checkpoint_gradients,
        }  # fmt: skip
        layers_encoder = num_layers if num_layers_encoder is None else num_layers_encoder
        self.encoder = GraphEncoder(**{**gnn_kwargs, "num_layers": layers_encoder})
        self.schedule = None
        if noise_schedule is not None:
            self.schedule = NoiseSchedule(tuple(noise_log_snr_range), kind=noise_schedule)
            self.time_features = NoiseTimeEmbedding(dim_nodes, self.schedule)
        self.predict_S_autoregressive = bool(sidechains)
        if self.predict_S_autoregressive:
            self.decoder = SequenceDecoder(gnn_kwargs, num_alphabet, decoder_num_hidden, label_smoothing)
        self.packing = bool(separate_packing)
        if self.packing:
            if sidechain_embedding not in CHI_EMBEDDINGS:
                raise ConfigError(
                    "sidechain_embedding",
                    f"the chi decoder embeds decoded chi angles with {' or '.join(map(repr, CHI_EMBEDDINGS))}; "
                    f"{sidechain_embedding!r} is not implemented",
                )
            self.embed_S = nn.Embedding(num_alphabet, dim_nodes)
            self.encoder_S_gnn = GraphNN(**split_encoder_kwargs(gnn_kwargs)[1])
            self.decoder_chi = ChiDecoder(gnn_kwargs, num_alphabet, num_chi_bins, decoder_num_hidden, label_smoothing)
            # tables only (non-persistent buffers), built on the CPU even when the model is built on the meta device:
            # the cached geometry tables must not be meta tensors; reset_non_persistent_buffers moves them
            with torch.device("cpu"):
                self.chi_to_X = SideChainBuilder()
        self.predict_S_marginals, self.predict_S_potts = bool(predict_S_marginals), bool(predict_S_potts)
        if self.predict_S_marginals:
            self.decoder_S_marginals = SequenceHead(num_alphabet, dim_nodes, decoder_num_hidden, label_smoothing)
        if self.predict_S_potts:
            self.decoder_S_potts = PottsHead(
                dim_nodes, dim_edges, num_alphabet, parameterization=potts_parameterization,
                symmetric_J=potts_symmetric_J, dropout=dropout, label_smoothing=label_smoothing,
            )  # fmt: skip

    # -- registry ------------------------------------------------------------------------------------------------

    def model_inputs(self) -> tuple[Port, ...]:
        return (
            Port("X", BACKBONE, ("B", "L", 4, 3), "backbone N, CA, C, O (all-atom X is cut to 4 atoms)"),
            Port("C", CHAIN_MAP, ("B", "L"), "chain k+1; -(k+1) without structure; 0 padding"),
            Port("S", SEQUENCE, ("B", "L"), "residue types, indices into ACDEFGHIKLMNPQRSTVWY"),
            Port("t", TIME, ("B",), "diffusion time of the input backbone (0: exact)", optional=True),
            Port("permute_idx", DECODING_ORDER, ("B", "L"), "autoregressive decoding order", optional=True),
        )

    # -- encoder -------------------------------------------------------------------------------------------------

    def encode(
        self, X: torch.Tensor, C: torch.Tensor, t: float | torch.Tensor | None = None
    ) -> DesignEncoding:
        """Graph embeddings of the backbone ``X [B, L, 4 or 14, 3]`` at noise level ``t`` (``None``: 0)."""
        if isinstance(X, torch.Tensor) and X.dim() == 4 and X.shape[2] > 4:
            X = X[:, :, :4]
        check_backbone(X, C)
        node_aux = None
        if self.schedule is not None:
            node_aux = self.time_features(as_time(0.0 if t is None else t, like=X))
        return DesignEncoding(*self.encoder(X, C, node_h_aux=node_aux))

    # -- heads ---------------------------------------------------------------------------------------------------

    def _require(self, head: str) -> None:
        if not getattr(self, f"predict_{head}"):
            raise InvalidArgumentError(
                f"this design network has no {head.removeprefix('S_')} head (it was not trained with one)",
                f"use a checkpoint with predict_{head}=True, or another design method",
            )

    def potts(self, enc: DesignEncoding) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h [B, L, Q], J [B, L, K, Q, Q])`` of the Potts head."""
        self._require("S_potts")
        return self.decoder_S_potts(*enc)

    def marginals(self, enc: DesignEncoding) -> torch.Tensor:
        """Per-residue log-probabilities ``[B, L, Q]`` of the marginals head."""
        self._require("S_marginals")
        return self.decoder_S_marginals.log_probs(enc.node_h, enc.mask_i)

    def forward(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        S: torch.Tensor,
        t: float | torch.Tensor | None = None,
        permute_idx: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Sequence log-likelihoods ``[B, L]`` of ``S`` under each head the network has.

        ``logp_S_potts`` (composite likelihood of the Potts head) and ``logp_S_marginals`` always when present;
        ``logp_S`` (autoregressive, teacher-forced) needs a decoding order ``permute_idx``, e.g.
        ``torch.arange(L).expand(B, L)``. Also returned: ``h``, ``J``, ``mask_i``. With an all-atom ``X
        [B, L, 14, 3]``, an order and the side-chain stage, also ``logp_chi [B, L, 4]`` (teacher-forced, of the
        structure's own chi angles), ``chi`` and ``mask_chi``.
        """
        enc = self.encode(X, C, t)
        out: dict[str, torch.Tensor] = {"mask_i": enc.mask_i}
        if self.predict_S_potts:
            out["h"], out["J"] = self.potts(enc)
            out["logp_S_potts"] = self.decoder_S_potts.log_likelihood(S, *enc)
        if self.predict_S_marginals:
            out["logp_S_marginals"] = self.decoder_S_marginals(S, enc.node_h, enc.mask_i)[0]
        if self.predict_S_autoregressive and permute_idx is not None:
            out["logp_S"] = self.decoder(S, *enc, permute_idx)[0]
        if self.packing and permute_idx is not None and X.shape[2] > 4:
            chi, mask_chi = own_chi(X, C, S)
            out["chi"], out["mask_chi"] = chi, mask_chi
            out["logp_chi"] = self.decoder_chi(S, chi, mask_chi, *self.encode_sequence(enc, S), permute_idx)[0]
        return out

    # -- side chains ---------------------------------------------------------------------------------------------

    def encode_sequence(self, enc: DesignEncoding, S: torch.Tensor) -> DesignEncoding:
        """The encoding re-processed with the sequence ``S``: what the chi decoder reads (first packing stage)."""
        self._require_packing()
        node_h = enc.node_h + enc.mask_i.unsqueeze(-1).to(enc.node_h.dtype) * self.embed_S(S)
        node_h, edge_h = self.encoder_S_gnn(node_h, enc.edge_h, enc.edge_idx, enc.mask_i, enc.mask_ij)
        return enc._replace(node_h=node_h, edge_h=edge_h)

    def reset_non_persistent_buffers(self, device: torch.device) -> None:
        """After a meta-device load: the side-chain builder's tables go where the weights are."""
        if self.packing:
            self.chi_to_X.to(device)

    def _require_packing(self) -> None:
        if not self.packing:
            raise InvalidArgumentError(
                "this design network has no side-chain stage (it was built with separate_packing=False)",
                "use a checkpoint with two-stage packing (separate_packing=True), e.g. Chroma's public design model",
            )

    @torch.no_grad()
    def pack(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        S: torch.Tensor,
        temperature_chi: float = 1e-3,
        clamped: bool = False,
        mask_sample: torch.Tensor | None = None,
        permute_idx: torch.Tensor | None = None,
        t: float | torch.Tensor | None = None,
        uniforms: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PackResult:
        """Side chains for sequence ``S`` on the structure ``X [B, L, 4 or 14, 3]``: chi decoded residue by residue.

        Each residue's chi are drawn at ``temperature_chi`` (low: near the most likely rotamer), except with
        ``clamped`` (the structure's own chi are scored, nothing is drawn) and where ``mask_sample [B, L]`` is 0
        (those residues keep their chi). Both need an all-atom ``X``. ``permute_idx`` fixes the decoding order
        (default: a random, spatially smooth one, :class:`~biozoo_chroma.design.traversal.SpatialTraversal`,
        as the reference's). The randomness is one uniform per residue and chi: ``uniforms [B, L, 4]`` if given,
        else drawn from ``generator`` after the order (a fresh one when None; the global generator is never used).
        """
        self._require_packing()
        if not clamped:
            check_temperature("temperature_chi", temperature_chi)
        check_backbone(X[:, :, :4] if isinstance(X, torch.Tensor) and X.dim() == 4 else X, C)
        self._check_pack_inputs(X, C, S, mask_sample)
        B, L = C.shape
        if generator is None and (permute_idx is None or (uniforms is None and not clamped)):
            generator = torch.Generator(device=C.device)
            generator.seed()  # a fresh, non-deterministic stream: the global generator stays untouched
        if permute_idx is None:
            permute_idx = SpatialTraversal()(X[:, :, :4], C, generator=generator)
        if uniforms is None and not clamped:
            uniforms = torch.rand(B, L, NUM_CHI, generator=generator, device=C.device)
        needs_own_chi = clamped or mask_sample is not None
        if needs_own_chi:
            self._require_side_chains(X, C, S, mask_sample, clamped)
            chi, mask_chi = own_chi(X, C, S)
        else:
            chi, mask_chi = torch.zeros(B, L, NUM_CHI, dtype=X.dtype, device=X.device), chi_mask(C, S)
        enc = self.encode_sequence(self.encode(X, C, t), S)
        keep = None if mask_sample is None else mask_sample <= 0
        chi, logp_chi = self.decoder_chi.decode(
            S, chi, mask_chi, *enc, permute_idx, temperature=temperature_chi, sample=not clamped, keep=keep,
            uniforms=uniforms,
        )  # fmt: skip
        X_all, _ = self.chi_to_X(X, C, S, chi)
        return PackResult(X_all, chi, logp_chi, mask_chi, permute_idx)

    def _check_pack_inputs(
        self, X: torch.Tensor, C: torch.Tensor, S: torch.Tensor, mask_sample: torch.Tensor | None
    ) -> None:
        """Refuse a sequence of the wrong shape or alphabet, and systems with nothing to pack."""
        if not isinstance(S, torch.Tensor) or S.shape != C.shape or S.is_floating_point():
            shape = tuple(S.shape) if isinstance(S, torch.Tensor) else type(S).__name__
            raise InvalidArgumentError(
                f"S must be an integer sequence [B, L] = {tuple(C.shape)}, got {shape}",
                f"pass residue indices into {AA20} (Protein.to_XCS() gives them)",
            )
        if bool(((S < 0) | S.ge(self.num_alphabet)).any()):
            raise InvalidArgumentError(
                f"S has residue indices outside 0..{self.num_alphabet - 1}", f"S indexes the alphabet {AA20}"
            )
        if X.shape[2] not in (4, 14):
            raise InvalidArgumentError(
                f"X must have 4 (backbone) or 14 (all-atom) atoms per residue, got {X.shape[2]}",
                "pass Protein.to_XCS() or Protein.to_XCS(all_atom=True)",
            )
        packable = C > 0
        if mask_sample is not None:
            if mask_sample.shape != C.shape:
                raise InvalidArgumentError(
                    f"mask_sample must be [B, L] = {tuple(C.shape)}, got {tuple(mask_sample.shape)}",
                    "mark the residues whose side chains to pack with 1, the others with 0",
                )
            packable = packable & (mask_sample > 0)
        empty = (~packable.any(-1)).nonzero().flatten().tolist()
        if empty:
            raise InvalidArgumentError(
                f"nothing to pack in system(s) {', '.join(map(str, empty))}: no residue with a known backbone "
                + ("is selected" if mask_sample is not None else "(every residue is unknown, masked or padding)"),
                "give residues with coordinates (C > 0)"
                + (" and select some of them in mask_sample" if mask_sample is not None else ""),
            )

    def _require_side_chains(
        self, X: torch.Tensor, C: torch.Tensor, S: torch.Tensor, mask_sample: torch.Tensor | None, clamped: bool
    ) -> None:
        """Clamped scoring and kept residues read the structure's own chi: refuse residues without side chains."""
        why = "clamped=True scores the structure's own side chains" if clamped else "mask_sample keeps side chains"
        if X.shape[2] == 4:
            raise SideChainError(
                f"the structure has no side chains (X has backbone atoms only), but {why}",
                "give an all-atom X [B, L, 14, 3] (Protein.to_XCS(all_atom=True)), or pack every residue "
                "(clamped=False, no mask_sample)",
            )
        kept = C > 0 if clamped else (C > 0) & (mask_sample <= 0)
        needed = atom_mask(C, S)[:, :, 4:] & kept.unsqueeze(-1)
        missing = needed & (X[:, :, 4:].abs().sum(-1) == 0)
        count = int(missing.any(-1).sum())
        if count:
            raise SideChainError(
                f"{count} residue(s) whose side chains are read lack side-chain atoms ({why})",
                "give an all-atom structure, or select those residues in mask_sample so they are packed",
            )

    # -- design --------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def design_potts(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        S: torch.Tensor | None = None,
        t: float | torch.Tensor | None = None,
        mask_sample: torch.Tensor | None = None,
        ban_S: Sequence[str] | None = None,
        temperature: float = 0.01,
        num_sweeps: int = 500,
        proposal: str = "dlmc",
        regularization: str | None = "LCP",
        symmetry_order: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequences ``[B, L]`` designed by annealed MCMC on the Potts head, and their Potts energies ``[B]``.

        ``mask_sample`` ``[B, L]`` marks the positions to design (the others keep ``S``); ``ban_S`` lists
        one-letter residues never to use; ``symmetry_order`` n designs one sequence for n identical copies
        (the chains must come as n equal runs). Randomness comes from ``generator`` only.
        """
        check_temperature("temperature", temperature)
        if proposal not in PROPOSALS:
            raise InvalidArgumentError(f"unknown Potts proposal {proposal!r}", f"use one of: {', '.join(PROPOSALS)}")
        if regularization not in (None, "LCP"):
            raise InvalidArgumentError(f"unknown regularization {regularization!r}", "use 'LCP' or None")
        banned = banned_states(ban_S, self.num_alphabet)
        if symmetry_order is not None:
            check_symmetry_order(symmetry_order, C.shape[1], int(C.abs().amax()))
        if S is None:
            if mask_sample is not None:
                raise InvalidArgumentError(
                    "a design mask needs the sequence of the positions it keeps", "pass S with mask_sample"
                )
            S = torch.zeros(C.shape, dtype=torch.long, device=C.device)
        enc = self.encode(X, C, t)
        allowed, _, S_init = sampling_masks(self.num_alphabet, S, mask_sample, banned, generator)
        h, J = self.potts(enc)
        edge_idx, mask_i, mask_ij = enc.edge_idx, enc.mask_i, enc.mask_ij
        C_lcp = C
        if symmetry_order is not None:
            h, J, edge_idx, mask_i, mask_ij = fold_symmetry(symmetry_order, h, J, edge_idx, mask_i, mask_ij)
            n = C.shape[1] // symmetry_order
            S_init, allowed, C_lcp = S_init[:, :n], allowed[:, :n], C[:, :n]
        penalty = (lambda onehot: lcp_penalty(onehot, C_lcp)) if regularization == "LCP" else None
        S_out, U = sample_potts(
            h.float(), J.float(), edge_idx, mask_i, mask_ij, S=S_init, mask_sample=allowed, num_sweeps=num_sweeps,
            temperature=temperature, penalty=penalty, proposal=proposal, generator=generator,
        )  # fmt: skip
        if symmetry_order is not None:
            S_out = S_out.repeat(1, symmetry_order)
        return S_out, U

    def potts_energy(self, S: torch.Tensor, h: torch.Tensor, J: torch.Tensor, edge_idx: torch.Tensor) -> torch.Tensor:
        """Potts energy ``[B]`` of sequences ``S`` under ``(h, J)`` from :meth:`potts` (lower is better)."""
        return potts_energy(S, h, J, edge_idx)[0]
