"""Entry point: parses the command line, runs one command, turns huihua errors into one line and exit code 2."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

from huihua.cli.parser import build_parser
from huihua.errors import HuihuaError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command_module", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(message)s")
    try:
        # The command's module (and torch with it) is imported only when that command runs.
        command = importlib.import_module(f"huihua.cli.{args.command_module}")
        return int(command.run(args) or 0)
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
