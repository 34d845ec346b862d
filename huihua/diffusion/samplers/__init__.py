"""Samplers: integrate from noise to data along a schedule of sigmas, given only a denoiser.

    x0 = sample("dpmpp_2m", denoise, x, sigmas, noise_sampler=None, callback=None, seeds=[s, s+1])

- ``sampler``: a key ("dpmpp_2m"), an A1111 display name ("DPM++ 2M") or any alias of
  :mod:`huihua.diffusion.names`; a schedule suffix ("DPM++ 2M Karras") is accepted and ignored,
  since ``sigmas`` already fixes the schedule.
- ``denoise(x, sigma) -> x0`` with x (B, ...) and sigma (B,) (see ``parametrization.make_denoiser``).
- ``x``: the starting latent, already scaled to ``sigmas[0]`` (noise * sigmas[0] for txt2img,
  latent + noise * sigmas[0] for img2img).
- ``sigmas``: decreasing, normally ending in 0 (``schedules.get_sigmas``).  It is read to the host
  once; every per-step coefficient is then computed on the host, so no step waits on the device
  (DPM adaptive excepted: its step-size control reads an error norm each step).
- ``noise_sampler(sigma, sigma_next) -> noise like x`` (k-diffusion's contract).  When None, the
  noise comes from ``seeds`` (one per image; default 0, 1, ..., B-1): Brownian-tree noise
  (``noise.BrownianTreeNoiseSampler``) for the SDE samplers (DPM++ SDE, 2M SDE, 2M SDE Heun,
  3M SDE), and for every other sampler each image's CPU stream ``Generator().manual_seed(seed)``
  continued after one draw (the pipeline's initial noise, ``noise.seeded_randn``).  Either way a
  batch equals the single runs with the same seeds (DPM adaptive excepted: its step size is
  chosen for the batch as a whole).  No noise is drawn by deterministic runs.
- ``callback(step, x, denoised, sigma)`` is called once per step, before x is updated.
- ``options``: :class:`SamplerOptions` (eta, s_noise, churn, solver orders, DPM adaptive tolerances).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from types import MappingProxyType

import torch
from torch import Tensor

from huihua.diffusion import names
from huihua.diffusion.noise import (
    BrownianTreeNoiseSampler,
    GaussianNoiseSampler,
    NoiseSampler,
)
from huihua.diffusion.samplers.core import Callback, Context, Denoiser, SamplerOptions
from huihua.diffusion.samplers.dpm_solver import dpm_adaptive, dpm_fast
from huihua.diffusion.samplers.euler import (
    ddim,
    ddpm,
    dpm_2,
    dpm_2_ancestral,
    euler,
    euler_ancestral,
    heun,
    lcm,
)
from huihua.diffusion.samplers.multistep import (
    dpmpp_2m,
    dpmpp_2m_sde,
    dpmpp_3m_sde,
    lms,
    plms,
)
from huihua.diffusion.samplers.restart import restart
from huihua.diffusion.samplers.singlestep import dpmpp_2s_ancestral, dpmpp_sde
from huihua.diffusion.samplers.unipc import unipc
from huihua.errors import ParameterError

__all__ = ["SAMPLER_FUNCTIONS", "Callback", "Denoiser", "SamplerOptions", "sample"]

SamplerFn = Callable[[Context, Tensor, list[float]], Tensor]

SAMPLER_FUNCTIONS: MappingProxyType[str, SamplerFn] = MappingProxyType(
    {
        "euler": euler,
        "euler_ancestral": euler_ancestral,
        "heun": heun,
        "dpm_2": dpm_2,
        "dpm_2_ancestral": dpm_2_ancestral,
        "lms": lms,
        "dpmpp_2s_ancestral": dpmpp_2s_ancestral,
        "dpmpp_2m": dpmpp_2m,
        "dpmpp_sde": dpmpp_sde,
        "dpmpp_2m_sde": dpmpp_2m_sde,
        "dpmpp_2m_sde_heun": partial(dpmpp_2m_sde, solver="heun"),
        "dpmpp_3m_sde": dpmpp_3m_sde,
        "dpm_fast": dpm_fast,
        "dpm_adaptive": dpm_adaptive,
        "restart": restart,
        "ddim": ddim,
        "plms": plms,
        "uni_pc": unipc,
        "uni_pc_bh2": partial(unipc, variant="bh2"),
        "lcm": lcm,
        "ddpm": ddpm,
    }
)


class _LazyNoise:
    """A noise sampler built on first use, so deterministic runs never seed anything."""

    def __init__(self, make: Callable[[], NoiseSampler]) -> None:
        self._make = make
        self._sampler: NoiseSampler | None = None

    def __call__(self, sigma: float, sigma_next: float) -> Tensor:
        if self._sampler is None:
            self._sampler = self._make()
        return self._sampler(sigma, sigma_next)


def _host_sigmas(sigmas: Tensor) -> list[float]:
    values = sigmas.detach().to("cpu", torch.float64).reshape(-1).tolist()
    if len(values) < 2:
        raise ParameterError(f"sigmas: need at least 2 values, got {len(values)}")
    if any(not math.isfinite(s) or s < 0 for s in values) or values[0] <= 0:
        raise ParameterError("sigmas: every sigma must be finite and >= 0, the first > 0")
    return values


def default_noise(info: names.SamplerInfo, x: Tensor, sigmas: list[float], seeds: Sequence[int]) -> NoiseSampler:
    """The seeded noise sampler ``sample`` uses when none is given (Brownian for SDE samplers)."""
    if info.brownian:
        positive = [s for s in sigmas if s > 0]
        return BrownianTreeNoiseSampler(x, min(positive), max(positive), seeds)
    return GaussianNoiseSampler(x, seeds, skip=1)


def sample(
    sampler: str | names.SamplerInfo,
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise_sampler: NoiseSampler | None = None,
    callback: Callback | None = None,
    *,
    seeds: Sequence[int] | None = None,
    options: SamplerOptions | None = None,
) -> Tensor:
    """Run sampler ``sampler`` from x at sigmas[0] down the schedule; returns the final x (B, ...)."""
    info = sampler if isinstance(sampler, names.SamplerInfo) else names.sampler_info(names.resolve(sampler)[0])
    host = _host_sigmas(sigmas)
    opts = options or SamplerOptions()
    if noise_sampler is None:
        seed_list = list(seeds) if seeds is not None else list(range(x.shape[0]))
        noise_sampler = _LazyNoise(lambda: default_noise(info, x, host, seed_list))
    eta = opts.eta if opts.eta is not None else info.eta
    ctx = Context(denoise=denoise, noise=noise_sampler, callback=callback, eta=eta, options=opts)
    return SAMPLER_FUNCTIONS[info.key](ctx, x, host)
