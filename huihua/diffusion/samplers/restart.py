"""Restart sampling (Xu et al. 2023, "Restart Sampling for Improving Generative Processes"), as A1111 runs it.

With 20 or more steps the main schedule is rebuilt as a Karras schedule of fewer steps, and once it
reaches sigma ~ 0.1 the sample is re-noised up to sigma ~ 2 and solved down again (one restart of 9
Heun steps; two restarts of steps // 4 steps from 36 steps on), so the model is called about as
often as with plain Heun.  Below 20 steps it is Heun's method.
"""

from __future__ import annotations

import itertools
import math

from torch import Tensor

from huihua.diffusion.samplers.core import Context
from huihua.diffusion.samplers.euler import heun_step
from huihua.diffusion.schedules import karras


def _nearest(sigmas: list[float], value: float) -> int:
    return min(range(len(sigmas)), key=lambda i: abs(sigmas[i] - value))


def restart_plan(sigmas: list[float]) -> list[tuple[float, float]]:
    """The (sigma, sigma_next) segments A1111's Restart sampler walks, restarts included."""
    n = len(sigmas) - 1
    if n < 20:
        return list(itertools.pairwise(sigmas))
    restart_steps, restart_times = (n // 4, 2) if n >= 36 else (9, 1)
    sigmas = karras(n - restart_steps * restart_times, sigmas[-2], sigmas[0]).tolist()
    at, top = _nearest(sigmas, 0.1), _nearest(sigmas, 2.0)
    plan: list[tuple[float, float]] = []
    for i in range(len(sigmas) - 1):
        plan.append((sigmas[i], sigmas[i + 1]))
        if i + 1 == at and top < at:
            loop = karras(restart_steps + 1, sigmas[at], sigmas[top]).tolist()[:-1]
            plan.extend(list(itertools.pairwise(loop)) * restart_times)
    return plan


def restart(ctx: Context, x: Tensor, sigmas: list[float]) -> Tensor:
    """Restart sampling (Xu et al. 2023): Heun steps, re-noising wherever the plan jumps back up in sigma."""
    last: float | None = None
    for i, (sigma, sigma_next) in enumerate(restart_plan(sigmas)):
        if last is not None and last < sigma:
            x = ctx.add_noise(x, last, sigma, math.sqrt(sigma**2 - last**2))
        denoised = ctx.model(x, sigma)
        ctx.report(i, x, denoised, sigma)
        x = heun_step(ctx, x, denoised, sigma, sigma_next)
        last = sigma_next
    return x
