"""The one entry point of every pipeline: ``generate(engine, params, init_images=..., mask=...)``.

It dispatches on its inputs: no pictures -> txt2img (with hires fix when ``enable_hr``); pictures
-> img2img; pictures and a mask (or ``outpaint_*`` sizes) -> inpainting / outpainting. The same
call is ``engine.generate(...)``; keyword arguments are GenerationParams fields (``sampler=`` and
``schedule=`` are accepted as aliases of ``sampler_name`` and ``scheduler``) and override
``params`` when both are given. Everything is validated before the first step runs.

Batches: ``batch_size × n_iter`` images; image k uses seed + k (and variation seed subseed + k).
Init pictures are used in turn (image k starts from picture k mod len(init_images)).

Besides the parameters a call takes ControlNet units (``control.py``), a VAE file for the call,
tiled VAE, and live previews (``extras.py``); they are inputs like the pictures, not fields of
GenerationParams, and what they did is written into the infotext (``ControlNet 0``, ``VAE``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from huihua.engine import GenerationResult
from huihua.errors import ParameterError
from huihua.pipelines.common import SamplerCallback, decode_to_images, latent_shape, progress_bar
from huihua.pipelines.extras import PreviewFn, preview_callback, vae_for_call
from huihua.pipelines.hooks import PipelineHooks
from huihua.pipelines.infotext import RunInfo, format_infotext_for, json_record
from huihua.pipelines.job import Job, Prompts
from huihua.pipelines.params import GenerationParams, validate
from huihua.pipelines.seeds import resolve_seed

if TYPE_CHECKING:
    from huihua.adapters.controlnet import ControlNetUnit, PreparedUnit
    from huihua.engine import Engine
    from huihua.pipelines.inpaint import InpaintSetup
    from huihua.runtime.preview import PreviewDecoder


@dataclass(frozen=True)
class PipelineResult(GenerationResult):
    """A GenerationResult with each image's JSON record (the ``huihua`` PNG chunk) and the mode."""

    records: tuple[dict, ...] = ()
    mode: str = "txt2img"


def merge_params(params: GenerationParams | None, kwargs: dict[str, Any]) -> GenerationParams:
    """``params`` with keyword overrides (aliases accepted); defaults when ``params`` is None."""
    base = params if params is not None else GenerationParams()
    return GenerationParams.from_kwargs(**{**base.to_dict(), **kwargs}) if kwargs else base


