"""The design network's sequence heads on graph embeddings: per-residue logits and the Potts model.

Module and parameter names are the reference's (``NodePredictorS.S_mlp``, ``GraphPotts.W_h/W_J_left/W_J_right/
log_scale``), so checkpoint keys map one to one (see :mod:`biozoo_chroma.design.keys`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from biozoo.nn.checks import ConfigError, check_int
from biozoo_chroma.design.potts import coupling_mask, residue_log_likelihood, symmetrize_couplings
from biozoo_chroma.graph.gnn import MLP

POTTS_PARAMETERIZATIONS = ("factor", "linear", "factor_beta", "linear_beta")


class SequenceHead(nn.Module):
    """``log p(S_i | h_i)`` from node embeddings: an MLP with two hidden layers (the reference's NodePredictorS).

    The design network has two: the marginals head reads the encoder's embeddings, the autoregressive decoder's
    head reads the causally decoded ones.
    """

    def __init__(self, num_alphabet: int, dim_nodes: int, dim_hidden: int, label_smoothing: float = 0.1) -> None:
        super().__init__()
        self.num_alphabet = check_int("num_alphabet", num_alphabet)
        self.label_smoothing = float(label_smoothing)
        self.S_mlp = MLP(dim_nodes, dim_hidden=dim_hidden, dim_out=num_alphabet, num_layers_hidden=2)

    def log_probs(self, node_h: torch.Tensor, mask_i: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of every residue type ``[B, L, Q]`` (zero where masked)."""
        return mask_i.unsqueeze(-1) * F.log_softmax(self.S_mlp(node_h), -1)

    def forward(
        self, S: torch.Tensor, node_h: torch.Tensor, mask_i: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p(S) [B, L], log_probs [B, L, Q])``; in training mode the label-smoothed log-likelihood."""
        log_probs = self.log_probs(node_h, mask_i)
        if self.training:
            logp = -F.cross_entropy(
                log_probs.transpose(1, 2), S, reduction="none", label_smoothing=self.label_smoothing
            )
        else:
            logp = torch.gather(log_probs, 2, S.unsqueeze(-1)).squeeze(-1)
        return logp, log_probs


class PottsHead(nn.Module):
    """Fields ``h [B, L, Q]`` and couplings ``J [B, L, K, Q, Q]`` from node and edge embeddings (GraphPotts).

    ``factor``: ``J_ij = (W_left e_ij)(W_right e_ij)`` as a product of two Q x Q matrices; ``linear``: one Q*Q
    projection. Both are scaled by a learned ``exp(log_scale)``, put in the zero-sum gauge and, with
    ``symmetric_J``, symmetrised over each edge's two directions. A ``_beta`` suffix adds a learned inverse
    temperature.
    """

    def __init__(
        self,
        dim_nodes: int,
        dim_edges: int,
        num_states: int = 20,
        parameterization: str = "factor",
        symmetric_J: bool = True,
        init_scale: float = 0.1,
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        beta_init: float = 10.0,
    ) -> None:
        super().__init__()
        if parameterization not in POTTS_PARAMETERIZATIONS:
            raise ConfigError(
                "potts_parameterization",
                f"must be one of {', '.join(POTTS_PARAMETERIZATIONS)}, got {parameterization!r}",
            )
        self.num_states = Q = check_int("num_states", num_states)
        self.parameterization = parameterization.removesuffix("_beta")
        self.symmetric_J, self.label_smoothing = bool(symmetric_J), float(label_smoothing)
        self.log_scale = nn.Parameter(math.log(init_scale) * torch.ones(1))
        if parameterization.endswith("_beta"):
            self.log_beta = nn.Parameter(math.log(beta_init) * torch.ones(1))
        self.W_h = nn.Linear(dim_nodes, Q)
        if self.parameterization == "factor":
            self.W_J_left = nn.Linear(dim_edges, Q * Q)
            self.W_J_right = nn.Linear(dim_edges, Q * Q)
        else:
            self.W_J = nn.Linear(dim_edges, Q * Q)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        node_h: torch.Tensor,
        edge_h: torch.Tensor,
        edge_idx: torch.Tensor,
        mask_i: torch.Tensor,
        mask_ij: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h, J)`` in the embeddings' dtype."""
        Q = self.num_states
        shape_J = (*edge_h.shape[:3], Q, Q)
        scale = torch.exp(self.log_scale)
        mask_J = scale * coupling_mask(edge_idx, mask_i, mask_ij).unsqueeze(-1)
        h = scale * mask_i.unsqueeze(-1) * self.W_h(node_h)
        if self.parameterization == "factor":
            J_left = (mask_J * self.W_J_left(edge_h)).view(shape_J)
            J_right = (mask_J * self.W_J_right(edge_h)).view(shape_J)
            J = self.dropout(J_left @ J_right)
            h = h - h.mean(-1, keepdim=True)
            J = J - J.mean(-1, keepdim=True) - J.mean(-2, keepdim=True) + J.mean((-1, -2), keepdim=True)
        else:
            J = (mask_J * self.W_J(edge_h)).view(shape_J)
        if self.symmetric_J:
            J = symmetrize_couplings(J, edge_idx, mask_ij)
        if hasattr(self, "log_beta"):
            beta = torch.exp(self.log_beta)
            h, J = beta * h, beta * J
        return h, J

    def log_likelihood(
        self,
        S: torch.Tensor,
        node_h: torch.Tensor,
        edge_h: torch.Tensor,
        edge_idx: torch.Tensor,
        mask_i: torch.Tensor,
        mask_ij: torch.Tensor,
    ) -> torch.Tensor:
        """``logp_S_potts [B, L]``: the per-residue composite log-likelihood of ``S`` (smoothed when training)."""
        h, J = self(node_h, edge_h, edge_idx, mask_i, mask_ij)
        smoothing = self.label_smoothing if self.training else 0.0
        return residue_log_likelihood(S, h, J, edge_idx, mask_i, mask_ij, smoothing)
