"""Generation parameters: one frozen dataclass with AUTOMATIC1111's field names and defaults.

Shared by the CLI, the Python API, the server and the tests. ``validate`` refuses bad values up
front with a message naming the field, so nothing is half-done.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from huihua.errors import ParameterError

MAX_SIDE = 8192
MAX_STEPS = 1000
MAX_BATCH = 64

# Short keywords accepted by ``engine.generate`` as aliases of A1111 field names.
ALIASES = {"sampler": "sampler_name", "schedule": "scheduler", "cfg": "cfg_scale"}


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
    cfg_rescale: float = 0.0

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

    def with_size(self, width: int, height: int) -> GenerationParams:
        """A copy with the size filled in."""
        return replace(self, width=width, height=height)


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


def validate(p: GenerationParams, multiple: int = 8) -> None:
    """Raise ParameterError naming the first field that is out of range."""
    if not isinstance(p.prompt, str):
        raise ParameterError("prompt: must be a string")
    if not isinstance(p.negative_prompt, str):
        raise ParameterError("negative_prompt: must be a string")
    _check_int("steps", p.steps, 1, MAX_STEPS)
    _check_float("cfg_scale", p.cfg_scale, 0.0, 100.0)
    _check_int("seed", p.seed, -1, 2**32 - 1)
    _check_int("subseed", p.subseed, -1, 2**32 - 1)
    _check_float("subseed_strength", p.subseed_strength, 0.0, 1.0)
    _check_int("batch_size", p.batch_size, 1, MAX_BATCH)
    _check_int("n_iter", p.n_iter, 1, 10_000)
    _check_int("clip_skip", p.clip_skip, 1, 12)
    _check_float("denoising_strength", p.denoising_strength, 0.0, 1.0)
    _check_float("cfg_rescale", p.cfg_rescale, 0.0, 1.0)
    _check_float("hr_scale", p.hr_scale, 1.0, 8.0)
    _check_int("hr_second_pass_steps", p.hr_second_pass_steps, 0, MAX_STEPS)
    if p.eta is not None:
        _check_float("eta", p.eta, 0.0, 10.0)
    for name in ("width", "height"):
        value = getattr(p, name)
        if value is None:
            continue
        _check_int(name, value, multiple, MAX_SIDE)
        if value % multiple:
            raise ParameterError(f"{name}: must be a multiple of {multiple}, got {value}")
