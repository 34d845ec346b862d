"""ControlNet units in a generation: preprocessed once per call, applied per pass, written into the infotext.

``generate(..., controlnet_units=[ControlNetUnit(...), ...])`` hands the units here. Their control
maps are computed once at the generation size (``prepare_control``); each sampling pass then wraps
the UNet with ``Job.controlled_unet`` using that pass's sigmas, so guidance start/end count the
steps of the pass that runs (img2img's shortened schedule, the hires-fix second pass). For
"only masked" inpainting the control images are cropped to the regenerated box, as A1111 does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from PIL import Image

from huihua.adapters.controlnet import (
    ControlNetUnit,
    PreparedUnit,
    check_fits,
    prepare_units,
)
from huihua.adapters.preprocessors import ImageLike, to_rgb_array
from huihua.errors import ParameterError
from huihua.model import Model

Box = tuple[int, int, int, int]  # (left, top, right, bottom)


def _crop(image: ImageLike, picture_size: tuple[int, int], box: Box) -> Image.Image:
    """``image`` fitted to the picture's size, then cut to ``box`` (the picture's coordinates)."""

    arr = to_rgb_array(image) if not isinstance(image, Image.Image) else None
    pil = image if arr is None else Image.fromarray(arr)
    assert isinstance(pil, Image.Image)
    if pil.size != picture_size:
        pil = pil.resize(picture_size, Image.Resampling.LANCZOS)
    return pil.crop(box)


def crop_units(units: Sequence[ControlNetUnit | PreparedUnit], picture_size: tuple[int, int],
               box: Box) -> list[ControlNetUnit | PreparedUnit]:
    """Units whose control images (and masks) are cut to the "only masked" box; prepared units pass."""

    out: list[ControlNetUnit | PreparedUnit] = []
    for unit in units:
        if isinstance(unit, ControlNetUnit):
            mask = None if unit.mask is None else _crop(unit.mask, picture_size, box)
            unit = replace(unit, image=_crop(unit.image, picture_size, box), mask=mask)
        out.append(unit)
    return out


def check_units(engine: Model, units: Sequence[object]) -> None:
    """ParameterError for a non-unit, CheckpointError for a ControlNet that does not fit this model."""

    for i, unit in enumerate(units):
        if not isinstance(unit, (ControlNetUnit, PreparedUnit)):
            raise ParameterError(f"controlnet_units[{i}]: expected a ControlNetUnit, got {type(unit).__name__}")
        model = unit.model if isinstance(unit, ControlNetUnit) else unit.unit.model
        check_fits(model.control_cfg, engine.spec.unet, model.source_name or f"controlnet_units[{i}]")


def prepare_control(units: Sequence[ControlNetUnit | PreparedUnit], width: int, height: int, *,
                    picture_size: tuple[int, int] | None = None, crop: Box | None = None) -> tuple[PreparedUnit, ...]:
    """Preprocess every unit once for a ``width × height`` generation (cropped first for "only masked")."""

    if not units:
        return ()
    if crop is not None and picture_size is not None:
        units = crop_units(units, picture_size, crop)
    return prepare_units(units, width, height)


def _unit(u: ControlNetUnit | PreparedUnit) -> ControlNetUnit:
    return u.unit if isinstance(u, PreparedUnit) else u


def control_infotext(units: Sequence[ControlNetUnit | PreparedUnit]) -> dict[str, str]:
    """``ControlNet 0``, ``ControlNet 1``, ... as A1111's extension writes them (quoted by the formatter)."""
    return {f"ControlNet {i}": _unit(u).infotext()[1:-1] for i, u in enumerate(units)}


def control_files(engine: Model, units: Sequence[ControlNetUnit | PreparedUnit]) -> tuple[tuple[str, str], ...]:
    """(name, short hash) of each unit's ControlNet file, for the JSON chunk."""
    out = []
    for u in units:
        source = _unit(u).model.source_name
        path = Path(source) if source else None
        out.append((path.stem, engine.file_hash(path)) if path is not None else ("", ""))
    return tuple(out)
