"""Shared convolutional pieces of the LDM UNet: timestep embedding, ResBlock, down/upsampling.

Attribute paths follow the LDM (CompVis ``openaimodel.py``) checkpoint keys. Nothing is registered
as a buffer: the loader builds these modules on the meta device and streams the weights in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

UNET_NORM_GROUPS = 32
UNET_NORM_EPS = 1e-5


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding (B,) -> (B, dim) in float32, cosine half first (LDM convention)."""
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=timesteps.device) * (-math.log(max_period) / half)
    args = timesteps.to(torch.float32)[:, None] * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def inplace_ok(x: Tensor) -> bool:
    """Whether ``x`` may be overwritten: true when autograd does not need it."""
    return not (torch.is_grad_enabled() and x.requires_grad)


def norm_silu(norm: nn.GroupNorm, x: Tensor) -> Tensor:
    """SiLU(GroupNorm(x)); the activation reuses the norm's fresh output buffer."""
    h = F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return F.silu(h, inplace=True)


def add_(out: Tensor, other: Tensor) -> Tensor:
    """``out + other``, accumulated into ``out`` when autograd allows (saves one activation)."""
    if inplace_ok(out):
        return out.add_(other)
    return out + other


def group_norm(channels: int, eps: float = UNET_NORM_EPS) -> nn.GroupNorm:
    """The 32-group normalisation used throughout SD's UNet and VAE."""
    return nn.GroupNorm(UNET_NORM_GROUPS, channels, eps=eps)


class ResBlock(nn.Module):
    """LDM ResBlock: two 3x3 convs with a timestep-embedding shift in between."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int) -> None:
        super().__init__()
        # Sequential only to reproduce LDM's indices (in_layers.{0,2}, out_layers.{0,3}).
        self.in_layers = nn.Sequential(
            group_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            group_norm(out_channels),
            nn.SiLU(),
            nn.Dropout(0.0),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection: nn.Module = (
            nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: Tensor, emb_act: Tensor) -> Tensor:
        """x (B, C, H, W), emb_act = SiLU(time embedding) (B, E) -> (B, C_out, H, W)."""
        h = self.in_layers[2](norm_silu(self.in_layers[0], x))
        h = add_(h, self.emb_layers[1](emb_act)[:, :, None, None])
        h = self.out_layers[3](self.out_layers[2](norm_silu(self.out_layers[0], h)))
        return add_(h, self.skip_connection(x))


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (``op``), halving H and W."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H/2, W/2)."""
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 convolution (``conv``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """(B, C, H, W) -> (B, C, 2H, 2W), or to ``size`` when the skip has odd dimensions."""
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)
