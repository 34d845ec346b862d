"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models").

Data-prediction (x0) form in lambda = -log(sigma): each step runs the predictor UniP-p and, once the
model has been evaluated at the predicted point, the corrector UniC re-does the previous step with
that evaluation included (no extra model call).  ``variant`` is B(h) = h ("bh1") or e^h - 1 ("bh2").
Orders warm up from 1 and fall back towards 1 on the last steps (``lower_order_final``); the last
step to sigma = 0 is a plain jump to the data prediction.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from torch import Tensor

from huihua.diffusion.samplers.core import Context, steps

Variant = Literal["bh1", "bh2"]


def _coefficients(rks: list[float], h: float, variant: Variant) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(R, b, B(h), h*phi_1) of the UniPC linear system for ratios ``rks`` (last one 1) and step ``h``."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else math.expm1(hh)
    factorial = 1
    b = []
    for k in range(1, len(rks) + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    r = np.array([[rk ** (k - 1) for rk in rks] for k in range(1, len(rks) + 1)])
    return r, np.array(b), b_h, h_phi_1


def _differences(
    history: list[tuple[float, Tensor]], order: int, lam_0: float, h: float
) -> tuple[list[float], list[Tensor]]:
    """(r_k, D1_k) for k = 1..order-1: scaled differences of older data predictions from the newest."""
    _sigma_0, m0 = history[-1]
    rks, d1s = [], []
    for k in range(1, order):
        sigma_k, m_k = history[-(k + 1)]
        rk = (-math.log(sigma_k) - lam_0) / h
        rks.append(rk)
        d1s.append((m_k - m0) * (1.0 / rk))
    return rks + [1.0], d1s


def _predict(x: Tensor, history: list[tuple[float, Tensor]], sigma_next: float, order: int, variant: Variant) -> Tensor:
    """UniP-p: from the newest history point to sigma_next with ``order`` data predictions."""
    sigma_0, m0 = history[-1]
    lam_0 = -math.log(sigma_0)
    h = -math.log(sigma_next) - lam_0
    rks, d1s = _differences(history, order, lam_0, h)
    r, b, b_h, h_phi_1 = _coefficients(rks, h, variant)
    x_t = x * (sigma_next / sigma_0) - m0 * h_phi_1
    if order >= 2:
        rhos = [0.5] if order == 2 else np.linalg.solve(r[:-1, :-1], b[:-1]).tolist()
        for rho, d1 in zip(rhos, d1s, strict=False):
            x_t = x_t - d1 * (b_h * rho)
    return x_t


def _correct(
    x_last: Tensor, history: list[tuple[float, Tensor]], sigma: float, model_t: Tensor, order: int, variant: Variant
) -> Tensor:
    """UniC: redo the step from the newest history point to ``sigma`` using the model output there."""
    sigma_0, m0 = history[-1]
    lam_0 = -math.log(sigma_0)
    h = -math.log(sigma) - lam_0
    rks, d1s = _differences(history, order, lam_0, h)
    r, b, b_h, h_phi_1 = _coefficients(rks, h, variant)
    rhos = [0.5] if order == 1 else np.linalg.solve(r, b).tolist()
    x_t = x_last * (sigma / sigma_0) - m0 * h_phi_1
    for rho, d1 in zip(rhos[:-1], d1s, strict=False):
        x_t = x_t - d1 * (b_h * rho)
    return x_t - (model_t - m0) * (b_h * rhos[-1])


def unipc(ctx: Context, x: Tensor, sigmas: list[float], variant: Variant = "bh1") -> Tensor:
    """UniPC multistep predictor-corrector (Zhao et al. 2023), data prediction, order ``unipc_order``."""
    max_order = ctx.options.unipc_order
    n = len(sigmas) - 1
    history: list[tuple[float, Tensor]] = []
    x_last: Tensor | None = None
    last_order = 1
    for i, sigma, sigma_next in steps(sigmas):
        denoised = ctx.model(x, sigma)
        ctx.report(i, x, denoised, sigma)
        if x_last is not None:
            x = _correct(x_last, history, sigma, denoised, last_order, variant)
        history = (history + [(sigma, denoised)])[-max_order:]
        last_order = min(max_order, n - i, len(history))
        x_last = x
        x = denoised if sigma_next == 0.0 else _predict(x, history, sigma_next, last_order, variant)
    return x
