"""Tiled VAE decode and encode for big images: memory bounded by the tile, seams blended away.

Tiles overlap and are mixed with linear ramps (``huihua.upscale.tiled.tiled_map``). The VAE's
GroupNorms and mid-block attention see one tile at a time, so the result differs slightly from a
whole-image pass; the ramps keep that difference smooth, so no tile edge shows. Latents follow
``AutoencoderKL``'s convention: UNscaled (multiply by ``VAEConfig.scale_factor`` for the sampler).
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from huihua.errors import ParameterError
from huihua.nn.configs import VAEConfig
from huihua.upscale.tiled import tiled_map


class TileableVAE(Protocol):
    """What tiling needs of a VAE: ``huihua.nn.vae.AutoencoderKL`` fits."""

    cfg: VAEConfig

    def encode(self, pixels: Tensor) -> Tensor:
        """Pixels (B, 3, H, W) in [-1, 1] -> unscaled latents (B, z, H/f, W/f)."""
        ...

    def decode(self, latents: Tensor) -> Tensor:
        """Unscaled latents (B, z, h, w) -> pixels (B, 3, h*f, w*f)."""
        ...


def tiled_decode(vae: TileableVAE, latents: Tensor, tile: int = 64, overlap: int = 16) -> Tensor:
    """Decode unscaled latents (B, z, h, w) in tiles of ``tile`` latent pixels overlapping by ``overlap``."""
    if latents.dim() != 4 or latents.shape[1] != vae.cfg.z_channels:
        raise ParameterError(f"latents: expected (B, {vae.cfg.z_channels}, h, w), got {tuple(latents.shape)}")
    return tiled_map(vae.decode, latents, tile, overlap, up=vae.cfg.downscale)


def tiled_encode(vae: TileableVAE, pixels: Tensor, tile: int = 512, overlap: int = 64) -> Tensor:
    """Encode pixels (B, 3, H, W) in [-1, 1] to the unscaled latent mean, in tiles of ``tile`` pixels.

    H and W must be multiples of the VAE's downscale factor; ``tile`` and ``overlap`` are rounded
    down to multiples of it.
    """
    f = vae.cfg.downscale
    if pixels.dim() != 4 or pixels.shape[1] != vae.cfg.in_channels:
        raise ParameterError(f"pixels: expected (B, {vae.cfg.in_channels}, H, W), got {tuple(pixels.shape)}")
    if pixels.shape[-2] % f or pixels.shape[-1] % f:
        raise ParameterError(f"pixels: height and width must be multiples of {f}, got {tuple(pixels.shape[-2:])}")
    tile, overlap = max(f, tile // f * f), overlap // f * f
    return tiled_map(vae.encode, pixels, tile, min(overlap, tile - f), down=f)
