"""Shared convolutional pieces of the LDM UNet: timestep embedding, ResBlock, down/upsampling.

Attribute paths follow the LDM (CompVis ``openaimodel.py``) checkpoint keys. Nothing is registered
as a buffer: the loader builds these modules on the meta device and streams the weights in.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

UNET_NORM_GROUPS = 32
UNET_NORM_EPS = 1e-5
# On CPU, oneDNN re-lays-out a convolution's weight on every call. When the weight is much larger
# than the output (deep, low-resolution layers), an explicit im2col + GEMM is faster (about 2x for
# SD's 1280-channel 3x3 convs at 8x8 and below); the crossover measured near this weight/output ratio.
GEMM_CONV_MIN_RATIO = 20.0


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding (B,) -> (B, dim) in float32, cosine half first (LDM convention)."""
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=timesteps.device) * (-math.log(max_period) / half)
    args = timesteps.to(torch.float32)[:, None] * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def conv2d(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)``; on CPU in fp32, low-resolution convolutions run as im2col + batched GEMM."""
    weight = conv.weight
    plain = conv.groups == 1 and conv.dilation == (1, 1) and conv.padding_mode == "zeros"
    if not plain or not isinstance(conv.padding, tuple) or x.device.type != "cpu" or x.dtype != torch.float32:
        return conv(x)
    if not x.is_contiguous():
        return conv(x)
    b, c_in, height, width = x.shape
    c_out, _, kh, kw = weight.shape
    (sh, sw), (ph, pw) = conv.stride, conv.padding
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    pointwise = (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0)
    if not pointwise and c_in * kh * kw < GEMM_CONV_MIN_RATIO * b * out_h * out_w:
        return conv(x)
    # (B, C_in*kh*kw, L)
    cols = x.view(b, c_in, height * width) if pointwise else F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))
    w2d = weight.reshape(c_out, -1).expand(b, -1, -1)
    if conv.bias is None:
        out = torch.bmm(w2d, cols)
    else:
        out = torch.baddbmm(conv.bias[None, :, None].expand(b, -1, cols.shape[-1]), w2d, cols)
    return out.view(b, c_out, out_h, out_w)


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


def mul_(out: Tensor, other: Tensor) -> Tensor:
    """``out * other``, computed into ``out`` when autograd allows."""
    if inplace_ok(out):
        return out.mul_(other)
    return out * other


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
        inl, outl = self.in_layers, self.out_layers
        h = conv2d(cast(nn.Conv2d, inl[2]), norm_silu(cast(nn.GroupNorm, inl[0]), x))
        h = add_(h, self.emb_layers[1](emb_act)[:, :, None, None])
        h = conv2d(cast(nn.Conv2d, outl[3]), outl[2](norm_silu(cast(nn.GroupNorm, outl[0]), h)))
        skip = x if isinstance(self.skip_connection, nn.Identity) else conv2d(cast(nn.Conv2d, self.skip_connection), x)
        return add_(h, skip)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (``op``), halving H and W."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H/2, W/2)."""
        return conv2d(self.op, x)


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
        return conv2d(self.conv, x)
