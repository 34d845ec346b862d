"""``huihua upscale IMAGE``: ESRGAN / Real-ESRGAN / compact nets in tiles, or Lanczos; keeps the infotext."""

from __future__ import annotations

import argparse

from PIL import Image, UnidentifiedImageError

from huihua.api.saving import free_path
from huihua.errors import ParameterError
from huihua.imagefile import read_infotext, write_image
from huihua.runtime.devices import resolve_device
from huihua.upscale import lanczos, load_upscaler, upscale


def run(args: argparse.Namespace) -> int:
    try:
        with Image.open(args.image) as opened:
            image = opened.convert("RGB")
    except FileNotFoundError:
        raise ParameterError(f"{args.image}: no such file") from None
    except (UnidentifiedImageError, OSError):
        raise ParameterError(f"{args.image}: not an image Pillow can read") from None
    if args.model.lower() == "lanczos":
        result = lanczos(image, args.scale or 2.0)
    else:
        upscaler = load_upscaler(args.model, device=resolve_device(args.device))
        result = upscale(image, upscaler, args.scale, tile=args.tile, overlap=args.overlap)
    out = free_path(args.output or args.image.with_name(f"{args.image.stem}-upscaled.png"))
    write_image(out, result, read_infotext(args.image) or "")
    print(out)
    return 0
