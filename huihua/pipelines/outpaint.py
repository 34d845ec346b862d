"""Outpainting: extend the canvas on any side and inpaint only the new area.

The new bands start as the picture's edge pixels stretched outwards (a neutral start the sampler
repaints); the mask is white on the bands and black on the original area. The mask is blurred
outwards only, so the original area comes back pixel for pixel.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from huihua.errors import ParameterError


def extend_canvas(image: Image.Image, left: int = 0, top: int = 0, right: int = 0,
                  bottom: int = 0) -> tuple[Image.Image, Image.Image]:
    """(bigger picture, mask): the picture placed at (left, top), bands filled from its edges."""
    if min(left, top, right, bottom) < 0:
        raise ParameterError("outpaint: the added sizes must be >= 0")
    src = image.convert("RGB")
    w, h = src.size
    arr = np.asarray(src)
    padded = np.pad(arr, ((top, bottom), (left, right), (0, 0)), mode="edge")
    mask = np.full(padded.shape[:2], 255, dtype=np.uint8)
    mask[top : top + h, left : left + w] = 0
    return Image.fromarray(padded), Image.fromarray(mask)


def outward_blur(mask: Image.Image, blur: int) -> Image.Image:
    """Blur the band mask, then clear it again over the original area (kept exactly)."""
    if blur <= 0:
        return mask
    keep = np.asarray(mask) == 0
    blurred = np.asarray(mask.filter(ImageFilter.GaussianBlur(blur))).copy()
    blurred[keep] = 0
    return Image.fromarray(blurred)


def outpaint_inputs(image: Image.Image, left: int, top: int, right: int, bottom: int,
                    blur: int, multiple: int = 8) -> tuple[Image.Image, Image.Image]:
    """Canvas and pre-blurred mask for outpainting; right/bottom grow so the canvas is a multiple of ``multiple``."""
    w, h = image.width + left + right, image.height + top + bottom
    right += -w % multiple
    bottom += -h % multiple
    canvas, mask = extend_canvas(image, left, top, right, bottom)
    return canvas, outward_blur(mask, blur)
