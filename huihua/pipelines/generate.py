"""The one entry point of every pipeline: ``generate(model, params, inputs, callbacks) -> GenerationResult``.

It dispatches on its inputs: no pictures -> txt2img (with hires fix when ``enable_hr``); pictures
-> img2img; pictures and a mask (or ``outpaint_*`` sizes) -> inpainting / outpainting. Parameters
are resolved once (``resolved.py``) and everything is validated before the first step runs.

Batches: ``batch_size × n_iter`` images; image k uses seed + k (and variation seed subseed + k).
Init pictures are used in turn (image k starts from picture k mod len(init_images)).

Besides the parameters a call takes ControlNet units (``control.py``), a VAE file for the call,
tiled VAE, and live previews (``extras.py``); they are inputs like the pictures, not fields of
GenerationParams, and what they did is written into the infotext (``ControlNet 0``, ``VAE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from PIL import Image
from tqdm.auto import tqdm

from huihua.adapters.controlnet import ControlNetUnit, PreparedUnit
from huihua.diffusion.samplers import Callback as StepCallback
from huihua.errors import ParameterError
from huihua.model import Model, with_vae
from huihua.pipelines.common import decode_to_images, latent_shape, progress_bar
from huihua.pipelines.control import (
    check_units,
    control_files,
    control_infotext,
    prepare_control,
)
from huihua.pipelines.extras import preview_callback
from huihua.pipelines.hires import hires_latents, pixel_upscaler
from huihua.pipelines.hooks import PipelineHooks
from huihua.pipelines.img2img import fit_init_images, img2img_latents, init_batch
from huihua.pipelines.infotext import RunInfo, format_infotext_for, json_record
from huihua.pipelines.inpaint import (
    InpaintSetup,
    finish,
    outpaint_canvas,
    repaint_masks,
    setup_inpaint,
)
from huihua.pipelines.job import Job, Prompts
from huihua.pipelines.params import GenerationParams
from huihua.pipelines.resolved import has_outpaint, mode_of, resolve_params
from huihua.pipelines.txt2img import txt2img_latents
from huihua.pipelines.types import Callbacks, GenerationInputs, GenerationResult, Mode
from huihua.prompts.extra_networks import parse_extra_networks


def total_steps(p: GenerationParams, mode: Mode) -> int:
    def tail(steps: int, strength: float) -> int:
        return 0 if strength == 0 else int(min(strength, 0.999) * steps) + 1

    first = p.steps if mode is Mode.TXT2IMG else tail(p.steps, p.denoising_strength)
    second = tail(p.hr_second_pass_steps or p.steps, p.hr_strength) if p.enable_hr else 0
    return p.n_iter * (first + second)


def generate(model: Model, params: GenerationParams, inputs: GenerationInputs | None = None,
             callbacks: Callbacks | None = None) -> GenerationResult:
    """Paint ``batch_size × n_iter`` images (txt2img, img2img or inpainting by the inputs given)."""
    inputs = inputs or GenerationInputs()
    callbacks = callbacks or Callbacks()
    check_units(model, inputs.controlnet_units)
    if inputs.tiled_vae is not None and not isinstance(inputs.tiled_vae, bool):
        raise ParameterError(f"tiled_vae: True, False or None, got {inputs.tiled_vae!r}")
    on_step = preview_callback(model, callbacks.preview, callbacks.preview_every, callbacks.taesd, callbacks.on_step)
    model = with_vae(model, inputs.vae)  # the VAE file is read outside inference mode
    with torch.inference_mode():
        return _generate(model, params, inputs, on_step, callbacks.progress)


def _generate(model: Model, params: GenerationParams, inputs: GenerationInputs, callback: StepCallback | None,
              progress: bool) -> GenerationResult:
    hooks = inputs.hooks
    mode = mode_of(params, bool(inputs.init_images), inputs.mask is not None)
    images, mask, blur = _outpaint(params, list(inputs.init_images), inputs.mask)
    rp = resolve_params(model, params, images, mode)
    p = rp.params
    if p.enable_hr:
        pixel_upscaler(p.hr_upscaler, hooks)
    prompt, calls = parse_extra_networks(p.prompt)
    hr_prompt, hr_calls = parse_extra_networks(p.hr_prompt or p.prompt)
    refiner = _load_refiner(model, p, hooks)
    info = RunInfo(mode=mode.value, refiner_name=refiner.name if refiner else "",
                   refiner_hash=refiner.file_hash() if refiner else "", names=rp.first)
    with hooks.networks.activate(model, [*calls, *(c for c in hr_calls if c not in calls)]) as act:
        prompts = Prompts(prompt, p.negative_prompt, hr_prompt, p.hr_negative_prompt or p.negative_prompt)
        job = Job(model, rp, prompts, hooks, refiner=refiner, embeddings=act.embeddings, tiled_vae=inputs.tiled_vae)
        job.stage(model)  # prompt errors surface before any sampling
        out_images, seeds = _run(job, images, mask, blur, callback, progress, inputs.controlnet_units)
        extra = dict(act.infotext)
        if job.used_embeddings and act.embedding_hashes is not None:
            extra["TI hashes"] = act.embedding_hashes(list(job.used_embeddings))
    extra |= control_infotext(inputs.controlnet_units)
    info = replace(info, extra={k: v for k, v in extra.items() if v}, files=dict(act.files),
                   controlnets=control_files(model, inputs.controlnet_units))
    infotexts = [format_infotext_for(model, p, seed=s, index=i, info=info) for i, s in enumerate(seeds)]
    records = tuple(json_record(model, p, i, info) for i in range(len(seeds)))
    return GenerationResult(images=out_images, seeds=seeds, infotexts=infotexts, records=records, params=p, mode=mode)


def _outpaint(p: GenerationParams, images: list[Image.Image],
              mask: Image.Image | None) -> tuple[list[Image.Image], Image.Image | None, int | None]:
    """(pictures, mask, blur for the mask plan): outpainting extends canvases and pre-blurs its mask."""
    if not has_outpaint(p):
        return images, mask, None
    canvases, band = outpaint_canvas(p, images)
    if mask is not None:
        raise ParameterError("mask: give either a mask or outpaint_* sizes, not both")
    return canvases, band, 0


def _load_refiner(model: Model, p: GenerationParams, hooks: PipelineHooks) -> Model | None:
    if not p.refiner_checkpoint:
        return None
    refiner = hooks.refiner_loader(model)(p.refiner_checkpoint)
    if refiner.spec.latent_channels != model.spec.latent_channels:
        raise ParameterError(f"refiner_checkpoint: {p.refiner_checkpoint} uses another latent space")
    return refiner


def _step_hook(job_total: int, callback: StepCallback | None,
               progress: bool) -> tuple[StepCallback, tqdm | None]:
    bar = progress_bar(job_total) if progress and job_total > 0 else None

    def on_step(step: int, x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> None:
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback(step, x, denoised, sigma)

    return on_step, bar


def _run(job: Job, images: list[Image.Image], mask: Image.Image | None, blur: int | None,
         callback: StepCallback | None, progress: bool,
         units: Sequence[ControlNetUnit | PreparedUnit] = ()) -> tuple[list[Image.Image], list[int]]:
    rp, p = job.rp, job.p
    setup = None
    if rp.mode is Mode.INPAINT:
        assert mask is not None
        setup = setup_inpaint(rp, images, mask, blur)
    crop = setup.plan.crop if setup is not None else None
    job.control = prepare_control(units, rp.width, rp.height, crop=crop,
                                  picture_size=setup.originals[0].size if setup is not None else None)
    job.on_step, bar = _step_hook(total_steps(p, rp.mode), callback, progress)
    out, seeds = [], []
    try:
        for it in range(p.n_iter):
            batch_seeds = [p.seed + it * p.batch_size + k for k in range(p.batch_size)]
            first = it * p.batch_size
            out.extend(_batch(job, batch_seeds, first, images, setup))
            seeds.extend(batch_seeds)
    finally:
        if bar is not None:
            bar.close()
    return out, seeds


def _batch(job: Job, seeds: list[int], first: int, images: list[Image.Image],
           setup: InpaintSetup | None) -> list[Image.Image]:
    """Images of one batch."""
    rp, engine = job.rp, job.engine
    n = len(seeds)
    if rp.mode is Mode.TXT2IMG:
        latents = txt2img_latents(job, seeds)
        if rp.params.enable_hr:
            latents = hires_latents(job, latents, seeds)
        return decode_to_images(engine, latents, job.tiled_vae)
    if setup is None:
        fitted = fit_init_images(images, rp.resize, rp.width, rp.height)
        batch = init_batch(job, [fitted[(first + i) % len(fitted)] for i in range(n)])
        return decode_to_images(engine, img2img_latents(job, seeds, batch), job.tiled_vae)
    work = setup.work_images
    batch = init_batch(job, [work[(first + i) % len(work)] for i in range(n)])
    repaint, cond_mask = repaint_masks(setup, latent_shape(engine, rp.width, rp.height)[1:])
    latents = img2img_latents(job, seeds, batch, repaint=repaint, cond_mask=cond_mask)
    return finish(setup, decode_to_images(engine, latents, job.tiled_vae), first)


__all__ = ["generate", "total_steps"]
