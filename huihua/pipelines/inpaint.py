"""Inpainting and outpainting: repaint where the mask is white, keep every other pixel exactly.

Flow: the mask is inverted/blurred (``masks.py``); "whole picture" fits picture and mask to the
generation size, "only masked" crops the mask's box (plus padding, grown to the generation's aspect
ratio) and works on it at full resolution. The masked content ("fill", "original", "latent noise",
"latent nothing") sets the start; ordinary models blend the original latents back outside the mask
at every step, 9-channel inpainting models also see the mask and the masked picture. The result
is laid over the original with the mask as alpha (pasted back into the box for "only masked").
Outpainting first extends the canvas (``outpaint.py``) and inpaints the new bands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from huihua.pipelines.images import resize_image
from huihua.pipelines.masks import (
    MaskPlan,
    binary_mask,
    fill_masked,
    latent_mask,
    paste_back,
    plan_mask,
)
from huihua.pipelines.outpaint import outpaint_inputs
from huihua.pipelines.params import GenerationParams
from huihua.pipelines.resolved import ResolvedParams
from huihua.pipelines.types import InpaintFill, ResizeMode


@dataclass(frozen=True, eq=False)
class InpaintSetup:
    """Pictures the sampler starts from, the originals they are pasted back into, and the mask plan."""

    work_images: tuple[Image.Image, ...]  # generation size, masked content applied
    originals: tuple[Image.Image, ...]  # what the results are laid over
    plan: MaskPlan


def outpaint_canvas(p: GenerationParams, images: Sequence[Image.Image]) -> tuple[list[Image.Image], Image.Image]:
    """Extended canvases and the (outward-blurred) mask of their new bands."""
    out, mask = [], None
    for im in images:
        canvas, mask = outpaint_inputs(im, p.outpaint_left, p.outpaint_top, p.outpaint_right, p.outpaint_bottom,
                                       p.mask_blur)
        out.append(canvas)
    assert mask is not None
    return out, mask


def setup_inpaint(rp: ResolvedParams, images: Sequence[Image.Image], mask: Image.Image,
                  blur: int | None = None) -> InpaintSetup:
    """Plan the mask and prepare the pictures for the sampler and for pasting back."""
    p = rp.params
    assert p.width is not None and p.height is not None
    size = images[0].size
    originals = [im.convert("RGB") if im.size == size else im.convert("RGB").resize(size) for im in images]
    plan = plan_mask(mask, size, p.width, p.height, invert=bool(p.inpainting_mask_invert),
                     blur=p.mask_blur if blur is None else blur, full_res=p.inpaint_full_res,
                     padding=p.inpaint_full_res_padding, resize_mode=rp.resize)
    mode = ResizeMode.JUST_RESIZE if rp.resize is ResizeMode.LATENT_UPSCALE else rp.resize
    if plan.crop is not None:
        work = [resize_image(ResizeMode.RESIZE_AND_FILL, im.crop(plan.crop), p.width, p.height) for im in originals]
    else:
        originals = [resize_image(mode, im, p.width, p.height) for im in originals]
        work = list(originals)
    if rp.fill is InpaintFill.FILL:
        work = [fill_masked(im, plan.work_mask) for im in work]
    return InpaintSetup(tuple(work), tuple(originals), plan)


def repaint_masks(setup: InpaintSetup, latent_hw: tuple[int, int]):
    """(latent repaint mask (1, 1, h, w), pixel conditioning mask (1, 1, H, W)), both in {0, 1}."""
    return latent_mask(setup.plan.work_mask, latent_hw), binary_mask(setup.plan.work_mask)


def finish(setup: InpaintSetup, generated: Sequence[Image.Image], first_index: int) -> list[Image.Image]:
    """Lay each generated picture over its original (image k of the run uses original k mod n)."""
    n = len(setup.originals)
    return [paste_back(g, setup.originals[(first_index + i) % n], setup.plan) for i, g in enumerate(generated)]
