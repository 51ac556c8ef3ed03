"""Make the golden file the chroma plugin's diffusion tests compare against: the reference's own numbers.

The reference is generate-chroma 1.0.0 (generatebio/chroma 929407c): ``GaussianNoiseSchedule``,
``BackboneMVNGlobular``, ``DiffusionChainCov`` (drifts, score, ``sample_sde``) and ``sde.sde_integrate[_heun]``.
None of these needs weights or the network. Run, with the reference importable but not installed with its
dependencies (see scripts/make_chroma_structure_golden.py for the stand-ins this reuses):

    .venv/bin/pip install --no-deps --target /tmp/chroma_ref generate-chroma==1.0.0
    PYTHONPATH=/tmp/chroma_ref .venv/bin/python scripts/make_chroma_diffusion_golden.py

It writes plugins/chroma/tests/golden/chroma_diffusion.safetensors: the inputs (X, C with several chains, gaps and
padding; every noise tensor), the reference's outputs, and in the metadata the settings of each case. Two things
are fixed so that outputs are comparable: the denoiser is the deterministic ``x0_func`` below (the same one is in
the test), and the reference's Kabsch dither is switched off (``loss_rmsd.rmsd.dither = False``). Noise the
reference would draw inside its drifts is passed in (drifts) or injected by wrapping its drift table (trajectories).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_chroma_structure_golden import stub_modules  # the stand-ins for chroma's display-only imports

OUT = Path(__file__).resolve().parents[1] / "plugins/chroma/tests/golden/chroma_diffusion.safetensors"

# Three complexes of 24 residues: gaps (C < 0) inside, at the start and at the end of chains; padding (C = 0);
# a batch element with fewer chains (and a chain id skipped) than the batch's largest id.
CHAIN_MAP = [
    [1] * 5 + [-1] * 2 + [1] * 3 + [2] * 6 + [0] * 8,
    [3] * 4 + [-3] + [3] * 5 + [0] * 14,
    [-1] + [1] * 6 + [2] * 3 + [-2] * 2 + [4] * 8 + [-4] * 1 + [0] * 3,
]
COVARIANCES = {
    "brownian": {"covariance_model": "brownian"},
    "brownian_st2": {"covariance_model": "brownian", "sigma_translation": 2.0},
    "globular": {"covariance_model": "globular"},
    "globular_cs": {"covariance_model": "globular", "complex_scaling": True},
}
SCHEDULE_TIMES = [0.0, 0.001, 0.05, 0.2, 0.37, 0.5, 0.81, 0.99, 1.0]
DRIFT_TIMES = [0.9, 0.5, 0.1]
SAMPLE_KW = {"langevin_factor": 2.0, "inverse_temperature": 10.0, "langevin_isothermal": False}  # Chroma._sample's
TRAJECTORIES = {
    "reverse_sde_em": {"sde_func": "reverse_sde", "integrate_func": "euler_maruyama", **SAMPLE_KW},
    "reverse_sde_heun": {"sde_func": "reverse_sde", "integrate_func": "heun", **SAMPLE_KW},
    "ode_em": {"sde_func": "ode", "integrate_func": "euler_maruyama", **SAMPLE_KW},
    "langevin_em": {"sde_func": "langevin", "integrate_func": "euler_maruyama", **SAMPLE_KW},
    "reverse_sde_isothermal_init": {
        "sde_func": "reverse_sde", "integrate_func": "euler_maruyama", "langevin_factor": 0.5,
        "inverse_temperature": 3.0, "langevin_isothermal": True, "from_X": True,
    },
}  # fmt: skip
STEPS = 20
TSPAN = (1.0, 0.001)


def x0_func(X: torch.Tensor, C: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth, deterministic stand-in for the denoiser (identical in test_chroma_diffusion.py).

    Like a trained denoiser it returns about X at low noise (t -> 0), so short trajectories stay bounded.
    """
    t = torch.as_tensor(t, dtype=X.dtype).reshape(-1, 1, 1, 1)
    return X + t * (0.5 * torch.tanh(X.roll(1, dims=1) / 4.0) - 0.2 * X)


