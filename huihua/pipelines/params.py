"""Generation parameters: one frozen dataclass with AUTOMATIC1111's field names and defaults.

Shared by the CLI, the Python API, the server and the tests. ``validate`` refuses bad values up
front with a message naming the field, so nothing is half-done. Fields that only img2img and
inpainting read (``resize_mode``, ``mask_blur``, ``inpainting_fill``, ...) are ignored by txt2img.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from huihua.errors import ParameterError

MAX_SIDE = 8192
MAX_STEPS = 1000
MAX_BATCH = 64
MIN_MULTIPLE = 8

# Short keywords accepted by ``engine.generate`` as aliases of A1111 field names.
ALIASES = {"sampler": "sampler_name", "schedule": "scheduler", "cfg": "cfg_scale"}

# A1111's img2img resize modes and masked-content choices, by index.
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
INPAINTING_FILLS = ("fill", "original", "latent noise", "latent nothing")


@dataclass(frozen=True)
class GenerationParams:
    """What to paint: A1111 field names; ``width``/``height`` of None mean the model's native size."""

    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 20
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    cfg_scale: float = 7.0
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = 0
    seed_resize_from_w: int = 0
    width: int | None = None
    height: int | None = None
    batch_size: int = 1
    n_iter: int = 1
    clip_skip: int = 1
    eta: float | None = None
    denoising_strength: float = 0.75
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_sampler_name: str = ""
    hr_scheduler: str = ""
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    hr_denoising_strength: float | None = None  # None: use denoising_strength (A1111's single field)
    cfg_rescale: float = 0.0
    # img2img / inpainting (A1111 names; indices into RESIZE_MODES and INPAINTING_FILLS)
    resize_mode: int = 0
    mask_blur: int = 4
    inpainting_fill: int = 1
    inpaint_full_res: bool = False
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: int = 0
    # outpainting: pixels added on each side before inpainting the new area
    outpaint_left: int = 0
    outpaint_right: int = 0
    outpaint_top: int = 0
    outpaint_bottom: int = 0
    # SDXL micro-conditioning (0 = the generated size) and the refiner
    sdxl_original_width: int = 0
    sdxl_original_height: int = 0
    sdxl_crop_top: int = 0
    sdxl_crop_left: int = 0
    sdxl_aesthetic_score: float = 6.0
    sdxl_negative_aesthetic_score: float = 2.5
    refiner_checkpoint: str = ""
    refiner_switch_at: float = 0.8

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> GenerationParams:
        """Build from keyword arguments, accepting the short aliases; unknown names are an error."""
        names = {f.name for f in fields(cls)}
        clean: dict[str, Any] = {}
        for key, value in kwargs.items():
            key = ALIASES.get(key, key)
            if key not in names:
                raise ParameterError(f"{key}: unknown generation parameter")
            clean[key] = value
        return cls(**clean)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationParams:
        """From ``to_dict`` output (JSON); unknown keys are an error, missing ones take defaults."""
        return cls.from_kwargs(**data)

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON-able values."""
        return asdict(self)

    def with_size(self, width: int, height: int) -> GenerationParams:
        """A copy with the size filled in."""
        return replace(self, width=width, height=height)

    @property
    def hr_strength(self) -> float:
        """The denoising strength of the hires second pass."""
        return self.denoising_strength if self.hr_denoising_strength is None else self.hr_denoising_strength


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(f"{name}: must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ParameterError(f"{name}: must be between {low} and {high}, got {value}")


def _check_float(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParameterError(f"{name}: must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ParameterError(f"{name}: must be between {low} and {high}, got {value}")


def _check_str(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise ParameterError(f"{name}: must be a string, got {type(value).__name__}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ParameterError(f"{name}: must be true or false, got {value!r}")


def _check_side(name: str, value: Any, multiple: int) -> None:
    _check_int(name, value, multiple, MAX_SIDE)
    if value % multiple:
        raise ParameterError(f"{name}: must be a multiple of {multiple}, got {value}")


def hires_size(p: GenerationParams, multiple: int = MIN_MULTIPLE) -> tuple[int, int]:
    """(width, height) of the hires second pass: hr_resize_x/y when set, else size × hr_scale."""
    assert p.width is not None and p.height is not None
    if p.hr_resize_x > 0 or p.hr_resize_y > 0:  # A1111: a zero side follows the aspect ratio
        w = p.hr_resize_x or round(p.hr_resize_y * p.width / p.height)
        h = p.hr_resize_y or round(p.hr_resize_x * p.height / p.width)
    else:
        w, h = int(p.width * p.hr_scale), int(p.height * p.hr_scale)
    return max(multiple, w // multiple * multiple), max(multiple, h // multiple * multiple)


def _validate_hires(p: GenerationParams, multiple: int) -> None:
    _check_float("hr_scale", p.hr_scale, 1.0, 8.0)
    _check_int("hr_second_pass_steps", p.hr_second_pass_steps, 0, MAX_STEPS)
    _check_int("hr_resize_x", p.hr_resize_x, 0, MAX_SIDE)
    _check_int("hr_resize_y", p.hr_resize_y, 0, MAX_SIDE)
    if p.hr_denoising_strength is not None:
        _check_float("hr_denoising_strength", p.hr_denoising_strength, 0.0, 1.0)
    for name in ("hr_upscaler", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt"):
        _check_str(name, getattr(p, name))
    if p.enable_hr and p.width is not None and p.height is not None:
        w, h = hires_size(p, multiple)
        _check_side("hr_resize_x (hires width)", w, multiple)
        _check_side("hr_resize_y (hires height)", h, multiple)


def _validate_inpaint(p: GenerationParams) -> None:
    _check_int("resize_mode", p.resize_mode, 0, len(RESIZE_MODES) - 1)
    _check_int("mask_blur", p.mask_blur, 0, 256)
    _check_int("inpainting_fill", p.inpainting_fill, 0, len(INPAINTING_FILLS) - 1)
    _check_bool("inpaint_full_res", p.inpaint_full_res)
    _check_int("inpaint_full_res_padding", p.inpaint_full_res_padding, 0, MAX_SIDE)
    _check_int("inpainting_mask_invert", p.inpainting_mask_invert, 0, 1)
    for side in ("left", "right", "top", "bottom"):
        _check_int(f"outpaint_{side}", getattr(p, f"outpaint_{side}"), 0, MAX_SIDE)


def _validate_sdxl(p: GenerationParams) -> None:
    for name in ("sdxl_original_width", "sdxl_original_height", "sdxl_crop_top", "sdxl_crop_left"):
        _check_int(name, getattr(p, name), 0, 4 * MAX_SIDE)
    _check_float("sdxl_aesthetic_score", p.sdxl_aesthetic_score, 0.0, 10.0)
    _check_float("sdxl_negative_aesthetic_score", p.sdxl_negative_aesthetic_score, 0.0, 10.0)
    _check_str("refiner_checkpoint", p.refiner_checkpoint)
    _check_float("refiner_switch_at", p.refiner_switch_at, 0.0, 1.0)


def validate(p: GenerationParams, multiple: int = MIN_MULTIPLE) -> None:
    """Raise ParameterError naming the first field that is out of range (names: ``resolve_params``)."""
    multiple = max(multiple, MIN_MULTIPLE)
    _check_str("prompt", p.prompt)
    _check_str("negative_prompt", p.negative_prompt)
    _check_int("steps", p.steps, 1, MAX_STEPS)
    _check_str("sampler_name", p.sampler_name)
    _check_str("scheduler", p.scheduler)
    _check_float("cfg_scale", p.cfg_scale, 0.0, 100.0)
    _check_int("seed", p.seed, -1, 2**32 - 1)
    _check_int("subseed", p.subseed, -1, 2**32 - 1)
    _check_float("subseed_strength", p.subseed_strength, 0.0, 1.0)
    _check_int("seed_resize_from_h", p.seed_resize_from_h, 0, MAX_SIDE)
    _check_int("seed_resize_from_w", p.seed_resize_from_w, 0, MAX_SIDE)
    _check_int("batch_size", p.batch_size, 1, MAX_BATCH)
    _check_int("n_iter", p.n_iter, 1, 10_000)
    _check_int("clip_skip", p.clip_skip, 1, 12)
    _check_float("denoising_strength", p.denoising_strength, 0.0, 1.0)
    _check_float("cfg_rescale", p.cfg_rescale, 0.0, 1.0)
    _check_bool("enable_hr", p.enable_hr)
    if p.eta is not None:
        _check_float("eta", p.eta, 0.0, 10.0)
    for name in ("width", "height"):
        value = getattr(p, name)
        if value is not None:
            _check_side(name, value, multiple)
    _validate_hires(p, multiple)
    _validate_inpaint(p)
    _validate_sdxl(p)