def _default_size(engine: Engine, p: GenerationParams, images: Sequence[Image.Image] | None) -> GenerationParams:
    if images:  # img2img and inpainting default to the picture's size, rounded down to a multiple of 8
        w, h = images[0].size
        return p.with_size(p.width or max(8, w // 8 * 8), p.height or max(8, h // 8 * 8))
    res = engine.spec.native_resolution
    return p.with_size(p.width or res, p.height or res)


def resolve_params(engine: Engine, params: GenerationParams, images: Sequence[Image.Image] | None = None,
                   mode: str = "txt2img") -> GenerationParams:
    """Fill model-dependent defaults (size, concrete seeds) and validate."""
    p = _default_size(engine, params, images)
    validate(p, multiple=engine.spec.vae.downscale)
    if p.enable_hr and mode != "txt2img":
        raise ParameterError("enable_hr: the hires fix applies to txt2img only")
    return replace(p, seed=resolve_seed(p.seed), subseed=resolve_seed(p.subseed))


def _mode(p: GenerationParams, images: Sequence[Image.Image] | None, mask: Image.Image | None) -> str:
    from huihua.pipelines.inpaint import has_outpaint

    if (mask is not None or has_outpaint(p)) and not images:
        raise ParameterError("init_images: inpainting and outpainting need a picture")
    if mask is not None or has_outpaint(p):
        return "inpaint"
    return "img2img" if images else "txt2img"


def _total_steps(p: GenerationParams, mode: str) -> int:
    def tail(steps: int, strength: float) -> int:
        return 0 if strength == 0 else int(min(strength, 0.999) * steps) + 1

    first = p.steps if mode == "txt2img" else tail(p.steps, p.denoising_strength)
    second = tail(p.hr_second_pass_steps or p.steps, p.hr_strength) if p.enable_hr else 0
    return p.n_iter * (first + second)


def generate(
    engine: Engine,
    params: GenerationParams | None = None,
    *,
    init_images: Sequence[Image.Image] | None = None,
    mask: Image.Image | None = None,
    hooks: PipelineHooks | None = None,
    callback: SamplerCallback | None = None,
    progress: bool = False,
    controlnet_units: Sequence[ControlNetUnit | PreparedUnit] = (),
    vae: str | Path | None = None,
    tiled_vae: bool | None = None,
    preview: PreviewFn | None = None,
    preview_every: int = 1,
    taesd: str | Path | PreviewDecoder | None = None,
    **kwargs: Any,
) -> PipelineResult:
    """Paint ``batch_size × n_iter`` images (txt2img, img2img or inpainting by the inputs given).

    ``controlnet_units``: ControlNet units applied in every pass; ``vae``: a VAE file for this call
    only; ``tiled_vae``: VAE in tiles (None: above 128×128 latents); ``preview(step, image)`` every
    ``preview_every`` steps, decoded by ``taesd`` (a file or a loaded TAESD) or the linear approximation.
    """
    from huihua.pipelines.control import check_units

    check_units(engine, controlnet_units)
    if tiled_vae is not None and not isinstance(tiled_vae, bool):
        raise ParameterError(f"tiled_vae: True, False or None, got {tiled_vae!r}")
    callback = preview_callback(engine, preview, preview_every, taesd, callback)
    extras = _Extras(tuple(controlnet_units), tiled_vae)
    with vae_for_call(engine, vae), torch.inference_mode():  # the VAE file is read outside inference mode
        return _generate(engine, params, init_images, mask, hooks or PipelineHooks(), callback, progress, extras,
                         kwargs)


@dataclass(frozen=True, eq=False)
class _Extras:
    """The per-call inputs the passes read besides the parameters."""

    controlnet_units: tuple[ControlNetUnit | PreparedUnit, ...] = ()
    tiled_vae: bool | None = None


def _generate(engine: Engine, params: GenerationParams | None, init_images: Sequence[Image.Image] | None,
              mask: Image.Image | None, hooks: PipelineHooks, callback: SamplerCallback | None, progress: bool,
              extras: _Extras, kwargs: dict[str, Any]) -> PipelineResult:
    from huihua.pipelines.control import control_files, control_infotext
    from huihua.prompts.extra_networks import parse_extra_networks

    p0 = merge_params(params, kwargs)
    mode = _mode(p0, init_images, mask)
    images, mask, blur = _outpaint(p0, list(init_images or []), mask)
    p = resolve_params(engine, p0, images, mode)
    if p.enable_hr:
        from huihua.pipelines.hires import pixel_upscaler

        pixel_upscaler(p.hr_upscaler, hooks)
    prompt, calls = parse_extra_networks(p.prompt)
    hr_prompt, hr_calls = parse_extra_networks(p.hr_prompt or p.prompt)
    refiner = _load_refiner(engine, p, hooks)
    info = RunInfo(mode=mode, refiner_name=refiner.name if refiner else "",
                   refiner_hash=refiner.file_hash() if refiner else "")
    with hooks.networks.activate(engine, [*calls, *(c for c in hr_calls if c not in calls)]) as act:
        prompts = Prompts(prompt, p.negative_prompt, hr_prompt, p.hr_negative_prompt or p.negative_prompt)
        job = Job(engine, p, prompts, hooks, refiner=refiner, embeddings=act.embeddings, tiled_vae=extras.tiled_vae)
        job.stage(engine)  # prompt errors surface before any sampling
        out_images, seeds = _run(job, mode, images, mask, blur, callback, progress, extras.controlnet_units)
        extra = dict(act.infotext)
        if job.used_embeddings and act.embedding_hashes is not None:
            extra["TI hashes"] = act.embedding_hashes(list(job.used_embeddings))
    extra |= control_infotext(extras.controlnet_units)
    info = replace(info, extra={k: v for k, v in extra.items() if v}, files=dict(act.files),
                   controlnets=control_files(engine, extras.controlnet_units))
    infotexts = [format_infotext_for(engine, p, seed=s, index=i, info=info) for i, s in enumerate(seeds)]
    records = tuple(json_record(engine, p, i, info) for i in range(len(seeds)))
    return PipelineResult(images=out_images, seeds=seeds, infotexts=infotexts, parameters=p, records=records,
                          mode=mode)


def _outpaint(p: GenerationParams, images: list[Image.Image], mask: Image.Image | None):
    """(pictures, mask, blur for the mask plan): outpainting extends canvases and pre-blurs its mask."""
    from huihua.pipelines.inpaint import has_outpaint, outpaint_canvas

    if not has_outpaint(p):
        return images, mask, None
    canvases, band = outpaint_canvas(p, images)
    if mask is not None:
        raise ParameterError("mask: give either a mask or outpaint_* sizes, not both")
    return canvases, band, 0


def _load_refiner(engine: Engine, p: GenerationParams, hooks: PipelineHooks) -> Engine | None:
    if not p.refiner_checkpoint:
        return None
    refiner = hooks.refiner_loader(engine)(p.refiner_checkpoint)
    if refiner.spec.latent_channels != engine.spec.latent_channels:
        raise ParameterError(f"refiner_checkpoint: {p.refiner_checkpoint} uses another latent space")
    return refiner


def _step_hook(job_total: int, callback: SamplerCallback | None, progress: bool):
    bar = progress_bar(job_total) if progress and job_total > 0 else None

    def on_step(step: int, x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> None:
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback(step, x, denoised, sigma)

    return on_step, bar


def _run(job: Job, mode: str, images: list[Image.Image], mask: Image.Image | None, blur: int | None,
         callback: SamplerCallback | None, progress: bool,
         units: Sequence[ControlNetUnit | PreparedUnit] = ()) -> tuple[list[Image.Image], list[int]]:
    from huihua.pipelines.control import prepare_control

    p = job.p
    assert p.width is not None and p.height is not None
    setup = None
    if mode == "inpaint":
        from huihua.pipelines.inpaint import setup_inpaint

        assert mask is not None
        setup = setup_inpaint(p, images, mask, blur)
    crop = setup.plan.crop if setup is not None else None
    job.control = prepare_control(units, p.width, p.height, crop=crop,
                                  picture_size=setup.originals[0].size if setup is not None else None)
    job.on_step, bar = _step_hook(_total_steps(p, mode), callback, progress)
    out, seeds = [], []
    try:
        for it in range(p.n_iter):
            batch_seeds = [p.seed + it * p.batch_size + k for k in range(p.batch_size)]
            first = it * p.batch_size
            out.extend(_batch(job, mode, batch_seeds, first, images, setup))
            seeds.extend(batch_seeds)
    finally:
        if bar is not None:
            bar.close()
    return out, seeds


def _batch(job: Job, mode: str, seeds: list[int], first: int, images: list[Image.Image],
           setup: InpaintSetup | None) -> list[Image.Image]:
    """Images of one batch."""
    p, engine = job.p, job.engine
    n = len(seeds)
    if mode == "txt2img":
        from huihua.pipelines.txt2img import txt2img_latents

        latents = txt2img_latents(job, seeds)
        if p.enable_hr:
            from huihua.pipelines.hires import hires_latents

            latents = hires_latents(job, latents, seeds)
        return decode_to_images(engine, latents, job.tiled_vae)
    from huihua.pipelines.img2img import fit_init_images, img2img_latents, init_batch

    assert p.width is not None and p.height is not None
    if setup is None:
        fitted = fit_init_images(images, p.resize_mode, p.width, p.height)
        batch = init_batch(job, [fitted[(first + i) % len(fitted)] for i in range(n)])
        return decode_to_images(engine, img2img_latents(job, seeds, batch), job.tiled_vae)
    from huihua.pipelines.inpaint import finish, repaint_masks

    work = setup.work_images
    batch = init_batch(job, [work[(first + i) % len(work)] for i in range(n)])
    repaint, cond_mask = repaint_masks(setup, latent_shape(engine, p.width, p.height)[1:])
    latents = img2img_latents(job, seeds, batch, repaint=repaint, cond_mask=cond_mask)
    return finish(setup, decode_to_images(engine, latents, job.tiled_vae), first)


def make_generate_fn(engine: Engine, **fixed: Any) -> Callable[[str, int], Image.Image]:
    """``fn(prompt, seed) -> PIL image`` with the other parameters fixed (for evaluations and grids)."""

    def fn(prompt: str, seed: int) -> Image.Image:
        return generate(engine, prompt=prompt, seed=seed, **fixed).images[0]

    return fn


__all__ = ["PipelineResult", "generate", "make_generate_fn", "merge_params", "resolve_params"]
