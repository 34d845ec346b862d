"""Pieces every pipeline shares: seeds and noise, SDXL size conditioning, guidance, sampling, decoding."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from huihua.nn.layers import timestep_embedding

if TYPE_CHECKING:
    from huihua.engine import Engine, PromptEmbedding
    from huihua.pipelines.params import GenerationParams

SamplerCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def resolve_seeds(seed: int, count: int) -> list[int]:
    """``count`` consecutive seeds starting at ``seed``; -1 picks a random start."""
    start = secrets.randbelow(2**32 - count) if seed == -1 else seed
    return [start + k for k in range(count)]


def latent_shape(engine: Engine, width: int, height: int) -> tuple[int, int, int]:
    """(C, H/f, W/f) of the latents for an image of ``width × height`` pixels."""
    f = engine.spec.vae.downscale
    return engine.spec.latent_channels, height // f, width // f


def initial_noise(engine: Engine, seeds: Sequence[int], width: int, height: int) -> torch.Tensor:
    """Gaussian noise, one CPU generator per image, so a seed paints the same picture on any device."""
    from huihua.diffusion.noise import seeded_randn

    return seeded_randn((len(seeds), *latent_shape(engine, width, height)), seeds, engine.device, engine.dtype)


def sdxl_label(engine: Engine, pooled: torch.Tensor, width: int, height: int,
               crop: tuple[int, int] = (0, 0), aesthetic_score: float = 6.0) -> torch.Tensor:
    """SDXL's ``y``: pooled text embedding + sinusoidal embeddings of sizes, crop (and score for the refiner)."""
    if engine.spec.family == "sdxl":
        numbers = [height, width, crop[0], crop[1], height, width]
    else:  # refiner: original size, crop, aesthetic score
        numbers = [height, width, crop[0], crop[1], aesthetic_score]
    adm = engine.spec.unet.adm_in_channels or 0
    dim = (adm - pooled.shape[-1]) // len(numbers)
    t = torch.tensor(numbers, dtype=torch.float32, device=pooled.device)
    emb = timestep_embedding(t, dim).reshape(1, -1).to(pooled.dtype)
    return torch.cat([pooled, emb.expand(pooled.shape[0], -1)], dim=-1)


def _label(engine: Engine, emb: PromptEmbedding, p: GenerationParams) -> torch.Tensor | None:
    if engine.spec.unet.adm_in_channels is None:
        return None
    assert emb.pooled is not None and p.width is not None and p.height is not None
    return sdxl_label(engine, emb.pooled, p.width, p.height)


def build_denoiser(
    engine: Engine, cond: PromptEmbedding, uncond: PromptEmbedding | None, p: GenerationParams, batch: int
) -> Denoiser:
    """``denoise(x, sigma) -> x0`` with classifier-free guidance (one batched forward when shapes allow)."""
    from huihua.diffusion.parametrization import make_denoiser

    ms = engine.model_sampling
    y_c = _label(engine, cond, p)

    def expand(t: torch.Tensor | None, n: int) -> torch.Tensor | None:
        return None if t is None else t.expand(n, *t.shape[1:])

    def model_for(context: torch.Tensor, y: torch.Tensor | None) -> Denoiser:
        def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            n = x.shape[0]
            return engine.unet(x, t, expand(context, n), y=expand(y, n))

        return make_denoiser(model, ms)

    cond_d = model_for(cond.context, y_c)
    if uncond is None:
        return cond_d
    y_u = _label(engine, uncond, p)
    scale, rescale = p.cfg_scale, p.cfg_rescale
    same = cond.context.shape == uncond.context.shape
    if same:
        ctx = torch.cat([cond.context.expand(batch, -1, -1), uncond.context.expand(batch, -1, -1)])
        y = None if y_c is None else torch.cat([expand(y_c, batch), expand(y_u, batch)])
        both_d = model_for(ctx, y)
    uncond_d = model_for(uncond.context, y_u)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if same:
            c, u = both_d(torch.cat([x, x]), torch.cat([sigma, sigma])).chunk(2)
        else:
            c, u = cond_d(x, sigma), uncond_d(x, sigma)
        out = u + scale * (c - u)
        if rescale > 0:  # "Common Diffusion Noise Schedules and Sample Steps are Flawed", eq. 15-16
            dims = tuple(range(1, x.ndim))
            ratio = c.std(dim=dims, keepdim=True) / out.std(dim=dims, keepdim=True)
            out = rescale * out * ratio + (1 - rescale) * out
        return out

    return denoise


def sample_latents(
    engine: Engine,
    denoise: Denoiser,
    noise: torch.Tensor,
    p: GenerationParams,
    seeds: Sequence[int],
    *,
    callback: SamplerCallback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Run the chosen sampler and schedule from pure noise to clean latents."""
    from huihua.diffusion import samplers, schedules

    sigmas = schedules.get_sigmas(p.scheduler, steps=p.steps, model_sampling=engine.model_sampling,
                                  sampler=p.sampler_name).to(noise.device)
    x = noise * sigmas[0].to(noise.dtype)
    bar = _progress_bar(len(sigmas) - 1) if progress else None

    def on_step(step: int, x_: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor) -> None:
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback(step, x_, denoised, sigma)

    try:
        return samplers.sample(p.sampler_name, denoise, x, sigmas, callback=on_step, seeds=list(seeds),
                               options=samplers.SamplerOptions(eta=p.eta))
    finally:
        if bar is not None:
            bar.close()


def _progress_bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True, leave=False)


def decode_latents(engine: Engine, latents: torch.Tensor) -> list[Image.Image]:
    """Unscale latents, decode with the VAE and convert to 8-bit RGB images."""
    vae_cfg = engine.spec.vae
    z = latents / vae_cfg.scale_factor + vae_cfg.shift_factor
    pixels = engine.vae.decode(z.to(engine.dtype)).float()
    return tensor_to_images(pixels)


def tensor_to_images(pixels: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> PIL RGB images (rounded, clamped)."""
    arr = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]
