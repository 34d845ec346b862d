"""Noise schedules: functions that turn a step count into a decreasing list of sigmas ending in 0.

Every schedule returns ``steps + 1`` sigmas: ``steps`` noise levels from high to low, then 0, so any
schedule works with any sampler.  Formulas are computed in float64 from the model's training
sigmas (:class:`~huihua.diffusion.parametrization.ModelSampling`):

- Uniform / Normal: timesteps spaced evenly from T-1 to 0 (k-diffusion's ``get_sigmas``).
- Karras: Karras et al. (2022) eq. 5, ``rho = 7``.
- Exponential / Polyexponential: evenly spaced in log-sigma (k-diffusion).
- SGM Uniform: ``steps`` evenly spaced timesteps from T-1, leaving out the last (Stability's sgm).
- KL Optimal: ``tan`` of evenly spaced ``arctan(sigma)`` (Sabour et al. 2024), ``steps`` values
  from sigma_max to sigma_min then 0, as ComfyUI (A1111 stops at sigma_min without the 0).
- Align Your Steps: NVIDIA's published 10-step SD1.5 / SDXL lists (Sabour et al. 2024; 11 sigmas
  ending at sigma_min), log-linearly interpolated to ``steps + 1`` values whose last becomes 0, so
  10 steps give the published schedule exactly (ComfyUI, diffusers; A1111 resamples to ``steps``
  values and appends 0, which never reproduces the published list).
- Simple: every (T/steps)-th training sigma from the top (ComfyUI / A1111).
- DDIM: training sigmas at timesteps 1, 1+T//steps, ... (diffusers' "leading" spacing with offset
  1; identical to A1111 when T is a multiple of steps, and always exactly ``steps`` values).
- Beta: sigma_min + ppf_Beta(0.6, 0.6)(1 - i/(steps-1)) * (sigma_max - sigma_min) (A1111's form of
  Lee et al. 2024; ComfyUI applies the same quantiles to timesteps instead).

``get_sigmas`` resolves names, "Automatic" (the sampler's own default, see
:mod:`huihua.diffusion.names`) and A1111's "discard penultimate sigma" for DPM2 and DPM++ 3M SDE.
``img2img_sigmas`` cuts a schedule for a denoising strength with A1111's step arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from huihua.diffusion.names import ResolvedNames, resolve_names, schedule_key
from huihua.diffusion.parametrization import ModelSampling
from huihua.errors import ParameterError
from huihua.families import Family, family_info


@dataclass(frozen=True)
class ScheduleOptions:
    """Overrides of a schedule's parameters; None means the model's range or the schedule's default."""

    sigma_min: float | None = None
    sigma_max: float | None = None
    rho: float | None = None  # Karras: 7, Polyexponential: 1
    beta_alpha: float = 0.6
    beta_beta: float = 0.6
    ays_family: Family = "sd1"  # which published Align Your Steps list (families table)


def _f64(values: Tensor | list[float] | np.ndarray) -> Tensor:
    return torch.as_tensor(values, dtype=torch.float64)


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def _check_steps(steps: int) -> None:
    if steps < 1:
        raise ParameterError(f"steps: {steps} must be at least 1")


def _training_log_sigmas(ms: ModelSampling) -> Tensor:
    return ms.sigmas.to(torch.float64).log()


def _t_to_sigma(ms: ModelSampling, t: Tensor) -> Tensor:
    """Log-linear interpolation of the training sigmas at fractional timesteps, in float64."""
    log_sigmas = _training_log_sigmas(ms)
    t = t.clamp(0, log_sigmas.numel() - 1)
    low = t.floor().long()
    w = t - low
    high = t.ceil().long()
    return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()


def _sigma_to_t(ms: ModelSampling, sigma: float) -> float:
    return float(ms.sigma_to_t(torch.tensor([sigma], dtype=torch.float64))[0])


