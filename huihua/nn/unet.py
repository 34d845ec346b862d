"""The LDM ``UNetModel`` of SD1, SD2, SDXL and their inpainting variants.

Attribute paths equal the checkpoint keys after ``model.diffusion_model.``; the structure is fixed by
a :class:`~huihua.checkpoints.specs.UNetConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from huihua.errors import ParameterError
from huihua.nn.attention import SpatialTransformer
from huihua.nn.configs import UNetConfig
from huihua.nn.layers import (
    Downsample,
    ResBlock,
    Upsample,
    add_,
    group_norm,
    norm_silu,
    timestep_embedding,
)


class TimestepEmbedSequential(nn.ModuleList):
    """One UNet block: layers applied in turn, each given what it needs (emb, context)."""

    def forward(self, x: Tensor, emb_act: Tensor, context: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """Apply every layer; ``size`` is the target of a trailing Upsample."""
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb_act)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, Upsample):
                x = layer(x, size)
            else:
                x = layer(x)
        return x


def _check_config(cfg: UNetConfig) -> None:
    levels = len(cfg.channel_mult)
    if len(cfg.transformer_depth) != levels:
        raise ParameterError(f"UNetConfig.transformer_depth has {len(cfg.transformer_depth)} entries, want {levels}")
    if (cfg.num_heads is None) == (cfg.num_head_channels is None):
        raise ParameterError("UNetConfig: set exactly one of num_heads and num_head_channels")


class UNetEncoder(nn.Module):
    """The parts the UNet shares with its ControlNet: time/label embedding, input blocks, middle block."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        _check_config(cfg)
        self.cfg = cfg
        mc = cfg.model_channels
        emb_dim = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if cfg.adm_in_channels is not None:
            self.label_emb = nn.Sequential(
                nn.Sequential(nn.Linear(cfg.adm_in_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            )

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential([nn.Conv2d(cfg.in_channels, mc, 3, padding=1)])])
        skip_channels = [mc]  # output width of each input block
        ch = mc
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mc * mult)]
                ch = mc * mult
                layers += self._attention(ch, cfg.transformer_depth[level])
                self.input_blocks.append(TimestepEmbedSequential(layers))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential([Downsample(ch)]))
                skip_channels.append(ch)
        self.skip_channels: tuple[int, ...] = tuple(skip_channels)

        middle: list[nn.Module] = [ResBlock(ch, emb_dim, ch)]
        middle += self._attention(ch, cfg.transformer_depth_middle)
        middle.append(ResBlock(ch, emb_dim, ch))
        self.middle_block = TimestepEmbedSequential(middle)

    def _attention(self, channels: int, depth: int) -> list[nn.Module]:
        """A SpatialTransformer of ``depth`` blocks, or nothing when depth is 0."""
        if depth <= 0:
            return []
        heads, dim_head = self.cfg.heads_at(channels)
        cfg = self.cfg
        return [SpatialTransformer(channels, heads, dim_head, depth, cfg.context_dim, cfg.use_linear_in_transformer)]

    def embed(self, timesteps: Tensor, batch: int, y: Tensor | None) -> Tensor:
        """Time (+ SDXL label) embedding (B, 4*model_channels), before the blocks' SiLU."""
        weight = next(self.time_embed.parameters())
        if timesteps.ndim == 0 or timesteps.shape[0] == 1:
            timesteps = timesteps.reshape(1).expand(batch)
        t_emb = timestep_embedding(timesteps, self.cfg.model_channels).to(weight.dtype)
        emb = self.time_embed[2](F.silu(self.time_embed[0](t_emb)))
        if self.cfg.adm_in_channels is not None:
            if y is None:
                name = type(self).__name__
                raise ParameterError(f"{name}.forward: y (label vector) is required by this model (SDXL)")
            mlp = cast(nn.Sequential, self.label_emb[0])
            emb = emb + mlp[2](F.silu(mlp[0](y.to(weight.dtype))))
        return emb


class UNetModel(UNetEncoder):
    """Noise-prediction UNet: forward(x, timesteps, context, y, control) -> eps or v."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__(cfg)
        mc = cfg.model_channels
        emb_dim = mc * 4
        skip_channels = list(self.skip_channels)
        ch = skip_channels[-1]
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers: list[nn.Module] = [ResBlock(ch + skip_channels.pop(), emb_dim, mc * mult)]
                ch = mc * mult
                layers += self._attention(ch, cfg.transformer_depth[level])
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepEmbedSequential(layers))

        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(mc, cfg.out_channels, 3, padding=1))

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor,
        context: Tensor,
        y: Tensor | None = None,
        control: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """x (B, C_in, H, W), timesteps (B,), context (B, M, context_dim), y (B, adm) -> (B, C_out, H, W).

        ``control`` is an LDM ControlNet residual list: one tensor per input block, then the middle one.
        """
        dtype = next(self.input_blocks.parameters()).dtype
        if control is not None and len(control) != len(self.input_blocks) + 1:
            raise ParameterError(
                f"UNetModel.forward: control has {len(control)} residuals, want {len(self.input_blocks) + 1}"
            )
        emb_act = F.silu(self.embed(timesteps, x.shape[0], y))
        context = context.to(dtype)

        h = x.to(dtype)
        skips: list[Tensor] = []
        for block in self.input_blocks:
            h = block(h, emb_act, context)
            skips.append(h)
        h = self.middle_block(h, emb_act, context)
        if control is not None:
            h = add_(h, control[-1].to(dtype))

        for block in self.output_blocks:
            skip = skips.pop()
            if control is not None:
                skip = skip + control[len(skips)].to(dtype)
            h = torch.cat([h, skip], dim=1)
            size = _upsample_size(skips[-1]) if skips else None
            h = block(h, emb_act, context, size if size != _double(h) else None)
        h = self.out[2](norm_silu(cast(nn.GroupNorm, self.out[0]), h))
        return h.to(x.dtype)


def _upsample_size(skip: Tensor) -> tuple[int, int]:
    return skip.shape[-2], skip.shape[-1]


def _double(h: Tensor) -> tuple[int, int]:
    return 2 * h.shape[-2], 2 * h.shape[-1]
