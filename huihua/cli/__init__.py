"""The ``huihua`` command line: a thin client of the Python API (one module per command group)."""

from huihua.cli.main import main

__all__ = ["main"]
