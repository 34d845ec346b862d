"""Adapters wired into the pipelines: ControlNet units in every mode, LoRA/embedding infotexts,
per-call VAE, tiled VAE, previews and neural hires upscalers, on a tiny sd1 engine (32x32, 2-4 steps).

Pixel comparisons: "identical" is exact equality of uint8 pixels; "changes" is a mean absolute
difference above 0.5 (of 255).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from huihua import api
from huihua.adapters.controlnet import ControlledUNet, ControlNetUnit
from huihua.adapters.lora_networks import FolderNetworks
from huihua.errors import ParameterError
from huihua.nn.controlnet import ControlNet, ControlNetConfig
from huihua.pipelines import common
from huihua.pipelines.hooks import PipelineHooks
from tests.tiny_checkpoints import tiny_engine

BASE = dict(prompt="a red cat", steps=4, width=32, height=32, seed=3, sampler="Euler", cfg_scale=5.0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("adapters")


@pytest.fixture(scope="module")
def engine(folder):
    return tiny_engine(folder, "sd1")


@pytest.fixture(scope="module")
def cn(engine, folder) -> ControlNet:
    """A tiny random ControlNet for the engine's UNet (hint 2x the latent), saved and loaded as a file."""
    torch.manual_seed(11)
    net = ControlNet(ControlNetConfig(unet=engine.spec.unet, hint_widths=(4, 8)))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)  # residuals large enough to move a 4-step picture
    path = folder / "cn_tiny.safetensors"
    save_file({f"control_model.{k}": v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return engine.load_controlnet(path)


def picture(seed: int = 0, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.float64)


def differs(a: Image.Image, b: Image.Image) -> bool:
    return float(np.abs(px(a) - px(b)).mean()) > 0.5


def unit(cn: ControlNet, **kw) -> ControlNetUnit:
    return ControlNetUnit(cn, picture(5), **kw)


# --- ControlNet ------------------------------------------------------------------------------


def test_weight_zero_is_identical_weight_one_changes_and_infotext_names_the_unit(engine, cn) -> None:
    plain = engine.generate(**BASE)
    off = engine.generate(**BASE, controlnet_units=[unit(cn, weight=0.0)])
    on = engine.generate(**BASE, controlnet_units=[unit(cn, weight=1.0)])
    assert np.array_equal(px(off.images[0]), px(plain.images[0]))
    assert differs(on.images[0], plain.images[0])
    text = on.infotexts[0]
    assert 'ControlNet 0: "Module: none, Model: cn_tiny, Weight: 1, Resize Mode: Crop and Resize' in text
    assert "ControlNet" not in plain.infotexts[0]
    assert on.records[0].controlnets[0].name == "cn_tiny"


def test_guidance_start_end_switch_at_the_right_steps(engine, cn) -> None:
    calls: list[int] = []
    per_step: list[int] = []
    handle = cn.register_forward_hook(lambda *_: calls.append(1))
    try:
        engine.generate(**BASE, controlnet_units=[unit(cn, guidance_start=0.5, guidance_end=1.0)],
                        callback=lambda step, *_: per_step.append(len(calls)))
        calls.clear()
        per_late: list[int] = []
        engine.generate(**BASE, controlnet_units=[unit(cn, guidance_start=0.0, guidance_end=0.25)],
                        callback=lambda step, *_: per_late.append(len(calls)))
    finally:
        handle.remove()
    # 4 Euler steps, cond and uncond in one forward: step i runs the unit when start <= i/4 <= end
    assert per_step == [0, 0, 1, 2]
    assert per_late == [1, 2, 2, 2]


def test_cond_mask_marks_the_conditional_rows(engine, cn, monkeypatch) -> None:
    masks: list[list[bool]] = []
    original = ControlledUNet.__call__

    def spy(self, x, t, context, y=None, control=None, *, cond_mask=None):
        masks.append(torch.as_tensor(cond_mask).tolist())
        return original(self, x, t, context, y, control, cond_mask=cond_mask)

    monkeypatch.setattr(ControlledUNet, "__call__", spy)
    engine.generate(**{**BASE, "steps": 1, "batch_size": 2},
                    controlnet_units=[unit(cn, control_mode="ControlNet is more important")])
    assert masks == [[True, True, False, False]]  # the prompt's rows, then the negative prompt's
    masks.clear()
    engine.generate(**{**BASE, "steps": 1, "cfg_scale": 1.0}, controlnet_units=[unit(cn)])
    assert masks == [[True]]  # no uncond pass at CFG 1


def test_img2img_with_a_unit(engine, cn) -> None:
    args = dict(BASE, init_images=[picture(1)], denoising_strength=0.75)
    plain = engine.generate(**args)
    on = engine.generate(**args, controlnet_units=[unit(cn)])
    assert on.mode == "img2img" and on.images[0].size == (32, 32)
    assert differs(on.images[0], plain.images[0])
    assert "ControlNet 0" in on.infotexts[0]


def test_inpaint_with_a_unit_changes_only_the_masked_part(engine, cn) -> None:
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    args = dict(BASE, init_images=[picture(1)], mask=mask, mask_blur=0)
    plain = engine.generate(**args)
    on = engine.generate(**args, controlnet_units=[unit(cn)])
    a, b = px(on.images[0]), px(plain.images[0])
    outside = np.ones((32, 32), bool)
    outside[8:24, 8:24] = False
    assert on.mode == "inpaint"
    assert np.array_equal(a[outside], b[outside])  # kept pixels stay exactly
    assert np.abs(a[~outside] - b[~outside]).mean() > 0.5
    only = engine.generate(**args, inpaint_full_res=True, inpaint_full_res_padding=0,
                           controlnet_units=[unit(cn)])
    assert only.images[0].size == (32, 32)


def test_hires_fix_runs_the_unit_in_both_passes(engine, cn) -> None:
    calls: list[int] = []
    args = dict(BASE, steps=2, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2, denoising_strength=0.6)
    plain = engine.generate(**args)
    handle = cn.register_forward_hook(lambda *_: calls.append(1))
    try:
        on = engine.generate(**args, controlnet_units=[unit(cn)])
    finally:
        handle.remove()
    assert on.images[0].size == (48, 48)
    assert differs(on.images[0], plain.images[0])
    assert len(calls) == 2 + 2  # first pass 2 steps; second pass int(0.6 * 2) + 1 = 2 steps


def test_bad_units_are_refused_before_sampling(engine) -> None:
    with pytest.raises(ParameterError, match=r"controlnet_units\[0\]"):
        engine.generate(**BASE, controlnet_units=["not a unit"])


# --- LoRA and embeddings ---------------------------------------------------------------------


def snapshot(engine) -> dict[str, torch.Tensor]:
    mods = {"unet": engine.unet, **{f"te{i}": m for i, m in enumerate(engine.text_encoders)}}
    return {f"{c}.{n}": p.detach().clone() for c, m in mods.items() for n, p in m.named_parameters()}


def test_lora_from_a_folder_changes_the_picture_and_restores_the_weights(engine, folder) -> None:
    from tests.test_lora import _sd1_kohya

    loras = folder / "loras"
    loras.mkdir(exist_ok=True)
    save_file(_sd1_kohya(alpha=4.0), str(loras / "inky.safetensors"))
    hooks = PipelineHooks(networks=FolderNetworks([loras]))
    before = snapshot(engine)
    plain = engine.generate(**BASE, hooks=hooks)
    with_lora = engine.generate(**{**BASE, "prompt": BASE["prompt"] + " <lora:inky:1>"}, hooks=hooks)
    after = snapshot(engine)
    assert differs(with_lora.images[0], plain.images[0])
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert "Lora hashes: \"inky: " in with_lora.infotexts[0]
    again = engine.generate(**BASE, hooks=hooks)
    assert np.array_equal(px(again.images[0]), px(plain.images[0]))


def test_embedding_changes_the_picture_and_is_named_in_ti_hashes(engine, folder) -> None:
    embs = folder / "embeddings"
    embs.mkdir(exist_ok=True)
    save_file({"emb_params": torch.randn(2, 24, generator=torch.Generator().manual_seed(3)) * 2},
              str(embs / "inkstyle.safetensors"))
    hooks = PipelineHooks(networks=FolderNetworks((), [embs]))
    prompt = "a inkstyle cat"
    plain = engine.generate(**{**BASE, "prompt": prompt})
    with_emb = engine.generate(**{**BASE, "prompt": prompt}, hooks=hooks)
    assert differs(with_emb.images[0], plain.images[0])
    assert "TI hashes: \"inkstyle: " in with_emb.infotexts[0]
    unused = engine.generate(**{**BASE, "prompt": "a cat"}, hooks=hooks)
    assert "TI hashes" not in unused.infotexts[0]


# --- VAE, tiled VAE --------------------------------------------------------------------------


def test_vae_for_one_call_is_restored_even_on_error(engine, folder) -> None:
    from tests.test_vae_swap import _other_vae

    other = _other_vae(folder, seed=9)
    own = engine.vae
    plain = engine.generate(**BASE)
    swapped = engine.generate(**BASE, vae=other)
    assert engine.vae is own and engine.vae_path is None
    assert differs(swapped.images[0], plain.images[0])
    assert f"VAE: {other.name}" in swapped.infotexts[0] and "VAE hash: " in swapped.infotexts[0]
    assert "VAE" not in plain.infotexts[0]
    with pytest.raises(ParameterError):
        engine.generate(**{**BASE, "steps": 0}, vae=other)
    assert engine.vae is own and engine.vae_path is None


def test_tiled_vae_by_option_and_by_size(engine, monkeypatch) -> None:
    from huihua.pipelines import tiled_vae

    used: list[str] = []
    real_decode, real_encode = tiled_vae.tiled_decode, tiled_vae.tiled_encode
    monkeypatch.setattr(common, "tiled_decode", lambda v, z: used.append("dec") or real_decode(v, z, 8, 4))
    monkeypatch.setattr(common, "tiled_encode", lambda v, x: used.append("enc") or real_encode(v, x, 16, 8))
    plain = engine.generate(**BASE)
    assert used == []
    tiled = engine.generate(**BASE, tiled_vae=True)
    assert used == ["dec"]
    assert float(np.abs(px(tiled.images[0]) - px(plain.images[0])).mean()) < 8  # tiles differ a little, no more
    used.clear()
    engine.generate(**BASE, init_images=[picture(1)], tiled_vae=True)
    assert used == ["enc", "dec"]
    used.clear()
    monkeypatch.setattr(common, "TILED_VAE_MIN_LATENT_PIXELS", 8 * 8)  # 16x16 latents count as big now
    engine.generate(**BASE)
    assert used == ["dec"]
    used.clear()
    engine.generate(**BASE, tiled_vae=False)
    assert used == []


# --- previews, neural hires upscalers --------------------------------------------------------


def test_previews_every_n_steps_at_the_image_size(engine) -> None:
    from huihua.nn.taesd import TAESD, TinyDecoder

    seen: list[tuple[int, tuple[int, int]]] = []
    steps: list[int] = []
    engine.generate(**BASE, preview=lambda s, im: seen.append((s, im.size)), preview_every=2,
                    callback=lambda s, *_: steps.append(s))
    assert steps == [0, 1, 2, 3] and seen == [(0, (32, 32)), (2, (32, 32))]
    seen.clear()
    torch.manual_seed(0)
    engine.generate(**{**BASE, "steps": 2, "enable_hr": True, "hr_scale": 1.5, "denoising_strength": 1.0},
                    preview=lambda s, im: seen.append((s, im.size)), taesd=TAESD(decoder=TinyDecoder().eval()))
    assert seen == [(0, (32, 32)), (1, (32, 32)), (2, (48, 48)), (3, (48, 48))]
    with pytest.raises(ParameterError, match="preview_every"):
        engine.generate(**BASE, preview=lambda s, im: None, preview_every=0)


def test_hires_with_a_neural_upscaler_file(engine, folder) -> None:
    from tests.test_upscale import _tiny_rrdb

    path = folder / "tiny_rrdb.pth"
    torch.save(_tiny_rrdb(upsamples=1).state_dict(), path)
    hooks = api.hires_hooks(engine.hooks or PipelineHooks(), engine.model, str(path))
    args = dict(BASE, steps=2, enable_hr=True, hr_scale=2.0, denoising_strength=0.3)
    neural = engine.generate(**args, hr_upscaler=str(path), hooks=hooks)
    lanczos = engine.generate(**args, hr_upscaler="Lanczos")
    assert neural.images[0].size == (64, 64)
    assert differs(neural.images[0], lanczos.images[0])
    assert f"Hires upscaler: {path}" in neural.infotexts[0]
