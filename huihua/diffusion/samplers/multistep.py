"""Multistep samplers: LMS, PLMS and the DPM-Solver++ multistep family (2M, 2M SDE, 3M SDE)."""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor

from huihua.diffusion.samplers.core import Context, steps, to_d


def lms_coefficients(sigmas: list[float], i: int, order: int) -> list[float]:
    """Weights of d_i, d_{i-1}, ...: the Lagrange basis through sigma_i..sigma_{i-order+1}, integrated exactly."""
    nodes = [sigmas[i - j] for j in range(order)]
    a, b = sigmas[i], sigmas[i + 1]
    coeffs = []
    for j in range(order):
        poly = [1.0]  # coefficients of the basis polynomial, lowest power first
        for k in range(order):
            if k != j:
                scale = 1.0 / (nodes[j] - nodes[k])
                shifted = [0.0] + poly  # tau * poly
                poly = [(hi - nodes[k] * lo) * scale for hi, lo in zip(shifted, poly + [0.0], strict=False)]
        coeffs.append(sum(c * (b ** (m + 1) - a ** (m + 1)) / (m + 1) for m, c in enumerate(poly)))
    return coeffs


def lms(ctx: Context, x: Tensor, sigmas: list[float]) -> Tensor:
    """Linear multistep (Adams-Bashforth on the sigma grid) on the probability-flow ODE (k-diffusion)."""
    order = ctx.options.lms_order
    ds: list[Tensor] = []
    for i, sigma, _ in steps(sigmas):
        denoised = ctx.model(x, sigma)
        ctx.report(i, x, denoised, sigma)
        ds = (ds + [to_d(x, sigma, denoised)])[-order:]
        coeffs = lms_coefficients(sigmas, i, len(ds))
        for coeff, d in zip(coeffs, reversed(ds), strict=False):
            x = x + d * coeff
    return x


_PLMS_WEIGHTS = ((1.0,), (1.5, -0.5), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


def plms(ctx: Context, x: Tensor, sigmas: list[float]) -> Tensor:
    """PLMS (Liu et al. 2022, PNDM "F-PLMS"): constant Adams-Bashforth weights on eps, a Heun-like first step.

    In sigma form eps = (x - denoised) / sigma and the DDIM transfer step is x + (sigma' - sigma) * eps.
    """
    history: list[Tensor] = []
    for i, sigma, sigma_next in steps(sigmas):
        denoised = ctx.model(x, sigma)
        ctx.report(i, x, denoised, sigma)
        eps = to_d(x, sigma, denoised)
        if not history and sigma_next > 0.0:
            x_pred = x + eps * (sigma_next - sigma)
            eps_used = (eps + to_d(x_pred, sigma_next, ctx.model(x_pred, sigma_next))) * 0.5
        else:
            weights = _PLMS_WEIGHTS[len(history)]
            eps_used = eps * weights[0]
            for w, old in zip(weights[1:], reversed(history), strict=False):
                eps_used = eps_used + old * w
        history = (history + [eps])[-3:]
        x = x + eps_used * (sigma_next - sigma)
    return x


def dpmpp_2m(ctx: Context, x: Tensor, sigmas: list[float]) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2): second-order multistep in log-sigma."""
    old_denoised: Tensor | None = None
    h_last = 0.0
    for i, sigma, sigma_next in steps(sigmas):
        denoised = ctx.model(x, sigma)
        ctx.report(i, x, denoised, sigma)
        if sigma_next == 0.0:
            x = denoised
        else:
            h = math.log(sigma / sigma_next)
            dd = denoised
            if old_denoised is not None:
                r = h_last / h
                dd = denoised * (1 + 1 / (2 * r)) - old_denoised * (1 / (2 * r))
            x = x * (sigma_next / sigma) - dd * math.expm1(-h)
            h_last = h
        old_denoised = denoised
    return x


def dpmpp_2m_sde(
    ctx: Context, x: Tensor, sigmas: list[float], solver: Literal["midpoint", "heun"] = "midpoint"
) -> Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, "DPM-Solver++", §4 with eta): the 2M step with injected noise.

    ``solver`` picks the second-order correction: "midpoint" (k-diffusion default) or "heun".
    """
    eta = ctx.eta
    old_denoised: Tensor | None = None
    h_last = 0.0
    for i, sigma, sigma_next in steps(sigmas):
        denoised = ctx.model(x, sigma)
        ctx.report(i, x, denoised, sigma)
        if sigma_next == 0.0:
            x = denoised
        else:
            h = math.log(sigma / sigma_next)
            eta_h = eta * h
            phi = -math.expm1(-h - eta_h)
            x = x * (sigma_next / sigma * math.exp(-eta_h)) + denoised * phi
            if old_denoised is not None:
                r = h_last / h
                scale = (phi / (-h - eta_h) + 1) if solver == "heun" else 0.5 * phi
                x = x + (denoised - old_denoised) * (scale / r)
            x = ctx.add_noise(x, sigma, sigma_next, sigma_next * math.sqrt(-math.expm1(-2 * eta_h)))
            h_last = h
        old_denoised = denoised
    return x


def dpmpp_3m_sde(ctx: Context, x: Tensor, sigmas: list[float]) -> Tensor:
    """DPM-Solver++(3M) SDE (k-diffusion; Lu et al. 2022 third-order multistep with eta noise)."""
    eta = ctx.eta
    d_1: Tensor | None = None
    d_2: Tensor | None = None
    h_1 = h_2 = 0.0
    for i, sigma, sigma_next in steps(sigmas):
        denoised = ctx.model(x, sigma)
        ctx.report(i, x, denoised, sigma)
        if sigma_next == 0.0:
            x = denoised
        else:
            h = math.log(sigma / sigma_next)
            h_eta = h * (eta + 1)
            x = x * math.exp(-h_eta) + denoised * (-math.expm1(-h_eta))
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if d_2 is not None and d_1 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - d_1) / r0
                d1_1 = (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + d1 * phi_2 - d2 * (phi_2 / h_eta - 0.5)
            elif d_1 is not None:
                x = x + (denoised - d_1) * (phi_2 / (h_1 / h))
            x = ctx.add_noise(x, sigma, sigma_next, sigma_next * math.sqrt(-math.expm1(-2 * h * eta)))
            h_1, h_2 = h, h_1
        d_1, d_2 = denoised, d_1
    return x
