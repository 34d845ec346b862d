"""Saving generated images: PNG with A1111 infotext, never overwriting an existing file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from huihua.engine import GenerationResult

DEFAULT_OUTDIR = Path("outputs")


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


def save_results(result: GenerationResult, output: Path | None) -> list[Path]:
    """Write every image of ``result``; returns the paths written."""
    from huihua.infotext import write_png

    paths = []
    for i, (image, seed, text) in enumerate(zip(result.images, result.seeds, result.infotexts)):
        if output is None:
            path = numbered_path(DEFAULT_OUTDIR, seed)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            base = output if len(result.images) == 1 else output.with_name(f"{output.stem}-{i}{output.suffix}")
            path = free_path(base.with_suffix(base.suffix or ".png"))
        write_png(path, image, text)
        paths.append(path)
    return paths
