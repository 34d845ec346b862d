"""Single-step DPM-Solver++ samplers with noise: DPM++ 2S a and DPM++ SDE."""

from __future__ import annotations

import math

from torch import Tensor

from huihua.diffusion.samplers.core import Context, ancestral_step, steps


def dpmpp_2s_ancestral(ctx: Context, x: Tensor, sigmas: list[float]) -> Tensor:
    """Ancestral DPM-Solver++(2S) (Lu et al. 2022, "DPM-Solver++", Alg. 1, r = 1/2) down to sigma_down, then noise."""
    for i, sigma, sigma_next in steps(sigmas):
        denoised = ctx.model(x, sigma)
        ctx.report(i, x, denoised, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, ctx.eta)
        if sigma_down == 0.0:
            x = denoised
        else:
            h = math.log(sigma / sigma_down)
            sigma_s = math.sqrt(sigma * sigma_down)  # log-sigma midpoint
            x_2 = x * (sigma_s / sigma) - denoised * math.expm1(-0.5 * h)
            denoised_2 = ctx.model(x_2, sigma_s)
            x = x * (sigma_down / sigma) - denoised_2 * math.expm1(-h)
        x = ctx.add_noise(x, sigma, sigma_next, sigma_up)
    return x


def dpmpp_sde(ctx: Context, x: Tensor, sigmas: list[float], r: float = 0.5) -> Tensor:
    """DPM-Solver++ SDE (k-diffusion): stochastic second-order single steps via the sigma at fraction r of log-sigma."""
    eta, fac = ctx.eta, 1 / (2 * r)
    for i, sigma, sigma_next in steps(sigmas):
        denoised = ctx.model(x, sigma)
        ctx.report(i, x, denoised, sigma)
        if sigma_next == 0.0:
            x = denoised
            continue
        h = math.log(sigma / sigma_next)
        sigma_s = sigma * math.exp(-r * h)
        # Step 1: to sigma_s, with noise for that stretch.
        down, up = ancestral_step(sigma, sigma_s, eta)
        x_2 = x * (down / sigma) - denoised * math.expm1(math.log(down / sigma))
        x_2 = ctx.add_noise(x_2, sigma, sigma_s, up)
        denoised_2 = ctx.model(x_2, sigma_s)
        # Step 2: to sigma_next with the blended data prediction.
        down, up = ancestral_step(sigma, sigma_next, eta)
        blended = denoised * (1 - fac) + denoised_2 * fac
        x = x * (down / sigma) - blended * math.expm1(math.log(down / sigma))
        x = ctx.add_noise(x, sigma, sigma_next, up)
    return x
