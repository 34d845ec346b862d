"""txt2img: prompt -> conditioning -> seeded noise -> sampler -> VAE -> PIL images.

One image is followed from ``huihua generate`` to the PNG through this file, ``common.py`` (guidance,
noise, decoding) and the sampler functions in ``huihua.diffusion``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from huihua.pipelines.common import (
    SamplerCallback,
    build_denoiser,
    decode_latents,
    initial_noise,
    resolve_seeds,
    sample_latents,
)
from huihua.pipelines.params import GenerationParams, validate

if TYPE_CHECKING:
    from huihua.engine import Engine, GenerationResult


def resolve_params(engine: Engine, params: GenerationParams) -> GenerationParams:
    """Fill model-dependent defaults (size, a concrete seed) and validate."""
    res = engine.spec.native_resolution
    p = params.with_size(params.width or res, params.height or res)
    validate(p, multiple=engine.spec.vae.downscale)
    seeds = resolve_seeds(p.seed, 1)
    return replace(p, seed=seeds[0])


@torch.inference_mode()
def generate(
    engine: Engine,
    params: GenerationParams | None = None,
    *,
    callback: SamplerCallback | None = None,
    progress: bool = False,
    **kwargs: Any,
) -> GenerationResult:
    """Paint ``batch_size × n_iter`` images; image k uses seed + k."""
    from huihua.engine import GenerationResult
    from huihua.pipelines.infotext import format_infotext_for

    p = resolve_params(engine, params if params is not None else GenerationParams.from_kwargs(**kwargs))
    cond = engine.encode_prompt(p.prompt, clip_skip=p.clip_skip)
    uncond = engine.encode_prompt(p.negative_prompt, clip_skip=p.clip_skip) if p.cfg_scale != 1.0 else None
    images, seeds = [], []
    for it in range(p.n_iter):
        batch_seeds = [p.seed + it * p.batch_size + k for k in range(p.batch_size)]
        noise = initial_noise(engine, batch_seeds, p.width, p.height)
        denoise = build_denoiser(engine, cond, uncond, p, noise.shape[0])
        latents = sample_latents(engine, denoise, noise, p, batch_seeds, callback=callback, progress=progress)
        images.extend(decode_latents(engine, latents))
        seeds.extend(batch_seeds)
    infotexts = [format_infotext_for(engine, p, seed=s, index=i) for i, s in enumerate(seeds)]
    return GenerationResult(images=images, seeds=seeds, infotexts=infotexts, parameters=p)


def make_generate_fn(engine: Engine, **fixed: Any) -> Callable[[str, int], Any]:
    """``fn(prompt, seed) -> PIL image`` with the other parameters fixed (for evaluations and grids)."""

    def fn(prompt: str, seed: int):
        return generate(engine, prompt=prompt, seed=seed, **fixed).images[0]

    return fn
