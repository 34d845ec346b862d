"""The LDM ``AutoencoderKL`` (SD's VAE): pixels (B, 3, H, W) in [-1, 1] <-> latents (B, z, H/8, W/8).

Attribute paths equal the checkpoint keys after ``first_stage_model.``; latents here are UNscaled
(the pipeline multiplies by ``VAEConfig.scale_factor``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from huihua.nn.configs import VAEConfig
from huihua.nn.layers import add_, norm_silu

VAE_NORM_EPS = 1e-6
LOGVAR_RANGE = (-30.0, 20.0)  # the clamp of LDM's DiagonalGaussianDistribution


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=VAE_NORM_EPS)


class ResnetBlock(nn.Module):
    """Two 3x3 convolutions with a residual (1x1 ``nin_shortcut`` when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        h = self.conv1(norm_silu(self.norm1, x))
        h = self.conv2(norm_silu(self.norm2, h))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return add_(h, skip)


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions; q, k, v, proj_out are 1x1 convolutions."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    @staticmethod
    def _linear(conv: nn.Conv2d, tokens: Tensor) -> Tensor:
        # A 1x1 convolution is a Linear over channels; applying it to tokens avoids layout round trips.
        return F.linear(tokens, conv.weight.flatten(1), conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        b, c, height, width = x.shape
        h = self.norm(x)
        tokens = h.permute(0, 2, 3, 1).reshape(b, 1, height * width, c)
        q, k, v = (self._linear(conv, tokens) for conv in (self.q, self.k, self.v))
        out = self._linear(self.proj_out, F.scaled_dot_product_attention(q, k, v))
        out = out.view(b, height, width, c).permute(0, 3, 1, 2)
        return add_(out, x)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution after padding one pixel on the right and bottom (LDM VAE)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H/2, W/2)."""
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, 2H, 2W)."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: ``block.{j}`` ResnetBlocks, then an optional down/upsample."""

    def __init__(self, blocks: list[ResnetBlock], resample: nn.Module | None, name: str) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList()  # SD's VAEs have no attention outside the mid block
        if resample is not None:
            setattr(self, name, resample)
        self.resample = name if resample is not None else None

    def forward(self, x: Tensor) -> Tensor:
        """Blocks in turn, then the resampling layer if any."""
        for block in self.block:
            x = block(x)
        if self.resample is not None:
            x = getattr(self, self.resample)(x)
        return x


class Mid(nn.Module):
    """ResnetBlock, attention, ResnetBlock at the lowest resolution."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, C, h, w)."""
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """Pixels (B, 3, H, W) -> moments features (B, 2*z, H/f, W/f)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        groups = cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in = cfg.ch
        for level, mult in enumerate(cfg.ch_mult):
            block_out = cfg.ch * mult
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, groups))
                block_in = block_out
            last = level == len(cfg.ch_mult) - 1
            self.down.append(Level(blocks, None if last else Downsample(block_in), "downsample"))
        self.mid = Mid(block_in, groups)
        self.norm_out = _norm(block_in, groups)
        self.conv_out = nn.Conv2d(block_in, 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 2*z, H/f, W/f)."""
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(norm_silu(self.norm_out, h))


class Decoder(nn.Module):
    """Latents (B, z, h, w) -> pixels (B, 3, h*f, w*f); ``up`` is indexed by level (LDM's order)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        groups = cfg.norm_num_groups
        block_in = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = Mid(block_in, groups)
        levels: list[Level] = []
        for level in reversed(range(len(cfg.ch_mult))):
            block_out = cfg.ch * cfg.ch_mult[level]
            blocks = []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, groups))
                block_in = block_out
            levels.insert(0, Level(blocks, Upsample(block_in) if level else None, "upsample"))
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in, groups)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        """(B, z, h, w) -> (B, 3, h*f, w*f)."""
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(norm_silu(self.norm_out, h))


class AutoencoderKL(nn.Module):
    """SD's KL autoencoder: ``encode`` to the latent mean, ``decode`` back to pixels."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.z_channels, 1)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1)

    def encode_moments(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """Pixels (B, 3, H, W) in [-1, 1] -> (mean, logvar), each (B, z, H/f, W/f), unscaled."""
        weight = self.quant_conv.weight
        moments = self.quant_conv(self.encoder(pixels.to(weight.dtype)))
        mean, logvar = moments.chunk(2, dim=1)
        return mean, torch.clamp(logvar, *LOGVAR_RANGE)

    def encode(self, pixels: Tensor) -> Tensor:
        """Pixels (B, 3, H, W) in [-1, 1] -> latent mean (B, z, H/f, W/f), unscaled."""
        return self.encode_moments(pixels)[0]

    def decode(self, latents: Tensor) -> Tensor:
        """Unscaled latents (B, z, h, w) -> pixels (B, 3, h*f, w*f), roughly in [-1, 1], not clamped."""
        weight = self.post_quant_conv.weight
        return self.decoder(self.post_quant_conv(latents.to(weight.dtype)))
