"""ControlNet: parity with diffusers' ControlNetModel, loading every layout, units in sampling.

Parity tolerance (fp32): max|ours - ref| <= 1e-4 * max(1, max|ref|), for each residual and for the
controlled UNet output.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from huihua.adapters.controlnet import (
    ControlledUNet,
    ControlNetUnit,
    PreparedUnit,
    control_scales,
    controlled_unet,
    detect_controlnet,
    hint_tensor,
    load_controlnet,
    load_controlnet_file,
    parse_controlnet_arg,
    pixel_perfect_resolution,
    resize_control_map,
)
from huihua.checkpoints.diffusers.controlnet import (
    controlnet_config_from_diffusers,
    diffusers_controlnet_config,
    diffusers_controlnet_to_ldm,
    ldm_controlnet_to_diffusers,
)
from huihua.checkpoints.diffusers.unet import diffusers_unet_to_ldm
from huihua.checkpoints.io import TensorInfo
from huihua.nn.configs import UNetConfig
from huihua.diffusion.parametrization import ModelSampling
from huihua.errors import CheckpointError, ParameterError
from huihua.nn.controlnet import ControlNet, ControlNetConfig
from huihua.nn.unet import UNetModel
from tests.tiny_models import assert_close, sdxl_label_vector, tiny_diffusers_unet, tiny_unet_config, tiny_unet_inputs

LATENT = 8  # latent side; the hint is 8x that, as for every released ControlNet
CPU = torch.device("cpu")



@cache
def pair(kind: str) -> SimpleNamespace:
    """diffusers UNet + ControlNetModel (seeded, zero convs randomised) and ours loaded from them."""
    from diffusers import ControlNetModel

    cfg = tiny_unet_config(kind)  # type: ignore[arg-type]
    ref_unet = tiny_diffusers_unet(cfg, seed=1)
    torch.manual_seed(7)
    ref_cn = ControlNetModel.from_unet(ref_unet).eval()
    gen = torch.Generator().manual_seed(8)
    with torch.no_grad():  # from_unet zero-initialises the ControlNet's own layers: make them matter
        for name, p in ref_cn.named_parameters():
            if name.startswith("controlnet_"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    ccfg = ControlNetConfig(cfg)
    cn = ControlNet(ccfg).eval()
    cn.load_state_dict(diffusers_controlnet_to_ldm(ref_cn.state_dict(), ccfg), strict=True)
    unet = UNetModel(cfg).eval()
    unet.load_state_dict(diffusers_unet_to_ldm(ref_unet.state_dict(), cfg), strict=True)
    return SimpleNamespace(cfg=cfg, ccfg=ccfg, ref_unet=ref_unet, ref_cn=ref_cn, cn=cn, unet=unet)


def inputs(kind: str, seed: int = 0) -> dict[str, Any]:
    p = pair(kind)
    inp = tiny_unet_inputs(p.cfg, size=LATENT, seed=seed)
    inp["hint"] = torch.rand(2, 3, 8 * LATENT, 8 * LATENT, generator=torch.Generator().manual_seed(seed + 3))
    inp["y"] = None
    inp["ref_kwargs"] = {}
    if p.cfg.adm_in_channels is not None:
        inp["ref_kwargs"] = {"added_cond_kwargs": {"text_embeds": inp["text_embeds"], "time_ids": inp["time_ids"]}}
        inp["y"] = sdxl_label_vector(p.ref_unet, inp["text_embeds"], inp["time_ids"])
    return inp


# --- parity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
def test_residuals_and_controlled_unet_match_diffusers(kind: str) -> None:
    p, inp = pair(kind), inputs(kind)
    x, t, ctx = inp["x"], inp["timesteps"], inp["context"]
    with torch.no_grad():
        down, mid = p.ref_cn(x, t, ctx, inp["hint"], return_dict=False, **inp["ref_kwargs"])
        expected = list(down) + [mid]
        got = p.cn(x, inp["hint"], t, ctx, y=inp["y"])
        assert len(got) == len(expected) == len(p.unet.input_blocks) + 1
        for ours, ref in zip(got, expected):
            assert_close(ours, ref)
        assert min(r.abs().max().item() for r in expected) > 0.05  # every residual is non-trivial
        ref_out = p.ref_unet(x, t, ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid,
                             **inp["ref_kwargs"]).sample
        out = p.unet(x, t, ctx, y=inp["y"], control=got)
        plain = p.unet(x, t, ctx, y=inp["y"])
    assert_close(out, ref_out)
    assert (out - plain).abs().max() > 1e-2  # the control changed the prediction


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_key_and_config_conversion_round_trip(kind: str) -> None:
    p = pair(kind)
    sd = p.ref_cn.state_dict()
    back = ldm_controlnet_to_diffusers(diffusers_controlnet_to_ldm(sd, p.ccfg), p.ccfg)
    assert back.keys() == sd.keys() and all(back[k] is sd[k] for k in sd)
    assert controlnet_config_from_diffusers(dict(p.ref_cn.config)) == p.ccfg
    assert controlnet_config_from_diffusers(diffusers_controlnet_config(p.ccfg)) == p.ccfg


_LINEAR64 = {"num_heads": None, "num_head_channels": 64, "use_linear_in_transformer": True}
FULL_SIZE = {  # (our UNet config, the released diffusers ControlNetModel config.json fields that matter)
    "sd15": (UNetConfig(), {"cross_attention_dim": 768}),
    "sdxl": (
        UNetConfig(channel_mult=(1, 2, 4), transformer_depth=(0, 2, 10), transformer_depth_middle=10,
                   context_dim=2048, adm_in_channels=2816, **_LINEAR64),
        {"addition_embed_type": "text_time", "addition_time_embed_dim": 256,
         "projection_class_embeddings_input_dim": 2816, "attention_head_dim": [5, 10, 20],
         "block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048,
         "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
         "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": True},
    ),
}


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_full_size_matches_diffusers_on_meta(name: str) -> None:
    from diffusers import ControlNetModel

    ucfg, dcfg = FULL_SIZE[name]
    cfg = ControlNetConfig(ucfg)
    with torch.device("meta"):
        ours, ref = ControlNet(cfg), ControlNetModel(**dcfg)
    ours_shapes = {k: v.shape for k, v in ldm_controlnet_to_diffusers(ours.state_dict(), cfg).items()}
    assert ours_shapes == {k: v.shape for k, v in ref.state_dict().items()}
    assert controlnet_config_from_diffusers(dict(ref.config)) == cfg
    # Detection from the LDM single-file key shapes alone gives the same architecture back.
    info = {"control_model." + k: TensorInfo(tuple(v.shape), torch.float16) for k, v in ours.state_dict().items()}
    assert detect_controlnet(info, "control_model.", ucfg, name) == cfg
    if name == "sd15":
        assert sum(p.numel() for p in ours.parameters()) == 361_279_120


def test_hint_size_is_checked() -> None:
    p, inp = pair("sd1"), inputs("sd1")
    with pytest.raises(ParameterError, match="hint"):
        p.cn(inp["x"], inp["hint"][:, :, :16, :16], inp["timesteps"], inp["context"])


# --- loading -----------------------------------------------------------------------------------


def ldm_state(kind: str, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().clone().contiguous() for k, v in pair(kind).cn.state_dict().items()}


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("prefix", ["control_model.", ""])
def test_load_ldm_file(tmp_path: Path, prefix: str) -> None:
    p = pair("sd1")
    path = tmp_path / "control_tiny.safetensors"
    save_file(ldm_state("sd1", prefix), str(path))
    cn = load_controlnet_file(path, p.cfg, dtype=torch.float32, device=CPU)
    assert cn.control_cfg == p.ccfg
    assert cn.source_name == str(path)
    assert_same_weights(cn, p.cn)


def test_load_diffusers_file_and_folder(tmp_path: Path) -> None:
    p = pair("sdxl")
    folder = tmp_path / "controlnet-tiny-sdxl"
    p.ref_cn.save_pretrained(folder)
    single = tmp_path / "diffusers_cn.safetensors"
    save_file({k: v.contiguous() for k, v in p.ref_cn.state_dict().items()}, str(single))
    for path in (folder, single):
        cn = load_controlnet_file(path, p.cfg, dtype=torch.float32, device=CPU)
        assert cn.control_cfg == p.ccfg
        assert_same_weights(cn, p.cn)


def test_diff_controlnet_adds_the_model_weights(tmp_path: Path) -> None:
    p = pair("sd1")
    base = p.unet.state_dict()
    sd = {k: (v - base[k] if k in base else v) for k, v in ldm_state("sd1").items()}
    path = tmp_path / "diff.safetensors"
    tensors = {"control_model." + k: v.contiguous() for k, v in sd.items()}
    save_file({**tensors, "difference": torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError, match="diff"):
        load_controlnet_file(path, p.cfg, dtype=torch.float32, device=CPU)
    cn = load_controlnet_file(path, p.cfg, dtype=torch.float32, device=CPU, base_unet=p.unet)
    got, want = cn.state_dict(), p.cn.state_dict()
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)


def test_family_mismatch_and_wrong_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "sd1_cn.safetensors"
    save_file(ldm_state("sd1", "control_model."), str(path))
    sdxl_like = replace(pair("sd1").cfg, context_dim=48, adm_in_channels=64)
    message = r"sd1_cn\.safetensors: ControlNet for \(context width 24\) does not fit this model SDXL"
    with pytest.raises(CheckpointError, match=message):
        load_controlnet_file(path, sdxl_like, dtype=torch.float32, device=CPU)
    wider = replace(pair("sd1").cfg, model_channels=64)
    with pytest.raises(CheckpointError, match="do not match"):
        load_controlnet_file(path, wider, dtype=torch.float32, device=CPU)
    full = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 4, 3, 3)}, str(full))
    with pytest.raises(CheckpointError, match="full model checkpoint"):
        load_controlnet_file(full, pair("sd1").cfg, dtype=torch.float32, device=CPU)


def fake_engine(kind: str, unet: torch.nn.Module | None = None) -> SimpleNamespace:
    """What the ControlNet helpers read from an Engine (a real one takes long to build on a busy CPU)."""
    p = pair(kind)
    unet = unet or p.unet
    return SimpleNamespace(spec=SimpleNamespace(unet=unet.cfg), unet=unet, dtype=torch.float32, device=CPU,
                           model_sampling=ModelSampling.for_sd())


def test_engine_helper_and_inpainting_unet(tmp_path: Path) -> None:
    path = tmp_path / "cn.safetensors"
    save_file(ldm_state("sd1", "control_model."), str(path))
    torch.manual_seed(0)
    inpaint = UNetModel(tiny_unet_config("inpaint")).eval()
    engine = fake_engine("sd1", inpaint)
    cn = load_controlnet(engine, path)  # type: ignore[arg-type]
    inp = inputs("sd1")
    x9 = torch.cat([inp["x"], torch.randn(2, 5, LATENT, LATENT, generator=torch.Generator().manual_seed(1))], dim=1)
    unit = ControlNetUnit(cn, Image.new("RGB", (64, 64), (200, 30, 90)))
    sigmas = torch.tensor([14.6, 1.0, 0.0])
    ctrl = controlled_unet(engine, [unit], sigmas, 64, 64)  # type: ignore[arg-type]
    t = engine.model_sampling.sigma_to_t(sigmas[:1]).expand(2)
    with torch.no_grad():
        got = ctrl(x9, t, inp["context"])
        hint = hint_tensor(np.full((64, 64, 3), (200, 30, 90), np.uint8))
        want = inpaint(x9, t, inp["context"], control=cn(inp["x"], hint, t, inp["context"]))
    assert torch.equal(got, want)


# --- units in sampling -------------------------------------------------------------------------


def make_controlled(kind: str, units: list[ControlNetUnit], steps: int = 10) -> tuple[ControlledUNet, torch.Tensor]:
    ms = ModelSampling.for_sd()
    sigmas = torch.cat([torch.linspace(ms.sigma_max, ms.sigma_min, steps), torch.zeros(1)])
    return ControlledUNet(pair(kind).unet, [PreparedUnit(u, np.asarray(u.image)) for u in units], sigmas, ms), sigmas


def control_image(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


def test_weight_zero_changes_nothing_and_weight_one_does() -> None:
    p, inp = pair("sd1"), inputs("sd1")
    x, ctx = inp["x"], inp["context"]
    off, sigmas = make_controlled("sd1", [ControlNetUnit(p.cn, control_image(), weight=0.0)])
    on, _ = make_controlled("sd1", [ControlNetUnit(p.cn, control_image(), weight=1.0)])
    t = ModelSampling.for_sd().sigma_to_t(sigmas[2:3]).expand(2)
    with torch.no_grad():
        plain = p.unet(x, t, ctx)
        assert torch.equal(off(x, t, ctx), plain)
        assert (on(x, t, ctx) - plain).abs().max() > 1e-2


def test_guidance_start_and_end_switch_at_the_right_steps() -> None:
    p, inp = pair("sd1"), inputs("sd1")
    unit = ControlNetUnit(p.cn, control_image(), guidance_start=0.3, guidance_end=0.6)
    ctrl, sigmas = make_controlled("sd1", [unit], steps=10)
    ms = ModelSampling.for_sd()
    active = []
    with torch.no_grad():
        for i in range(10):
            t = ms.sigma_to_t(sigmas[i:i + 1]).expand(2)
            assert ctrl.step_of(t) == i
            if ctrl.residuals(inp["x"], t, inp["context"], None, None) is not None:
                active.append(i)
        # A second-order sampler's midpoint between steps 4 and 5 still belongs to step 4.
        mid = ms.sigma_to_t((sigmas[4:5] * sigmas[5:6]).sqrt())
        assert ctrl.step_of(mid) == 4
    assert active == [3, 4, 5, 6]  # i / 10 within [0.3, 0.6]


def test_control_modes_follow_a1111() -> None:
    p, inp = pair("sd1"), inputs("sd1")
    x, ctx = inp["x"], inp["context"]
    t = ModelSampling.for_sd().sigma_to_t(torch.tensor([5.0])).expand(2)
    results = {}
    for mode in ("Balanced", "My prompt is more important", "ControlNet is more important"):
        ctrl, _ = make_controlled("sd1", [ControlNetUnit(p.cn, control_image(), weight=0.8, control_mode=mode)])
        with torch.no_grad():
            results[mode] = ctrl.residuals(x, t, ctx, None, torch.tensor([True, False]))
    base = results["Balanced"]
    n = len(base)
    soft = [0.825 ** (12 - i) for i in range(n)]
    for i in range(n):
        assert torch.allclose(results["My prompt is more important"][i], base[i] * soft[i], atol=1e-6)
        cn_more = results["ControlNet is more important"][i]
        assert torch.allclose(cn_more[0], base[i][0] * soft[i], atol=1e-6)
        assert torch.equal(cn_more[1], torch.zeros_like(cn_more[1]))  # the unconditional row gets nothing
    assert control_scales(13, 2.0, True)[-1] == 2.0 and control_scales(13, 2.0, True)[0] == 2.0 * 0.825**12
    assert control_scales(10, 1.0, True)[-1] == 0.825**3  # SDXL's 10 residuals take the first 10 scales


def test_units_add_up() -> None:
    p, inp = pair("sd1"), inputs("sd1")
    x, ctx = inp["x"], inp["context"]
    t = ModelSampling.for_sd().sigma_to_t(torch.tensor([3.0])).expand(2)
    a = ControlNetUnit(p.cn, control_image(1), weight=0.5)
    b = ControlNetUnit(p.cn, control_image(2), weight=1.2, control_mode="My prompt is more important")
    with torch.no_grad():
        ra = make_controlled("sd1", [a])[0].residuals(x, t, ctx, None, None)
        rb = make_controlled("sd1", [b])[0].residuals(x, t, ctx, None, None)
        both = make_controlled("sd1", [a, b])[0].residuals(x, t, ctx, None, None)
    for i in range(len(both)):
        assert torch.allclose(both[i], ra[i] + rb[i], atol=1e-6)


# --- units: settings and control maps ----------------------------------------------------------


def test_unit_settings_are_validated_and_normalised() -> None:
    cn = pair("sd1").cn
    img = control_image()
    assert ControlNetUnit(cn, img, control_mode=2).control_mode == "ControlNet is more important"
    assert ControlNetUnit(cn, img, resize_mode="just resize").resize_mode == "Just Resize"
    with pytest.raises(ParameterError, match="control_mode"):
        ControlNetUnit(cn, img, control_mode="Loud")
    with pytest.raises(ParameterError, match="guidance"):
        ControlNetUnit(cn, img, guidance_start=0.7, guidance_end=0.2)
    with pytest.raises(ParameterError, match="weight"):
        ControlNetUnit(cn, img, weight=float("nan"))
    text = ControlNetUnit(cn, img, weight=0.5).infotext()
    assert "Weight: 0.5" in text and "Control Mode: Balanced" in text


def test_parse_controlnet_arg() -> None:
    a = parse_controlnet_arg("models/cn_canny.safetensors:edges.png:0.6")
    assert (a.model_path, a.image_path, a.weight) == ("models/cn_canny.safetensors", "edges.png", 0.6)
    b = parse_controlnet_arg(r"C:\m\cn.pth:D:\img\pose.png")
    assert (b.model_path, b.image_path, b.weight) == (r"C:\m\cn.pth", r"D:\img\pose.png", 1.0)
    with pytest.raises(ParameterError, match="controlnet"):
        parse_controlnet_arg("only-a-path.safetensors")


def test_resize_modes_and_pixel_perfect() -> None:
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, 5:15] = 255  # a white centre band, black sides
    assert resize_control_map(arr, 8, 4, "Just Resize").shape == (4, 8, 3)
    crop = resize_control_map(arr, 10, 10, "Crop and Resize")  # cover, then cut the centre: all white
    assert crop.shape == (10, 10, 3) and crop.min() == 255
    fill = resize_control_map(arr, 20, 20, "Resize and Fill")  # fit, pad with the border colour
    assert fill.shape == (20, 20, 3)
    assert fill[0].max() == 0 and fill[-1].max() == 0 and fill[10, 10].min() == 255
    assert pixel_perfect_resolution((512, 768), 512, 512, "Crop and Resize") == 512
    assert pixel_perfect_resolution((512, 768), 512, 512, "Resize and Fill") == 341


def test_hints_from_control_maps() -> None:
    rgb = np.array([[[255, 0, 51]]], np.uint8)
    assert torch.allclose(hint_tensor(rgb)[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.2]))
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0, 3] = 255  # masked pixel
    h = hint_tensor(rgba)
    assert h.shape == (1, 3, 2, 2) and h[0, :, 0, 0].eq(-1).all() and h[0, :, 1, 1].eq(0).all()
    unit = ControlNetUnit(pair("sd1").cn, control_image(), resize_mode="Just Resize")
    prepared = PreparedUnit(unit, np.asarray(control_image()))
    assert prepared.hint(32, 48).shape == (1, 3, 48, 32)
