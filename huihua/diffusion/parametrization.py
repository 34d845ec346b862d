"""The model's discrete training schedule and the eps / v parametrizations that make it a denoiser.

A network trained on the DDPM schedule predicts the noise (``eps``) or the velocity (``v``) of a
noisy latent at an integer timestep.  Samplers instead want ``denoise(x, sigma) -> x0`` on the
variance-exploding scale ``x = x0 + sigma * noise`` (Karras et al. 2022, "Elucidating the Design
Space of Diffusion-Based Generative Models", Table 1).  :class:`ModelSampling` holds the 1000
training sigmas and converts sigma <-> timestep by interpolating in log-sigma, as k-diffusion does;
:func:`make_denoiser` applies ``c_in``, the timestep conversion and ``c_skip`` / ``c_out``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from huihua.errors import ParameterError

Prediction = Literal["eps", "v"]
RawModel = Callable[[Tensor, Tensor], Tensor]
Denoiser = Callable[[Tensor, Tensor], Tensor]

# A1111 and ComfyUI keep the last cumulative alpha of a zero-terminal-SNR schedule just above 0 so
# that sigma_max stays finite (sigma_max ~ 4519 instead of infinity).
ZERO_SNR_LAST_ALPHA_CUMPROD = 4.8973451890853435e-08


def scaled_linear_alphas_cumprod(linear_start: float, linear_end: float, timesteps: int) -> Tensor:
    """LDM's "scaled linear" schedule: betas = linspace(sqrt(start), sqrt(end), T)**2, cumulated in float64."""
    betas = torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def rescale_zero_terminal_snr(alphas_cumprod: Tensor) -> Tensor:
    """Shift and scale sqrt(alphas_cumprod) so the last timestep has zero SNR (Lin et al. 2023, Alg. 1)."""
    root = alphas_cumprod.to(torch.float64).sqrt()
    first, last = root[0].item(), root[-1].item()
    root = (root - last) * (first / (first - last))
    rescaled = root**2
    rescaled[-1] = ZERO_SNR_LAST_ALPHA_CUMPROD
    return rescaled


@dataclass(frozen=True, eq=False)
class ModelSampling:
    """A discrete diffusion schedule (``sigmas`` increasing with timestep) and its parametrization."""

    sigmas: Tensor  # (T,) float32, sigmas[t] = sqrt((1 - alphas_cumprod[t]) / alphas_cumprod[t])
    prediction: Prediction = "eps"
    sigma_data: float = 1.0

    def __post_init__(self) -> None:
        if self.prediction not in ("eps", "v"):
            raise ParameterError(f"ModelSampling.prediction: {self.prediction!r} is not 'eps' or 'v'")
        if self.sigmas.ndim != 1 or self.sigmas.numel() < 2:
            raise ParameterError("ModelSampling.sigmas: want a 1-D tensor of at least 2 training sigmas")

    @classmethod
    def for_sd(
        cls,
        prediction: Prediction = "eps",
        zero_terminal_snr: bool = False,
        linear_start: float = 0.00085,
        linear_end: float = 0.012,
        timesteps: int = 1000,
    ) -> ModelSampling:
        """The schedule every Stable Diffusion release was trained on (optionally zero-terminal-SNR)."""
        if timesteps < 2:
            raise ParameterError(f"ModelSampling.for_sd: timesteps={timesteps} must be at least 2")
        alphas_cumprod = scaled_linear_alphas_cumprod(linear_start, linear_end, timesteps)
        if zero_terminal_snr:
            alphas_cumprod = rescale_zero_terminal_snr(alphas_cumprod)
        return cls.from_alphas_cumprod(alphas_cumprod, prediction)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Tensor, prediction: Prediction = "eps") -> ModelSampling:
        """Build from cumulative alphas; like LDM, they are stored as float32 before sigmas are taken."""
        ac = alphas_cumprod.to(torch.float32)
        return cls(sigmas=((1 - ac) / ac) ** 0.5, prediction=prediction)

    @property
    def timesteps(self) -> int:
        """Number of training timesteps T."""
        return self.sigmas.numel()

    @property
    def sigma_min(self) -> float:
        """Smallest training sigma (timestep 0)."""
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        """Largest training sigma (timestep T-1)."""
        return float(self.sigmas[-1])

    @property
    def log_sigmas(self) -> Tensor:
        """log(sigmas) (T,), the axis on which timesteps are interpolated."""
        return self.sigmas.log()

    @property
    def alphas_cumprod(self) -> Tensor:
        """1 / (1 + sigma^2) for each training timestep (T,)."""
        return 1.0 / (1.0 + self.sigmas.to(torch.float64) ** 2)

    def sigma_to_t(self, sigma: Tensor, quantize: bool = False) -> Tensor:
        """Fractional timestep of each sigma, interpolated linearly in log-sigma (clamped to [0, T-1])."""
        return sigma_to_t(self.log_sigmas.to(sigma.device), sigma, quantize)

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """Sigma at fractional timesteps t, interpolated linearly in log-sigma."""
        return t_to_sigma(self.log_sigmas.to(t.device), t)

    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in) so that x0 = c_skip * x + c_out * model(c_in * x, t)."""
        return scalings(self.prediction, sigma, self.sigma_data)


def sigma_to_t(log_sigmas: Tensor, sigma: Tensor, quantize: bool = False) -> Tensor:
    """Timesteps for ``sigma`` given the increasing table ``log_sigmas`` (T,), on the table's device."""
    log_sigmas = log_sigmas.to(torch.promote_types(log_sigmas.dtype, sigma.dtype))
    log_sigma = sigma.to(log_sigmas.dtype).log()
    if quantize:
        return (log_sigma.reshape(-1, 1) - log_sigmas).abs().argmin(dim=1).reshape(sigma.shape).to(sigma.dtype)
    last = log_sigmas.numel() - 1
    high = torch.searchsorted(log_sigmas, log_sigma.contiguous()).clamp(1, last)
    low = high - 1
    lo, hi = log_sigmas[low], log_sigmas[high]
    w = ((log_sigma - lo) / (hi - lo)).clamp(0.0, 1.0)
    return (low.to(w.dtype) + w).to(sigma.dtype)


