"""Chroma's diffusion process over protein backbones (issue 10, item 2): noise schedule, polymer covariance,
reverse-time drifts, integrators and the conditioner contract. Pure PyTorch, no weights."""

from biozoo_chroma.diffusion.align import align_backbone
from biozoo_chroma.diffusion.chains import ChainLayout, center_X, impute_masked_X, linear_recurrence, scale_around_mean
from biozoo_chroma.diffusion.conditioners import Conditioner, IdentityConditioner
from biozoo_chroma.diffusion.covariance import COVARIANCE_MODELS, PolymerCovariance
from biozoo_chroma.diffusion.integrators import INTEGRATORS, euler_maruyama, heun
from biozoo_chroma.diffusion.process import (
    SDE_FUNCS,
    Coefficients,
    DiffusionProcess,
    SampleOutput,
    check_backbone,
    check_steps_and_tspan,
)
from biozoo_chroma.diffusion.schedule import SCHEDULE_KINDS, NoiseSchedule, as_time

__all__ = [
    "COVARIANCE_MODELS",
    "INTEGRATORS",
    "SCHEDULE_KINDS",
    "SDE_FUNCS",
    "ChainLayout",
    "Coefficients",
    "Conditioner",
    "DiffusionProcess",
    "IdentityConditioner",
    "NoiseSchedule",
    "PolymerCovariance",
    "SampleOutput",
    "align_backbone",
    "as_time",
    "center_X",
    "check_backbone",
    "check_steps_and_tspan",
    "euler_maruyama",
    "heun",
    "impute_masked_X",
    "linear_recurrence",
    "scale_around_mean",
]
