"""A small Vision Transformer (the image tower of huihua's tiny CLIP): pixels -> one embedding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from huihua.errors import ParameterError


@dataclass(frozen=True)
class ViTConfig:
    """Hyper-parameters of the ViT: square images cut into ``patch``-pixel patches."""

    image_size: int = 64
    patch: int = 8
    width: int = 128
    layers: int = 4
    heads: int = 4
    embed_dim: int = 128

    @property
    def tokens(self) -> int:
        """Patches plus the class token."""
        return (self.image_size // self.patch) ** 2 + 1


class ViTBlock(nn.Module):
    """Pre-norm transformer block: self-attention then an MLP, both residual."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, W) -> (B, T, W)."""
        b, t, w = x.shape
        q, k, v = self.qkv(self.ln_1(x)).reshape(b, t, 3, self.heads, w // self.heads).unbind(2)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + self.out_proj(attn.transpose(1, 2).reshape(b, t, w))
        return x + self.fc2(F.gelu(self.fc1(self.ln_2(x))))


class VisionTransformer(nn.Module):
    """Patch embedding, class token, transformer, final norm and projection to ``embed_dim``."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        if cfg.image_size % cfg.patch or cfg.width % cfg.heads:
            raise ParameterError("ViTConfig: patch must divide image_size and heads must divide width")
        self.cfg = cfg
        self.conv1 = nn.Conv2d(3, cfg.width, cfg.patch, stride=cfg.patch)
        self.class_embedding = nn.Parameter(torch.randn(cfg.width) * cfg.width**-0.5)
        self.positional_embedding = nn.Parameter(torch.randn(cfg.tokens, cfg.width) * 0.02)
        self.ln_pre = nn.LayerNorm(cfg.width)
        self.blocks = nn.ModuleList(ViTBlock(cfg.width, cfg.heads) for _ in range(cfg.layers))
        self.ln_post = nn.LayerNorm(cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.embed_dim, bias=False)

    def forward(self, pixels: Tensor) -> Tensor:
        """Pixels (B, 3, H, W) in [-1, 1] -> embeddings (B, embed_dim), not normalised."""
        x = self.conv1(pixels).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding)
        for block in self.blocks:
            x = block(x)
        return self.proj(self.ln_post(x[:, 0]))
