"""img2img, inpainting, outpainting, hires fix, SDXL refiner and micro-conditioning (tiny CPU models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from huihua.errors import ParameterError
from huihua.pipelines.common import SizeCond, decode_to_images, encode_pixels, images_to_tensor, sdxl_label
from huihua.pipelines.hooks import PipelineHooks
from huihua.pipelines.images import resize_image
from huihua.pipelines.masks import crop_region, expand_to_ratio, fill_masked
from huihua.pipelines.outpaint import extend_canvas
from huihua.pipelines.sampling import refiner_switch_step
from tests.tiny_checkpoints import tiny_engine, tiny_reference, write_single_file

FAST = dict(steps=2, sampler_name="Euler", seed=5)



@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    return tiny_engine(tmp_path_factory.mktemp("sd1"), "sd1")


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    arr[:, :16] = (200, 40, 40)
    return Image.fromarray(arr)


@pytest.fixture(scope="module")
def mask() -> Image.Image:
    m = Image.new("L", (32, 32), 0)
    m.paste(255, (10, 10, 22, 22))
    return m


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def test_img2img_strength_zero_is_one_vae_round_trip(sd1, picture) -> None:
    out = sd1.generate(prompt="x", init_images=[picture], denoising_strength=0.0, **FAST)
    with torch.inference_mode():
        round_trip = decode_to_images(sd1, encode_pixels(sd1, images_to_tensor([picture])))[0]
    assert out.mode == "img2img" and (px(out.images[0]) == px(round_trip)).all()
    moved = sd1.generate(prompt="x", init_images=[picture], denoising_strength=0.6, **FAST)
    assert np.abs(px(moved.images[0]) - px(round_trip)).mean() > 0.5
    assert "Denoising strength: 0.6" in moved.infotexts[0]


def test_resize_modes_fit_the_size() -> None:
    im = Image.new("RGB", (40, 20), (10, 200, 30))
    im.paste((255, 0, 0), (0, 0, 1, 20))  # a red left edge column
    for mode in (0, 1, 2, 3):
        assert resize_image(mode, im, 32, 32).size == (32, 32)
    filled = np.asarray(resize_image(2, im, 32, 32))
    assert filled[0, 16].tolist() == filled[15, 16].tolist()  # the band repeats the picture's edge row
    cropped = np.asarray(resize_image(1, im, 32, 32))
    assert cropped[16, 0, 0] < 100  # crop and resize cut the red left edge away


def test_img2img_sizes_and_latent_resize_mode(sd1, picture) -> None:
    for mode in (1, 3):
        out = sd1.generate(prompt="x", init_images=[picture], width=40, height=24, resize_mode=mode,
                       denoising_strength=0.5, **FAST)
        assert out.images[0].size == (40, 24)


def _unmasked(mask: Image.Image, blur: int) -> np.ndarray:
    from PIL import ImageFilter

    return np.asarray(mask.filter(ImageFilter.GaussianBlur(blur))) == 0


@pytest.mark.parametrize("fill, full_res", [(1, False), (0, True), (2, False), (3, True)])
def test_inpainting_keeps_unmasked_pixels_exactly(sd1, picture, mask, fill, full_res) -> None:
    out = sd1.generate(prompt="a dog", init_images=[picture], mask=mask, inpainting_fill=fill,
                   inpaint_full_res=full_res, inpaint_full_res_padding=4, mask_blur=2, **FAST)
    a, b = px(out.images[0]), px(picture)
    keep = _unmasked(mask, 2)
    assert out.images[0].size == picture.size
    assert (a[keep] == b[keep]).all()
    assert np.abs(a[~keep] - b[~keep]).mean() > 1.0
    assert "Mask blur: 2" in out.infotexts[0]


def test_inverted_mask_repaints_the_outside(sd1, picture, mask) -> None:
    out = sd1.generate(prompt="a dog", init_images=[picture], mask=mask, inpainting_mask_invert=1, mask_blur=0, **FAST)
    inside = np.asarray(mask) == 255
    assert (px(out.images[0])[inside] == px(picture)[inside]).all()
    assert np.abs(px(out.images[0])[~inside] - px(picture)[~inside]).mean() > 1.0


def test_nine_channel_inpainting_model(tmp_path, picture, mask) -> None:
    engine = tiny_engine(tmp_path, "inpaint")
    assert engine.spec.unet.in_channels == 9
    out = engine.generate(prompt="a dog", init_images=[picture], mask=mask, mask_blur=0, **FAST)
    inside = np.asarray(mask) == 255
    assert (px(out.images[0])[~inside] == px(picture)[~inside]).all()
    txt = engine.generate(prompt="a dog", **FAST)  # txt2img on an inpainting model: all-masked conditioning
    assert txt.images[0].size == (32, 32)


def test_outpainting_extends_and_keeps_the_original(sd1, picture) -> None:
    out = sd1.generate(prompt="a wall", init_images=[picture], outpaint_left=8, outpaint_bottom=8, mask_blur=4, **FAST)
    assert out.images[0].size == (40, 40) and out.mode == "inpaint"
    assert (px(out.images[0])[:32, 8:] == px(picture)).all()
    canvas, band = extend_canvas(picture, left=8)
    assert canvas.size == (40, 32) and np.asarray(band)[:, :8].min() == 255 and np.asarray(band)[:, 8:].max() == 0


def test_mask_helpers() -> None:
    m = Image.new("L", (64, 64), 0)
    m.paste(255, (20, 30, 30, 34))
    assert crop_region(m, 2) == (18, 28, 32, 36)
    assert expand_to_ratio((18, 28, 32, 36), 32, 32, 64, 64) == (18, 25, 32, 39)
    with pytest.raises(ParameterError, match="mask"):
        crop_region(Image.new("L", (8, 8), 0), 0)
    im = Image.new("RGB", (16, 16), (0, 0, 255))
    filled = np.asarray(fill_masked(im, Image.new("L", (16, 16), 0).crop((0, 0, 16, 16))))
    assert (filled == (0, 0, 255)).all()
    hole = Image.new("L", (16, 16), 0)
    hole.paste(255, (4, 4, 12, 12))
    painted = im.copy()
    painted.paste((255, 255, 255), (4, 4, 12, 12))
    assert (np.asarray(fill_masked(painted, hole)) == (0, 0, 255)).all()  # the hole takes the surrounding colour


@pytest.mark.parametrize("upscaler", ["Latent (nearest)", "Latent (bicubic antialiased)", "Lanczos", "mine"])
def test_hires_fix_sizes_upscalers_and_infotext(sd1, upscaler) -> None:
    used = []

    def mine(image: Image.Image, size: tuple[int, int]) -> Image.Image:
        used.append(size)
        return image.resize(size)

    hooks = PipelineHooks(upscalers={"mine": mine})
    out = sd1.generate(prompt="a [cat:dog:1.5]", enable_hr=True, hr_scale=1.5, hr_upscaler=upscaler,
                   hr_second_pass_steps=2, hr_sampler_name="Euler a", denoising_strength=0.5, hooks=hooks, **FAST)
    assert out.images[0].size == (48, 48)
    assert f"Hires upscaler: {upscaler}" in out.infotexts[0] and "Hires sampler: Euler a" in out.infotexts[0]
    assert used == ([(48, 48)] if upscaler == "mine" else [])


def test_hires_resize_to_and_refusals(sd1, picture) -> None:
    out = sd1.generate(prompt="x", enable_hr=True, hr_resize_x=48, hr_resize_y=40, denoising_strength=0.0, **FAST)
    assert out.images[0].size == (48, 40)
    with pytest.raises(ParameterError, match="enable_hr"):
        sd1.generate(prompt="x", init_images=[picture], enable_hr=True, **FAST)


def test_sdxl_micro_conditioning_and_refiner(tmp_path) -> None:
    engine = tiny_engine(tmp_path, "sdxl")
    pooled = torch.zeros(1, 16)
    a = sdxl_label(engine, pooled, SizeCond((32, 32), (0, 0), (32, 32)))
    b = sdxl_label(engine, pooled, SizeCond((64, 64), (0, 0), (32, 32)))
    assert a.shape == (1, engine.spec.unet.adm_in_channels) and not torch.equal(a, b)
    plain = engine.generate(prompt="a cat", **FAST)
    big = engine.generate(prompt="a cat", sdxl_original_width=64, sdxl_original_height=64, **FAST)
    assert np.abs(px(plain.images[0]) - px(big.images[0])).mean() > 0.05
    refiner_path = write_single_file(tiny_reference("sdxl", 1), tmp_path / "refiner.safetensors")
    steps = dict(FAST, steps=4)
    refined = engine.generate(prompt="a cat", refiner_checkpoint=str(refiner_path), refiner_switch_at=0.3, **steps)
    base = engine.generate(prompt="a cat", **steps)
    assert np.abs(px(refined.images[0]) - px(base.images[0])).mean() > 0.05
    assert "Refiner: refiner [" in refined.infotexts[0] and "Refiner switch at: 0.3" in refined.infotexts[0]
    never = engine.generate(prompt="a cat", refiner_checkpoint=str(refiner_path), refiner_switch_at=1.0, **steps)
    assert (px(never.images[0]) == px(base.images[0])).all()


def test_refiner_switch_follows_the_noise_level(sd1) -> None:
    from huihua.diffusion.names import resolve_names
    from huihua.pipelines.common import full_sigmas

    sigmas = full_sigmas(sd1, resolve_names("Euler", "Automatic"), 10)
    k = refiner_switch_step(sd1, sigmas, 0.8)
    t = sd1.model_sampling.sigma_to_t(sigmas[:-1].double())
    assert 0 < k < 10 and float(t[k]) <= 200.5 and float(t[k - 1]) > 199.5
    assert refiner_switch_step(sd1, sigmas, 0.0) == 0 and refiner_switch_step(sd1, sigmas, 1.0) == 10