def karras(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022) eq. 5: evenly spaced in sigma^(1/rho)."""
    _check_steps(steps)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def exponential(steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    """Evenly spaced in log-sigma."""
    _check_steps(steps)
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64).exp())


def polyexponential(steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> Tensor:
    """log-sigma = log(sigma_min) + ramp^rho * (log(sigma_max) - log(sigma_min)), ramp from 1 to 0."""
    _check_steps(steps)
    ramp = torch.linspace(1, 0, steps, dtype=torch.float64) ** rho
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    return _append_zero((ramp * (hi - lo) + lo).exp())


def uniform(steps: int, ms: ModelSampling) -> Tensor:
    """Timesteps evenly spaced from T-1 down to 0 (k-diffusion's ``DiscreteSchedule.get_sigmas``)."""
    _check_steps(steps)
    return _append_zero(_t_to_sigma(ms, torch.linspace(ms.timesteps - 1, 0, steps, dtype=torch.float64)))


def normal(steps: int, ms: ModelSampling, sigma_min: float, sigma_max: float) -> Tensor:
    """Timesteps evenly spaced between those of sigma_max and sigma_min (A1111 / ComfyUI "normal")."""
    _check_steps(steps)
    start, end = _sigma_to_t(ms, sigma_max), _sigma_to_t(ms, sigma_min)
    return _append_zero(_t_to_sigma(ms, torch.linspace(start, end, steps, dtype=torch.float64)))


def sgm_uniform(steps: int, ms: ModelSampling, sigma_min: float, sigma_max: float) -> Tensor:
    """``steps + 1`` evenly spaced timesteps from sigma_max's to sigma_min's, the last replaced by 0."""
    _check_steps(steps)
    start, end = _sigma_to_t(ms, sigma_max), _sigma_to_t(ms, sigma_min)
    return _append_zero(_t_to_sigma(ms, torch.linspace(start, end, steps + 1, dtype=torch.float64)[:-1]))


def simple(steps: int, ms: ModelSampling) -> Tensor:
    """Every (T/steps)-th training sigma, from the top."""
    _check_steps(steps)
    sigmas = ms.sigmas.to(torch.float64)
    stride = ms.timesteps / steps
    return _append_zero(sigmas[[ms.timesteps - 1 - int(i * stride) for i in range(steps)]])


def ddim_uniform(steps: int, ms: ModelSampling) -> Tensor:
    """Training sigmas at timesteps 1 + k * (T // steps), k = steps-1 .. 0 (DDIM's timesteps)."""
    _check_steps(steps)
    stride = max(ms.timesteps // steps, 1)
    t = [min(1 + k * stride, ms.timesteps - 1) for k in range(steps)]
    return _append_zero(ms.sigmas.to(torch.float64)[t[::-1]])


def kl_optimal(steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    """tan of arctan(sigma) spaced evenly from sigma_max to sigma_min (KL-optimal schedule, Sabour et al. 2024)."""
    _check_steps(steps)
    w = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    return _append_zero(torch.tan(w * math.atan(sigma_min) + (1 - w) * math.atan(sigma_max)))


def loglinear_interp(values: tuple[float, ...] | list[float], count: int) -> Tensor:
    """``count`` values spread evenly over a decreasing list, interpolated linearly in log space."""
    xs = np.linspace(0, 1, len(values))
    log_values = np.log(np.asarray(values, dtype=np.float64)[::-1])
    interp = np.exp(np.interp(np.linspace(0, 1, count), xs, log_values))[::-1]
    return _f64(interp.copy())


def align_your_steps(steps: int, family: Family = "sd1") -> Tensor:
    """NVIDIA's Align Your Steps sigmas (SD1.5 or SDXL) log-linearly resampled to steps+1 values, the last set to 0."""
    _check_steps(steps)
    sigmas = loglinear_interp(family_info(family).ays_sigmas, steps + 1)
    sigmas[-1] = 0.0
    return sigmas


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    f, c, d = tiny, tiny, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-15:
            break
    return front * f


def beta_ppf(q: float, a: float, b: float) -> float:
    """Quantile function of the Beta(a, b) distribution (bisection on ``_betainc``, to 1e-15)."""
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    lo, hi = 0.0, 1.0
    while hi - lo > 1e-15:
        mid = 0.5 * (lo + hi)
        if _betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def beta(steps: int, sigma_min: float, sigma_max: float, alpha: float = 0.6, beta_: float = 0.6) -> Tensor:
    """Beta-distribution quantiles mapped linearly onto [sigma_min, sigma_max] (A1111's "Beta")."""
    _check_steps(steps)
    qs = 1 - np.linspace(0, 1, steps)
    return _append_zero(_f64([sigma_min + beta_ppf(float(q), alpha, beta_) * (sigma_max - sigma_min) for q in qs]))


def schedule(key: str, steps: int, ms: ModelSampling, options: ScheduleOptions | None = None) -> Tensor:
    """float64 sigmas (steps+1,) of the concrete schedule ``key`` (not "automatic") for model ``ms``."""
    o = options or ScheduleOptions()
    lo = o.sigma_min if o.sigma_min is not None else ms.sigma_min
    hi = o.sigma_max if o.sigma_max is not None else ms.sigma_max
    makers: dict[str, Callable[[], Tensor]] = {
        "uniform": lambda: uniform(steps, ms),
        "karras": lambda: karras(steps, lo, hi, o.rho if o.rho is not None else 7.0),
        "exponential": lambda: exponential(steps, lo, hi),
        "polyexponential": lambda: polyexponential(steps, lo, hi, o.rho if o.rho is not None else 1.0),
        "sgm_uniform": lambda: sgm_uniform(steps, ms, lo, hi),
        "kl_optimal": lambda: kl_optimal(steps, lo, hi),
        "align_your_steps": lambda: align_your_steps(steps, o.ays_family),
        "simple": lambda: simple(steps, ms),
        "normal": lambda: normal(steps, ms, lo, hi),
        "ddim_uniform": lambda: ddim_uniform(steps, ms),
        "beta": lambda: beta(steps, lo, hi, o.beta_alpha, o.beta_beta),
    }
    if key not in makers:
        raise ParameterError(f"schedule: {key!r} is not a concrete schedule key; valid: {', '.join(makers)}")
    return makers[key]()


def get_sigmas(
    name: str,
    steps: int,
    model_sampling: ModelSampling,
    *,
    sampler: str | None = None,
    options: ScheduleOptions | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Sigmas (steps+1,) ending in 0 for the schedule called ``name``, as sampler ``sampler`` wants them.

    With ``sampler`` given, "Automatic" means that sampler's default schedule and samplers that
    A1111 runs with the penultimate sigma discarded (DPM2, DPM2 a, DPM++ 3M SDE) get a schedule of
    steps+1 noise levels with sigmas[-2] removed.  Without it, "Automatic" means Uniform.
    """
    _check_steps(steps)
    if sampler is None:
        key = schedule_key(name)
        key = "uniform" if key == "automatic" else key
        return schedule(key, steps, model_sampling, options).to(dtype)
    return sigmas_for(resolve_names(sampler, name), steps, model_sampling, options=options, dtype=dtype)


def sigmas_for(
    names: ResolvedNames,
    steps: int,
    model_sampling: ModelSampling,
    *,
    options: ScheduleOptions | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Sigmas (steps+1,) ending in 0 for already resolved names (see ``get_sigmas``)."""
    _check_steps(steps)
    if names.sampler.discard_penultimate:
        sigmas = schedule(names.schedule, steps + 1, model_sampling, options)
        return torch.cat([sigmas[:-2], sigmas[-1:]]).to(dtype)
    return schedule(names.schedule, steps, model_sampling, options).to(dtype)


def img2img_sigmas(
    sigmas_fn: Callable[[int], Tensor], steps: int, strength: float, exact_steps: bool = False
) -> Tensor:
    """The tail of a schedule that img2img runs for denoising ``strength``, with A1111's arithmetic.

    ``sigmas_fn(n)`` must return the n+1 sigmas of an n-step schedule.  Strength is capped at 0.999.
    By default (A1111) the schedule has ``steps`` steps and the last ``int(strength * steps) + 1``
    of them run (``sigmas[steps - t_enc - 1:]`` with ``t_enc = int(strength * steps)``).  With
    ``exact_steps`` (A1111's "img2img_fix_steps") the schedule is stretched to
    ``int(steps / strength)`` steps and exactly ``steps`` of them run.  The pipeline starts from
    ``latent + noise * sigmas[0]``.
    """
    _check_steps(steps)
    if not 0.0 < strength <= 1.0:
        raise ParameterError(f"denoising strength: {strength} must be in (0, 1]")
    s = min(strength, 0.999)
    if exact_steps:
        total, t_enc = int(steps / s), steps - 1
    else:
        total, t_enc = steps, int(s * steps)
    sigmas = sigmas_fn(total)
    return sigmas[total - t_enc - 1 :]
