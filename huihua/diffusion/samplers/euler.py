"""Single-step samplers in the sigma (variance-exploding) form: Euler, Heun, DPM2, DDIM, DDPM, LCM."""

from __future__ import annotations

import math

from torch import Tensor

from huihua.diffusion.samplers.core import Context, ancestral_step, churn, steps, to_d


def euler(ctx: Context, x: Tensor, sigmas: list[float]) -> Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Alg. 2; churn optional)."""
    for i, sigma, sigma_next in steps(sigmas):
        x, sigma_hat = churn(ctx, x, sigma, len(sigmas) - 1)
        denoised = ctx.model(x, sigma_hat)
        ctx.report(i, x, denoised, sigma)
        x = x + to_d(x, sigma_hat, denoised) * (sigma_next - sigma_hat)
    return x


def euler_ancestral(ctx: Context, x: Tensor, sigmas: list[float]) -> Tensor:
    """Ancestral Euler (k-diffusion): an Euler step down to sigma_down, then fresh noise of std sigma_up."""
    for i, sigma, sigma_next in steps(sigmas):
        denoised = ctx.model(x, sigma)
        ctx.report(i, x, denoised, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, ctx.eta)
        x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
        x = ctx.add_noise(x, sigma, sigma_next, sigma_up)
    return x


def ddim(ctx: Context, x: Tensor, sigmas: list[float]) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) with eta: in sigma form it is exactly the ancestral Euler step.

    x0 = x - sigma * eps, x' = x0 + sqrt(sigma'^2 - s^2) * eps + s * z with s = eta * posterior std.
    """
    return euler_ancestral(ctx, x, sigmas)


def ddpm(ctx: Context, x: Tensor, sigmas: list[float]) -> Tensor:
    """Ancestral sampling from the DDPM posterior q(x_s | x_t, x0) (Ho et al. 2020, eqs. 6-7), in sigma form."""
    for i, sigma, sigma_next in steps(sigmas):
        denoised = ctx.model(x, sigma)
        ctx.report(i, x, denoised, sigma)
        if sigma_next == 0.0:
            x = denoised
            continue
        ratio = (sigma_next / sigma) ** 2  # the posterior is a Brownian bridge from x0 to x
        x = denoised + (x - denoised) * ratio
        x = ctx.add_noise(x, sigma, sigma_next, sigma_next * math.sqrt(1.0 - ratio))
    return x


def lcm(ctx: Context, x: Tensor, sigmas: list[float]) -> Tensor:
    """Latent Consistency Model multistep sampling (Luo et al. 2023, Alg. 1): predict x0, re-noise to sigma'."""
    for i, sigma, sigma_next in steps(sigmas):
        denoised = ctx.model(x, sigma)
        ctx.report(i, x, denoised, sigma)
        x = denoised
        if sigma_next > 0.0:
            x = x + ctx.noise(sigma, sigma_next) * sigma_next
    return x


def heun(ctx: Context, x: Tensor, sigmas: list[float]) -> Tensor:
    """Heun's second-order method (Karras et al. 2022, Alg. 2); an Euler step for the last step to 0."""
    for i, sigma, sigma_next in steps(sigmas):
        x, sigma_hat = churn(ctx, x, sigma, len(sigmas) - 1)
        denoised = ctx.model(x, sigma_hat)
        ctx.report(i, x, denoised, sigma)
        x = heun_step(ctx, x, denoised, sigma_hat, sigma_next)
    return x


def heun_step(ctx: Context, x: Tensor, denoised: Tensor, sigma: float, sigma_next: float) -> Tensor:
    """One Heun step given the denoised prediction at ``sigma``; an Euler step when sigma_next is 0."""
    d = to_d(x, sigma, denoised)
    dt = sigma_next - sigma
    if sigma_next == 0.0:
        return x + d * dt
    x_2 = x + d * dt
    d_2 = to_d(x_2, sigma_next, ctx.model(x_2, sigma_next))
    return x + (d + d_2) * (0.5 * dt)


def dpm_2(ctx: Context, x: Tensor, sigmas: list[float]) -> Tensor:
    """DPM-Solver-2 in k-diffusion's form: the midpoint method with the midpoint at the geometric mean sigma."""
    for i, sigma, sigma_next in steps(sigmas):
        x, sigma_hat = churn(ctx, x, sigma, len(sigmas) - 1)
        denoised = ctx.model(x, sigma_hat)
        ctx.report(i, x, denoised, sigma)
        d = to_d(x, sigma_hat, denoised)
        if sigma_next == 0.0:
            x = x + d * (sigma_next - sigma_hat)
            continue
        sigma_mid = math.sqrt(sigma_hat * sigma_next)
        x_2 = x + d * (sigma_mid - sigma_hat)
        d_2 = to_d(x_2, sigma_mid, ctx.model(x_2, sigma_mid))
        x = x + d_2 * (sigma_next - sigma_hat)
    return x


def dpm_2_ancestral(ctx: Context, x: Tensor, sigmas: list[float]) -> Tensor:
    """Ancestral DPM-Solver-2 (k-diffusion): a DPM2 step down to sigma_down, then noise of std sigma_up."""
    for i, sigma, sigma_next in steps(sigmas):
        denoised = ctx.model(x, sigma)
        ctx.report(i, x, denoised, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, ctx.eta)
        d = to_d(x, sigma, denoised)
        if sigma_down == 0.0:
            x = x + d * (sigma_down - sigma)
        else:
            sigma_mid = math.sqrt(sigma * sigma_down)
            x_2 = x + d * (sigma_mid - sigma)
            d_2 = to_d(x_2, sigma_mid, ctx.model(x_2, sigma_mid))
            x = x + d_2 * (sigma_down - sigma)
        x = ctx.add_noise(x, sigma, sigma_next, sigma_up)
    return x
