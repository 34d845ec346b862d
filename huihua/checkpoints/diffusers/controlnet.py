"""Diffusers ``ControlNetModel`` <-> LDM ``ControlNet``: state-dict keys and configs.

The UNet-shaped part (``time_embedding``, ``add_embedding``, ``conv_in``, ``down_blocks``,
``mid_block``) goes through the UNet's own map in ``unet.py``; only the ControlNet's extra modules
are named here: ``controlnet_cond_embedding.{conv_in, blocks.j, conv_out}`` <-> ``input_hint_block.{k}``,
``controlnet_down_blocks.{i}`` <-> ``zero_convs.{i}.0`` and ``controlnet_mid_block`` <-> ``middle_block_out.0``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from torch import Tensor

from huihua.checkpoints.detect import count_children, require_shape
from huihua.checkpoints.diffusers.unet import (
    diffusers_unet_config,
    diffusers_unet_to_ldm,
    ldm_unet_to_diffusers,
    unet_config_from_diffusers,
)
from huihua.checkpoints.io import TensorInfo
from huihua.errors import CheckpointError
from huihua.nn.configs import UNetConfig
from huihua.nn.controlnet import ControlNetConfig, hint_layer_indices

_DIFFUSERS_OWN = ("controlnet_cond_embedding.", "controlnet_down_blocks.", "controlnet_mid_block.")
_LDM_OWN = ("input_hint_block.", "zero_convs.", "middle_block_out.")


def controlnet_module_map(cfg: ControlNetConfig) -> list[tuple[str, str]]:
    """(LDM module, diffusers module) for the ControlNet's own modules (not those it shares with the UNet)."""
    convs = hint_layer_indices(len(cfg.hint_widths))
    pairs = [(f"input_hint_block.{convs[0]}", "controlnet_cond_embedding.conv_in")]
    pairs += [(f"input_hint_block.{k}", f"controlnet_cond_embedding.blocks.{j}") for j, k in enumerate(convs[1:-1])]
    pairs.append((f"input_hint_block.{convs[-1]}", "controlnet_cond_embedding.conv_out"))
    n_input = len(cfg.unet.channel_mult) * (cfg.unet.num_res_blocks + 1)  # input blocks, conv_in included
    pairs += [(f"zero_convs.{i}.0", f"controlnet_down_blocks.{i}") for i in range(n_input)]
    pairs.append(("middle_block_out.0", "controlnet_mid_block"))
    return pairs


def _rename(sd: Mapping[str, Tensor], table: Mapping[str, str], own: tuple[str, ...], shared) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    rest: dict[str, Tensor] = {}
    for key, tensor in sd.items():
        if not key.startswith(own):
            rest[key] = tensor
            continue
        module, _, leaf = key.rpartition(".")
        if module not in table:
            raise CheckpointError(f"unexpected ControlNet key {key!r} for this ControlNet configuration")
        out[f"{table[module]}.{leaf}"] = tensor
    out.update(shared(rest))
    return out


def diffusers_controlnet_to_ldm(sd: Mapping[str, Tensor], cfg: ControlNetConfig) -> dict[str, Tensor]:
    """Rename a diffusers ControlNet state dict to LDM ``ControlNet`` keys (no ``control_model.``)."""
    table = {d: ldm for ldm, d in controlnet_module_map(cfg)}
    return _rename(sd, table, _DIFFUSERS_OWN, lambda rest: diffusers_unet_to_ldm(rest, cfg.unet))


def ldm_controlnet_to_diffusers(sd: Mapping[str, Tensor], cfg: ControlNetConfig) -> dict[str, Tensor]:
    """Rename an LDM ``ControlNet`` state dict (no ``control_model.``) to diffusers keys."""
    table = dict(controlnet_module_map(cfg))
    return _rename(sd, table, _LDM_OWN, lambda rest: ldm_unet_to_diffusers(rest, cfg.unet))


# ---------------------------------------------------------------------------------------------
# config.json <-> ControlNetConfig

_UNET_ONLY = ("out_channels", "up_block_types", "center_input_sample", "conv_out_kernel")


