"""Upscalers for hires fix and ``huihua upscale``: ESRGAN-family nets (tiled), Lanczos, latent modes."""

from __future__ import annotations

from huihua.upscale.lanczos import lanczos, lanczos_to
from huihua.upscale.latent import LATENT_MODES, upscale_latents
from huihua.upscale.models import Upscaler, build_upscaler, load_upscaler
from huihua.upscale.tiled import tiled_map, upscale

__all__ = [
    "LATENT_MODES", "Upscaler", "build_upscaler", "lanczos", "lanczos_to", "load_upscaler", "tiled_map",
    "upscale", "upscale_latents",
]
