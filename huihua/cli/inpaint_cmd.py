"""``huihua inpaint PROMPT --init-image PIC --mask MASK``: repaint the white part of the mask, or outpaint."""

from __future__ import annotations

import argparse

from huihua.cli.args import open_image
from huihua.cli.generate_cmd import paint
from huihua.errors import ParameterError


def run(args: argparse.Namespace) -> int:
    outpaint = any(getattr(args, f"outpaint_{side}") for side in ("left", "right", "top", "bottom"))
    if args.mask is None and not outpaint:
        raise ParameterError("--mask: required (white = repaint), unless --outpaint-left/right/top/bottom extend "
                             "the picture; for img2img without a mask use 'huihua img2img'")
    mask = open_image(args.mask, "keep") if args.mask is not None else None
    return paint(args, init_images=[open_image(p) for p in args.init_image], mask=mask)
