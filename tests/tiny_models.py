"""Tiny seeded diffusers reference networks and the matching huihua configs (tests only).

Shared by the UNet, VAE, ControlNet and loader tests; keep the names and defaults stable.
diffusers is imported lazily so that importing this module stays cheap.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from huihua.checkpoints.diffusers.unet import diffusers_unet_config
from huihua.checkpoints.diffusers.vae import diffusers_vae_config
from huihua.nn.configs import UNetConfig, VAEConfig

TinyKind = Literal["sd1", "sd2", "sdxl", "inpaint"]

# SDXL's size/crop conditioning: 6 numbers, each embedded with this width (256 at full size).
TINY_ADDITION_TIME_EMBED_DIM = 8
TINY_POOLED_DIM = 16  # width of SDXL's pooled text embedding (1280 at full size)
TINY_CONTEXT_DIM = 24


def tiny_unet_config(kind: TinyKind = "sd1") -> UNetConfig:
    """A 2-level UNet (32, 64 channels) shaped like ``kind``: sd1, sd2, sdxl or inpaint (sd1, 9 in)."""
    if kind in ("sd1", "inpaint"):
        return UNetConfig(
            in_channels=9 if kind == "inpaint" else 4,
            model_channels=32,
            channel_mult=(1, 2),
            num_res_blocks=2,
            transformer_depth=(1, 1),
            transformer_depth_middle=1,
            num_heads=4,
            num_head_channels=None,
            context_dim=TINY_CONTEXT_DIM,
        )
    if kind == "sd2":
        return UNetConfig(
            model_channels=32,
            channel_mult=(1, 2),
            num_res_blocks=1,
            transformer_depth=(1, 1),
            transformer_depth_middle=1,
            num_heads=None,
            num_head_channels=8,
            context_dim=TINY_CONTEXT_DIM,
            use_linear_in_transformer=True,
        )
    if kind == "sdxl":
        return UNetConfig(
            model_channels=32,
            channel_mult=(1, 2),
            num_res_blocks=2,
            transformer_depth=(0, 2),
            transformer_depth_middle=2,
            num_heads=None,
            num_head_channels=8,
            context_dim=TINY_CONTEXT_DIM,
            use_linear_in_transformer=True,
            adm_in_channels=TINY_POOLED_DIM + 6 * TINY_ADDITION_TIME_EMBED_DIM,
        )
    raise ValueError(f"unknown tiny UNet kind {kind!r}")


def tiny_vae_config() -> VAEConfig:
    """A 2-level VAE (32, 64 channels, one ResnetBlock per level): downscale 2."""
    return VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, norm_num_groups=32)


def assert_close(ours: Tensor, ref: Tensor, what: str = "output") -> None:
    """Parity tolerance of the suite: max |ours - ref| <= 1e-4 * max(1, max |ref|), shapes equal."""
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    tol = 1e-4 * max(1.0, ref.abs().max().item())
    err = (ours.float() - ref.float()).abs().max().item()
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:.3g}"


def perturb_(module: nn.Module, seed: int = 0, scale: float = 0.1) -> nn.Module:
    """Add seeded noise to every 1-D parameter (norm scales, biases) so none is trivially 1 or 0."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            if p.ndim == 1:
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return module


def tiny_diffusers_unet(cfg: UNetConfig, seed: int = 0) -> Any:
    """diffusers ``UNet2DConditionModel`` for ``cfg`` with seeded random weights, fp32, eval mode."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    model = UNet2DConditionModel(**diffusers_unet_config(cfg, TINY_ADDITION_TIME_EMBED_DIM))
    return perturb_(model, seed).eval()


def tiny_diffusers_vae(cfg: VAEConfig, seed: int = 0) -> Any:
    """diffusers ``AutoencoderKL`` for ``cfg`` with seeded random weights, fp32, eval mode."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    model = AutoencoderKL(**diffusers_vae_config(cfg))
    return perturb_(model, seed).eval()


def tiny_unet_inputs(cfg: UNetConfig, batch: int = 2, size: int = 16, seed: int = 0) -> dict[str, Tensor]:
    """Seeded inputs: x (B, C_in, size, size), timesteps (B,), context (B, 7, ctx); SDXL adds
    text_embeds (B, pooled) and time_ids (B, 6) (diffusers' added_cond_kwargs)."""
    gen = torch.Generator().manual_seed(seed)
    out = {
        "x": torch.randn(batch, cfg.in_channels, size, size, generator=gen),
        "timesteps": torch.tensor([999.0, 17.5][:batch] + [500.0] * max(0, batch - 2)),
        "context": torch.randn(batch, 7, cfg.context_dim, generator=gen),
    }
    if cfg.adm_in_channels is not None:
        out["text_embeds"] = torch.randn(batch, TINY_POOLED_DIM, generator=gen)
        out["time_ids"] = torch.tensor([[64.0, 48.0, 0.0, 8.0, 64.0, 64.0]]).repeat(batch, 1)
    return out


def sdxl_label_vector(reference: Any, text_embeds: Tensor, time_ids: Tensor) -> Tensor:
    """LDM's ``y`` (B, adm) as the reference diffusers UNet builds it: [pooled, embed(time_ids)]."""
    with torch.no_grad():
        time_embeds = reference.add_time_proj(time_ids.flatten()).reshape(time_ids.shape[0], -1)
    return torch.cat([text_embeds, time_embeds.to(text_embeds.dtype)], dim=-1)
