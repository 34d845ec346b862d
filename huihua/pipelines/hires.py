"""Hires fix: upscale the first pass, then a second img2img pass with its own strength, steps, sampler, prompt.

Upscalers by A1111 name: the "Latent ..." modes resize latents directly (``huihua.upscale.latent``:
nearest, bilinear, bicubic, antialiased); "Lanczos", "Nearest" and "None" decode, resize the
pixels and encode again; any other name is looked up in ``PipelineHooks.upscalers`` (neural
upscalers such as ESRGAN plug in there). The second pass draws fresh noise from the same seeds at
the new size, and reads prompt-editing numbers as A1111's hires rule does (``1.5`` = half-way
through the second pass).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from huihua.errors import ParameterError
from huihua.pipelines.common import (
    decode_to_images,
    encode_pixels,
    images_to_tensor,
    img2img_sigmas,
)
from huihua.pipelines.hooks import PipelineHooks, PixelUpscaler
from huihua.pipelines.job import Job, blank_concat
from huihua.pipelines.params import hires_size
from huihua.pipelines.sampling import run_pass
from huihua.pipelines.txt2img import batch_noise
from huihua.upscale.latent import LATENT_MODES, upscale_latents

BUILTIN_PIXEL_UPSCALERS = ("Lanczos", "Nearest", "None")


def _resize(resample: Image.Resampling) -> PixelUpscaler:
    def upscale(image: Image.Image, size: tuple[int, int]) -> Image.Image:
        return image.resize(size, resample)

    return upscale


def pixel_upscaler(name: str, hooks: PipelineHooks) -> PixelUpscaler | None:
    """The pixel upscaler called ``name``, or None for a latent mode; ParameterError when unknown."""

    if name in LATENT_MODES:
        return None
    if name in hooks.upscalers:
        return hooks.upscalers[name]
    if name in ("Lanczos", "None"):
        return _resize(Image.Resampling.LANCZOS)
    if name == "Nearest":
        return _resize(Image.Resampling.NEAREST)
    known = [*LATENT_MODES, *BUILTIN_PIXEL_UPSCALERS, *hooks.upscalers]
    raise ParameterError(f"hr_upscaler: unknown upscaler {name!r}; valid: {', '.join(known)}")


def upscale_first_pass(job: Job, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """First-pass latents resized to ``width × height`` pixels' worth of latents."""

    engine, f = job.engine, job.engine.spec.vae.downscale
    upscaler = pixel_upscaler(job.p.hr_upscaler, job.hooks)
    if upscaler is None:
        return upscale_latents(latents.float(), (height // f, width // f), job.p.hr_upscaler).to(latents.dtype)
    images = [upscaler(im, (width, height)) for im in decode_to_images(engine, latents, job.tiled_vae)]
    images = [im if im.size == (width, height) else im.resize((width, height), Image.Resampling.LANCZOS)
              for im in images]
    return encode_pixels(engine, images_to_tensor(images), job.tiled_vae)


def hires_latents(job: Job, latents: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
    """The second pass: upscale, noise to the hires strength, sample with the hires settings."""
    p, engine = job.p, job.engine
    width, height = hires_size(p)
    x0 = upscale_first_pass(job, latents, width, height)
    if p.hr_strength == 0:
        return x0
    sigmas = img2img_sigmas(engine, job.rp.hires, job.hires_steps, p.hr_strength)
    sigmas = sigmas.to(x0.device)
    noise = batch_noise(job, seeds, width, height)
    x = x0 + noise * sigmas[0].to(noise.dtype)
    n = len(seeds)
    return run_pass(job.stage(engine, hires=True), job.settings(width, height, hires=True), x, sigmas, seeds,
                    concat=lambda e: blank_concat(e, n, width, height, job.tiled_vae),
                    refiner=job.refiner_stage(hires=True), switch_at=p.refiner_switch_at, on_step=job.on_step,
                    unet=job.controlled_unet(sigmas, width, height, hires=True))
