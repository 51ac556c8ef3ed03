"""``ChromaBackbone.sample``: the reference's ``Chroma.sample`` for backbones, arguments checked up front.

Defaults are the reference's (``Chroma.sample`` / ``_sample`` of generate-chroma 1.0.0), except
``design_method``: the reference designs a sequence afterwards (``"potts"``), which is part 2 of issue 10; here
the default is ``None`` (backbone only) and asking for design raises :class:`DesignNotAvailableError`.
Like the reference, sampling starts from ideal alpha helices noised to ``tspan[0]`` (or from
``protein_init``), and returns one :class:`~biozoo_chroma.Protein` for ``samples=1``, else a list.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from biozoo.errors import BiozooError, InvalidArgumentError
from biozoo_chroma.backbone.ideal import alpha_helix
from biozoo_chroma.diffusion import INTEGRATORS, SDE_FUNCS, check_steps_and_tspan

if TYPE_CHECKING:
    from biozoo_chroma.backbone.model import ChromaBackbone
    from biozoo_chroma.structures import Protein

MAX_RESIDUES = 10_000  # total over chains; the graph features are O(L^2) in memory
MAX_SAMPLES = 10_000
DESIGN_ARGUMENTS = (
    "design_ban_S", "design_selection", "design_t", "temperature_S", "temperature_chi", "top_p_S",
    "regularization", "potts_mcmc_depth", "potts_proposal", "potts_symmetry_order", "design_mask_sample",
)  # fmt: skip


class DesignNotAvailableError(BiozooError):
    """Sequence design (potts / autoregressive, side chains) is not built yet."""


def _positive_int(name: str, value: Any, maximum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidArgumentError(f"{name} must be an integer from 1 to {maximum:,}, not {value!r}", hint)
    return value


def check_chain_lengths(chain_lengths: Any) -> list[int]:
    """A non-empty list of positive chain lengths, at most MAX_RESIDUES in total."""
    hint = "e.g. chain_lengths=[100], or [60, 40] for a two-chain complex"
    if isinstance(chain_lengths, int | str) or not isinstance(chain_lengths, Sequence) or not chain_lengths:
        raise InvalidArgumentError(f"chain_lengths must be a non-empty list of integers, not {chain_lengths!r}", hint)
    lengths = [_positive_int("each chain length", n, MAX_RESIDUES, hint) for n in chain_lengths]
    if sum(lengths) > MAX_RESIDUES:
        raise InvalidArgumentError(
            f"chain_lengths add up to {sum(lengths):,} residues, more than {MAX_RESIDUES:,}",
            "sample smaller systems (the graph features grow with the square of the length)",
        )
    return lengths


def _check_design(design_method: Any, design: dict[str, Any]) -> None:
    unknown = sorted(set(design) - set(DESIGN_ARGUMENTS))
    if unknown:
        raise InvalidArgumentError(
            f"sample() got unknown argument(s) {', '.join(map(repr, unknown))}",
            "see help(ChromaBackbone.sample) for the arguments",
        )
    asked = ([f"design_method={design_method!r}"] if design_method is not None else []) + sorted(design)
    if asked:
        raise DesignNotAvailableError(
            f"sequence design ({', '.join(asked)}) is part 2 of issue 10 and not available yet",
            "sample backbones only: leave design_method=None and the design_* / potts_* / temperature_* arguments out",
        )


def _initial_backbones(samples: int, lengths: list[int], device: torch.device):
    """Ideal helices over the whole system and its chain map (the reference's ``_init_backbones``)."""
    X = alpha_helix(sum(lengths), device=device).expand(samples, -1, -1, -1).contiguous()
    C = torch.cat([torch.full((n,), i + 1, dtype=torch.long) for i, n in enumerate(lengths)])
    return X, C.to(device).expand(samples, -1).contiguous()


def resample_trajectory(trajectory: list[torch.Tensor], length: int) -> list[torch.Tensor]:
    """``length`` evenly spaced frames of a trajectory (all of them if it is shorter), as the reference."""
    count = min(len(trajectory), length)
    return [trajectory[int(i)] for i in torch.linspace(0, len(trajectory) - 1, count).long()]


def sample(
    model: ChromaBackbone,
    samples: int = 1,
    steps: int = 500,
    chain_lengths: Sequence[int] = (100,),
    tspan: tuple[float, float] = (1.0, 0.001),
    protein_init: Protein | None = None,
    conditioner: Any = None,
    langevin_factor: float = 2,
    langevin_isothermal: bool = False,
    inverse_temperature: float = 10,
    initialize_noise: bool = True,
    integrate_func: str = "euler_maruyama",
    sde_func: str = "reverse_sde",
    trajectory_length: int = 200,
    full_output: bool = False,
    verbose: bool = False,
    seed: int | None = None,
    design_method: str | None = None,
    on_step: Callable[[int], None] | None = None,
    **design: Any,
) -> Any:
    """Sample backbones by integrating the reverse diffusion with the model's denoiser.

    ``seed`` makes the whole run reproducible (initial noise, step noise, both dithers, random graphs) without
    touching torch's global generator state; ``None`` draws from it as the reference does. With
    ``full_output`` also a dict of ``trajectory``, ``Xhat_trajectory`` and ``Xunc_trajectory`` (per sample,
    ``trajectory_length`` evenly spaced frames as Proteins). ``on_step(step)`` is called after each of the
    ``steps`` integration steps (0-based), e.g. to drive a progress bar. A ``conditioner``
    (:mod:`biozoo_chroma.conditioners`) constrains every step; its ``postprocess`` hook, if it has one, turns each
    sample and trajectory frame into the final structure (a symmetric assembly's every copy, for instance).
    """
    from biozoo_chroma.conditioners import postprocess
    from biozoo_chroma.structures import Protein

    _check_design(design_method, design)
    start, end = check_steps_and_tspan(steps, tspan)
    if integrate_func not in INTEGRATORS:
        known = ", ".join(INTEGRATORS)
        raise InvalidArgumentError(f"unknown integrate_func {integrate_func!r}", f"use one of: {known}")
    if sde_func not in SDE_FUNCS:
        raise InvalidArgumentError(f"unknown sde_func {sde_func!r}", f"use one of: {', '.join(SDE_FUNCS)}")
    if isinstance(trajectory_length, bool) or not isinstance(trajectory_length, int) or trajectory_length < 0:
        raise InvalidArgumentError(f"trajectory_length must be an integer >= 0, not {trajectory_length!r}", "e.g. 200")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidArgumentError(f"seed must be an integer, not {seed!r}", "e.g. seed=0")
    device = next(model.parameters()).device
    if isinstance(conditioner, torch.nn.Module):
        conditioner.to(device)
    if protein_init is not None:
        if not isinstance(protein_init, Protein):
            raise InvalidArgumentError(
                f"protein_init must be a biozoo_chroma.Protein, not {type(protein_init).__name__}",
                "load one with Protein('file.pdb')",
            )
        X, C, _ = protein_init.to_XCS()
        X, C = X[:, :, :4].to(device=device, dtype=torch.float32), C.to(device)
        if samples != 1:
            X, C = X.expand(samples, -1, -1, -1).contiguous(), C.expand(samples, -1).contiguous()
    else:
        samples = _positive_int("samples", samples, MAX_SAMPLES, "e.g. samples=4")
        X, C = _initial_backbones(samples, check_chain_lengths(chain_lengths), device)
    samples = _positive_int("samples", samples, MAX_SAMPLES, "e.g. samples=4")

    def report(step: int, _: torch.Tensor) -> None:
        if on_step is not None:
            on_step(step)
        if verbose and (step % max(1, steps // 20) == 0 or step == steps - 1):
            print(f"\rsampling: step {step + 1}/{steps}", end="\n" if step == steps - 1 else "", file=sys.stderr)

    def run() -> Any:
        return model.diffusion.sample(
            lambda X_, C_, t_: model.denoise(X_, C_, t_),
            C,
            X,
            steps=steps,
            tspan=(start, end),
            conditioner=conditioner,
            inverse_temperature=inverse_temperature,
            langevin_factor=langevin_factor,
            langevin_isothermal=langevin_isothermal,
            sde_func=sde_func,
            integrate_func=integrate_func,
            initialize_noise=initialize_noise,
            on_step=report if verbose or on_step is not None else None,
        )

    if seed is None:
        out = run()
    else:  # every draw (noise, dithers, graphs) comes from torch's global generators: fork and seed them
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = run()

    def proteins_of(Xs: torch.Tensor, Cs: torch.Tensor) -> list[Protein]:
        Xs, Cs = Xs.detach().float().cpu(), Cs.cpu()
        return [Protein.from_XCS(x[None], c[None], torch.zeros_like(c)[None]) for x, c in zip(Xs, Cs, strict=True)]

    proteins = [postprocess(conditioner, p) for p in proteins_of(out.X_sample, out.C)]  # e.g. whole assemblies
    result: Any = proteins[0] if samples == 1 else proteins
    if not full_output:
        return result

    def frames(key: list[torch.Tensor], Cs: torch.Tensor) -> list[list[Protein]]:
        per_frame = [proteins_of(x, Cs) for x in resample_trajectory(key, trajectory_length)]
        per_sample = [list(f) for f in zip(*per_frame, strict=True)] if per_frame else [[] for _ in range(samples)]
        return per_sample

    extra = {
        "trajectory": [[postprocess(conditioner, p) for p in f] for f in frames(out.X_trajectory, out.C)],
        "Xhat_trajectory": frames(out.Xhat_trajectory, out.C),
        "Xunc_trajectory": frames(out.Xunc_trajectory, C),
    }
    if samples == 1:
        extra = {k: v[0] for k, v in extra.items()}
    return result, extra
