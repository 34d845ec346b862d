"""Pieces every pipeline shares: latent shapes, SDXL size conditioning, sampling, VAE encode and decode."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from huihua.diffusion import samplers, schedules
from huihua.diffusion.names import ResolvedNames, SamplerInfo
from huihua.diffusion.noise import NoiseSampler
from huihua.diffusion.samplers import Callback as StepCallback
from huihua.diffusion.samplers import Denoiser
from huihua.families import family_info
from huihua.model import Model
from huihua.nn.layers import timestep_embedding
from huihua.pipelines.tiled_vae import TileableVAE, tiled_decode, tiled_encode
from huihua.runtime import vae_guard


def latent_shape(engine: Model, width: int, height: int) -> tuple[int, int, int]:
    """(C, H/f, W/f) of the latents for an image of ``width × height`` pixels."""
    f = engine.spec.vae.downscale
    return engine.spec.latent_channels, height // f, width // f


@dataclass(frozen=True)
class SizeCond:
    """SDXL micro-conditioning: original size, crop corner, target size (pixels), refiner scores."""

    original: tuple[int, int]  # (height, width)
    crop: tuple[int, int]  # (top, left)
    target: tuple[int, int]  # (height, width)
    aesthetic_score: float = 6.0
    negative_aesthetic_score: float = 2.5


def sdxl_label(engine: Model, pooled: torch.Tensor, size: SizeCond, negative: bool = False) -> torch.Tensor:
    """SDXL's ``y``: pooled text + sinusoidal embeddings of sizes and crop (refiner: and the aesthetic score)."""
    if family_info(engine.spec.family).size_conditioning == "refiner":
        score = size.negative_aesthetic_score if negative else size.aesthetic_score
        numbers: list[float] = [*size.original, *size.crop, score]
    else:
        numbers = [*size.original, *size.crop, *size.target]
    adm = engine.spec.unet.adm_in_channels or 0
    dim = (adm - pooled.shape[-1]) // len(numbers)
    t = torch.tensor(numbers, dtype=torch.float32, device=pooled.device)
    emb = timestep_embedding(t, dim).reshape(1, -1).to(pooled.dtype)
    return torch.cat([pooled, emb.expand(pooled.shape[0], -1)], dim=-1)


def sample(
    sampler: SamplerInfo,
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    seeds: Sequence[int],
    *,
    eta: float | None = None,
    on_step: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """Run ``sampler`` from x (already at ``sigmas[0]``) down ``sigmas``; returns clean latents."""
    return samplers.sample(sampler, denoise, x, sigmas.to(x.device), noise_sampler, on_step,
                           seeds=list(seeds), options=samplers.SamplerOptions(eta=eta))


def full_sigmas(engine: Model, names: ResolvedNames, steps: int) -> torch.Tensor:
    """The schedule (steps+1 sigmas ending in 0) a sampler runs for ``steps`` steps."""
    # Align Your Steps has separate published lists for SD1-style and SDXL models (the families table).
    options = schedules.ScheduleOptions(ays_family=engine.spec.family)
    return schedules.sigmas_for(names, steps, engine.model_sampling, options=options)


def img2img_sigmas(engine: Model, names: ResolvedNames, steps: int, strength: float) -> torch.Tensor:
    """The tail of the schedule img2img runs for denoising ``strength`` (A1111's step arithmetic)."""
    return schedules.img2img_sigmas(lambda n: full_sigmas(engine, names, n), steps, strength)


# Latents with more pixels than this (128 x 128, a 1024 x 1024 SD1 image) go through the VAE in tiles.
TILED_VAE_MIN_LATENT_PIXELS = 128 * 128


def use_tiles(latent_hw: tuple[int, int], tiled: bool | None) -> bool:
    """Whether a VAE call on latents of ``latent_hw`` runs tiled (``tiled`` None: by size)."""
    if tiled is not None:
        return tiled
    return latent_hw[0] * latent_hw[1] > TILED_VAE_MIN_LATENT_PIXELS


def decode_latents(engine: Model, latents: torch.Tensor, tiled: bool | None = None) -> torch.Tensor:
    """Scaled latents (B, C, h, w) -> pixels (B, 3, H, W) in [-1, 1], float32, clamped.

    ``tiled``: decode in overlapping tiles (memory bounded by the tile); None decides by size.
    """
    vae_cfg = engine.spec.vae
    z = latents / vae_cfg.scale_factor + vae_cfg.shift_factor
    if use_tiles((z.shape[-2], z.shape[-1]), tiled):
        return vae_guard.guarded(engine.vae, lambda m, x: tiled_decode(cast(TileableVAE, m), x), z).float().clamp(-1, 1)
    return vae_guard.decode(engine.vae, z).float().clamp(-1, 1)


def encode_pixels(engine: Model, pixels: torch.Tensor, tiled: bool | None = None) -> torch.Tensor:
    """Pixels (B, 3, H, W) in [-1, 1] -> scaled latents (B, C, H/f, W/f) (the VAE's mean); ``tiled`` as decode."""
    vae_cfg = engine.spec.vae
    f = vae_cfg.downscale
    pixels = pixels.to(device=engine.device)
    if use_tiles((pixels.shape[-2] // f, pixels.shape[-1] // f), tiled):
        z = vae_guard.guarded(engine.vae, lambda m, x: tiled_encode(cast(TileableVAE, m), x), pixels).float()
    else:
        z = vae_guard.encode(engine.vae, pixels).float()
    return ((z - vae_cfg.shift_factor) * vae_cfg.scale_factor).to(engine.dtype)


def tensor_to_images(pixels: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> PIL RGB images (rounded, clamped)."""
    arr = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]


def images_to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL images of one size -> (B, 3, H, W) float32 in [-1, 1]."""
    arrays = [np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0


def decode_to_images(engine: Model, latents: torch.Tensor, tiled: bool | None = None) -> list[Image.Image]:
    """Scaled latents -> PIL RGB images (``tiled`` as ``decode_latents``)."""
    return tensor_to_images(decode_latents(engine, latents, tiled))


def progress_bar(total: int) -> tqdm:
    """A tqdm bar (step, it/s, ETA) on stderr."""
    return tqdm(total=total, unit="step", dynamic_ncols=True, leave=False)
