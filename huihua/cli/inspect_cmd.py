"""``huihua inspect FILE``: what a checkpoint is, read from its header alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from huihua.checkpoints.inspect import inspect_checkpoint


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show a checkpoint's family, variant, dtype, sizes and hash")
    p.add_argument("file", type=Path, help="a .safetensors/.ckpt file or a diffusers folder")
    p.add_argument("--no-hash", action="store_true", help="skip hashing the file (fast on huge files)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = inspect_checkpoint(args.file, with_hash=not args.no_hash)
    for key, value in report.rows():
        print(f"{key:<22} {value}")
    return 0

