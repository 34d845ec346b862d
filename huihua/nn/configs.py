"""Hyper-parameters of the networks: frozen dataclasses that fully describe each one.

They are what detection (``checkpoints/detect.py``) recovers from a state dict's key names and
shapes, and what the network constructors in ``huihua.nn`` take. Field names follow the LDM/CompVis configs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TextLayout = Literal["hf", "openclip"]


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of the LDM ``UNetModel`` (``model.diffusion_model.*``)."""

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    # Transformer blocks per SpatialTransformer at each resolution level; 0 = no attention there.
    # Output blocks of a level use the same depth as its input blocks (true of every SD release).
    transformer_depth: tuple[int, ...] = (1, 1, 1, 0)
    transformer_depth_middle: int = 1
    # Exactly one of num_heads (SD1: 8 heads at every level) and num_head_channels (SD2/SDXL: 64) is set.
    num_heads: int | None = 8
    num_head_channels: int | None = None
    context_dim: int = 768
    use_linear_in_transformer: bool = False
    # SDXL's ``label_emb`` input width (pooled text + size/crop embeddings); None when absent.
    adm_in_channels: int | None = None

    def heads_at(self, channels: int) -> tuple[int, int]:
        """(number of heads, head width) of an attention layer with ``channels`` channels."""
        if self.num_head_channels is not None:
            return channels // self.num_head_channels, self.num_head_channels
        assert self.num_heads is not None
        return self.num_heads, channels // self.num_heads


@dataclass(frozen=True)
class VAEConfig:
    """Hyper-parameters of the LDM ``AutoencoderKL`` (``first_stage_model.*``)."""

    in_channels: int = 3
    out_ch: int = 3
    z_channels: int = 4  # also embed_dim: quant_conv maps 2*z_channels -> 2*z_channels
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    # Diffusers/LDM VAEs of SD have attention only in the mid block (attn_resolutions = []).
    norm_num_groups: int = 32
    scale_factor: float = 0.18215
    shift_factor: float = 0.0

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class CLIPTextConfig:
    """Hyper-parameters of one CLIP text tower.

    ``layout`` picks the key layout: "hf" is transformers' ``CLIPTextModel`` under a ``transformer.``
    attribute (SD1 ``cond_stage_model.transformer.text_model.*``, SDXL ``conditioner.embedders.0``);
    "openclip" is OpenCLIP's text tower under a ``model.`` attribute with fused ``in_proj``
    (SD2 ``cond_stage_model.model.*``, SDXL ``conditioner.embedders.1``).
    """

    layout: TextLayout = "hf"
    vocab_size: int = 49408
    max_positions: int = 77
    width: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    act: Literal["quick_gelu", "gelu"] = "quick_gelu"
    # Width of ``text_projection`` output (OpenCLIP: Parameter (width, projection_dim)); None = absent.
    projection_dim: int | None = None
    eps: float = 1e-5
    # The token used to pad windows: SD1 pads with the end token (49407), OpenCLIP pads with 0.
    pad_token: int = 49407
