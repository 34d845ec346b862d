"""GenerationParams <-> A1111 infotext (the ``parameters`` PNG chunk) and the exact-replay JSON chunk.

The text follows A1111's ``create_infotext`` keys (img2img, inpainting, hires, refiner included);
keys A1111 does not have (SDXL micro-conditioning, outpainting, resize mode) are written only when
they differ from the defaults. ``params_from_infotext`` reads any A1111 text back (values missing
from the text keep our defaults). The JSON chunk holds every field of the call, the index of the
image in it, the model hashes and the huihua version: replaying the call and taking that image
gives the same pixels on the same device and dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from huihua.diffusion.names import ResolvedNames, resolve_names
from huihua.infotext import format_infotext, parse
from huihua.model import Model
from huihua.pipelines.params import INPAINTING_FILLS, RESIZE_MODES, GenerationParams
from huihua.pipelines.types import Mode, ModelFile, ReplayRecord
from huihua.version import __version__


@dataclass(frozen=True)
class RunInfo:
    """What the infotext needs beyond the parameters: the mode, models and extra-network fields."""

    mode: str = "txt2img"  # "txt2img", "img2img" or "inpaint"
    refiner_name: str = ""
    refiner_hash: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # "Lora hashes", "TI hashes", ...
    files: dict[str, str] = field(default_factory=dict)  # adapter name -> hash (JSON chunk)
    controlnets: tuple[tuple[str, str], ...] = ()  # (name, hash) of each ControlNet unit's model (JSON chunk)
    names: ResolvedNames | None = None  # the first pass's sampler and schedule (None: resolved here)


def _seed_fields(p: GenerationParams, seed: int, index: int) -> dict[str, object]:
    fields: dict[str, object] = {}
    if p.subseed_strength > 0:
        fields["Variation seed"] = p.subseed + index if p.subseed != -1 else None
        fields["Variation seed strength"] = p.subseed_strength
    if p.seed_resize_from_w > 0 and p.seed_resize_from_h > 0:
        fields["Seed resize from"] = f"{p.seed_resize_from_w}x{p.seed_resize_from_h}"
    return fields


def _hires_fields(p: GenerationParams) -> dict[str, object]:
    if not p.enable_hr:
        return {}
    fields: dict[str, object] = {"Denoising strength": p.hr_strength}
    if p.hr_resize_x or p.hr_resize_y:
        fields["Hires resize"] = f"{p.hr_resize_x}x{p.hr_resize_y}"
    else:
        fields["Hires upscale"] = p.hr_scale
    fields["Hires steps"] = p.hr_second_pass_steps or None
    fields["Hires upscaler"] = p.hr_upscaler
    fields["Hires sampler"] = p.hr_sampler_name or None
    fields["Hires schedule type"] = p.hr_scheduler or None
    fields["Hires prompt"] = p.hr_prompt or None
    fields["Hires negative prompt"] = p.hr_negative_prompt or None
    return fields


def _image_fields(p: GenerationParams, mode: str) -> dict[str, object]:
    if mode == "txt2img":
        return {}
    fields: dict[str, object] = {"Denoising strength": p.denoising_strength}
    if p.resize_mode:
        fields["Resize mode"] = RESIZE_MODES[p.resize_mode]
    if mode == "inpaint":
        fields["Mask blur"] = p.mask_blur
        fields["Masked content"] = INPAINTING_FILLS[p.inpainting_fill]
        fields["Inpaint area"] = "Only masked" if p.inpaint_full_res else "Whole picture"
        fields["Masked area padding"] = p.inpaint_full_res_padding if p.inpaint_full_res else None
        fields["Mask mode"] = "Inpaint not masked" if p.inpainting_mask_invert else None
        for side in ("left", "right", "top", "bottom"):
            fields[f"Outpaint {side}"] = getattr(p, f"outpaint_{side}") or None
    return fields


def _sdxl_fields(p: GenerationParams, info: RunInfo) -> dict[str, object]:
    d = GenerationParams()
    fields: dict[str, object] = {}
    if p.sdxl_original_width or p.sdxl_original_height:
        fields["Original size"] = f"{p.sdxl_original_width}x{p.sdxl_original_height}"
    fields["Crop top"] = p.sdxl_crop_top or None
    fields["Crop left"] = p.sdxl_crop_left or None
    if p.sdxl_aesthetic_score != d.sdxl_aesthetic_score:
        fields["Aesthetic score"] = p.sdxl_aesthetic_score
    if p.sdxl_negative_aesthetic_score != d.sdxl_negative_aesthetic_score:
        fields["Negative aesthetic score"] = p.sdxl_negative_aesthetic_score
    if p.refiner_checkpoint:
        refiner = info.refiner_name or p.refiner_checkpoint
        fields["Refiner"] = f"{refiner} [{info.refiner_hash}]" if info.refiner_hash else refiner
        fields["Refiner switch at"] = p.refiner_switch_at
    return fields


def infotext_fields(engine: Model, p: GenerationParams, seed: int, index: int = 0,
                    info: RunInfo | None = None) -> dict[str, object]:
    """Ordered infotext key -> value for image ``index`` of a generation (None values are omitted)."""
    info = info or RunInfo()
    names = info.names or resolve_names(p.sampler_name, p.scheduler)
    fields: dict[str, object] = {
        "Steps": p.steps, "Sampler": names.sampler_display,
        "Schedule type": names.schedule_display, "CFG scale": p.cfg_scale, "Seed": seed,
        "Size": f"{p.width}x{p.height}", "Model hash": engine.file_hash() or None, "Model": engine.name,
    }
    if engine.vae_path is not None:
        fields["VAE hash"] = engine.file_hash(engine.vae_path) or None
        fields["VAE"] = engine.vae_path.name
    fields.update(_seed_fields(p, seed, index))
    fields["Clip skip"] = p.clip_skip
    fields.update(_image_fields(p, info.mode))
    fields.update(_hires_fields(p))
    if p.cfg_rescale > 0:
        fields["CFG rescale"] = p.cfg_rescale
    if p.eta is not None:
        fields["Eta"] = p.eta
    if engine.spec.zero_terminal_snr:
        fields["Noise Schedule"] = "Zero Terminal SNR"  # A1111's ``sd_noise_schedule`` option
    fields.update(_sdxl_fields(p, info))
    fields.update(info.extra)
    fields["Version"] = f"huihua {__version__}"
    return fields


def format_infotext_for(engine: Model, p: GenerationParams, seed: int, index: int = 0,
                        info: RunInfo | None = None) -> str:
    """The A1111 ``parameters`` text of image ``index``."""
    return format_infotext(infotext_fields(engine, p, seed, index, info), p.prompt, p.negative_prompt)


def json_record(engine: Model, p: GenerationParams, index: int, info: RunInfo | None = None) -> ReplayRecord:
    """The replay record of image ``index``: every parameter of the call, model hashes, version."""
    info = info or RunInfo()
    vae = None
    if engine.vae_path is not None:
        vae = ModelFile(engine.vae_path.name, engine.file_hash(engine.vae_path))
    refiner = ModelFile(info.refiner_name, info.refiner_hash) if p.refiner_checkpoint else None
    return ReplayRecord(mode=Mode(info.mode), params=p, image_index=index,
                        checkpoint=ModelFile(engine.name, engine.file_hash()), vae=vae, refiner=refiner,
                        adapters=tuple(info.files.items()),
                        controlnets=tuple(ModelFile(name, digest) for name, digest in info.controlnets),
                        version=__version__)


def replay_params(record: ReplayRecord) -> tuple[GenerationParams, int]:
    """(parameters of the one batch that painted the image, its index in that batch) from a record."""
    p, index = record.params, record.image_index
    it, k = divmod(index, p.batch_size)
    shift = it * p.batch_size
    subseed = p.subseed + shift if p.subseed != -1 else -1
    return replace(p, seed=p.seed + shift, subseed=subseed, n_iter=1), k


def _int(res: dict[str, object], key: str, default: int) -> int:
    value = res.get(key)
    return default if value is None or value == "" else int(float(str(value)))


def _float(res: dict[str, object], key: str, default: float) -> float:
    value = res.get(key)
    return default if value is None or value == "" else float(str(value))


def _refiner(res: dict[str, object]) -> str:
    text = str(res.get("Refiner", ""))
    return text.rsplit(" [", 1)[0] if text.endswith("]") else text


def params_from_infotext(text: str) -> GenerationParams:
    """GenerationParams from an A1111 infotext (as written by A1111 or by huihua)."""
    res = parse(text)
    d = GenerationParams()
    hires = any(k in res for k in ("Hires upscale", "Hires upscaler")) or _int(res, "Hires resize-1", 0) > 0
    same_sampler, same_schedule = "Use same sampler", "Use same scheduler"
    fill = str(res.get("Masked content", INPAINTING_FILLS[d.inpainting_fill]))
    return GenerationParams(
        prompt=str(res["Prompt"]), negative_prompt=str(res["Negative prompt"]),
        steps=_int(res, "Steps", d.steps), sampler_name=str(res.get("Sampler", d.sampler_name)),
        scheduler=str(res.get("Schedule type", d.scheduler)), cfg_scale=_float(res, "CFG scale", d.cfg_scale),
        seed=_int(res, "Seed", d.seed), subseed=_int(res, "Variation seed", d.subseed),
        subseed_strength=_float(res, "Variation seed strength", d.subseed_strength),
        seed_resize_from_w=_int(res, "Seed resize from-1", 0), seed_resize_from_h=_int(res, "Seed resize from-2", 0),
        width=_int(res, "Size-1", 512), height=_int(res, "Size-2", 512), clip_skip=_int(res, "Clip skip", 1),
        eta=_float(res, "Eta", 0.0) if "Eta" in res else None,
        denoising_strength=_float(res, "Denoising strength", d.denoising_strength),
        enable_hr=hires, hr_scale=_float(res, "Hires upscale", d.hr_scale),
        hr_upscaler=str(res.get("Hires upscaler", d.hr_upscaler)),
        hr_second_pass_steps=_int(res, "Hires steps", 0),
        hr_resize_x=_int(res, "Hires resize-1", 0), hr_resize_y=_int(res, "Hires resize-2", 0),
        hr_sampler_name="" if res.get("Hires sampler") == same_sampler else str(res.get("Hires sampler", "")),
        hr_scheduler="" if res.get("Hires schedule type") == same_schedule else str(res.get("Hires schedule type", "")),
        hr_prompt=str(res.get("Hires prompt", "")), hr_negative_prompt=str(res.get("Hires negative prompt", "")),
        cfg_rescale=_float(res, "CFG rescale", 0.0),
        resize_mode=RESIZE_MODES.index(str(res["Resize mode"])) if res.get("Resize mode") in RESIZE_MODES else 0,
        mask_blur=_int(res, "Mask blur", d.mask_blur),
        inpainting_fill=INPAINTING_FILLS.index(fill) if fill in INPAINTING_FILLS else d.inpainting_fill,
        inpaint_full_res=res.get("Inpaint area") == "Only masked",
        inpaint_full_res_padding=_int(res, "Masked area padding", d.inpaint_full_res_padding),
        inpainting_mask_invert=1 if res.get("Mask mode") == "Inpaint not masked" else 0,
        outpaint_left=_int(res, "Outpaint left", 0), outpaint_right=_int(res, "Outpaint right", 0),
        outpaint_top=_int(res, "Outpaint top", 0), outpaint_bottom=_int(res, "Outpaint bottom", 0),
        sdxl_original_width=_int(res, "Original size-1", 0), sdxl_original_height=_int(res, "Original size-2", 0),
        sdxl_crop_top=_int(res, "Crop top", 0), sdxl_crop_left=_int(res, "Crop left", 0),
        sdxl_aesthetic_score=_float(res, "Aesthetic score", d.sdxl_aesthetic_score),
        sdxl_negative_aesthetic_score=_float(res, "Negative aesthetic score", d.sdxl_negative_aesthetic_score),
        refiner_checkpoint=_refiner(res), refiner_switch_at=_float(res, "Refiner switch at", d.refiner_switch_at),
    )
