"""``huihua generate PROMPT``: txt2img (and hires fix) with A1111 option names; PNGs carry their recipe.

``--from-png IMAGE`` takes every parameter from the picture (its JSON chunk, else its A1111 text);
options given on the command line override them. The other painting commands reuse ``paint``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from PIL import Image

from huihua import api
from huihua.cli.args import (
    callbacks,
    controlnet_units,
    given_params,
    hooks,
    load_model,
    params_from_args,
    warn_model_mismatch,
    warn_size,
    with_lora_tags,
    with_recommended,
)
from huihua.errors import ParameterError
from huihua.pipelines.params import GenerationParams


def cli_params(args: argparse.Namespace) -> tuple[GenerationParams, api.Replay | None]:
    """(parameters, the --from-png picture's replay or None)."""
    if args.from_png is None:
        if args.prompt is None:
            raise ParameterError("prompt: required (or --from-png IMAGE)")
        return params_from_args(args), None
    replay = api.read_replay(args.from_png)
    base = replay.params
    overrides = given_params(args)
    if args.prompt is not None:
        overrides["prompt"] = args.prompt
    if getattr(args, "lora", None):
        overrides["prompt"] = with_lora_tags(str(overrides.get("prompt", base.prompt)), args)
    params = GenerationParams.from_kwargs(**{**base.to_dict(), **overrides})
    return params, replay


def paint(args: argparse.Namespace, init_images: Sequence[Image.Image] = (), mask: Image.Image | None = None) -> int:
    """Check the output, load the model, paint, save, print the paths written."""
    api.check_output(args.output)
    params, replay = cli_params(args)
    if replay is not None:
        missing = api.replay_missing(replay.record, len(init_images), mask is not None,
                                     len(getattr(args, "controlnet", None) or ()))
        if missing:
            raise ParameterError(f"--from-png {args.from_png}: {missing}")
    model = load_model(args)
    warn_model_mismatch(replay, model)
    if replay is None:
        params = with_recommended(params, args, model)
    warn_size(model, params, init_images)
    cache = api.ControlNetCache(model, getattr(args, "controlnet_dir", ()))
    inputs = api.GenerationInputs(init_images=tuple(init_images), mask=mask, hooks=hooks(args, model),
                                  controlnet_units=tuple(controlnet_units(args, cache)),
                                  tiled_vae=getattr(args, "tiled_vae", None))
    result = api.generate(model, params, inputs, callbacks(args))
    for path in api.save_results(result, args.output, only=replay.index if replay else None):
        print(path)
    return 0


def run(args: argparse.Namespace) -> int:
    return paint(args)