def diffusers_controlnet_config(cfg: ControlNetConfig, addition_time_embed_dim: int = 256) -> dict[str, Any]:
    """A diffusers ``ControlNetModel`` config dict describing the same network as ``cfg``."""
    d = {k: v for k, v in diffusers_unet_config(cfg.unet, addition_time_embed_dim).items() if k not in _UNET_ONLY}
    d["conditioning_channels"] = cfg.hint_channels
    d["conditioning_embedding_out_channels"] = list(cfg.hint_widths)
    return d


def controlnet_config_from_diffusers(d: Mapping[str, Any]) -> ControlNetConfig:
    """Read a diffusers ``ControlNetModel`` config.json dict into a :class:`ControlNetConfig`."""
    if d.get("global_pool_conditions"):
        raise CheckpointError("ControlNet config.json: global_pool_conditions=True (shuffle models) is not supported")
    order = d.get("controlnet_conditioning_channel_order", "rgb")
    if order != "rgb":
        raise CheckpointError(f"ControlNet config.json: conditioning channel order {order!r} is not supported")
    down = list(d.get("down_block_types", ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)))
    up = ["CrossAttnUpBlock2D" if t == "CrossAttnDownBlock2D" else "UpBlock2D" for t in reversed(down)]
    unet = unet_config_from_diffusers({**d, "up_block_types": up})
    widths = tuple(int(w) for w in d.get("conditioning_embedding_out_channels") or (16, 32, 96, 256))
    return ControlNetConfig(unet=unet, hint_channels=int(d.get("conditioning_channels", 3)), hint_widths=widths)


# ---------------------------------------------------------------------------------------------
# shapes of a diffusers-keyed file -> ControlNetConfig (heads are the caller's)


def controlnet_config_from_diffusers_keys(
    info: Mapping[str, TensorInfo], heads_from: UNetConfig, name: str = "ControlNet"
) -> ControlNetConfig:
    """Rebuild a diffusers-keyed ControlNet's config from its shapes; head counts come from ``heads_from``."""
    mc, in_channels = require_shape(info, "conv_in.weight", name)[:2]
    levels = count_children(info, "down_blocks.")
    widths = [require_shape(info, f"down_blocks.{i}.resnets.0.conv2.weight", name)[0] for i in range(levels)]
    depths = tuple(count_children(info, f"down_blocks.{i}.attentions.0.transformer_blocks.") for i in range(levels))
    context_dim = linear = None
    for key in sorted(info):
        if key.endswith("transformer_blocks.0.attn2.to_k.weight"):
            context_dim = info[key].shape[1]
            proj_in = key.replace("transformer_blocks.0.attn2.to_k.weight", "proj_in.weight")
            linear = len(require_shape(info, proj_in, name)) == 2
            break
    if context_dim is None or not levels or any(w % mc for w in widths):
        raise CheckpointError(f"{name}: ControlNet blocks have an unrecognised layout")
    label = info.get("add_embedding.linear_1.weight")
    n_hint = count_children(info, "controlnet_cond_embedding.blocks.") // 2
    hint_widths = [require_shape(info, "controlnet_cond_embedding.conv_in.weight", name)[0]]
    for j in range(n_hint):  # blocks alternate a same-width conv and a stride-2 conv to the next width
        hint_widths.append(require_shape(info, f"controlnet_cond_embedding.blocks.{2 * j + 1}.weight", name)[0])
    unet = replace(
        heads_from,
        in_channels=in_channels,
        model_channels=mc,
        channel_mult=tuple(w // mc for w in widths),
        num_res_blocks=count_children(info, "down_blocks.0.resnets."),
        transformer_depth=depths,
        transformer_depth_middle=count_children(info, "mid_block.attentions.0.transformer_blocks."),
        context_dim=context_dim,
        use_linear_in_transformer=bool(linear),
        adm_in_channels=label.shape[1] if label is not None else None,
    )
    hint_channels = require_shape(info, "controlnet_cond_embedding.conv_in.weight", name)[1]
    return ControlNetConfig(unet=unet, hint_channels=hint_channels, hint_widths=tuple(hint_widths))
