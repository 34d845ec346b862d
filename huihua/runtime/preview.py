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

from huihua.errors import ParameterError
from huihua.families import Family, family_info


def latent_rgb_factors(family: Family) -> tuple[Tensor, Tensor]:
    """(4, 3) matrix and (3,) bias of the linear latent -> RGB approximation for a model family."""
    row = family_info(family)
    return torch.tensor(row.latent_rgb), torch.tensor(row.latent_rgb_bias)


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


SamplerCallback = Callable[[int, Tensor, Tensor, float], None]  # the samplers' step callback


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

    Steps are counted over every call it sees (every pass, every batch of a generation): previews
    go out at running steps 0, every, 2·every, ... ``emit(step, image)`` receives them; ``inner``
    (if given) is called on every step first. ``source`` picks what is shown: the model's current
    estimate of the clean image ("denoised") or the noisy sample ("x"). With ``downscale`` the
    preview is resized to the picture's size (latent size × downscale).
    """

    def __init__(
        self,
        emit: Callable[[int, Image.Image], None],
        family: Family,
        every: int = 1,
        decoder: PreviewDecoder | None = None,
        inner: SamplerCallback | None = None,
        source: Literal["denoised", "x"] = "denoised",
        downscale: int | None = None,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ParameterError(f"preview_every: must be a whole number of steps >= 1, got {every!r}")
        if source not in ("denoised", "x"):
            raise ParameterError(f"preview source: 'denoised' or 'x', got {source!r}")
        if decoder is None:
            latent_rgb_factors(family)  # fail now, not in the middle of sampling
        self._emit, self._family, self._every, self._downscale = emit, family, every, downscale
        self._decoder, self._inner, self._source = decoder, inner, source
        self.steps = 0  # sampling steps seen so far

    def __call__(self, step: int, x: Tensor, denoised: Tensor, sigma: float) -> None:
        """Forward to ``inner``, then emit a preview when the running step is a multiple of ``every``."""
        if self._inner is not None:
            self._inner(step, x, denoised, sigma)
        count, self.steps = self.steps, self.steps + 1
        if count % self._every:
            return
        latents = denoised if self._source == "denoised" else x
        image = preview_image(latents, self._family, self._decoder)
        if self._downscale is not None:
            size = (latents.shape[-1] * self._downscale, latents.shape[-2] * self._downscale)
            image = image if image.size == size else image.resize(size, Image.Resampling.BILINEAR)
        self._emit(count, image)
