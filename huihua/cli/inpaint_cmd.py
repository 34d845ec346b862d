"""``huihua inpaint PROMPT --init-image PIC --mask MASK``: repaint the white part; or outpaint with --outpaint-*."""

from __future__ import annotations

import argparse

from huihua.cli.generate_cmd import add_output_option, paint
from huihua.cli.img2img_cmd import open_image
from huihua.cli.options import (
    add_adapter_options,
    add_generation_options,
    add_image_options,
    add_mask_options,
    add_model_options,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inpaint", help="repaint the masked part of a picture, or extend it (outpainting)")
    p.add_argument("prompt", nargs="?", default=None, help="the prompt, in AUTOMATIC1111's prompt language")
    add_model_options(p)
    add_image_options(p)
    add_mask_options(p)
    add_generation_options(p)
    add_adapter_options(p)
    add_output_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    mask = open_image(args.mask, "keep") if args.mask is not None else None
    return paint(args, init_images=[open_image(p) for p in args.init_image], mask=mask)
