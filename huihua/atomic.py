"""Atomic, no-overwrite file writing: a file appears complete under its name or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from huihua.errors import HuihuaError


def _commit(tmp: str, target: Path, overwrite: bool) -> None:
    """Move a finished temp file onto ``target``: atomic, and never over an existing file unless asked."""
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # fails if target exists, atomically
    except FileExistsError:
        os.unlink(tmp)
        raise HuihuaError(f"{target}: file exists (pass overwrite=True to replace it)") from None
    except OSError:  # filesystems without hard links
        if target.exists():
            os.unlink(tmp)
            raise HuihuaError(f"{target}: file exists (pass overwrite=True to replace it)") from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic set-and-restore
    os.umask(mask)
    return mask


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files ``save_atomic`` leaves only when killed mid-write; returns what was removed."""
    removed = []
    for path in folder.glob(".*.tmp"):
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(path)
    return removed


def save_atomic(path: str | os.PathLike[str], overwrite: bool, save: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` through ``save(handle)`` into a temp file beside it, then move it into place."""
    target = Path(path)
    if not overwrite and target.exists():
        raise HuihuaError(f"{target}: file exists (pass overwrite=True to replace it)")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets the mode open() would give
        with os.fdopen(fd, "wb") as handle:
            save(handle)
        _commit(tmp, target, overwrite)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target
