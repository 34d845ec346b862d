"""AUTOMATIC1111's ``/sdapi/v1`` routes (and ControlNet's ``/controlnet`` ones), on the native queue.

A generation request becomes a queued job like any other (so ``progress`` and the job list agree) and
the route answers when it ends, in A1111's shape: ``{images, parameters, info}`` with ``info`` a JSON
string of A1111's keys. Unknown request keys and nulls are ignored, as A1111 clients send their own.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import time
from typing import Any

from fastapi import APIRouter, Body, Request
from PIL import Image

from huihua.adapters.controlnet import CONTROL_MODES, RESIZE_MODES
from huihua.adapters.preprocessors import PREPROCESSORS, PreprocessorParams, preprocess
from huihua.diffusion.names import list_samplers, list_schedules
from huihua.infotext import parse
from huihua.server.specs import RequestError, clean_params, decode_image, store_upload
from huihua.server.state import ServerState
from huihua.server.store import Job, JsonDict, JsonValue
from huihua.upscale import LATENT_MODES, lanczos, load_upscaler, upscale
from huihua.version import __version__

router = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111"])
controlnet_router = APIRouter(prefix="/controlnet", tags=["ControlNet extension"])

Payload = dict[str, Any]


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.huihua
    return state


def _payload(body: object) -> Payload:
    if not isinstance(body, dict):
        raise RequestError("body: expected a JSON object")
    return body


def _units(state: ServerState, payload: Payload) -> list[JsonValue]:
    scripts = payload.get("alwayson_scripts") or {}
    args = ((scripts.get("controlnet") or scripts.get("ControlNet") or {}).get("args") or []) if isinstance(
        scripts, dict) else []
    units: list[JsonValue] = []
    for i, unit in enumerate(args if isinstance(args, list) else []):
        if not isinstance(unit, dict) or unit.get("enabled") is False:
            continue
        model = unit.get("model")
        image = unit.get("image") or unit.get("input_image")
        if isinstance(image, dict):  # newer clients send {"image": b64, "mask": b64}
            image = image.get("image")
        if not model or str(model).lower() == "none" or not image:
            continue
        field = f"alwayson_scripts.controlnet.args[{i}]"
        name = store_upload(decode_image(str(image), f"{field}.image", state.config.limits), state.config.uploads_dir)
        mode = unit.get("control_mode", 0)
        resize = unit.get("resize_mode", 1)
        units.append({
            "model": str(model), "image": name, "weight": unit.get("weight"),
            "guidance_start": unit.get("guidance_start"), "guidance_end": unit.get("guidance_end"),
            "control_mode": CONTROL_MODES[mode] if isinstance(mode, int) and 0 <= mode < 3 else mode,
            "resize_mode": RESIZE_MODES[resize] if isinstance(resize, int) and 0 <= resize < 3 else resize,
            "pixel_perfect": bool(unit.get("pixel_perfect", False)),
            "preprocessor": unit.get("module") if unit.get("module") not in (None, "None") else "none",
        })
    return units


def _spec(state: ServerState, payload: Payload, img2img: bool) -> tuple[str, JsonDict]:
    limits, uploads = state.config.limits, state.config.uploads_dir
    params = dict(payload)
    overrides = payload.get("override_settings") or {}
    checkpoint = overrides.get("sd_model_checkpoint") if isinstance(overrides, dict) else None
    if isinstance(overrides, dict) and overrides.get("CLIP_stop_at_last_layers"):
        params.setdefault("clip_skip", overrides["CLIP_stop_at_last_layers"])
    if params.get("hr_upscaler") in ("None", ""):
        params.pop("hr_upscaler")
    clean = clean_params(params, limits, "body")
    images: JsonDict = {"init_images": [], "mask": None}
    kind = "txt2img"
    if img2img:
        init = payload.get("init_images") or []
        if not isinstance(init, list) or not init:
            raise RequestError("init_images: img2img needs at least one picture")
        images["init_images"] = [store_upload(decode_image(str(b), f"init_images[{i}]", limits), uploads)
                                 for i, b in enumerate(init)]
        kind = "img2img"
        if payload.get("mask"):
            images["mask"] = store_upload(decode_image(str(payload["mask"]), "mask", limits), uploads)
            kind = "inpaint"
    spec: JsonDict = {"params": clean, "images": images, "controlnet": _units(state, payload)}
    if checkpoint:
        state.catalog.find_checkpoint(str(checkpoint))  # unknown: 404 now, not later
        spec["checkpoint"] = str(checkpoint)
        spec["restore_checkpoint"] = bool(payload.get("override_settings_restore_afterwards", True))
    return kind, spec


def _info(state: ServerState, job: Job, payload: Payload) -> JsonDict:
    raw_info = job.result.get("info")
    info = raw_info if isinstance(raw_info, dict) else {}
    raw_params, raw_seeds, raw_texts = info.get("params"), info.get("seeds"), job.result.get("infotexts")
    params = raw_params if isinstance(raw_params, dict) else {}
    seeds = list(raw_seeds) if isinstance(raw_seeds, list) else []
    infotexts = list(raw_texts) if isinstance(raw_texts, list) else []
    n = len(seeds)
    subseed = params.get("subseed", -1)
    _, entry = state.executor.current()
    extra: JsonDict = {}
    if infotexts:
        parsed = parse(str(infotexts[0]))
        known = {"Prompt", "Negative prompt", "Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash",
                 "Model", "Denoising strength", "Clip skip", "Version", "Schedule type"}
        extra = {k: v for k, v in parsed.items() if k not in known and isinstance(v, (str, int, float, bool))}
    return {
        "prompt": params.get("prompt", ""), "all_prompts": [params.get("prompt", "")] * n,
        "negative_prompt": params.get("negative_prompt", ""),
        "all_negative_prompts": [params.get("negative_prompt", "")] * n,
        "seed": seeds[0] if seeds else params.get("seed"), "all_seeds": seeds,
        "subseed": subseed, "all_subseeds": [subseed + i if isinstance(subseed, int) and subseed >= 0 else subseed
                                             for i in range(n)],
        "subseed_strength": params.get("subseed_strength", 0), "width": params.get("width"),
        "height": params.get("height"), "sampler_name": params.get("sampler_name"),
        "scheduler": params.get("scheduler"), "cfg_scale": params.get("cfg_scale"),
        "steps": params.get("steps"), "batch_size": params.get("batch_size"), "restore_faces": False,
        "sd_model_name": entry.name, "sd_model_hash": entry.short_hash,
        "sd_vae_name": None, "sd_vae_hash": None, "seed_resize_from_w": params.get("seed_resize_from_w", 0),
        "seed_resize_from_h": params.get("seed_resize_from_h", 0),
        "denoising_strength": params.get("denoising_strength") if job.kind != "txt2img" or params.get(
            "enable_hr") else None,
        "extra_generation_params": extra, "index_of_first_image": 0, "infotexts": infotexts,
        "styles": list(payload.get("styles") or []), "job_timestamp": time.strftime(
            "%Y%m%d%H%M%S", time.localtime(job.started or job.created)),
        "clip_skip": params.get("clip_skip", 1), "is_using_inpainting_conditioning": False,
        "version": f"huihua {__version__}",
    }


async def _generate(request: Request, body: object, img2img: bool) -> JsonDict:
    state = _state(request)
    payload = _payload(body)
    kind, spec = await asyncio.to_thread(_spec, state, payload, img2img)
    job = await asyncio.to_thread(state.store.add, kind, spec, route="a1111", client_id="a1111")
    state.worker.wake()
    job = await state.wait(job.id)
    if job.status == "failed":
        raise RequestError(job.error or "the generation failed", 500 if "out of memory" in (job.error or "") else 422)
    names = job.result.get("images", []) if job.status == "succeeded" else []
    send = payload.get("send_images", True) is not False
    images: list[JsonValue] = [state.image_base64(str(n)) for n in names] if send and isinstance(names, list) else []
    echo = {k: v for k, v in payload.items() if k not in ("init_images", "mask", "alwayson_scripts")}
    info = _info(state, job, payload) if job.status == "succeeded" else {
        "interrupted": True, "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "infotexts": []}
    return {"images": images, "parameters": echo, "info": json.dumps(info)}


@router.post("/txt2img", response_model=None)
async def txt2img(request: Request, body: Any = Body(default=None)) -> JsonDict:  # noqa: B008
    return await _generate(request, body, img2img=False)


@router.post("/img2img", response_model=None)
async def img2img(request: Request, body: Any = Body(default=None)) -> JsonDict:  # noqa: B008
    return await _generate(request, body, img2img=True)


def _b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@router.get("/progress", response_model=None)
async def progress(request: Request, skip_current_image: bool = False) -> JsonDict:
    state = _state(request)
    live = state.worker.live
    queued = await asyncio.to_thread(state.store.count, "queued")
    if live.job_id is None:
        return {"progress": 0.0, "eta_relative": 0.0, "state": {
            "skipped": False, "interrupted": False, "job": "", "job_count": queued, "job_timestamp": "0",
            "job_no": 0, "sampling_step": 0, "sampling_steps": 0}, "current_image": None, "textinfo": None,
            "current_task": None}
    fraction = live.step / live.total if live.total else 0.0
    elapsed = time.time() - live.started
    eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
    image = live.preview
    return {"progress": fraction, "eta_relative": eta, "state": {
        "skipped": False, "interrupted": False, "job": live.job_id, "job_count": queued + 1,
        "job_timestamp": live.job_timestamp, "job_no": 0, "sampling_step": live.step, "sampling_steps": live.total},
        "current_image": _b64_png(image) if image is not None and not skip_current_image else None,
        "textinfo": f"step {live.step} of {live.total}", "current_task": live.job_id}


@router.post("/interrupt", response_model=None)
async def interrupt(request: Request) -> JsonDict:
    """Stops the running job queued through these routes (never a native job)."""
    state = _state(request)
    live = state.worker.live
    if live.job_id is not None and live.route == "a1111":
        state.worker.request_stop(live.job_id, "interrupted")
    return {}


@router.post("/skip", response_model=None)
async def skip(request: Request) -> JsonDict:
    return await interrupt(request)


# --- options and lists ------------------------------------------------------------------------------


def _options(state: ServerState) -> JsonDict:
    _, entry = state.executor.current()
    return {"sd_model_checkpoint": entry.title, "sd_checkpoint_hash": entry.sha256, "sd_vae": "Automatic",
            "CLIP_stop_at_last_layers": 1, "samples_format": "png", "outdir_samples": "",
            "live_previews_enable": True, "show_progress_every_n_steps": state.config.preview_every,
            "sd_lora": "None", "eta_noise_seed_delta": 0}


@router.get("/options", response_model=None)
async def get_options(request: Request) -> JsonDict:
    return await asyncio.to_thread(_options, _state(request))


@router.post("/options", response_model=None)
async def set_options(request: Request, body: Any = Body(default=None)) -> JsonDict:  # noqa: B008
    state = _state(request)
    payload = _payload(body)
    name = payload.get("sd_model_checkpoint")
    if name:
        entry = await asyncio.to_thread(state.catalog.find_checkpoint, str(name))  # 404 when unknown
        try:
            await asyncio.to_thread(state.executor.load, entry.name)  # between jobs: waits for the running one
        except Exception as e:
            raise RequestError(f"sd_model_checkpoint: {entry.name} could not be loaded ({e}); the previous "
                               "model stays loaded") from None
    return {}


@router.get("/sd-models", response_model=None)
async def sd_models(request: Request) -> list[JsonDict]:
    entries = await asyncio.to_thread(_state(request).catalog.checkpoints)
    return [{"title": e.title, "model_name": e.name, "hash": e.short_hash, "sha256": e.sha256,
             "filename": e.path.name, "config": None} for e in entries]


@router.get("/samplers", response_model=None)
async def samplers() -> list[JsonDict]:
    return [{"name": n, "aliases": [], "options": {}} for n in list_samplers()]


@router.get("/schedulers", response_model=None)
async def schedulers() -> list[JsonDict]:
    return [{"name": n.lower().replace(" ", "_"), "label": n, "aliases": None, "default_rho": -1,
             "need_inner_model": False} for n in list_schedules()]


@router.get("/upscalers", response_model=None)
async def upscalers(request: Request) -> list[JsonDict]:
    entries = await asyncio.to_thread(_state(request).catalog.upscalers)
    fixed: list[JsonDict] = [{"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4},
                             {"name": "Lanczos", "model_name": None, "model_path": None, "model_url": None,
                              "scale": 4}]
    return fixed + [{"name": e.name, "model_name": e.name, "model_path": e.path.name, "model_url": None,
                     "scale": 4} for e in entries]


@router.get("/latent-upscale-modes", response_model=None)
async def latent_modes() -> list[JsonDict]:
    return [{"name": n} for n in LATENT_MODES]


@router.get("/sd-vae", response_model=None)
async def sd_vae() -> list[JsonDict]:
    return []


@router.get("/loras", response_model=None)
async def loras(request: Request) -> list[JsonDict]:
    files = await asyncio.to_thread(_state(request).catalog.networks().list_loras)
    return [{"name": p.stem, "alias": p.stem, "path": p.name, "metadata": {}} for p in files]


@router.get("/embeddings", response_model=None)
async def embeddings(request: Request) -> JsonDict:
    files = await asyncio.to_thread(_state(request).catalog.networks().list_embeddings)
    return {"loaded": {p.stem: {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 0,
                                "vectors": 0} for p in files}, "skipped": {}}


@router.get("/scripts", response_model=None)
async def scripts() -> JsonDict:
    return {"txt2img": [], "img2img": []}


@router.get("/cmd-flags", response_model=None)
async def cmd_flags(request: Request) -> JsonDict:
    config = _state(request).config  # nothing secret: no credentials, no paths beyond the folder names
    return {"listen": not config.loopback, "port": config.port, "api": True, "nowebui": True,
            "api_auth": "***" if config.basic_auth else None, "ckpt_dir": None, "lora_dir": None}


@router.get("/memory", response_model=None)
async def memory() -> JsonDict:
    page = os.sysconf("SC_PAGE_SIZE")
    total, free = os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    return {"ram": {"free": free, "used": total - free, "total": total}, "cuda": {"error": "not reported"}}


@router.get("/prompt-styles", response_model=None)
async def prompt_styles() -> list[JsonDict]:
    return []


@router.get("/face-restorers", response_model=None)
async def face_restorers() -> list[JsonDict]:
    return []


@router.post("/refresh-checkpoints", response_model=None)
@router.post("/refresh-loras", response_model=None)
@router.post("/refresh-embeddings", response_model=None)
async def refresh() -> JsonDict:
    return {}  # folders are read on every listing


@router.post("/unload-checkpoint", response_model=None)
async def unload_checkpoint(request: Request) -> JsonDict:
    await asyncio.to_thread(_state(request).executor.unload)
    return {}


@router.post("/reload-checkpoint", response_model=None)
async def reload_checkpoint(request: Request) -> JsonDict:
    await asyncio.to_thread(_state(request).executor.current)
    return {}


@router.post("/png-info", response_model=None)
async def png_info(request: Request, body: Any = Body(default=None)) -> JsonDict:  # noqa: B008
    state = _state(request)
    payload = _payload(body)
    image = decode_image(str(payload.get("image") or ""), "image", state.config.limits)
    text = str(image.info.get("parameters") or "") if hasattr(image, "info") else ""
    return {"info": text, "items": {"parameters": text} if text else {},
            "parameters": {k: v for k, v in parse(text).items() if isinstance(v, (str, int, float, bool))}
            if text else {}}


def _upscale_one(state: ServerState, image: Image.Image, payload: Payload) -> Image.Image:
    name = str(payload.get("upscaler_1") or "None")
    scale = float(payload.get("upscaling_resize") or 2)
    if not 1 <= scale <= 8:
        raise RequestError("upscaling_resize: a number from 1 to 8")
    if name == "None":
        return image
    if name == "Lanczos":
        return lanczos(image, scale)
    entry = state.catalog.find_upscaler(name)
    return upscale(image, load_upscaler(entry.path), scale)


@router.post("/extra-single-image", response_model=None)
async def extra_single_image(request: Request, body: Any = Body(default=None)) -> JsonDict:  # noqa: B008
    state = _state(request)
    payload = _payload(body)
    image = decode_image(str(payload.get("image") or ""), "image", state.config.limits).convert("RGB")
    out = await asyncio.to_thread(_upscale_one, state, image, payload)
    return {"html_info": "", "image": _b64_png(out)}


@router.post("/extra-batch-images", response_model=None)
async def extra_batch_images(request: Request, body: Any = Body(default=None)) -> JsonDict:  # noqa: B008
    state = _state(request)
    payload = _payload(body)
    items = payload.get("imageList") or []
    if not isinstance(items, list):
        raise RequestError("imageList: expected a list")
    out: list[JsonValue] = []
    for i, item in enumerate(items):
        data = item.get("data") if isinstance(item, dict) else None
        image = decode_image(str(data or ""), f"imageList[{i}].data", state.config.limits).convert("RGB")
        out.append(_b64_png(await asyncio.to_thread(_upscale_one, state, image, payload)))
    return {"html_info": "", "images": out}


# --- ControlNet's extension routes -------------------------------------------------------------


@controlnet_router.get("/model_list", response_model=None)
async def controlnet_models(request: Request) -> JsonDict:
    files = await asyncio.to_thread(_state(request).catalog.controlnets)
    return {"model_list": [p.stem for p in files]}


@controlnet_router.get("/module_list", response_model=None)
async def controlnet_modules() -> JsonDict:
    return {"module_list": list(PREPROCESSORS)}


@controlnet_router.post("/detect", response_model=None)
async def controlnet_detect(request: Request, body: Any = Body(default=None)) -> JsonDict:  # noqa: B008
    state = _state(request)
    payload = _payload(body)
    module = str(payload.get("controlnet_module") or "none")
    images = payload.get("controlnet_input_images") or []
    if not isinstance(images, list):
        raise RequestError("controlnet_input_images: expected a list")
    res = int(payload.get("controlnet_processor_res") or 512)
    out: list[JsonValue] = []
    for i, data in enumerate(images):
        image = decode_image(str(data), f"controlnet_input_images[{i}]", state.config.limits).convert("RGB")
        params = PreprocessorParams(resolution=res)
        out.append(_b64_png(await asyncio.to_thread(preprocess, module, image, params)))
    return {"images": out, "info": "Success"}

