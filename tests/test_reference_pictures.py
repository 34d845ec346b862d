"""Reference pictures of the embedded model, pinned by hash so refactors are proven bit-identical.

The hashes were recorded before the one-way-architecture refactor (issue 19) on this CPU build of
PyTorch (2.13.0, float32, one thread). They cover every pipeline: txt2img, img2img, inpainting,
hires fix, a LoRA and a ControlNet unit. A changed hash means a changed picture or infotext: find
out why before re-recording. Tolerance: none (sha256 of the raw RGB bytes and of the infotext).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import huihua
from huihua.adapters.controlnet import ControlNetUnit

ASSETS = Path(huihua.__file__).parent / "assets"
MODEL = ASSETS / "huihua-default.safetensors"
ADAPTERS = ASSETS / "adapters"

BASE = dict(steps=6, seed=11, sampler_name="Euler a", cfg_scale=5.0)


def _init() -> Image.Image:
    img = Image.new("RGB", (64, 64), (40, 40, 160))
    ImageDraw.Draw(img).ellipse((14, 14, 50, 50), fill=(220, 30, 30))
    return img


def _mask() -> Image.Image:
    m = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(m).rectangle((0, 0, 31, 63), fill=255)
    return m


def _hint() -> Image.Image:
    h = Image.new("RGB", (64, 64), (0, 0, 0))
    ImageDraw.Draw(h).rectangle((36, 8, 58, 30), fill=(255, 255, 255))
    return h


def _digest(image: Image.Image, infotext: str) -> str:
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8).tobytes()
    return hashlib.sha256(pixels).hexdigest()[:16] + "/" + hashlib.sha256(infotext.encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def engine():
    return huihua.load(MODEL, device="cpu", lora_dirs=[ADAPTERS])


def _cases(engine):
    yield "txt2img", engine.generate(prompt="a red circle above a blue square", **BASE)
    yield "img2img", engine.generate(prompt="a red circle", init_images=[_init()], denoising_strength=0.6, **BASE)
    yield "inpaint", engine.generate(prompt="a green star", init_images=[_init()], mask=_mask(),
                                     denoising_strength=0.8, mask_blur=2, **BASE)
    yield "hires", engine.generate(prompt="a yellow cross", enable_hr=True, hr_scale=1.5, hr_upscaler="Latent",
                                   denoising_strength=0.5, **BASE)
    yield "lora", engine.generate(prompt="a blue square <lora:huihua-red:0.8>", **BASE)
    cn = engine.load_controlnet(ADAPTERS / "huihua-silhouette.safetensors")
    yield "controlnet", engine.generate(prompt="a white circle", controlnet_units=[ControlNetUnit(cn, _hint())],
                                        **BASE)


EXPECTED = {
    "txt2img": "a600718491c745df/cb7fa83535aa7edc",
    "img2img": "fee4e9627a36e769/376322b824533aac",
    "inpaint": "ace78798056d0d8d/b68054373acb6aca",
    "hires": "0c94caf5748919f1/cdd6d91e51f05a80",
    "lora": "33d50cfda54818ce/7c6e46a0376dc8db",
    "controlnet": "54b0f71041fb9965/7ce5c71dc50bc89f",
}


def test_reference_pictures_are_bit_identical(engine) -> None:
    torch.manual_seed(0)
    got = {name: _digest(r.images[0], r.infotexts[0]) for name, r in _cases(engine)}
    assert got == EXPECTED
