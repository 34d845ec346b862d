"""Entry point: builds the sub-command parser and turns huihua errors into one line and exit code 2."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from huihua.errors import HuihuaError

# Each command module exposes ``register(subparsers)``; it sets ``func`` on its parser.
_COMMAND_MODULES = (
    "huihua.cli.inspect_cmd",
    "huihua.cli.generate_cmd",
    "huihua.cli.list_cmd",
    "huihua.cli.upscale_cmd",
    "huihua.cli.train_cmd",
    "huihua.cli.eval_cmd",
    "huihua.cli.train_adapters_cmd",
    "huihua.cli.img2img_cmd",
    "huihua.cli.inpaint_cmd",
    "huihua.cli.pnginfo_cmd",
    "huihua.cli.grid_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    """The full ``huihua`` argument parser."""
    import importlib

    parser = argparse.ArgumentParser(prog="huihua", description="huihua (绘画): Stable Diffusion in plain PyTorch")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except HuihuaError as e:
        if args.debug:
            raise
        print(f"huihua: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("huihua: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
