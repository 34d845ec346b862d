"""``huihua upscale IMAGE``: ESRGAN / Real-ESRGAN / compact nets in tiles, or Lanczos; keeps the infotext."""

from __future__ import annotations

import argparse
from pathlib import Path

from huihua.errors import ParameterError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upscale", help="upscale an image with an ESRGAN-family model or Lanczos")
    p.add_argument("image", type=Path)
    p.add_argument("--model", default="Lanczos", help="upscaler .pth/.safetensors file, or Lanczos (default)")
    p.add_argument("--scale", type=float, default=None, help="default: the model's own scale (2 for Lanczos)")
    p.add_argument("--tile", type=int, default=512, help="tile side in pixels (0: whole image at once)")
    p.add_argument("--overlap", type=int, default=32, help="blended overlap between tiles")
    p.add_argument("--device", default=None)
    p.add_argument("-o", "--output", type=Path, default=None, help="default: IMAGE-upscaled.png (never overwritten)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from PIL import Image, UnidentifiedImageError

    from huihua.cli.output import free_path
    from huihua.infotext import read_infotext, write_image
    from huihua.runtime.devices import resolve_device
    from huihua.upscale import lanczos, load_upscaler, upscale

    try:
        image = Image.open(args.image)
        image.load()
    except FileNotFoundError:
        raise ParameterError(f"{args.image}: no such file") from None
    except (UnidentifiedImageError, OSError):
        raise ParameterError(f"{args.image}: not an image Pillow can read") from None
    image = image.convert("RGB")
    if args.model.lower() == "lanczos":
        result = lanczos(image, args.scale or 2.0)
    else:
        upscaler = load_upscaler(args.model, device=resolve_device(args.device))
        result = upscale(image, upscaler, args.scale, tile=args.tile, overlap=args.overlap)
    out = free_path(args.output or args.image.with_name(f"{args.image.stem}-upscaled.png"))
    write_image(out, result, read_infotext(args.image) or "")
    print(out)
    return 0
