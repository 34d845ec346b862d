"""img2img: init pictures -> VAE latents -> noised to the strength's first sigma -> sampler -> latents.

A1111's semantics: ``denoising_strength`` picks the tail of the schedule (``schedules.img2img_sigmas``);
strength 0 skips sampling, so the picture comes back through exactly one VAE round trip. The same
code runs inpainting (``inpaint.py`` adds the mask: latent blending, masked-content modes, and the
mask-and-picture conditioning of 9-channel inpainting models).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from huihua.errors import ParameterError
from huihua.pipelines.common import encode_pixels, images_to_tensor, img2img_sigmas
from huihua.pipelines.conditioning import LatentBlend
from huihua.pipelines.images import resize_image, round_to_multiple
from huihua.pipelines.job import Job, inpaint_concat
from huihua.pipelines.sampling import run_pass
from huihua.pipelines.txt2img import batch_noise
from huihua.pipelines.types import InpaintFill, ResizeMode
from huihua.upscale.latent import upscale_latents


@dataclass(frozen=True, eq=False)
class InitBatch:
    """One batch's start: pictures at generation size (B, 3, H, W) and their latents (B, C, h, w)."""

    pixels: torch.Tensor
    latents: torch.Tensor


def fit_init_images(images: Sequence[Image.Image], mode: ResizeMode, width: int, height: int) -> list[Image.Image]:
    """Init pictures fitted to the generation size (latent upscale: returned unchanged)."""
    if not images:
        raise ParameterError("init_images: at least one picture is required")
    if mode is ResizeMode.LATENT_UPSCALE:
        return [im.convert("RGB") for im in images]
    return [resize_image(mode, im.convert("RGB"), width, height) for im in images]


def init_batch(job: Job, images: Sequence[Image.Image]) -> InitBatch:
    """Encode a batch of fitted pictures; resize mode 3 encodes at their own size and resizes the latents."""
    p, engine = job.p, job.engine
    assert p.width is not None and p.height is not None
    if job.rp.resize is ResizeMode.LATENT_UPSCALE:
        f = engine.spec.vae.downscale
        own = [round_to_multiple(im, 8) for im in images]
        latents = torch.cat([encode_pixels(engine, images_to_tensor([im]), job.tiled_vae) for im in own])
        latents = upscale_latents(latents.float(), (p.height // f, p.width // f)).to(engine.dtype)
        pixels = images_to_tensor([im.resize((p.width, p.height), Image.Resampling.LANCZOS) for im in images])
        return InitBatch(pixels, latents)
    pixels = images_to_tensor(images)
    return InitBatch(pixels, encode_pixels(engine, pixels, job.tiled_vae))


def masked_start(job: Job, init: torch.Tensor, repaint: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
    """A1111's masked content in latent space: "latent noise", "latent nothing", else unchanged."""
    p = job.p
    if job.rp.fill is InpaintFill.LATENT_NOISE:
        assert p.width is not None and p.height is not None
        noise = batch_noise(job, seeds, p.width, p.height)
        return init * (1 - repaint) + noise * repaint
    if job.rp.fill is InpaintFill.LATENT_NOTHING:
        return init * (1 - repaint)
    return init


def img2img_latents(job: Job, seeds: Sequence[int], batch: InitBatch, *,
                    repaint: torch.Tensor | None = None, cond_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Clean latents of one batch started from ``batch``.

    ``repaint`` (1, 1, h, w) in {0, 1} turns on latent blending (inpainting); ``cond_mask`` (1, 1, H,
    W) is the binary pixel mask the 9-channel models see (all ones when None).
    """
    p, engine = job.p, job.engine
    assert p.width is not None and p.height is not None
    init = batch.latents
    blend = None
    if repaint is not None:
        repaint = repaint.to(init.device, init.dtype)
        blend = LatentBlend(init, 1 - repaint)
        init = masked_start(job, init, repaint, seeds)
    if p.denoising_strength == 0:
        return blend.apply(init) if blend is not None else init
    sigmas = img2img_sigmas(engine, job.rp.first, p.steps, p.denoising_strength).to(init.device)
    noise = batch_noise(job, seeds, p.width, p.height)
    x = init + noise * sigmas[0].to(noise.dtype)
    mask = cond_mask if cond_mask is not None else torch.ones(1, 1, p.height, p.width)
    pixels = batch.pixels.to(engine.device)
    return run_pass(job.stage(engine), job.settings(p.width, p.height), x, sigmas, seeds,
                    concat=lambda e: inpaint_concat(e, pixels, mask, job.tiled_vae), blend=blend,
                    refiner=job.refiner_stage(), switch_at=p.refiner_switch_at, on_step=job.on_step,
                    unet=job.controlled_unet(sigmas, p.width, p.height))
