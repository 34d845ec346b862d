"""Latent upscale modes for hires fix (AUTOMATIC1111's "Latent (...)" upscalers): resize latents directly."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from huihua.errors import ParameterError


@dataclass(frozen=True)
class LatentMode:
    """How one latent upscale mode interpolates."""

    mode: str
    antialias: bool = False


LATENT_MODES: dict[str, LatentMode] = {
    "Latent": LatentMode("bilinear"),
    "Latent (antialiased)": LatentMode("bilinear", antialias=True),
    "Latent (bicubic)": LatentMode("bicubic"),
    "Latent (bicubic antialiased)": LatentMode("bicubic", antialias=True),
    "Latent (nearest)": LatentMode("nearest"),
    "Latent (nearest-exact)": LatentMode("nearest-exact"),
}


def upscale_latents(latents: Tensor, size: tuple[int, int], mode: str = "Latent") -> Tensor:
    """Resize latents (B, C, h, w) to ``size`` = (height, width) in latent pixels with an A1111 latent mode."""
    spec = LATENT_MODES.get(mode)
    if spec is None:
        raise ParameterError(f"latent upscale mode: unknown {mode!r}; valid: {', '.join(LATENT_MODES)}")
    if size[0] < 1 or size[1] < 1:
        raise ParameterError(f"latent size: height and width must be positive, got {size}")
    align = False if spec.mode in ("bilinear", "bicubic") else None
    return F.interpolate(latents, size=size, mode=spec.mode, antialias=spec.antialias, align_corners=align)
