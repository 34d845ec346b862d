"""The LDM ``ControlNet`` (``cldm.py``) of SD1, SD2 and SDXL: a trainable copy of the UNet's encoder.

Attribute paths equal the checkpoint keys after ``control_model.``: the UNet's ``time_embed``,
``label_emb`` (SDXL), ``input_blocks`` and ``middle_block``, plus ``input_hint_block`` (the hint
encoder: a 3x3 conv to ``hint_widths[0]``, then per further width a same-width conv and a stride-2
conv, SiLU after each, and a final 3x3 conv to ``model_channels``), ``zero_convs.{i}.0`` (one 1x1
conv per input block) and ``middle_block_out.0``. The hint is an image in [0, 1] at
``2 ** (len(hint_widths) - 1)`` (8) times the latent size; ``forward`` returns the residual list the
UNet's ``control=`` argument takes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from huihua.errors import ParameterError
from huihua.nn.configs import UNetConfig
from huihua.nn.layers import add_
from huihua.nn.unet import UNetEncoder

CLDM_HINT_WIDTHS = (16, 32, 96, 256)


@dataclass(frozen=True)
class ControlNetConfig:
    """Hyper-parameters of a ControlNet: the UNet encoder it copies and its hint encoder."""

    unet: UNetConfig
    hint_channels: int = 3
    hint_widths: tuple[int, ...] = CLDM_HINT_WIDTHS

    @property
    def hint_downscale(self) -> int:
        """How many hint pixels make one latent pixel (8 for every released ControlNet)."""
        return 2 ** (len(self.hint_widths) - 1)


def hint_layer_indices(n_widths: int) -> list[int]:
    """``input_hint_block`` indices of the convolutions (SiLUs sit at the odd indices between them)."""
    return [2 * i for i in range(2 * n_widths)]


def _hint_block(cfg: ControlNetConfig) -> nn.Sequential:
    widths = cfg.hint_widths
    if not widths:
        raise ParameterError("ControlNetConfig.hint_widths: want at least one width")
    convs = [nn.Conv2d(cfg.hint_channels, widths[0], 3, padding=1)]
    for c_in, c_out in itertools.pairwise(widths):
        convs += [nn.Conv2d(c_in, c_in, 3, padding=1), nn.Conv2d(c_in, c_out, 3, padding=1, stride=2)]
    convs.append(nn.Conv2d(widths[-1], cfg.unet.model_channels, 3, padding=1))
    layers: list[nn.Module] = []
    for conv in convs:
        layers += [conv, nn.SiLU()]
    return nn.Sequential(*layers[:-1])  # no activation after the last (zero-initialised) conv


class ControlNet(UNetEncoder):
    """forward(x, hint, timesteps, context, y) -> residuals, one per UNet input block, then the middle one."""

    def __init__(self, cfg: ControlNetConfig) -> None:
        super().__init__(cfg.unet)
        self.control_cfg = cfg
        self.input_hint_block = _hint_block(cfg)
        self.zero_convs = nn.ModuleList(nn.Sequential(nn.Conv2d(ch, ch, 1)) for ch in self.skip_channels)
        ch = self.skip_channels[-1]
        self.middle_block_out = nn.Sequential(nn.Conv2d(ch, ch, 1))
        self.source_name = ""  # the file it was loaded from (for infotexts and messages)

    @property
    def in_channels(self) -> int:
        """Latent channels the ControlNet reads (4; an inpainting UNet's extra channels are not given to it)."""
        return self.cfg.in_channels

    def forward(
        self, x: Tensor, hint: Tensor, timesteps: Tensor, context: Tensor, y: Tensor | None = None
    ) -> list[Tensor]:
        """x (B, C, h, w), hint (B, hint_channels, h*8, w*8) in [0, 1], timesteps (B,), context (B, M, D),
        y (B, adm) for SDXL -> [(B, C_i, h_i, w_i)] * (input blocks + 1)."""
        dtype = next(self.input_blocks.parameters()).dtype
        f = self.control_cfg.hint_downscale
        if hint.shape[-2:] != (x.shape[-2] * f, x.shape[-1] * f):
            raise ParameterError(
                f"ControlNet.forward: hint is {tuple(hint.shape[-2:])}, want {f}x the latent size "
                f"{(x.shape[-2] * f, x.shape[-1] * f)}"
            )
        if hint.shape[0] not in (1, x.shape[0]):
            raise ParameterError(f"ControlNet.forward: hint batch {hint.shape[0]} does not fit x batch {x.shape[0]}")
        emb_act = F.silu(self.embed(timesteps, x.shape[0], y))
        context = context.to(dtype)
        guided_hint = self.input_hint_block(hint.to(dtype))

        h = x.to(dtype)
        outs: list[Tensor] = []
        for i, (block, zero_conv) in enumerate(zip(self.input_blocks, self.zero_convs, strict=True)):
            h = block(h, emb_act, context)
            if i == 0:
                h = add_(h, guided_hint)
            outs.append(zero_conv(h))
        h = self.middle_block(h, emb_act, context)
        outs.append(self.middle_block_out(h))
        return outs
