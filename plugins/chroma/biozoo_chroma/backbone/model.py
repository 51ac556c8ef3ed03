"""Chroma's backbone model (the reference's ``GraphBackbone``): a denoiser and the sampler around it.

``denoise(X_t, C, t)`` predicts the clean backbone X0 from a noised one: time features (random Fourier features
of t) enter the node embeddings, then ``num_graph_cycles`` times a graph encoder
(:class:`~biozoo_chroma.graph.encoder.GraphEncoder`) embeds the current backbone and a frame update
(:class:`~biozoo_chroma.backbone.update.GraphBackboneUpdate`) rebuilds it. ``sample`` integrates the reverse
diffusion (:class:`~biozoo_chroma.diffusion.DiffusionProcess`) with this denoiser and returns
:class:`~biozoo_chroma.Protein` backbones.

The constructor takes the reference's ``init_kwargs`` by name, so a checkpoint's saved kwargs are the config as
they are. Module names mirror the reference's (``encoders.{c}``, ``backbone_updates.{c}``, ``time_features``),
so its state dict loads strictly after :func:`~biozoo_chroma.graph.keys.convert_reference_state_dict`.

Hidden randomness, as explicit switches: the frame-averaging dither (``GraphBackboneUpdate.dither_eps``, 1e-4)
and the Kabsch dither of the score's alignment (``DiffusionProcess.align_dither``); :meth:`set_dither` turns
both on or off, ``denoise(..., dither=False)`` for one call. Random graphs (``graph_criterion="random_log"``)
draw from the same generator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from biozoo.components.base import Architecture
from biozoo.components.ports import Port
from biozoo.nn.checks import ConfigError, check_int
from biozoo_chroma.backbone.transforms import DITHER_EPS
from biozoo_chroma.backbone.update import GraphBackboneUpdate
from biozoo_chroma.diffusion import DiffusionProcess, check_backbone
from biozoo_chroma.graph.encoder import GraphEncoder
from biozoo_chroma.graph.feature_graph import BACKBONE, CHAIN_MAP
from biozoo_chroma.graph.features import FourierFeaturization
from biozoo_chroma.graph.gnn import MLP

PREDICTION_TYPES = ("X0", "scale", "scale_cutoff")
TIME_FEATURE_TYPES = ("t", "log_snr")
TIME = "diffusion-time"


class ChromaBackbone(Architecture):
    """The backbone denoiser with its diffusion process; :meth:`denoise` and :meth:`sample` are the API."""

    slots: ClassVar[dict] = {}

    def __init__(
        self,
        dim_nodes: int = 128,
        dim_edges: int = 128,
        num_neighbors: int = 30,
        node_features: Sequence[Any] = (("internal_coords", {"log_lengths": True}),),
        edge_features: Sequence[Any] = ("distances_2mer", "orientations_2mer", "distances_chain"),
        num_layers: int = 3,
        dropout: float = 0.1,
        node_mlp_layers: int = 1,
        node_mlp_dim: int | None = None,
        edge_update: bool = True,
        edge_mlp_layers: int = 1,
        edge_mlp_dim: int | None = None,
        skip_connect_input: bool = False,
        mlp_activation: str = "softplus",
        decoder_num_hidden: int = 512,
        graph_criterion: str = "knn",
        graph_random_min_local: int = 20,
        backbone_update_method: str = "neighbor",
        backbone_update_iterations: int = 1,
        backbone_update_num_weights: int = 1,
        backbone_update_unconstrained: bool = True,
        use_time_features: bool = True,
        time_feature_type: str = "t",
        time_log_feature_scaling: float = 0.05,
        noise_schedule: str = "log_snr",
        noise_covariance_model: str = "brownian",
        noise_beta_min: float = 0.2,
        noise_beta_max: float = 70.0,
        noise_log_snr_range: Sequence[float] = (-7.0, 13.5),
        noise_complex_scaling: bool = False,
        loss_scale: float = 10.0,
        loss_scale_ssnr_cutoff: float = 0.99,
        loss_function: str = "squared_fape",
        checkpoint_gradients: bool = False,
        prediction_type: str = "X0",
        num_graph_cycles: int = 1,
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """The reference's ``GraphBackbone`` arguments. ``decoder_num_hidden``, ``noise_beta_min/max`` and the
        ``loss_*`` options do not change the denoiser or the sampler (they are kept so any saved init_kwargs
        load); ``kwargs`` is the reference's saved catch-all, accepted and ignored as the reference does."""
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            known = ", ".join(PREDICTION_TYPES)
            raise ConfigError("prediction_type", f"must be one of {known}, got {prediction_type!r}")
        if time_feature_type not in TIME_FEATURE_TYPES:
            raise ConfigError(
                "time_feature_type", f"must be one of {', '.join(TIME_FEATURE_TYPES)}, got {time_feature_type!r}"
            )
        self.dim_nodes, self.dim_edges = check_int("dim_nodes", dim_nodes), check_int("dim_edges", dim_edges)
        self.num_graph_cycles = check_int("num_graph_cycles", num_graph_cycles)
        encoder_kwargs = {
            "dim_nodes": dim_nodes, "dim_edges": dim_edges, "num_neighbors": num_neighbors,
            "node_features": node_features, "edge_features": edge_features, "num_layers": num_layers,
            "node_mlp_layers": node_mlp_layers, "node_mlp_dim": node_mlp_dim, "edge_update": edge_update,
            "edge_mlp_layers": edge_mlp_layers, "edge_mlp_dim": edge_mlp_dim, "mlp_activation": mlp_activation,
            "dropout": dropout, "skip_connect_input": skip_connect_input, "graph_criterion": graph_criterion,
            "graph_random_min_local": graph_random_min_local, "checkpoint_gradients": checkpoint_gradients,
        }  # fmt: skip
        self.encoders = nn.ModuleList(GraphEncoder(**encoder_kwargs) for _ in range(self.num_graph_cycles))
        self.backbone_updates = nn.ModuleList(
            GraphBackboneUpdate(
                dim_nodes,
                dim_edges,
                method=backbone_update_method,
                iterations=backbone_update_iterations,
                num_transform_weights=backbone_update_num_weights,
                unconstrained=backbone_update_unconstrained,
            )
            for _ in range(self.num_graph_cycles)
        )
        self.use_time_features, self.time_feature_type = bool(use_time_features), time_feature_type
        self.time_log_feature_scaling = float(time_log_feature_scaling)
        if self.use_time_features:
            self.time_features = FourierFeaturization(1, dim_nodes, trainable=False, scale=16.0)
        self.prediction_type, self.loss_scale_ssnr_cutoff = prediction_type, float(loss_scale_ssnr_cutoff)
        self.loss_scale = float(loss_scale)  # the error unit (Angstrom) of score_backbone's MSEs
        if prediction_type.startswith("scale"):
            self.mlp_W = MLP(dim_nodes, num_layers_hidden=node_mlp_layers, dim_out=1)
        try:
            self.diffusion = DiffusionProcess(
                log_snr_range=tuple(noise_log_snr_range),
                noise_schedule=noise_schedule,
                covariance_model=noise_covariance_model,
                complex_scaling=noise_complex_scaling,
            )
        except ValueError as e:  # the process's own argument errors
            raise ConfigError("noise_schedule", str(getattr(e, "message", e))) from None

    # -- registry ------------------------------------------------------------------------------------------------

    def model_inputs(self) -> tuple[Port, ...]:
        return (
            Port("X", BACKBONE, ("B", "L", 4, 3), "noised backbone N, CA, C, O"),
            Port("C", CHAIN_MAP, ("B", "L"), "chain k+1; -(k+1) without structure; 0 padding"),
            Port("t", TIME, ("B",), "diffusion time in [0, 1]"),
        )

    # -- dithers -------------------------------------------------------------------------------------------------

    @property
    def dither(self) -> bool:
        """Whether the two hidden dithers (frame averaging, Kabsch alignment) are on."""
        return self.diffusion.align_dither

    def set_dither(self, enabled: bool) -> ChromaBackbone:
        """Turn both dithers on (the reference's behaviour) or off (deterministic denoising and scores)."""
        self.diffusion.align_dither = bool(enabled)
        for update in self.backbone_updates:
            update.dither_eps = DITHER_EPS if enabled else 0.0
        return self

    # -- denoiser ------------------------------------------------------------------------------------------------

    def _time(self, t: float | torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):  # filled on the device: a copy from the host would wait for it
            t = torch.full((1,), float(t), device=X.device, dtype=torch.float32)
        t = t.to(device=X.device, dtype=torch.float32)
        return t.reshape(1) if t.dim() == 0 else t

    def _time_features(self, t: torch.Tensor) -> torch.Tensor:
        """``[T, 1, dim_nodes]`` in float32: the Fourier frequencies reach ~100 rad per unit of t."""
        h = t if self.time_feature_type == "t" else self.time_log_feature_scaling * self.diffusion.schedule.log_SNR(t)
        return self.time_features(h.float()[:, None, None])

    def denoise(
        self,
        X: torch.Tensor,
        C: torch.Tensor,
        t: float | torch.Tensor,
        return_geometry: bool = False,
        *,
        dither: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """X0 predicted from the noised backbone ``X`` ``[B, L, 4, 3]`` (all-atom X is cut to 4) at time ``t``.

        ``dither`` overrides :meth:`set_dither` for this call; ``generator`` feeds the dither and random graphs
        (default: torch's global generator, drawn in the reference's order). With ``return_geometry`` also
        ``(R_ji, t_ji, logit_ji, edge_idx, mask_ij)`` of the last cycle.
        """
        if isinstance(X, torch.Tensor) and X.dim() == 4 and X.shape[2] > 4:
            X = X[:, :, :4]
        check_backbone(X, C)
        t = self._time(t, X)
        eps = None if dither is None else (DITHER_EPS if dither else 0.0)
        time_h = self._time_features(t) if self.use_time_features else None
        node_h, edge_h, edge_idx, mask_ij = time_h, None, None, None
        X_update = X.to(torch.promote_types(X.dtype, torch.float32))
        R_ji = t_ji = logit_ji = None
        for encoder, update in zip(self.encoders, self.backbone_updates, strict=True):
            node_h, edge_h, edge_idx, mask_i, mask_ij = encoder(
                X_update, C, node_h_aux=node_h, edge_h_aux=edge_h, edge_idx=edge_idx, mask_ij=mask_ij,
                generator=generator,
            )  # fmt: skip
            X_update, R_ji, t_ji, logit_ji = update(
                X_update, C, node_h, edge_h, edge_idx, mask_i, mask_ij, generator=generator, dither_eps=eps
            )
        if self.prediction_type != "X0":
            X_update = self._shrink(X_update, X, t, time_h, node_h)
        X_update = X_update.to(X.dtype)
        if return_geometry:
            return X_update, R_ji, t_ji, logit_ji, edge_idx, mask_ij
        return X_update

    def _shrink(
        self, X_update: torch.Tensor, X: torch.Tensor, t: torch.Tensor, time_h: torch.Tensor | None, node_h
    ) -> torch.Tensor:
        """The ``scale`` prediction types: mix the prediction with the input by a learned, SNR-biased weight."""
        if time_h is None:
            time_h = torch.zeros(node_h.shape[0], 1, node_h.shape[2], device=node_h.device)
        first = self.mlp_W.layers[0]
        shift = self.mlp_W(time_h.to(first.weight.dtype)).to(X_update.dtype)
        ssnr = self.diffusion.schedule.SSNR(t).to(X_update.dtype)
        scale = torch.sigmoid(shift + torch.logit(torch.sqrt(1 - ssnr))[:, None, None]).unsqueeze(-1)
        Xf = X.to(X_update.dtype)
        if self.prediction_type == "scale":
            return scale * X_update + (1 - scale) * Xf
        skip = (1 - scale) * (ssnr > self.loss_scale_ssnr_cutoff).to(scale.dtype).reshape(-1, 1, 1, 1)
        return skip * Xf + (1 - skip) * X_update

    def forward(
        self, X: torch.Tensor, C: torch.Tensor, t: torch.Tensor, seed: int | torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``{"X0": denoise(X, C, t)}``: the architecture's forward, which ``zoo verify`` runs on test vectors.

        In eval mode it is a function of its inputs, so test vectors reproduce: both dithers off and random
        graphs drawn from a generator seeded with ``seed`` (default 0). In training mode it is ``denoise`` as
        configured (dithers per :meth:`set_dither`, torch's global generator).
        """
        if self.training:
            return {"X0": self.denoise(X, C, t)}
        generator = torch.Generator(device=X.device).manual_seed(0 if seed is None else int(seed))
        return {"X0": self.denoise(X, C, t, dither=False, generator=generator)}

    # -- sampling ------------------------------------------------------------------------------------------------

    def sample(self, *args: Any, **kwargs: Any) -> Any:
        """Sample backbones (see :func:`biozoo_chroma.backbone.sampling.sample` for every argument)."""
        from biozoo_chroma.backbone.sampling import sample

        return sample(self, *args, **kwargs)

    def score_backbone(self, *args: Any, **kwargs: Any) -> Any:
        """Score backbones (see :func:`biozoo_chroma.backbone.scoring.score_backbone` for every argument)."""
        from biozoo_chroma.backbone.scoring import score_backbone

        return score_backbone(self, *args, **kwargs)
