"""``huihua inpaint PROMPT --init-image PIC --mask MASK``: repaint the white part of the mask, or outpaint."""

from __future__ import annotations

import argparse

from huihua.cli.args import open_image
from huihua.cli.generate_cmd import paint


def run(args: argparse.Namespace) -> int:
    mask = open_image(args.mask, "keep") if args.mask is not None else None
    return paint(args, init_images=[open_image(p) for p in args.init_image], mask=mask)
