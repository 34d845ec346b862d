"""Live previews during sampling: TAESD when loaded, else a cheap linear latent -> RGB map.

The linear factors are the commonly used ones (ComfyUI's ``latent_formats``, A1111's "Approx cheap"):
a 4 x 3 matrix (plus a bias for SDXL) applied per latent pixel to SCALED latents (the sampler's
space), giving RGB in about [-1, 1]. Previews are at latent resolution for the approximation and full
resolution for TAESD.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from huihua.checkpoints.specs import Family
from huihua.errors import ParameterError

# Rows: latent channels 0..3; columns: R, G, B.
SD1_LATENT_RGB = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
SD1_LATENT_RGB_BIAS = (0.0, 0.0, 0.0)
SDXL_LATENT_RGB = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_LATENT_RGB_BIAS = (0.1084, -0.0175, -0.0011)


def latent_rgb_factors(family: Family) -> tuple[Tensor, Tensor]:
    """(4, 3) matrix and (3,) bias of the linear latent -> RGB approximation for a model family."""
    if family in ("sdxl", "sdxl_refiner"):
        return torch.tensor(SDXL_LATENT_RGB), torch.tensor(SDXL_LATENT_RGB_BIAS)
    if family in ("sd1", "sd2"):  # SD2 shares SD1's VAE and latent space
        return torch.tensor(SD1_LATENT_RGB), torch.tensor(SD1_LATENT_RGB_BIAS)
    raise ParameterError(f"family: no latent preview factors for {family!r}")


def latent_to_rgb_approx(latents: Tensor, family: Family) -> np.ndarray:
    """Scaled latents (B, 4, h, w) or (4, h, w) -> uint8 RGB (B, h, w, 3) or (h, w, 3), linear approximation."""
    squeeze = latents.dim() == 3
    z = latents[None] if squeeze else latents
    if z.dim() != 4 or z.shape[1] != 4:
        raise ParameterError(f"latents: expected (B, 4, h, w), got shape {tuple(latents.shape)}")
    matrix, bias = latent_rgb_factors(family)
    rgb = torch.einsum("bchw,cr->bhwr", z.detach().float().cpu(), matrix) + bias
    out = ((rgb + 1.0) / 2.0).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).numpy()
    return out[0] if squeeze else out


class PreviewDecoder(Protocol):
    """Anything that decodes scaled latents (B, C, h, w) to pixels in [-1, 1], like ``TAESD.decode``."""

    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents -> pixels (B, 3, H, W) in [-1, 1]."""
        ...


SamplerCallback = Callable[[int, Tensor, Tensor, Tensor], None]


def preview_image(latents: Tensor, family: Family, decoder: PreviewDecoder | None = None) -> Image.Image:
    """PIL preview of the first sample of scaled latents (B, 4, h, w): TAESD if given, else the approximation."""
    if decoder is None:
        return Image.fromarray(latent_to_rgb_approx(latents[:1], family)[0])
    with torch.inference_mode():
        pixels = decoder.decode(latents[:1])
    arr = pixels[0].float().add(1.0).div(2.0).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).cpu().numpy())


class PreviewCallback:
    """Sampler callback ``(step, x, denoised, sigma)`` that emits a PIL preview every ``every`` steps.

    ``emit(step, image)`` receives the previews; ``inner`` (if given) is called on every step first.
    ``source`` picks what is shown: the model's current estimate of the clean image ("denoised") or
    the noisy sample ("x").
    """

    def __init__(
        self,
        emit: Callable[[int, Image.Image], None],
        family: Family,
        every: int = 1,
        decoder: PreviewDecoder | None = None,
        inner: SamplerCallback | None = None,
        source: Literal["denoised", "x"] = "denoised",
    ) -> None:
        if every < 1:
            raise ParameterError(f"preview every: must be at least 1 step, got {every}")
        if source not in ("denoised", "x"):
            raise ParameterError(f"preview source: 'denoised' or 'x', got {source!r}")
        latent_rgb_factors(family)  # fail now, not in the middle of sampling
        self._emit, self._family, self._every = emit, family, every
        self._decoder, self._inner, self._source = decoder, inner, source

    def __call__(self, step: int, x: Tensor, denoised: Tensor, sigma: Tensor) -> None:
        """Forward to ``inner``, then emit a preview when ``step`` is a multiple of ``every``."""
        if self._inner is not None:
            self._inner(step, x, denoised, sigma)
        if step % self._every == 0:
            latents = denoised if self._source == "denoised" else x
            self._emit(step, preview_image(latents, self._family, self._decoder))
