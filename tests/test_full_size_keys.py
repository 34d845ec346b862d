"""Full-size key sets (SD1.5, SD2.1, SDXL base, SDXL refiner) built on the meta device from the published
diffusers/transformers configs, written in LDM names, are detected as the right family and fill our
modules exactly: no missing, no unexpected keys, every shape equal."""

from __future__ import annotations

import pytest
import torch

from huihua.checkpoints.detect import detect_spec
from huihua.checkpoints.diffusers.clip import hf_clip_to_ldm
from huihua.checkpoints.diffusers.unet import diffusers_unet_to_ldm, unet_config_from_diffusers
from huihua.checkpoints.diffusers.vae import diffusers_vae_to_ldm, vae_config_from_diffusers
from huihua.checkpoints.io import TensorInfo
from huihua.families import UNET_PREFIX, VAE_PREFIX
from huihua.nn.clip import build_text_encoder
from huihua.nn.unet import UNetModel
from huihua.nn.vae import AutoencoderKL

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

CROSS, PLAIN = "CrossAttnDownBlock2D", "DownBlock2D"
CROSS_UP, PLAIN_UP = "CrossAttnUpBlock2D", "UpBlock2D"

UNETS = {
    "sd1": dict(block_out_channels=(320, 640, 1280, 1280), down_block_types=(CROSS, CROSS, CROSS, PLAIN),
                up_block_types=(PLAIN_UP, CROSS_UP, CROSS_UP, CROSS_UP), attention_head_dim=8,
                cross_attention_dim=768),
    "sd2": dict(block_out_channels=(320, 640, 1280, 1280), down_block_types=(CROSS, CROSS, CROSS, PLAIN),
                up_block_types=(PLAIN_UP, CROSS_UP, CROSS_UP, CROSS_UP), attention_head_dim=(5, 10, 20, 20),
                cross_attention_dim=1024, use_linear_projection=True),
    "sdxl": dict(block_out_channels=(320, 640, 1280), down_block_types=(PLAIN, CROSS, CROSS),
                 up_block_types=(CROSS_UP, CROSS_UP, PLAIN_UP), attention_head_dim=(5, 10, 20),
                 transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816),
    "sdxl_refiner": dict(block_out_channels=(384, 768, 1536, 1536), down_block_types=(PLAIN, CROSS, CROSS, PLAIN),
                         up_block_types=(PLAIN_UP, CROSS_UP, CROSS_UP, PLAIN_UP), attention_head_dim=(6, 12, 24, 24),
                         transformer_layers_per_block=4, cross_attention_dim=1280, use_linear_projection=True,
                         addition_embed_type="text_time", addition_time_embed_dim=256,
                         projection_class_embeddings_input_dim=2560),
}
VIT_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
             hidden_act="quick_gelu")
VIT_H = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
             hidden_act="gelu")
BIG_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
             hidden_act="gelu", projection_dim=1280)
TEXTS = {
    "sd1": [("cond_stage_model.", "hf", VIT_L)],
    "sd2": [("cond_stage_model.", "openclip", VIT_H)],
    "sdxl": [("conditioner.embedders.0.", "hf", VIT_L), ("conditioner.embedders.1.", "openclip", BIG_G)],
    "sdxl_refiner": [("conditioner.embedders.0.", "openclip", BIG_G)],
}
# UNet parameter counts of the released models (the refiner is covered by the shape comparison alone).
PUBLISHED_PARAMS = {"sd1": 859_520_964, "sd2": 865_910_724, "sdxl": 2_567_463_684}


def _meta_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.state_dict())


def _ldm_key_set(family: str) -> dict[str, TensorInfo]:
    """The family's full key set in LDM names, converted from reference models built on meta."""
    keys: dict[str, torch.Tensor] = {}
    with torch.device("meta"):
        ref_unet = diffusers.UNet2DConditionModel(sample_size=64, layers_per_block=2, **UNETS[family])
        ref_vae = diffusers.AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    unet_cfg = unet_config_from_diffusers(dict(ref_unet.config))
    keys.update({UNET_PREFIX + k: v for k, v in diffusers_unet_to_ldm(_meta_state(ref_unet), unet_cfg).items()})
    vae_cfg = vae_config_from_diffusers(dict(ref_vae.config))
    keys.update({VAE_PREFIX + k: v for k, v in diffusers_vae_to_ldm(_meta_state(ref_vae), vae_cfg).items()})
    for prefix, layout, cfg in TEXTS[family]:
        cls = transformers.CLIPTextModelWithProjection if "projection_dim" in cfg else transformers.CLIPTextModel
        with torch.device("meta"):
            ref = cls(transformers.CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **cfg))
        keys.update({prefix + k: v for k, v in hf_clip_to_ldm(_meta_state(ref), layout).items()})
    return {k: TensorInfo(tuple(v.shape), v.dtype) for k, v in keys.items()}


def _our_key_set(spec) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        parts = [(UNET_PREFIX, UNetModel(spec.unet)), (VAE_PREFIX, AutoencoderKL(spec.vae))]
        parts += [(use.prefix, build_text_encoder(use.config)) for use in spec.text_encoders]
    return {prefix + k: tuple(v.shape) for prefix, m in parts for k, v in m.state_dict().items()}


@pytest.mark.parametrize("family", list(UNETS))
def test_full_size_key_set_detected_and_loads_strictly(family: str) -> None:
    info = _ldm_key_set(family)
    spec = detect_spec(info, {}, family)
    assert spec.family == family
    assert spec.inpainting is False
    ours = _our_key_set(spec)
    theirs = {k: v.shape for k, v in info.items()}
    assert sorted(set(theirs) - set(ours)) == [], "unexpected keys"
    assert sorted(set(ours) - set(theirs)) == [], "missing keys"
    assert {k: ours[k] for k in theirs} == theirs
    unet_params = sum(torch.Size(s).numel() for k, s in ours.items() if k.startswith(UNET_PREFIX))
    assert unet_params == PUBLISHED_PARAMS.get(family, unet_params)
    expected_context = {"sd1": 768, "sd2": 1024, "sdxl": 2048, "sdxl_refiner": 1280}[family]
    assert spec.unet.context_dim == expected_context
    assert sum(u.config.width for u in spec.text_encoders) == expected_context
    assert spec.vae.scale_factor == (0.13025 if family.startswith("sdxl") else 0.18215)


def test_inpainting_variant_detected() -> None:
    info = dict(_ldm_key_set("sd1"))
    w = info[UNET_PREFIX + "input_blocks.0.0.weight"]
    info[UNET_PREFIX + "input_blocks.0.0.weight"] = TensorInfo((w.shape[0], 9, *w.shape[2:]), w.dtype)
    spec = detect_spec(info, {}, "inpaint")
    assert spec.inpainting and spec.unet.in_channels == 9 and spec.unet.out_channels == 4
