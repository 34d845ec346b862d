"""A1111's X/Y/Z plot: any parameters on up to three axes, one labelled grid picture per Z value.

An axis is ``"field:v1,v2,v3"``: a GenerationParams field (or an A1111 axis label such as "CFG
Scale", "Sampler", "Steps") and comma-separated values (CSV quoting for values with commas; integer
and number ranges ``10-30 (+10)`` and ``1-2 [5]``). ``prompt_sr`` ("Prompt S/R") searches the
prompts for its first value and replaces it by each value in turn. Every cell is an ordinary
generation with its own infotext, so any cell can be painted again from its picture.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, get_type_hints

from PIL import Image, ImageDraw, ImageFont

from huihua.errors import ParameterError
from huihua.pipelines.params import ALIASES, GenerationParams

PROMPT_SR = "prompt_sr"
_LABELS = {
    "cfg_scale": "cfg_scale", "sampler": "sampler_name", "schedule_type": "scheduler", "schedule": "scheduler",
    "var_seed": "subseed", "var_strength": "subseed_strength", "denoising": "denoising_strength",
    "prompt_s/r": PROMPT_SR, "prompt_sr": PROMPT_SR, "hires_steps": "hr_second_pass_steps",
    "hires_upscaler": "hr_upscaler", "hires_sampler": "hr_sampler_name", "refiner_switch_at": "refiner_switch_at",
}
_RANGE = re.compile(r"^\s*([+-]?\d+(?:\.\d*)?)\s*-\s*([+-]?\d+(?:\.\d*)?)\s*(?:\(([+-]?\d+(?:\.\d*)?)\s*\)|"
                    r"\[(\d+)\s*\])?\s*$")


@dataclass(frozen=True)
class Axis:
    """One axis: the field it changes and its values (already typed)."""

    field: str
    values: tuple[Any, ...]

    def label(self, value: Any) -> str:
        """How a value is written on the grid."""
        return f"{value}" if self.field == PROMPT_SR else f"{self.field}: {value}"


def _field_type(name: str) -> type:
    hint = get_type_hints(GenerationParams)[name]
    for t in (bool, int, float, str):
        if hint is t or t in getattr(hint, "__args__", ()):
            return t
    return str


def axis_names() -> list[str]:
    """The parameters an axis may vary: GenerationParams fields (not the prompt itself) and prompt_sr."""
    return [*(f.name for f in fields(GenerationParams) if f.name != "prompt"), PROMPT_SR]


def _field_name(text: str) -> str:
    key = "_".join(text.strip().lower().replace(".", "").split())
    names = {f.name for f in fields(GenerationParams)}
    key = ALIASES.get(key, _LABELS.get(key, key))
    if key not in names and key != PROMPT_SR:
        valid = ", ".join(sorted(axis_names()))
        raise ParameterError(f"grid axis: unknown parameter {text.strip()!r} (valid: {valid})")
    if key == "prompt":
        raise ParameterError("grid axis: use prompt_sr (Prompt S/R) to vary the prompt")
    return key


def _expand_range(text: str, kind: type) -> list[Any] | None:
    m = _RANGE.match(text)
    if m is None or kind not in (int, float):
        return None
    start, end = float(m.group(1)), float(m.group(2))
    if m.group(4):  # [count]: evenly spaced
        count = int(m.group(4))
        values = [start + (end - start) * i / max(count - 1, 1) for i in range(count)]
    else:
        step = float(m.group(3)) if m.group(3) else (1.0 if end >= start else -1.0)
        if step == 0 or (end - start) * step < 0:
            raise ParameterError(f"grid axis: bad range {text!r}")
        values, v = [], start
        while (v <= end + 1e-9) if step > 0 else (v >= end - 1e-9):
            values.append(v)
            v += step
    return [round(v) if kind is int else round(v, 6) for v in values]


def _convert(text: str, kind: type, name: str) -> Any:
    try:
        if kind is bool:
            return text.strip().lower() in ("1", "true", "yes", "on")
        return kind(text.strip()) if kind is not str else text.strip()
    except ValueError:
        raise ParameterError(f"grid axis {name}: {text!r} is not a valid {kind.__name__}") from None


def parse_axis(spec: str) -> Axis:
    """``"field:v1,v2"`` -> Axis with typed values."""
    name, sep, rest = spec.partition(":")
    if not sep or not rest.strip():
        raise ParameterError(f"grid axis: {spec!r} must look like 'field:value1,value2'")
    key = _field_name(name)
    kind = str if key == PROMPT_SR else _field_type(key)
    items = [item for row in csv.reader([rest], skipinitialspace=True) for item in row if item.strip()]
    values: list[Any] = []
    for item in items:
        expanded = _expand_range(item, kind)
        values.extend(expanded if expanded is not None else [_convert(item, kind, key)])
    if not values:
        raise ParameterError(f"grid axis {key}: no values")
    return Axis(key, tuple(values))


def apply_value(p: GenerationParams, axis: Axis, value: Any) -> GenerationParams:
    """``p`` with the axis set to ``value`` (Prompt S/R replaces the axis's first value in both prompts)."""
    if axis.field == PROMPT_SR:
        search = axis.values[0]
        if search not in p.prompt and search not in p.negative_prompt:
            raise ParameterError(f"prompt_sr: {search!r} is not in the prompt")
        return replace(
            p, prompt=p.prompt.replace(search, value), negative_prompt=p.negative_prompt.replace(search, value)
        )
    return replace(p, **{axis.field: value})


@dataclass(frozen=True)
class GridPage:
    """One Z value's grid: cell pictures row by row (Y), column by column (X), with labels."""

    title: str
    x_labels: tuple[str, ...]
    y_labels: tuple[str, ...]
    cells: tuple[tuple[Any, ...], ...]  # [row][col] -> whatever ``paint`` returned


def cell_params(
    base: GenerationParams, x: Axis | None, y: Axis | None, z: Axis | None
) -> list[list[list[GenerationParams]]]:
    """params[z][y][x] for every cell (a missing axis counts as one value)."""
    def values(axis: Axis | None) -> Sequence[Any]:
        return axis.values if axis is not None else (None,)

    def set_(p: GenerationParams, axis: Axis | None, v: Any) -> GenerationParams:
        return apply_value(p, axis, v) if axis is not None else p

    return [[[set_(set_(set_(base, z, zv), y, yv), x, xv) for xv in values(x)] for yv in values(y)] for zv in values(z)]


def run_grid(base: GenerationParams, x: Axis | None, y: Axis | None, z: Axis | None,
             paint: Callable[[GenerationParams], Any]) -> list[GridPage]:
    """Paint every cell (``paint(params)``) and group them into one page per Z value."""
    table = cell_params(base, x, y, z)  # built first: every axis value is checked before painting
    def labels(axis: Axis | None) -> tuple[str, ...]:
        return tuple(axis.label(v) for v in axis.values) if axis is not None else ("",)

    pages = []
    for zi, rows in enumerate(table):
        cells = tuple(tuple(paint(p) for p in row) for row in rows)
        pages.append(GridPage(labels(z)[zi], labels(x), labels(y), cells))
    return pages


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    box = draw.textbbox((0, 0), text, font=font)
    return round(box[2] - box[0]), round(box[3] - box[1])


def draw_grid(images: Sequence[Sequence[Image.Image]], x_labels: Sequence[str], y_labels: Sequence[str],
              title: str = "") -> Image.Image:
    """Images [row][col] in a grid with column labels on top, row labels on the left, a title above."""
    font = ImageFont.load_default()
    cw, ch = images[0][0].size
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = max(_text_size(probe, t or "x", font)[1] for t in [*x_labels, *y_labels, title]) + 6
    left = max((_text_size(probe, t, font)[0] for t in y_labels if t), default=0)
    left = left + 10 if left else 0
    top = line_h * ((1 if any(x_labels) else 0) + (1 if title else 0))
    grid = Image.new("RGB", (left + cw * len(images[0]), top + ch * len(images)), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((left + 4, 3), title, fill="black", font=font)
    for c, label in enumerate(x_labels):
        draw.text((left + c * cw + 4, top - line_h + 3), label, fill="black", font=font)
    for r, row in enumerate(images):
        draw.text((4, top + r * ch + ch // 2 - line_h // 2), y_labels[r] if r < len(y_labels) else "",
                  fill="black", font=font)
        for c, im in enumerate(row):
            grid.paste(im.resize((cw, ch)) if im.size != (cw, ch) else im, (left + c * cw, top + r * ch))
    return grid
