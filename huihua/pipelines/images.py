"""Fitting an init image to the generation size with A1111's img2img resize modes.

0 "Just resize": stretch. 1 "Crop and resize": scale to cover, crop the centre. 2 "Resize and
fill": scale to fit, centre, and fill the bands by stretching the picture's edge rows (or columns).
3 "Just resize (latent upscale)": the picture is encoded at its own size (rounded to a multiple of
8) and the latents are resized (``img2img.py``).
"""

from __future__ import annotations

from PIL import Image

from huihua.errors import ParameterError
from huihua.pipelines.types import ResizeMode

LANCZOS = Image.Resampling.LANCZOS


def _crop_and_resize(im: Image.Image, width: int, height: int) -> Image.Image:
    scale = max(width / im.width, height / im.height)
    w, h = max(width, round(im.width * scale)), max(height, round(im.height * scale))
    resized = im.resize((w, h), LANCZOS)
    left, top = (w - width) // 2, (h - height) // 2
    return resized.crop((left, top, left + width, top + height))


def _resize_and_fill(im: Image.Image, width: int, height: int) -> Image.Image:
    scale = min(width / im.width, height / im.height)
    w, h = max(1, min(width, round(im.width * scale))), max(1, min(height, round(im.height * scale)))
    resized = im.resize((w, h), LANCZOS)
    out = Image.new(im.mode, (width, height))
    left, top = (width - w) // 2, (height - h) // 2
    out.paste(resized, (left, top))
    if top > 0:
        out.paste(resized.crop((0, 0, w, 1)).resize((width, top)), (0, 0))
    bottom = height - top - h
    if bottom > 0:
        out.paste(resized.crop((0, h - 1, w, h)).resize((width, bottom)), (0, top + h))
    if left > 0:
        out.paste(resized.crop((0, 0, 1, h)).resize((left, height)), (0, 0))
    right = width - left - w
    if right > 0:
        out.paste(resized.crop((w - 1, 0, w, h)).resize((right, height)), (left + w, 0))
    return out


def resize_image(mode: ResizeMode | int, im: Image.Image, width: int, height: int) -> Image.Image:
    """``im`` fitted to ``width × height`` by a resize mode (latent upscale resizes latents, not pixels)."""
    if im.size == (width, height):
        return im.copy()
    if mode in (ResizeMode.JUST_RESIZE, ResizeMode.LATENT_UPSCALE):
        return im.resize((width, height), LANCZOS)
    if mode == ResizeMode.CROP_AND_RESIZE:
        return _crop_and_resize(im, width, height)
    if mode == ResizeMode.RESIZE_AND_FILL:
        return _resize_and_fill(im, width, height)
    raise ParameterError(f"resize_mode: must be 0, 1, 2 or 3, got {mode}")


def round_to_multiple(im: Image.Image, multiple: int) -> Image.Image:
    """``im`` resized to the nearest multiple of ``multiple`` on each side (unchanged when it already is)."""
    w = max(multiple, round(im.width / multiple) * multiple)
    h = max(multiple, round(im.height / multiple) * multiple)
    return im if (w, h) == im.size else im.resize((w, h), LANCZOS)
