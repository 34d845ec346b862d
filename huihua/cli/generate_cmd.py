"""``huihua generate PROMPT``: txt2img (and hires fix) with A1111 option names; PNGs carry their recipe.

``--from-png IMAGE`` takes every parameter from the picture (its JSON chunk, else its A1111 text);
options given on the command line override them. The other painting commands reuse ``paint``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from huihua.cli.options import (
    adapter_kwargs,
    add_adapter_options,
    add_generation_options,
    add_hires_options,
    add_model_options,
    given_params,
    load_engine,
    params_from_args,
    pipeline_hooks,
    read_png_params,
    warn_model_mismatch,
    with_lora_tags,
)
from huihua.cli.output import save_results
from huihua.errors import ParameterError
from huihua.pipelines.params import GenerationParams


def add_output_option(p: argparse.ArgumentParser) -> None:
    """-o/--output."""
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output PNG (never overwritten: a free name beside it is used); default: outputs/")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="paint a prompt (txt2img, hires fix)")
    p.add_argument("prompt", nargs="?", default=None, help="the prompt, in AUTOMATIC1111's prompt language")
    add_model_options(p)
    add_generation_options(p)
    add_hires_options(p)
    add_adapter_options(p)
    add_output_option(p)
    p.set_defaults(func=run)


def cli_params(args: argparse.Namespace) -> tuple[GenerationParams, int | None, dict | None]:
    """(parameters, image to keep or None for all, JSON record of --from-png)."""
    if args.from_png is None:
        if args.prompt is None:
            raise ParameterError("prompt: required (or --from-png IMAGE)")
        return params_from_args(args), None, None
    base, index, record = read_png_params(args.from_png)
    overrides = given_params(args)
    if args.prompt is not None:
        overrides["prompt"] = args.prompt
    if getattr(args, "lora", None):
        overrides["prompt"] = with_lora_tags(overrides.get("prompt", base.prompt), args)
    params = GenerationParams.from_kwargs(**{**base.to_dict(), **overrides})
    return params, index, record


def paint(args: argparse.Namespace, init_images: Sequence | None = None, mask=None) -> int:
    """Load the model, paint, save, print the paths written."""
    params, index, record = cli_params(args)
    engine = load_engine(args)
    warn_model_mismatch(record, engine)
    result = engine.generate(params=params, init_images=init_images, mask=mask, hooks=pipeline_hooks(args, engine),
                             progress=not args.quiet, **adapter_kwargs(args, engine))
    for path in save_results(result, args.output, only=index):
        print(path)
    return 0


def run(args: argparse.Namespace) -> int:
    return paint(args)
