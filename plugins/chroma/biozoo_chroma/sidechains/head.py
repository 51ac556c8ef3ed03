"""Chroma's chi decoder head: binned chi likelihoods and chi sampling from node embeddings (``NodePredictorChi``).

The interface the design network uses: node embeddings ``node_h [B, L, D]`` (from the chi decoder's graph
network, or any encoder), the sequence ``S [B, L]`` and masks in; ``logp_chi [B, L, 4]`` (given true chi) or
sampled chi out. The four chi angles of a residue are predicted in order, each conditioned on the previous
ones: ``P(chi_1..4 | h) = P(chi_1 | h) P(chi_2 | chi_1, h) ...``. Each is a distribution over ``num_chi_bins``
equal bins of [-pi, pi) (:mod:`biozoo_chroma.sidechains.chi`), and sampling places the chi inside its bin by
inverting the binned CDF, so samples are continuous.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from biozoo.components.base import Component
from biozoo.components.ports import Port, Ports
from biozoo.errors import InvalidArgumentError
from biozoo.nn.checks import check_int, check_positive, check_probability
from biozoo.plugins.declarations import ComponentKind
from biozoo_chroma.graph.feature_graph import NODE_H, NODE_MASK
from biozoo_chroma.graph.geometry import compute_dtype
from biozoo_chroma.graph.gnn import MLP
from biozoo_chroma.sidechains.chi import bin_edges, chi_onehot, sample_in_bins
from biozoo_chroma.sidechains.tables import NUM_CHI

SEQUENCE = "protein-sequence"  # the meaning the design network's S port has
CHI, CHI_MASK = "protein-chi-angles", "protein-chi-mask"
CHI_LOGP, CHI_LOG_PROBS = "chi-log-likelihood", "chi-bin-log-probabilities"


class NodeChiRBF(nn.Module):
    """Embed ``num_chi`` angles by a smooth (von Mises-like) binning, then a linear map to ``dim_out``.

    Bump ``b`` of angle chi is ``exp((cos(chi - c_b) - 1) * bin_scale / (1 - cos(2 pi / num_bins)))`` with
    centres ``c_b = 2 pi b / num_bins``: periodic, so -pi and pi embed alike.
    """

    def __init__(self, dim_out: int, num_chi: int, num_chi_bins: int, bin_scale: float = 2.0) -> None:
        super().__init__()
        self.num_chi = check_int("num_chi", num_chi)
        self.num_chi_bins = check_int("num_chi_bins", num_chi_bins, minimum=2)
        self.bin_scale = check_positive("bin_scale", bin_scale)
        self.embed = nn.Linear(self.num_chi * self.num_chi_bins, check_int("dim_out", dim_out))

    def features(self, chi: torch.Tensor, mask_chi: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, L, num_chi * num_chi_bins]`` bumps of ``chi [B, L, num_chi]``."""
        centres = torch.arange(self.num_chi_bins, device=chi.device) * 2.0 * math.pi / self.num_chi_bins
        spread = 1.0 - math.cos(2.0 * math.pi / self.num_chi_bins)
        bumps = torch.exp((torch.cos(chi.unsqueeze(-1) - centres) - 1.0) * self.bin_scale / spread)
        if mask_chi is not None:
            bumps = mask_chi.unsqueeze(-1).to(bumps.dtype) * bumps
        return bumps.flatten(-2)

    def forward(self, chi: torch.Tensor, mask_chi: torch.Tensor | None = None) -> torch.Tensor:
        return self.embed(self.features(chi, mask_chi).to(self.embed.weight.dtype))


