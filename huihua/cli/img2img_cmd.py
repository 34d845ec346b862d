"""``huihua img2img PROMPT --init-image PIC``: repaint a picture at a denoising strength."""

from __future__ import annotations

import argparse

from huihua.cli.args import open_image
from huihua.cli.generate_cmd import paint


def run(args: argparse.Namespace) -> int:
    return paint(args, init_images=[open_image(p) for p in args.init_image])