class Restraint(nn.Module):
    """A conditioner that only adds energy (identical in the test): pulls each complex's CA centre to a point."""

    def forward(self, X, C, O, U, t):  # noqa: E741
        mask = (C > 0).to(X.dtype)[..., None]
        centre = (mask * X[:, :, 1]).sum(1) / mask.sum(1)
        target = torch.tensor([1.0, -2.0, 0.5], dtype=X.dtype)
        return X, C, O, U + 0.05 * ((centre - target) ** 2).sum(-1) + 0.01 * (X**2).sum([1, 2, 3]), t


def make_inputs() -> dict[str, torch.Tensor]:
    """Backbone-like X (a random walk of 1.5 A steps; zeros without structure), C, and all noise tensors."""
    gen = torch.Generator().manual_seed(20261210)
    C = torch.tensor(CHAIN_MAP)
    B, L = C.shape
    X = torch.cumsum(1.5 * torch.randn(B, L * 4, 3, generator=gen), 1).reshape(B, L, 4, 3)
    X = X * (C > 0)[..., None, None]
    return {
        "C": C,
        "X": X,
        "Z": torch.randn(B, L, 4, 3, generator=gen),
        "Z_init": torch.randn(B, L * 4, 3, generator=gen),
        "Z_steps": torch.randn(STEPS, B, L, 4, 3, generator=gen),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=OUT)
    args = parser.parse_args()
    stub_modules()
    from chroma.layers.structure import backbone, diffusion, mvn  # the reference, importable via PYTHONPATH

    torch.manual_seed(0)
    inputs = make_inputs()
    X, C, Z = inputs["X"], inputs["C"], inputs["Z"]
    out: dict[str, torch.Tensor] = dict(inputs)

    # Rung 1: the schedule.
    for kind in ("log_snr", "ot_linear", "ve_log_snr"):
        s = diffusion.GaussianNoiseSchedule(kind=kind)
        t = torch.tensor(SCHEDULE_TIMES)
        for name in ("alpha", "sigma", "beta", "g", "SNR", "SSNR", "alpha_deriv", "sigma_deriv"):
            out[f"schedule.{kind}.{name}"] = getattr(s, name)(t.clone())
        if kind != "ve_log_snr":  # the reference defines these two only for log_snr and ot_linear
            out[f"schedule.{kind}.log_SNR"] = s.log_SNR(t.clone())
            out[f"schedule.{kind}.SNR_derivative"] = s.SNR_derivative(t.clone())
            out[f"schedule.{kind}.grid"] = s.linear_logsnr_grid(10, TSPAN)
    out["schedule.t"] = torch.tensor(SCHEDULE_TIMES)

    # Rung 1: the covariance and the backbone helpers.
    for tag, kw in COVARIANCES.items():
        g = mvn.BackboneMVNGlobular(**kw)
        out[f"cov.{tag}.R"] = g._multiply_R(Z, C)
        out[f"cov.{tag}.Rt"] = g._multiply_R_transpose(Z, C)
        out[f"cov.{tag}.Ri"] = g._multiply_R_inverse(X, C)
        out[f"cov.{tag}.Rit"] = g._multiply_R_inverse_transpose(X, C)
        out[f"cov.{tag}.cov"] = g.multiply_covariance(Z, C)
        out[f"cov.{tag}.icov"] = g.multiply_inverse_covariance(X, C)
        out[f"cov.{tag}.logdet"] = g.log_determinant(C)
        out[f"cov.{tag}.sample"] = g.sample(C, Z=inputs["Z_init"])
    out["helpers.impute"] = backbone.impute_masked_X(X, C)
    out["helpers.center"] = backbone.center_X(X, C)
    out["helpers.x0"] = x0_func(X, C, torch.tensor(0.3))
    from chroma.layers.structure.rmsd import BackboneRMSD

    aligner = BackboneRMSD()
    aligner.rmsd.dither = False
    out["helpers.align"] = aligner.align(out["helpers.x0"], backbone.impute_masked_X(X, C), C, align_unmasked=True)[0]

    # Rung 5: drifts with fixed Z and x0_func, at several t; the score and energy they use.
    def process(tag: str) -> diffusion.DiffusionChainCov:
        d = diffusion.DiffusionChainCov(**COVARIANCES[tag])
        d.loss_rmsd.rmsd.dither = False
        return d

    for tag in ("brownian", "globular_cs"):
        d = process(tag)
        for t_value in DRIFT_TIMES:
            t = torch.tensor(t_value)
            key = f"drift.{tag}.{t_value}"
            out[f"{key}.energy"] = d.energy(X, x0_func, C, t)
            out[f"{key}.score"] = d.score(X, x0_func, C, t)
            f, gz = d.reverse_sde(X, x0_func, C, t, Z=Z, **SAMPLE_KW)
            out[f"{key}.reverse_sde.f"], out[f"{key}.reverse_sde.gZ"] = f, gz
            f, gz = d.reverse_sde(X, x0_func, C, t, Z=Z)
            out[f"{key}.reverse_sde_plain.f"], out[f"{key}.reverse_sde_plain.gZ"] = f, gz
            out[f"{key}.ode.f"] = d.ode(X, x0_func, C, t, Z=Z, **SAMPLE_KW)[0]
            f, gz = d.langevin(X, x0_func, C, t, Z=Z, **SAMPLE_KW)
            out[f"{key}.langevin.f"], out[f"{key}.langevin.gZ"] = f, gz
            f, gz = d.reverse_sde(X, x0_func, C, t, conditioner=Restraint(), Z=Z, **SAMPLE_KW)
            out[f"{key}.reverse_sde_restraint.f"], out[f"{key}.reverse_sde_restraint.gZ"] = f, gz
        out[f"noise.{tag}"] = d.forward(X, C, t=torch.tensor([0.7]))  # the prior draw is patched below
    # The noising above drew its own prior; redo it with Z_init for a comparable value.
    for tag in ("brownian", "globular_cs"):
        d = process(tag)
        draw = d.base_gaussian.sample
        d.base_gaussian.sample = lambda C_, draw=draw: draw(C_, Z=inputs["Z_init"])
        out[f"noise.{tag}"] = d.forward(X, C, t=torch.tensor([0.7]))

    # Rung 5: whole trajectories with a pre-generated Z per step, every state kept.
    for name, settings in TRAJECTORIES.items():
        settings = dict(settings)
        from_x = settings.pop("from_X", False)
        d = process("globular_cs")
        draw = d.base_gaussian.sample
        d.base_gaussian.sample = lambda C_, draw=draw: draw(C_, Z=inputs["Z_init"])
        per_step = 2 if settings["integrate_func"] == "heun" else 1
        calls = [0]

        def with_noise(fn, per_step=per_step, calls=calls):
            def drift(X_, X0_func, C_, t, **kw):
                step = calls[0] // per_step
                calls[0] += 1
                return fn(X_, X0_func, C_, t, Z=inputs["Z_steps"][step], **kw)

            return drift

        d.sde_funcs = {k: with_noise(v) for k, v in d.sde_funcs.items()}
        result = d.sample_sde(x0_func, C, X_init=X if from_x else None, N=STEPS, tspan=TSPAN, **settings)
        out[f"traj.{name}.states"] = torch.stack(result["Xunc_trajectory"])
        out[f"traj.{name}.X_sample"] = result["X_sample"]
        out[f"traj.{name}.Xhat_last"] = result["Xhat_trajectory"][-1]
        print(name, "final |X| max", float(result["Xunc_trajectory"][-1].abs().max()))

    out = {k: v.detach().contiguous() for k, v in out.items()}
    metadata = {
        "reference": "generate-chroma 1.0.0",
        "torch": torch.__version__,
        "covariances": json.dumps(COVARIANCES),
        "drift_times": json.dumps(DRIFT_TIMES),
        "sample_kw": json.dumps(SAMPLE_KW),
        "trajectories": json.dumps(TRAJECTORIES),
        "steps": str(STEPS),
        "tspan": json.dumps(TSPAN),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(args.out), metadata=metadata)
    print("wrote", args.out, args.out.stat().st_size, "bytes,", len(out), "tensors")


if __name__ == "__main__":
    main()
