"""Attention pieces of the LDM UNet: CrossAttention, GEGLU feed-forward, SpatialTransformer.

Attribute paths follow the LDM ``attention.py`` checkpoint keys (``transformer_blocks.{j}.attn1.to_q``,
``ff.net.0.proj``, ...). Attention itself is PyTorch's fused ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from huihua.nn.layers import add_, group_norm, mul_

TRANSFORMER_NORM_EPS = 1e-6  # the SpatialTransformer's GroupNorm (LDM ``Normalize``)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, N, H*D) -> (B, H, N, D) as a strided view (SDPA reads the strides, no copy)."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, N, D) -> (B, N, H*D)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class CrossAttention(nn.Module):
    """Multi-head attention of ``x`` over ``context`` (self-attention when context is None)."""

    def __init__(self, query_dim: int, context_dim: int | None, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """x (B, N, C), context (B, M, C_ctx) -> (B, N, C)."""
        ctx = x if context is None else context
        q = split_heads(self.to_q(x), self.heads)
        k = split_heads(self.to_k(ctx), self.heads)
        v = split_heads(self.to_v(ctx), self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out[0](merge_heads(out))


class GEGLU(nn.Module):
    """GELU-gated linear unit: one projection to 2*dim_out, value half times GELU(gate half)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        """(..., dim_in) -> (..., dim_out)."""
        value, gate = self.proj(x).chunk(2, dim=-1)
        return mul_(F.gelu(gate), value)


class FeedForward(nn.Module):
    """GEGLU feed-forward with a 4x inner width (``net.0.proj``, ``net.2``)."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim))

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, dim) -> (B, N, dim)."""
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention and feed-forward, each with a residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int) -> None:
        super().__init__()
        self.attn1 = CrossAttention(dim, None, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """x (B, N, dim), context (B, M, context_dim) -> (B, N, dim)."""
        x = add_(self.attn1(self.norm1(x)), x)
        x = add_(self.attn2(self.norm2(x), context), x)
        return add_(self.ff(self.norm3(x)), x)


class SpatialTransformer(nn.Module):
    """Transformer over the H*W positions of a feature map, conditioned on ``context``.

    ``use_linear`` picks SD2/SDXL's Linear ``proj_in``/``proj_out`` over SD1's 1x1 convolutions.
    """

    def __init__(
        self, channels: int, heads: int, dim_head: int, depth: int, context_dim: int, use_linear: bool
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.use_linear = use_linear
        self.norm = group_norm(channels, eps=TRANSFORMER_NORM_EPS)
        if use_linear:
            self.proj_in: nn.Module = nn.Linear(channels, inner)
        else:
            self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, dim_head, context_dim) for _ in range(depth)
        )
        if use_linear:
            self.proj_out: nn.Module = nn.Linear(inner, channels)
        else:
            self.proj_out = nn.Conv2d(inner, channels, 1)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """x (B, C, H, W), context (B, M, context_dim) -> (B, C, H, W)."""
        b, c, height, width = x.shape
        # (B, C, H, W) -> (B, H*W, C): one copy (none for channels-last input). SD1's 1x1 conv
        # projections are applied as the Linear they are, so tokens never go back and forth.
        h = self.norm(x).permute(0, 2, 3, 1).reshape(b, height * width, c)
        h = _pointwise(self.proj_in, h)
        for block in self.transformer_blocks:
            h = block(h, context)
        h = _pointwise(self.proj_out, h)
        # The residual add writes the result in x's layout, so it doubles as the layout change.
        return x + h.view(b, height, width, c).permute(0, 3, 1, 2)


def _pointwise(layer: nn.Module, tokens: Tensor) -> Tensor:
    """Apply a Linear, or a 1x1 Conv2d as the equivalent Linear, to (B, N, C) tokens."""
    if isinstance(layer, nn.Conv2d):
        return F.linear(tokens, layer.weight.flatten(1), layer.bias)
    return layer(tokens)
