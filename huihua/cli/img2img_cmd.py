"""``huihua img2img PROMPT --init-image PIC``: repaint a picture at a denoising strength."""

from __future__ import annotations

import argparse
from pathlib import Path

from huihua.cli.generate_cmd import add_output_option, paint
from huihua.cli.options import add_adapter_options, add_generation_options, add_image_options, add_model_options
from huihua.errors import HuihuaError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("img2img", help="repaint a picture (denoising strength, resize modes)")
    p.add_argument("prompt", nargs="?", default=None, help="the prompt, in AUTOMATIC1111's prompt language")
    add_model_options(p)
    add_image_options(p)
    add_generation_options(p)
    add_adapter_options(p)
    add_output_option(p)
    p.set_defaults(func=run)


def open_image(path: Path, mode: str = "RGB"):
    """A picture from disk, loaded into memory, as ``mode``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert(mode) if mode != "keep" else im.copy()
    except (OSError, UnidentifiedImageError) as e:
        raise HuihuaError(f"{path}: cannot be read as a picture ({e})") from None


def run(args: argparse.Namespace) -> int:
    return paint(args, init_images=[open_image(p) for p in args.init_image])
