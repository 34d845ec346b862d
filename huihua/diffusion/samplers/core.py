"""What every sampler loop shares: the context it runs in and the small step formulas.

A sampler is ``fn(ctx, x, sigmas) -> x`` where ``sigmas`` is a plain list of floats (host-side, so
branching on a sigma never waits for the device) and ``ctx`` carries the denoiser, the noise, the
progress callback and the options.  Samplers never see prompts, models or files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from huihua.diffusion.noise import NoiseSampler
from huihua.diffusion.parametrization import Denoiser
from huihua.errors import ParameterError

Callback = Callable[[int, Tensor, Tensor, float], None]  # (step, x, denoised, sigma)


@dataclass(frozen=True)
class SamplerOptions:
    """Knobs of the samplers; every default is the A1111 / k-diffusion one."""

    eta: float | None = None  # ancestral / SDE noise amount; None = the sampler's default (names.SamplerInfo.eta)
    s_noise: float = 1.0  # scale of the noise added by ancestral, SDE and churn steps
    s_churn: float = 0.0  # Karras et al. (2022) Alg. 2 churn for Euler, Heun and DPM2
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    lms_order: int = 4
    unipc_order: int = 3  # A1111's default; diffusers' is 2
    dpm_adaptive_order: int = 3  # 3: DPM-Solver-23 pairs, 2: DPM-Solver-12 pairs
    dpm_adaptive_rtol: float = 0.05
    dpm_adaptive_atol: float = 0.0078
    dpm_adaptive_h_init: float = 0.05

    def __post_init__(self) -> None:
        checks = {
            "lms_order": self.lms_order >= 1,
            "unipc_order": self.unipc_order >= 1,
            "dpm_adaptive_order": self.dpm_adaptive_order in (2, 3),
            "eta": self.eta is None or self.eta >= 0,
            "s_noise": self.s_noise >= 0,
            "s_churn": self.s_churn >= 0,
            "dpm_adaptive_h_init": self.dpm_adaptive_h_init > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ParameterError(f"SamplerOptions.{name}: {getattr(self, name)!r} is out of range")


@dataclass(frozen=True)
class Context:
    """The denoiser, noise, progress callback and options one sampling run uses."""

    denoise: Denoiser
    noise: NoiseSampler
    callback: Callback | None
    eta: float
    options: SamplerOptions

    def model(self, x: Tensor, sigma: float) -> Tensor:
        """denoise(x, sigma) with sigma broadcast to a (B,) tensor on x's device (no host sync)."""
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        return self.denoise(x, torch.full((x.shape[0],), sigma, device=x.device, dtype=dtype))

    def report(self, step: int, x: Tensor, denoised: Tensor, sigma: float) -> None:
        """Tell the callback, if any, about a step."""
        if self.callback is not None:
            self.callback(step, x, denoised, sigma)

    def add_noise(self, x: Tensor, sigma: float, sigma_next: float, scale: float) -> Tensor:
        """x + s_noise * scale * noise(sigma, sigma_next), skipping the draw when the scale is 0."""
        if scale == 0.0:
            return x
        return x + self.noise(sigma, sigma_next) * (self.options.s_noise * scale)


def steps(sigmas: list[float]) -> Iterator[tuple[int, float, float]]:
    """(i, sigma_i, sigma_{i+1}) for every step of a schedule."""
    for i in range(len(sigmas) - 1):
        yield i, sigmas[i], sigmas[i + 1]


def to_d(x: Tensor, sigma: float, denoised: Tensor) -> Tensor:
    """The probability-flow ODE derivative dx/dsigma = (x - denoised) / sigma (Karras et al. 2022)."""
    return (x - denoised) / sigma


def ancestral_step(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up): a deterministic step to sigma_down plus fresh noise of std sigma_up.

    sigma_up is eta times the DDPM posterior std, so eta = 1 is ancestral sampling and eta = 0 the ODE.
    """
    if eta == 0.0 or sigma_next == 0.0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up


def churn(ctx: Context, x: Tensor, sigma: float, n_steps: int) -> tuple[Tensor, float]:
    """Karras et al. (2022) Alg. 2 "churn": raise the noise to sigma_hat >= sigma before the step."""
    o = ctx.options
    gamma = min(o.s_churn / n_steps, 2**0.5 - 1) if o.s_churn > 0 and o.s_tmin <= sigma <= o.s_tmax else 0.0
    if gamma == 0.0:
        return x, sigma
    sigma_hat = sigma * (1 + gamma)
    return ctx.add_noise(x, sigma, sigma_hat, math.sqrt(sigma_hat**2 - sigma**2)), sigma_hat
