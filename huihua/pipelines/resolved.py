"""Parameters resolved once per generation: concrete size and seeds, sampler and schedule, enums for modes.

``GenerationParams`` keeps A1111's names, defaults and integer codes (they are what clients send
and what the infotext records). ``resolve_params`` turns them, once, into a ``ResolvedParams`` the
pipelines read: the model's native size or the picture's when none is given, random seeds drawn,
sampler and schedule names looked up, resize mode and masked content as enums.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from PIL import Image

from huihua.diffusion.names import ResolvedNames, resolve_names
from huihua.errors import ParameterError
from huihua.model import Model
from huihua.pipelines.params import GenerationParams, validate
from huihua.pipelines.seeds import resolve_seed
from huihua.pipelines.types import InpaintFill, Mode, ResizeMode


@dataclass(frozen=True)
class ResolvedParams:
    """One generation's parameters with everything model-dependent decided."""

    params: GenerationParams  # width, height, seed and subseed concrete
    mode: Mode
    resize: ResizeMode
    fill: InpaintFill
    first: ResolvedNames  # sampler and schedule of the first pass
    hires: ResolvedNames  # of the hires second pass (the first pass's when not set)

    @property
    def width(self) -> int:
        assert self.params.width is not None
        return self.params.width

    @property
    def height(self) -> int:
        assert self.params.height is not None
        return self.params.height


def mode_of(p: GenerationParams, has_images: bool, has_mask: bool) -> Mode:
    """Which pipeline the inputs ask for; a ParameterError when a mask or outpainting has no picture."""
    outpaint = has_outpaint(p)
    if (has_mask or outpaint) and not has_images:
        raise ParameterError("init_images: inpainting and outpainting need a picture")
    if has_mask or outpaint:
        return Mode.INPAINT
    return Mode.IMG2IMG if has_images else Mode.TXT2IMG


def has_outpaint(p: GenerationParams) -> bool:
    """Whether the parameters ask to extend the canvas."""
    return any((p.outpaint_left, p.outpaint_right, p.outpaint_top, p.outpaint_bottom))


def _default_size(model: Model, p: GenerationParams, images: Sequence[Image.Image]) -> GenerationParams:
    if images:  # img2img and inpainting default to the picture's size, rounded down to a multiple of 8
        w, h = images[0].size
        default_w, default_h = max(8, w // 8 * 8), max(8, h // 8 * 8)
    else:
        default_w = default_h = model.spec.native_resolution
    # None is "the default"; 0 is a size, and validation refuses it
    return p.with_size(default_w if p.width is None else p.width, default_h if p.height is None else p.height)


def _names(field: str, sampler: str, schedule: str) -> ResolvedNames:
    try:
        return resolve_names(sampler, schedule)
    except ParameterError as e:
        raise ParameterError(f"{field}: {e}") from None


def resolve_params(model: Model, params: GenerationParams, images: Sequence[Image.Image] = (),
                   mode: Mode = Mode.TXT2IMG) -> ResolvedParams:
    """Fill model-dependent defaults (size, concrete seeds), validate, and look the names up once."""
    p = _default_size(model, params, images)
    validate(p, multiple=model.spec.vae.downscale)
    if p.enable_hr and mode is not Mode.TXT2IMG:
        raise ParameterError("enable_hr: the hires fix applies to txt2img only")
    p = replace(p, seed=resolve_seed(p.seed), subseed=resolve_seed(p.subseed))
    first = _names("sampler_name/scheduler", p.sampler_name, p.scheduler)
    hires = first
    if p.hr_sampler_name or p.hr_scheduler:
        hires = _names("hr_sampler_name/hr_scheduler", p.hr_sampler_name or p.sampler_name,
                       p.hr_scheduler or p.scheduler)
    return ResolvedParams(p, mode, ResizeMode(p.resize_mode), InpaintFill(p.inpainting_fill), first, hires)
