"""UNetModel parity against diffusers' UNet2DConditionModel, key/config conversion, full-size shapes.

Parity tolerance (fp32): max|ours - ref| <= 1e-4 * max(1, max|ref|).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
import torch

from huihua.checkpoints.diffusers.unet import (
    diffusers_unet_config,
    diffusers_unet_to_ldm,
    ldm_unet_to_diffusers,
    unet_config_from_diffusers,
)
from huihua.nn.configs import UNetConfig
from huihua.errors import CheckpointError, ParameterError
from huihua.nn.layers import GEMM_CONV_MIN_RATIO, conv2d
from huihua.nn.unet import UNetModel
from tests.tiny_models import (
    assert_close,
    sdxl_label_vector,
    tiny_diffusers_unet,
    tiny_unet_config,
    tiny_unet_inputs,
)

KINDS = ("sd1", "sd2", "sdxl", "inpaint")



@cache
def pair(kind: str) -> tuple[UNetConfig, Any, UNetModel]:
    """(config, diffusers reference, our UNet loaded from the converted reference weights)."""
    cfg = tiny_unet_config(kind)  # type: ignore[arg-type]
    ref = tiny_diffusers_unet(cfg, seed=KINDS.index(kind))
    ours = UNetModel(cfg).eval()
    ours.load_state_dict(diffusers_unet_to_ldm(ref.state_dict(), cfg), strict=True)
    return cfg, ref, ours


def run_both(kind: str, ref_kwargs: dict[str, Any] | None = None, control: list[torch.Tensor] | None = None):
    cfg, ref, ours = pair(kind)
    inp = tiny_unet_inputs(cfg)
    kwargs = dict(ref_kwargs or {})
    y = None
    if cfg.adm_in_channels is not None:
        kwargs["added_cond_kwargs"] = {"text_embeds": inp["text_embeds"], "time_ids": inp["time_ids"]}
        y = sdxl_label_vector(ref, inp["text_embeds"], inp["time_ids"])
    with torch.no_grad():
        expected = ref(inp["x"], inp["timesteps"], inp["context"], **kwargs).sample
        got = ours(inp["x"], inp["timesteps"], inp["context"], y=y, control=control)
    return got, expected


@pytest.mark.parametrize("kind", KINDS)
def test_parity_with_diffusers(kind: str) -> None:
    got, expected = run_both(kind)
    assert expected.abs().max() > 0.1  # a non-trivial reference
    assert_close(got, expected)


def control_residuals(kind: str, seed: int = 5) -> list[torch.Tensor]:
    """One seeded residual per input block (shaped like its output), then one for the middle."""
    cfg, _, ours = pair(kind)
    inp = tiny_unet_inputs(cfg)
    shapes: list[torch.Size] = []
    hooks = [b.register_forward_hook(lambda m, a, out: shapes.append(out.shape)) for b in ours.input_blocks]
    hooks.append(ours.middle_block.register_forward_hook(lambda m, a, out: shapes.append(out.shape)))
    y = torch.zeros(inp["x"].shape[0], cfg.adm_in_channels) if cfg.adm_in_channels else None
    with torch.no_grad():
        ours(inp["x"], inp["timesteps"], inp["context"], y=y)
    for hook in hooks:
        hook.remove()
    gen = torch.Generator().manual_seed(seed)
    return [0.5 * torch.randn(s, generator=gen) for s in shapes]


@pytest.mark.parametrize("kind", ("sd1", "sdxl"))
def test_control_residuals_match_diffusers(kind: str) -> None:
    control = control_residuals(kind)
    zeros = [torch.zeros_like(c) for c in control]
    plain, _ = run_both(kind)
    with_zeros, _ = run_both(kind, control=zeros)
    assert torch.equal(plain, with_zeros)
    got, expected = run_both(
        kind,
        {"down_block_additional_residuals": tuple(control[:-1]), "mid_block_additional_residual": control[-1]},
        control=control,
    )
    assert (got - plain).abs().max() > 1e-2  # the residuals matter
    assert_close(got, expected)


def test_control_length_is_checked() -> None:
    cfg, _, ours = pair("sd1")
    inp = tiny_unet_inputs(cfg)
    with pytest.raises(ParameterError, match="control"):
        ours(inp["x"], inp["timesteps"], inp["context"], control=[inp["x"]])


def test_sdxl_requires_y() -> None:
    cfg, _, ours = pair("sdxl")
    inp = tiny_unet_inputs(cfg)
    with pytest.raises(ParameterError, match="y"):
        ours(inp["x"], inp["timesteps"], inp["context"])


def test_scalar_timestep_broadcasts_and_grad_path_matches() -> None:
    cfg, _, ours = pair("sd2")
    inp = tiny_unet_inputs(cfg)
    t = torch.tensor(321.0)
    with torch.no_grad():
        ref = ours(inp["x"], t.expand(2), inp["context"])
        scalar = ours(inp["x"], t, inp["context"])
    assert torch.equal(ref, scalar)
    # With autograd on, the out-of-place path must give the same numbers and a gradient.
    x = inp["x"].clone().requires_grad_()
    out = ours(x, t, inp["context"])
    assert_close(out.detach(), ref)
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_channels_last_input_gives_same_output() -> None:
    cfg, _, ours = pair("sd1")
    inp = tiny_unet_inputs(cfg)
    with torch.no_grad():
        ref = ours(inp["x"], inp["timesteps"], inp["context"])
        got = ours(inp["x"].contiguous(memory_format=torch.channels_last), inp["timesteps"], inp["context"])
    assert_close(got, ref)


def test_odd_latent_size_matches_diffusers() -> None:
    cfg, ref, ours = pair("sd1")
    inp = tiny_unet_inputs(cfg, size=13)
    with torch.no_grad():
        expected = ref(inp["x"], inp["timesteps"], inp["context"]).sample
        got = ours(inp["x"], inp["timesteps"], inp["context"])
    assert_close(got, expected)


@pytest.mark.parametrize(
    ("c_in", "size", "kernel", "stride", "padding"),
    [(64, 2, 3, 1, 1), (64, 4, 3, 2, 1), (32, 3, 1, 1, 0), (8, 16, 3, 1, 1), (64, 8, 3, 1, 1)],
)
def test_conv2d_gemm_path_matches_conv(c_in: int, size: int, kernel: int, stride: int, padding: int) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(c_in, 48, kernel, stride=stride, padding=padding)
    x = torch.randn(2, c_in, size, size)
    out_positions = 2 * ((size + 2 * padding - kernel) // stride + 1) ** 2
    gemm = kernel == 1 or c_in * kernel * kernel >= GEMM_CONV_MIN_RATIO * out_positions
    assert gemm == (size <= 4)  # the cases cover both paths
    with torch.no_grad():
        assert_close(conv2d(conv, x), conv(x))
        assert_close(conv2d(conv, x.contiguous(memory_format=torch.channels_last)), conv(x))
    leaf = x.clone().requires_grad_()
    conv2d(conv, leaf).sum().backward()
    assert leaf.grad is not None and conv.weight.grad is not None


def test_tiny_latents_through_gemm_convs_match_diffusers() -> None:
    cfg, ref, ours = pair("sd1")
    inp = tiny_unet_inputs(cfg, size=4)  # level 1 at 2x2: its 3x3 convs take the im2col + GEMM path
    with torch.no_grad():
        expected = ref(inp["x"], inp["timesteps"], inp["context"]).sample
        got = ours(inp["x"], inp["timesteps"], inp["context"])
    assert_close(got, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_key_conversion_round_trips(kind: str) -> None:
    cfg, ref, ours = pair(kind)
    sd = ref.state_dict()
    back = ldm_unet_to_diffusers(diffusers_unet_to_ldm(sd, cfg), cfg)
    assert back.keys() == sd.keys()
    assert all(back[k] is sd[k] for k in sd)
    assert ldm_unet_to_diffusers(ours.state_dict(), cfg).keys() == sd.keys()


def test_unknown_key_is_a_checkpoint_error() -> None:
    cfg, ref, _ = pair("sd1")
    sd = dict(ref.state_dict())
    sd["down_blocks.7.resnets.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="down_blocks.7"):
        diffusers_unet_to_ldm(sd, cfg)


@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trips(kind: str) -> None:
    cfg = tiny_unet_config(kind)  # type: ignore[arg-type]
    assert unet_config_from_diffusers(diffusers_unet_config(cfg)) == cfg


def test_unsupported_diffusers_config_is_refused() -> None:
    d = diffusers_unet_config(tiny_unet_config("sd1"))
    with pytest.raises(CheckpointError, match="class_embed_type"):
        unet_config_from_diffusers({**d, "class_embed_type": "timestep"})
    with pytest.raises(CheckpointError, match="flip_sin_to_cos"):
        unet_config_from_diffusers({**d, "flip_sin_to_cos": False})


# --- full-size architectures, built on the meta device -------------------------------------------

_SD1_TYPES = {
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "block_out_channels": [320, 640, 1280, 1280],
}
# The config.json of each public release (only the fields that matter).
DIFFUSERS_CONFIGS: dict[str, dict[str, Any]] = {
    "sd15": {**_SD1_TYPES, "attention_head_dim": 8, "cross_attention_dim": 768, "layers_per_block": 2},
    "sd15_inpaint": {**_SD1_TYPES, "in_channels": 9, "attention_head_dim": 8, "cross_attention_dim": 768},
    "sd21": {
        **_SD1_TYPES,
        "attention_head_dim": [5, 10, 20, 20],
        "cross_attention_dim": 1024,
        "use_linear_projection": True,
        "upcast_attention": True,
    },
    "sdxl": {
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,
        "attention_head_dim": [5, 10, 20],
        "block_out_channels": [320, 640, 1280],
        "cross_attention_dim": 2048,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "transformer_layers_per_block": [1, 2, 10],
        "use_linear_projection": True,
        "num_attention_heads": None,
    },
    "sdxl_refiner": {
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2560,
        "attention_head_dim": [6, 12, 24, 24],
        "block_out_channels": [384, 768, 1536, 1536],
        "cross_attention_dim": 1280,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "transformer_layers_per_block": 4,
        "use_linear_projection": True,
    },
}
_LINEAR64 = {"num_heads": None, "num_head_channels": 64, "use_linear_in_transformer": True}
FULL_CONFIGS: dict[str, UNetConfig] = {
    "sd15": UNetConfig(),
    "sd15_inpaint": UNetConfig(in_channels=9),
    "sd21": UNetConfig(context_dim=1024, **_LINEAR64),
    "sdxl": UNetConfig(
        channel_mult=(1, 2, 4),
        transformer_depth=(0, 2, 10),
        transformer_depth_middle=10,
        context_dim=2048,
        adm_in_channels=2816,
        **_LINEAR64,
    ),
    "sdxl_refiner": UNetConfig(
        model_channels=384,
        transformer_depth=(0, 4, 4, 0),
        transformer_depth_middle=4,
        context_dim=1280,
        adm_in_channels=2560,
        **_LINEAR64,
    ),
}
KNOWN_PARAMETER_COUNTS = {"sd15": 859_520_964, "sdxl": 2_567_463_684}


@pytest.mark.parametrize("name", sorted(FULL_CONFIGS))
def test_full_size_config_from_diffusers(name: str) -> None:
    assert unet_config_from_diffusers(DIFFUSERS_CONFIGS[name]) == FULL_CONFIGS[name]
    assert unet_config_from_diffusers(diffusers_unet_config(FULL_CONFIGS[name])) == FULL_CONFIGS[name]


@pytest.mark.parametrize("name", ["sd15", "sd21", "sdxl", "sdxl_refiner"])
def test_full_size_matches_diffusers_on_meta(name: str) -> None:
    diffusers = pytest.importorskip("diffusers")
    cfg = FULL_CONFIGS[name]
    with torch.device("meta"):
        ours = UNetModel(cfg)
        try:
            ref = diffusers.UNet2DConditionModel(**DIFFUSERS_CONFIGS[name])
        except Exception as exc:  # pragma: no cover - depends on the diffusers version
            pytest.skip(f"diffusers cannot build on meta: {exc}")
    assert list(ours.buffers()) == []
    assert all(p.is_meta for p in ours.parameters())
    ours_shapes = {k: v.shape for k, v in ldm_unet_to_diffusers(ours.state_dict(), cfg).items()}
    ref_shapes = {k: v.shape for k, v in ref.state_dict().items()}
    assert ours_shapes == ref_shapes
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in ref.parameters())
    if name in KNOWN_PARAMETER_COUNTS:
        assert count == KNOWN_PARAMETER_COUNTS[name]
