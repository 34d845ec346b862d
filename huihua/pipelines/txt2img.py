"""txt2img: seeded noise -> sampler (base model, then the refiner after the switch) -> latents.

One image is followed from ``huihua generate`` to the PNG through ``generate.py`` (the dispatcher),
this file, ``sampling.py`` / ``conditioning.py`` (the denoiser the sampler calls), ``common.py``
(VAE) and the sampler functions in ``huihua.diffusion``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from huihua.pipelines.common import full_sigmas, latent_shape
from huihua.pipelines.job import Job, blank_concat
from huihua.pipelines.sampling import run_pass
from huihua.pipelines.seeds import create_noise, noise_recipe


def batch_noise(job: Job, seeds: Sequence[int], width: int, height: int) -> torch.Tensor:
    """The initial noise of a batch at ``width × height`` (variation seeds and resize-from applied)."""
    p, engine = job.p, job.engine
    recipe = noise_recipe(seeds, p.subseed, p.subseed_strength, (p.seed_resize_from_h, p.seed_resize_from_w),
                          engine.spec.vae.downscale)
    return create_noise((len(seeds), *latent_shape(engine, width, height)), recipe, engine.device, engine.dtype)


def txt2img_latents(job: Job, seeds: Sequence[int]) -> torch.Tensor:
    """Clean latents (B, C, h, w) of one batch painted from pure noise."""
    p, engine = job.p, job.engine
    assert p.width is not None and p.height is not None
    width, height = p.width, p.height
    noise = batch_noise(job, seeds, width, height)
    sigmas = full_sigmas(engine, job.rp.first, p.steps).to(noise.device)
    x = noise * sigmas[0].to(noise.dtype)
    n = len(seeds)
    return run_pass(job.stage(engine), job.settings(p.width, p.height), x, sigmas, seeds,
                    concat=lambda e: blank_concat(e, n, width, height, job.tiled_vae),
                    refiner=job.refiner_stage(), switch_at=p.refiner_switch_at, on_step=job.on_step,
                    unet=job.controlled_unet(sigmas, p.width, p.height))
