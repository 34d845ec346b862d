"""Inpainting masks: invert, blur, the "only masked" crop region, masked-content fill and pasting back.

White (255) means repaint. The processed mask has two uses, as in A1111: downscaled and rounded it
decides which latents are blended back from the original; doubled and clipped it is the alpha with
which the generated picture is laid over the original, so pixels where the mask is 0 come back
exactly unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageOps

from huihua.errors import ParameterError
from huihua.pipelines.images import resize_image

Box = tuple[int, int, int, int]  # (left, top, right, bottom), right/bottom exclusive


def prepare_mask(mask: Image.Image, invert: bool, blur: int) -> Image.Image:
    """The mask as 8-bit L, inverted if asked, Gaussian-blurred by ``blur`` pixels."""
    m = mask.convert("L") if mask.mode != "RGBA" else mask.getchannel("A")
    if invert:
        m = ImageOps.invert(m)
    if blur > 0:
        m = m.filter(ImageFilter.GaussianBlur(blur))
    return m


def crop_region(mask: Image.Image, padding: int) -> Box:
    """Bounding box of the mask's non-zero pixels grown by ``padding`` and clamped to the picture."""
    arr = np.asarray(mask)
    ys, xs = np.nonzero(arr)
    if len(xs) == 0:
        raise ParameterError("mask: is empty (nothing to inpaint)")
    h, w = arr.shape
    return (max(0, int(xs.min()) - padding), max(0, int(ys.min()) - padding),
            min(w, int(xs.max()) + 1 + padding), min(h, int(ys.max()) + 1 + padding))


def _grow(lo: int, hi: int, want: int, limit: int) -> tuple[int, int]:
    """Widen [lo, hi) to ``want`` (at most ``limit``) around its centre, shifted to stay inside."""
    want = min(want, limit)
    extra = want - (hi - lo)
    if extra <= 0:
        return lo, hi
    lo -= extra // 2
    hi += extra - extra // 2
    if lo < 0:
        hi, lo = hi - lo, 0
    if hi > limit:
        lo, hi = lo - (hi - limit), limit
    return max(lo, 0), hi


def expand_to_ratio(box: Box, width: int, height: int, image_w: int, image_h: int) -> Box:
    """Grow ``box`` to the aspect ratio ``width:height`` of the generation, staying inside the picture."""
    left, top, right, bottom = box
    bw, bh = right - left, bottom - top
    if bw * height > bh * width:  # too wide: grow the height
        top, bottom = _grow(top, bottom, round(bw * height / width), image_h)
    else:
        left, right = _grow(left, right, round(bh * width / height), image_w)
    return left, top, right, bottom


def overlay_alpha(mask: Image.Image) -> Image.Image:
    """A1111's overlay mask: the processed mask doubled and clipped (fully repainted from 50 % up)."""
    arr = np.asarray(mask, dtype=np.float32) * 2
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def latent_mask(mask: Image.Image, latent_hw: tuple[int, int]) -> torch.Tensor:
    """(1, 1, h, w) in {0, 1}: 1 where latents are repainted (the mask downscaled and rounded)."""
    small = mask.resize((latent_hw[1], latent_hw[0]), Image.Resampling.LANCZOS)
    arr = np.asarray(small, dtype=np.float32) / 255.0
    return torch.from_numpy(np.around(arr))[None, None]


def binary_mask(mask: Image.Image) -> torch.Tensor:
    """(1, 1, H, W) in {0, 1}: the mask rounded (the 9-channel models' conditioning mask)."""
    arr = np.asarray(mask, dtype=np.float32) / 255.0
    return torch.from_numpy(np.around(arr))[None, None]


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """"fill" masked content: masked pixels replaced by a smooth colour fill from their surroundings."""
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None]
    repaint = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0 > 0.0).float()[None, None]
    known = 1.0 - repaint
    if known.sum() == 0:
        return Image.new("RGB", image.size, (127, 127, 127))
    out = x.clone()
    size = max(image.size)
    radius = 1
    while radius < 2 * size:  # fine radii first; coarser ones fill what is still empty
        k = 2 * radius + 1
        num = F.avg_pool2d(x * known, k, stride=1, padding=radius, count_include_pad=True)
        den = F.avg_pool2d(known, k, stride=1, padding=radius, count_include_pad=True)
        ok = (den > 1e-3) & (repaint > 0)
        out = torch.where(ok, num / den.clamp_min(1e-3), out)
        repaint = repaint * (~ok).float()
        radius *= 2
    arr = out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(arr)


@dataclass(frozen=True)
class MaskPlan:
    """How one inpainting is laid out: the work mask at generation size, overlay alpha, crop box."""

    work_mask: Image.Image  # width × height, what the sampler sees
    overlay: Image.Image  # original-size alpha of the generated picture in the final composite
    crop: Box | None  # "only masked": the region of the original that is regenerated


def plan_mask(mask: Image.Image, image_size: tuple[int, int], width: int, height: int, *, invert: bool,
              blur: int, full_res: bool, padding: int, resize_mode: int) -> MaskPlan:
    """Process the mask and decide the region to regenerate ("whole picture" or "only masked")."""
    if mask.size != image_size:
        mask = mask.resize(image_size, Image.Resampling.LANCZOS)
    m = prepare_mask(mask, invert, blur)
    if full_res:
        box = expand_to_ratio(crop_region(m, padding), width, height, *image_size)
        return MaskPlan(resize_image(2, m.crop(box), width, height), m, box)
    resized = resize_image(resize_mode, m, width, height)
    return MaskPlan(resized, overlay_alpha(resized), None)


def paste_back(generated: Image.Image, original: Image.Image, plan: MaskPlan) -> Image.Image:
    """Lay the generated picture over ``original`` with the plan's alpha; alpha 0 keeps pixels exactly."""
    if plan.crop is not None:
        left, top, right, bottom = plan.crop
        canvas = original.convert("RGB").copy()
        canvas.paste(resize_image(1, generated, right - left, bottom - top), (left, top))
        generated = canvas
    orig = np.asarray(original.convert("RGB"), dtype=np.float32)
    gen = np.asarray(generated.convert("RGB"), dtype=np.float32)
    alpha = np.asarray(plan.overlay, dtype=np.float32)[..., None] / 255.0
    out = np.where(alpha > 0, gen * alpha + orig * (1 - alpha), orig)
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8))
