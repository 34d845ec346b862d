"""DPM-Solver (Lu et al. 2022, "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling").

The solver works in t = -log(sigma) (half the log-SNR) with the noise prediction eps = (x - x0) / sigma.
"DPM fast" runs the fixed-budget DPM-Solver-fast schedule; "DPM adaptive" pairs solvers of orders
(2, 3) and controls the step size from their difference.  Both run from sigmas[0] to the smallest
positive sigma and, like k-diffusion and A1111, return x at that sigma (no final step to 0).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from huihua.diffusion.samplers.core import Context, ancestral_step
from huihua.errors import HuihuaError


def _sigma(t: float) -> float:
    return math.exp(-t)


def _eps(ctx: Context, x: Tensor, t: float) -> tuple[Tensor, Tensor]:
    denoised = ctx.model(x, _sigma(t))
    return (x - denoised) * (1.0 / _sigma(t)), denoised


def _step_1(x: Tensor, t: float, t_next: float, eps: Tensor) -> Tensor:
    """DPM-Solver-1 (= DDIM) from t to t_next."""
    return x - eps * (_sigma(t_next) * math.expm1(t_next - t))


def _step_2(ctx: Context, x: Tensor, t: float, t_next: float, eps: Tensor, r1: float = 0.5) -> tuple[Tensor, Tensor]:
    """Single-step DPM-Solver-2 from t to t_next; also returns the extra evaluation's eps."""
    h = t_next - t
    s1 = t + r1 * h
    u1 = x - eps * (_sigma(s1) * math.expm1(r1 * h))
    eps_r1, _ = _eps(ctx, u1, s1)
    x_next = x - eps * (_sigma(t_next) * math.expm1(h)) - (eps_r1 - eps) * (_sigma(t_next) / (2 * r1) * math.expm1(h))
    return x_next, eps_r1


def _step_3(ctx: Context, x: Tensor, t: float, t_next: float, eps: Tensor, eps_r1: Tensor | None = None) -> Tensor:
    """Single-step DPM-Solver-3 (r1 = 1/3, r2 = 2/3) from t to t_next."""
    r1, r2 = 1 / 3, 2 / 3
    h = t_next - t
    s1, s2 = t + r1 * h, t + r2 * h
    if eps_r1 is None:
        eps_r1, _ = _eps(ctx, x - eps * (_sigma(s1) * math.expm1(r1 * h)), s1)
    phi_r2 = math.expm1(r2 * h)
    u2 = x - eps * (_sigma(s2) * phi_r2) - (eps_r1 - eps) * (_sigma(s2) * (r2 / r1) * (phi_r2 / (r2 * h) - 1))
    eps_r2, _ = _eps(ctx, u2, s2)
    phi = math.expm1(h)
    return x - eps * (_sigma(t_next) * phi) - (eps_r2 - eps) * (_sigma(t_next) / r2 * (phi / h - 1))


def _range(sigmas: list[float]) -> tuple[float, float]:
    """(t_start, t_end): -log of the first and of the smallest positive sigma."""
    positive = [s for s in sigmas if s > 0.0]
    return -math.log(sigmas[0]), -math.log(min(positive))


def _noisy_target(sigma: float, sigma_next: float, t_end: float, eta: float) -> tuple[float, float]:
    """(t to step to, std of the noise to add after) for an ancestral DPM-Solver step."""
    if eta == 0.0:
        return -math.log(sigma_next), 0.0
    down, _ = ancestral_step(sigma, sigma_next, eta)
    t_to = min(t_end, -math.log(down))
    return t_to, math.sqrt(max(sigma_next**2 - _sigma(t_to) ** 2, 0.0))


def dpm_fast(ctx: Context, x: Tensor, sigmas: list[float]) -> Tensor:
    """DPM-Solver-fast (Lu et al. 2022, §3.4): third-order steps uniform in log-SNR, len(sigmas)-1 evaluations."""
    nfe = len(sigmas) - 1
    t_start, t_end = _range(sigmas)
    m = nfe // 3 + 1
    ts = torch.linspace(t_start, t_end, m + 1, dtype=torch.float64).tolist()
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    for i, order in enumerate(orders):
        t, t_next = ts[i], ts[i + 1]
        t_to, sigma_up = _noisy_target(_sigma(t), _sigma(t_next), t_end, ctx.eta)
        eps, denoised = _eps(ctx, x, t)
        ctx.report(i, x, denoised, _sigma(t))
        if order == 1:
            x = _step_1(x, t, t_to, eps)
        elif order == 2:
            x, _ = _step_2(ctx, x, t, t_to, eps)
        else:
            x = _step_3(ctx, x, t, t_to, eps)
        x = ctx.add_noise(x, _sigma(t), _sigma(t_next), sigma_up)
    return x


def dpm_adaptive(ctx: Context, x: Tensor, sigmas: list[float]) -> Tensor:
    """DPM-Solver-12/23 with adaptive step size (Lu et al. 2022, §4.2; k-diffusion's I-controller).

    Reads the error norm on the host once per step: this sampler does synchronise, by design.
    """
    o = ctx.options
    order = o.dpm_adaptive_order
    t_end = _range(sigmas)[1]
    s, h = _range(sigmas)[0], o.dpm_adaptive_h_init
    exponent = 1.0 / (1.5 if ctx.eta else order)
    x_prev, cached, step = x, None, 0
    while s < t_end - 1e-5:
        t = min(t_end, s + h)
        t_to, sigma_up = _noisy_target(_sigma(s), _sigma(t), t_end, ctx.eta)
        eps, denoised = cached if cached is not None else _eps(ctx, x, s)
        cached = (eps, denoised)
        ctx.report(step, x, denoised, _sigma(s))
        if order == 2:
            x_low = _step_1(x, s, t_to, eps)
            x_high, _ = _step_2(ctx, x, s, t_to, eps)
        else:
            x_low, eps_r1 = _step_2(ctx, x, s, t_to, eps, r1=1 / 3)
            x_high = _step_3(ctx, x, s, t_to, eps, eps_r1)
        scale = torch.clamp(torch.maximum(x_low.abs(), x_prev.abs()) * o.dpm_adaptive_rtol, min=o.dpm_adaptive_atol)
        error = float(torch.linalg.vector_norm((x_low - x_high) / scale)) / math.sqrt(x.numel())
        if not math.isfinite(error):
            raise HuihuaError(f"DPM adaptive: non-finite error estimate at sigma {_sigma(s):.4g} (NaN denoiser?)")
        factor = 1 + math.atan((1 / (error + 1e-8)) ** exponent - 1)  # limited I-controller
        if factor >= 0.81:
            x_prev = x_low
            x = ctx.add_noise(x_high, _sigma(s), _sigma(t), sigma_up)
            s, cached = t, None
        h *= factor
        step += 1
    return x
