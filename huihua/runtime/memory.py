"""Giving memory back: after a model is dropped, return freed pages to the operating system."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import sys

import torch


def release_memory() -> None:
    """Collect garbage, empty the CUDA cache, and trim glibc's heap so RSS really falls."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    if sys.platform.startswith("linux"):
        name = ctypes.util.find_library("c")
        if name:
            with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to trim
                ctypes.CDLL(name).malloc_trim(0)


def rss_bytes() -> int:
    """Current resident set size of this process (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return 0

    return pages * os.sysconf("SC_PAGE_SIZE")
