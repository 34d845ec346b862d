"""Saving generated images, never overwriting a file.

PNG carries A1111's infotext and the JSON replay record; JPEG and WebP carry the infotext in EXIF
UserComment. ``check_output`` refuses a bad ``-o`` before any painting starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from huihua.errors import HuihuaError, ParameterError
from huihua.imagefile import write_image
from huihua.pipelines.types import GenerationResult, ReplayRecord

DEFAULT_OUTDIR = Path("outputs")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def check_output(output: Path | None, field: str = "-o") -> Path | None:
    """Check (and create) where pictures will go, before any work; returns ``output`` unchanged.

    ``output`` None means ``outputs/``; an existing folder receives numbered files; anything else is
    a file name whose extension picks the format (none: ``.png``). Its folder is created here, so an
    uncreatable folder, or a parent that is a file, is an error now rather than after painting.
    """
    if output is not None and output.is_dir():
        folder = output
    else:
        if output is not None and output.suffix and output.suffix.lower() not in IMAGE_SUFFIXES:
            raise ParameterError(f"{field} {output}: unknown picture extension {output.suffix!r} "
                                 f"(use {', '.join(IMAGE_SUFFIXES)})")
        folder = DEFAULT_OUTDIR if output is None else output.parent
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ParameterError(f"{field} {output or folder}: {parent} is a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ParameterError(f"{field} {output or folder}: cannot create the folder {folder} ({e.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ParameterError(f"{field} {output or folder}: the folder {folder} is not writable")
    return output


def free_path(path: Path) -> Path:
    """``path`` if it does not exist, else the first free ``stem-N.suffix`` beside it."""
    if not path.exists():
        return path
    n = 1
    while (candidate := path.with_name(f"{path.stem}-{n}{path.suffix}")).exists():
        n += 1
    return candidate


def numbered_path(outdir: Path, seed: int) -> Path:
    """A1111-style ``NNNNN-SEED.png`` with the next free number in ``outdir``."""
    outdir.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[:5]) for p in outdir.glob("*.png") if p.name[:5].isdigit()]
    return free_path(outdir / f"{max(numbers, default=-1) + 1:05d}-{seed}.png")


def save_image(image: Image.Image, path: Path, infotext: str, record: ReplayRecord | None = None) -> Path:
    """Write one picture at ``path`` (format by extension) or, if taken (even by a racing writer), the next
    free name beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        target = free_path(path)
        try:
            return write_image(target, image, infotext, record.to_json() if record is not None else None)
        except HuihuaError:
            if not target.exists():
                raise
    raise HuihuaError(f"{path}: no free file name beside it")


def save_results(result: GenerationResult, output: Path | None, only: int | None = None) -> list[Path]:
    """Write every image of ``result`` (or only image ``only``); returns the paths written."""
    paths = []
    indexes = range(len(result.images)) if only is None else [only]
    for i in indexes:
        image, seed, text = result.images[i], result.seeds[i], result.infotexts[i]
        record = result.records[i] if i < len(result.records) else None
        if output is None or output.is_dir():
            path = numbered_path(output or DEFAULT_OUTDIR, seed)
        else:
            many = only is None and len(result.images) > 1
            base = output.with_name(f"{output.stem}-{i}{output.suffix}") if many else output
            path = base.with_suffix(base.suffix or ".png")
        paths.append(save_image(image, path, text, record))
    return paths


def preview_writer(folder: Path) -> Callable[[int, Image.Image], None]:
    """``emit(step, image)`` writing ``preview-STEP.png`` into ``folder`` (a free name when taken)."""

    def emit(step: int, image: Image.Image) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        image.save(free_path(folder / f"preview-{step:04d}.png"))

    return emit
