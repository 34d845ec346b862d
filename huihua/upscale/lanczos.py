"""Plain resampling upscalers: Lanczos (A1111's "Lanczos" upscaler) on PIL images."""

from __future__ import annotations

from PIL import Image

from huihua.errors import ParameterError


def lanczos_to(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize ``image`` to ``size`` = (width, height) with a Lanczos filter."""
    if size[0] < 1 or size[1] < 1:
        raise ParameterError(f"size: width and height must be positive, got {size}")
    return image.resize(size, resample=Image.Resampling.LANCZOS)


def lanczos(image: Image.Image, scale: float) -> Image.Image:
    """Scale ``image`` by ``scale`` with a Lanczos filter; the size is rounded to whole pixels."""
    if not scale > 0:
        raise ParameterError(f"scale: must be positive, got {scale}")
    return lanczos_to(image, (max(1, round(image.width * scale)), max(1, round(image.height * scale))))
