"""Parsed options -> the API's dataclasses: parameters, inputs, the model to load, replay."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from huihua import api
from huihua.adapters.controlnet import ControlNetUnit, parse_controlnet_arg
from huihua.errors import HuihuaError, ParameterError
from huihua.model import Model
from huihua.pipelines.hooks import PipelineHooks
from huihua.pipelines.params import GenerationParams


def open_image(path: Path, mode: str = "RGB") -> Image.Image:
    """A picture from disk, loaded into memory, as ``mode`` ("keep": as stored)."""
    try:
        with Image.open(path) as im:
            return im.convert(mode) if mode != "keep" else im.copy()
    except (OSError, UnidentifiedImageError) as e:
        raise HuihuaError(f"{path}: cannot be read as a picture ({e})") from None


def lora_tags(args: argparse.Namespace) -> str:
    """``<lora:name:w>`` tags for the --lora options ("" when none)."""
    tags = []
    for text in getattr(args, "lora", None) or []:
        name, _, weight = text.rpartition(":") if ":" in text else (text, "", "1")
        try:
            value = float(weight)
        except ValueError:
            raise ParameterError(f"--lora: weight {weight!r} of {text!r} is not a number") from None
        if not name.strip():
            raise ParameterError(f"--lora: expected NAME[:WEIGHT], got {text!r}")
        tags.append(f"<lora:{name.strip()}:{value:g}>")
    return " ".join(tags)


def _per_unit(values: list, count: int, option: str) -> list:
    """One value for all units, one per unit, or none (empty list: the default)."""
    if not values:
        return [None] * count
    if len(values) == 1:
        return values * count
    if len(values) == count:
        return list(values)
    raise ParameterError(f"{option}: give it once or once per --controlnet ({count}), got {len(values)}")


def _unit_choice(value: str | None) -> str | int | None:
    return int(value) if value is not None and value.isdigit() else value


def controlnet_units(args: argparse.Namespace, controlnets: api.ControlNetCache) -> list[ControlNetUnit]:
    """ControlNet units from --controlnet and its per-unit options (each model file loaded once)."""
    specs = [parse_controlnet_arg(text) for text in getattr(args, "controlnet", None) or []]
    n = len(specs)
    columns = {
        "preprocessor": _per_unit(args.controlnet_preprocessor, n, "--controlnet-preprocessor"),
        "guidance_start": _per_unit(args.controlnet_start, n, "--controlnet-start"),
        "guidance_end": _per_unit(args.controlnet_end, n, "--controlnet-end"),
        "control_mode": [_unit_choice(v) for v in _per_unit(args.controlnet_mode, n, "--controlnet-mode")],
        "resize_mode": [_unit_choice(v) for v in _per_unit(args.controlnet_resize_mode, n, "--controlnet-resize-mode")],
    }
    units = []
    for i, spec in enumerate(specs):
        settings = {k: v[i] for k, v in columns.items() if v[i] is not None}
        units.append(ControlNetUnit(controlnets.get(spec.model_path), open_image(Path(spec.image_path)),
                                    weight=spec.weight, pixel_perfect=args.controlnet_pixel_perfect, **settings))
    return units


def callbacks(args: argparse.Namespace) -> api.Callbacks:
    """Progress bar and live previews from the options."""
    quiet = getattr(args, "quiet", False)
    if getattr(args, "preview_dir", None) is None:
        return api.Callbacks(progress=not quiet)
    return api.Callbacks(preview=api.preview_writer(args.preview_dir), preview_every=args.preview_every,
                         taesd=args.taesd, progress=not quiet)


def with_recommended(params: GenerationParams, args: argparse.Namespace, model: Model) -> GenerationParams:
    """``params`` with the model's recommended sampler, schedule, steps and CFG where the options left them out."""
    settings = api.recommended_settings(model)
    if settings is None:
        return params
    given = given_params(args)
    chosen = {k: v for k, v in vars(settings).items() if k not in given}
    return replace(params, **chosen) if chosen else params


def warn_size(model: Model, params: GenerationParams, init_images: Sequence[Image.Image]) -> None:
    """One line on stderr when the picture size is far from the model's training size."""
    width = params.width if params.width is not None else (init_images[0].width if init_images else None)
    height = params.height if params.height is not None else (init_images[0].height if init_images else None)
    warning = api.size_warning(model, width, height) if width and height else None
    if warning:
        print(f"huihua: warning: {warning}", file=sys.stderr)


def given_params(args: argparse.Namespace) -> dict[str, object]:
    """The GenerationParams fields set on the command line (flags left out keep their defaults)."""
    values = {f.name: getattr(args, f.name, None) for f in fields(GenerationParams) if f.name != "prompt"}
    return {k: v for k, v in values.items() if v is not None}


def with_lora_tags(prompt: str, args: argparse.Namespace) -> str:
    """``prompt`` followed by the --lora tags."""
    tags = lora_tags(args)
    return f"{prompt} {tags}".strip() if tags else prompt


def params_from_args(args: argparse.Namespace, **extra: object) -> GenerationParams:
    """GenerationParams from parsed options (plus pipeline-specific fields); --lora tags join the prompt."""
    prompt = with_lora_tags(args.prompt or "", args)
    return GenerationParams.from_kwargs(prompt=prompt, **{**given_params(args), **extra})


def load_model(args: argparse.Namespace) -> Model:
    """The model the options ask for (the embedded one without --model), on --threads CPU threads."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise ParameterError(f"--threads: must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    return api.load_model(args.model, vae=args.vae, device=args.device, dtype=args.dtype,
                          prediction=args.prediction, zero_terminal_snr=getattr(args, "zero_terminal_snr", None))


def hooks(args: argparse.Namespace, model: Model) -> PipelineHooks:
    """Adapter folders and an upscaler model file given as --hr-upscaler."""
    base = api.adapter_hooks(getattr(args, "lora_dir", ()), getattr(args, "embedding_dir", ()))
    return api.hires_hooks(base, model, getattr(args, "hr_upscaler", None))


def warn_model_mismatch(replay: api.Replay | None, model: Model) -> None:
    """One line on stderr when the picture was painted by another checkpoint."""
    warning = api.model_mismatch(replay.record if replay else None, model)
    if warning:
        print(f"huihua: warning: {warning}", file=sys.stderr)