def t_to_sigma(log_sigmas: Tensor, t: Tensor) -> Tensor:
    """Sigmas at fractional timesteps ``t`` (clamped to [0, T-1]) from the table ``log_sigmas``."""
    dtype = t.dtype if t.is_floating_point() else log_sigmas.dtype
    log_sigmas = log_sigmas.to(torch.promote_types(log_sigmas.dtype, dtype))
    t = t.to(log_sigmas.dtype).clamp(0, log_sigmas.numel() - 1)
    low = t.floor().long()
    high = t.ceil().long()
    w = t - low.to(t.dtype)
    return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp().to(dtype)


def scalings(prediction: Prediction, sigma: Tensor, sigma_data: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Karras et al. (2022) preconditioning of an eps- or v-prediction network at noise level ``sigma``."""
    c_in = 1.0 / (sigma**2 + sigma_data**2) ** 0.5
    if prediction == "eps":
        return torch.ones_like(sigma), -sigma, c_in
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = -sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
    return c_skip, c_out, c_in


class _DiscreteDenoiser:
    """``denoise(x, sigma)`` for a raw eps/v network; keeps a copy of the sigma table per device."""

    def __init__(self, model: RawModel, ms: ModelSampling, quantize: bool) -> None:
        self.model = model
        self.ms = ms
        self.quantize = quantize
        self._log_sigmas: dict[torch.device, Tensor] = {}

    def _table(self, device: torch.device) -> Tensor:
        table = self._log_sigmas.get(device)
        if table is None:
            table = self._log_sigmas[device] = self.ms.log_sigmas.to(device)
        return table

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """x (B, ...) at noise level sigma (B,) -> predicted x0 (B, ...), in x's dtype."""
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        sigma = sigma.to(device=x.device, dtype=work).reshape(-1)
        if sigma.numel() == 1 and x.shape[0] != 1:
            sigma = sigma.expand(x.shape[0])
        c_skip, c_out, c_in = (c.reshape(-1, *([1] * (x.ndim - 1))) for c in self.ms.scalings(sigma))
        t = sigma_to_t(self._table(x.device), sigma, self.quantize)
        out = self.model((x * c_in).to(x.dtype), t)
        return (x * c_skip + out.to(c_out.dtype) * c_out).to(x.dtype)


def make_denoiser(model: RawModel, ms: ModelSampling, quantize: bool = False) -> Denoiser:
    """Wrap ``model(x_scaled, timesteps)`` (eps or v output, per ``ms.prediction``) into ``denoise(x, sigma) -> x0``."""
    return _DiscreteDenoiser(model, ms, quantize)

