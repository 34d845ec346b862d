"""``huihua inspect FILE``: what a checkpoint is, read from its header alone."""

from __future__ import annotations

import argparse

from huihua.checkpoints.inspect import inspect_checkpoint


def run(args: argparse.Namespace) -> int:
    report = inspect_checkpoint(args.file, with_hash=not args.no_hash)
    for key, value in report.rows():
        print(f"{key:<22} {value}")
    return 0