class NodePredictorChi(Component):
    """Binned, autoregressive-over-chi likelihood of chi angles at each node, and sampling from it.

    ``forward(S, chi, mask_chi, node_h, mask_i) -> (logp_chi [B, L, 4], log_probs_chi [B, L, 4, num_chi_bins])``;
    in training mode ``logp_chi`` uses label smoothing. ``sample(S, mask_chi, node_h, mask_i, temperature)``
    draws chi ``[B, L, 4]``. Parameter names are the reference's (``W_S``, ``chi_embedding.{0,1,2}.embed``,
    ``chi_mlp.{0..3}.layers.*``); the bin edges are a non-persistent buffer.
    """

    kind = ComponentKind.HEAD

    def __init__(
        self,
        num_alphabet: int,
        num_chi_bins: int,
        dim_nodes: int,
        dim_hidden: int,
        loss_eps: float = 1e-5,
        label_smoothing: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_alphabet = check_int("num_alphabet", num_alphabet)
        self.num_chi_bins = check_int("num_chi_bins", num_chi_bins, minimum=2)
        self.loss_eps = check_positive("loss_eps", loss_eps)
        self.label_smoothing = check_probability("label_smoothing", label_smoothing)
        self.register_buffer("edges", bin_edges(self.num_chi_bins), persistent=False)
        self.dim_nodes = check_int("dim_nodes", dim_nodes)
        self.W_S = nn.Embedding(self.num_alphabet, dim_nodes)
        self.chi_embedding = nn.ModuleList(NodeChiRBF(dim_nodes, t, self.num_chi_bins) for t in (1, 2, 3))
        self.chi_mlp = nn.ModuleList(
            MLP(dim_nodes, dim_hidden, self.num_chi_bins, num_layers_hidden=2) for _ in range(NUM_CHI)
        )

    def ports(self) -> Ports:
        return Ports(
            inputs=(
                Port("S", SEQUENCE, ("B", "L"), "residue types, indices into ACDEFGHIKLMNPQRSTVWY"),
                Port("chi", CHI, ("B", "L", NUM_CHI), "true chi angles (radians) whose likelihood is wanted"),
                Port("mask_chi", CHI_MASK, ("B", "L", NUM_CHI), "which chi angles each residue has"),
                Port("node_h", NODE_H, ("B", "L", self.dim_nodes)),
                Port("mask_i", NODE_MASK, ("B", "L")),
            ),
            outputs=(
                Port("logp_chi", CHI_LOGP, ("B", "L", NUM_CHI)),
                Port("log_probs_chi", CHI_LOG_PROBS, ("B", "L", NUM_CHI, self.num_chi_bins)),
            ),
        )

    def log_probs_t(
        self, t: int, S: torch.Tensor, chi: torch.Tensor, node_h: torch.Tensor, mask_i: torch.Tensor
    ) -> torch.Tensor:
        """``log P(chi_t | chi_<t, h)`` over the bins, ``[B, L, num_chi_bins]`` (zero where ``mask_i`` is 0)."""
        mask = mask_i.unsqueeze(-1).to(node_h.dtype)
        h = node_h + self.W_S(S)
        if t > 0:
            h = h + self.chi_embedding[t - 1](chi[:, :, :t])
        logits = mask * self.chi_mlp[t](h)
        return mask * F.log_softmax(logits, -1)

    def forward(
        self,
        S: torch.Tensor,
        chi: torch.Tensor,
        mask_chi: torch.Tensor,
        node_h: torch.Tensor,
        mask_i: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs = torch.stack([self.log_probs_t(t, S, chi, node_h, mask_i) for t in range(NUM_CHI)], -2)
        # bins are decided on chi in at least float32: rounding chi to bf16 first could move it across an edge
        target = chi_onehot(chi.to(compute_dtype(chi.dtype)), self.edges).to(log_probs.dtype)
        if self.training:
            spread = self.label_smoothing / (self.num_chi_bins - 1)
            target = target * (1 - self.label_smoothing) + (1 - target) * spread
        logp_chi = mask_chi.to(log_probs.dtype) * (target * log_probs).sum(-1)
        return logp_chi, log_probs

    def sample(
        self,
        S: torch.Tensor,
        mask_chi: torch.Tensor,
        node_h: torch.Tensor,
        mask_i: torch.Tensor,
        temperature: float = 1.0,
        *,
        uniforms: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Chi ``[B, L, 4]`` drawn chi by chi at ``temperature`` (logits divided by it; 1e-3 is near argmax).

        The randomness is one uniform per residue and chi: ``uniforms [B, L, 4]`` if given, else drawn from
        ``generator`` (or the global RNG, in the reference's order: one ``[B, L]`` draw per chi).
        """
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0:
            raise InvalidArgumentError(
                f"temperature_chi must be a number > 0, got {temperature!r}",
                "use a small positive temperature (e.g. 0.001 for near-deterministic side chains, 1.0 for the "
                "model's own distribution)",
            )
        B, L, _ = node_h.shape
        chi = torch.zeros(B, L, NUM_CHI, dtype=compute_dtype(node_h.dtype), device=node_h.device)
        for t in range(NUM_CHI):
            log_probs = self.log_probs_t(t, S, chi, node_h, mask_i).to(chi.dtype)
            u = uniforms[..., t] if uniforms is not None else torch.rand(B, L, generator=generator, device=chi.device)
            chi_t = sample_in_bins(log_probs / temperature, u, self.edges)
            chi = chi + F.pad(chi_t.unsqueeze(-1), (t, NUM_CHI - 1 - t))
        return mask_chi.to(chi.dtype) * chi
