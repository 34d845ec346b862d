"""Diffusers ``AutoencoderKL`` <-> LDM ``AutoencoderKL``: state-dict keys and configs.

The one place diffusers' VAE names are known. Both directions share one module map derived from a
:class:`VAEConfig`; the mid-block attention's Linear weights (C, C) become 1x1 convolutions (C, C, 1, 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from huihua.errors import CheckpointError
from huihua.nn.configs import VAEConfig

_RESNET_LAYERS = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "nin_shortcut": "conv_shortcut",
}
_ATTN_LAYERS = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
# Names of diffusers releases before 0.14, still found in old folders; read, never written.
_LEGACY_ATTN = {"query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}
_TABLES = {"resnet": _RESNET_LAYERS, "attn": _ATTN_LAYERS}

ModuleMap = list[tuple[str, str, str]]


def vae_module_map(cfg: VAEConfig) -> ModuleMap:
    """(LDM prefix, diffusers prefix, kind) for every parametrised module of the VAE."""
    levels = len(cfg.ch_mult)
    pairs: ModuleMap = [
        ("quant_conv", "quant_conv", "same"),
        ("post_quant_conv", "post_quant_conv", "same"),
    ]
    for part in ("encoder", "decoder"):
        pairs += [
            (f"{part}.conv_in", f"{part}.conv_in", "same"),
            (f"{part}.norm_out", f"{part}.conv_norm_out", "same"),
            (f"{part}.conv_out", f"{part}.conv_out", "same"),
            (f"{part}.mid.block_1", f"{part}.mid_block.resnets.0", "resnet"),
            (f"{part}.mid.attn_1", f"{part}.mid_block.attentions.0", "attn"),
            (f"{part}.mid.block_2", f"{part}.mid_block.resnets.1", "resnet"),
        ]
    for level in range(levels):
        for j in range(cfg.num_res_blocks):
            pairs.append((f"encoder.down.{level}.block.{j}", f"encoder.down_blocks.{level}.resnets.{j}", "resnet"))
        if level != levels - 1:
            down = f"encoder.down_blocks.{level}.downsamplers.0.conv"
            pairs.append((f"encoder.down.{level}.downsample.conv", down, "same"))
    for up in range(levels):
        level = levels - 1 - up  # diffusers counts up blocks from the bottom, LDM by resolution level
        for j in range(cfg.num_res_blocks + 1):
            pairs.append((f"decoder.up.{level}.block.{j}", f"decoder.up_blocks.{up}.resnets.{j}", "resnet"))
        if level != 0:
            pairs.append((f"decoder.up.{level}.upsample.conv", f"decoder.up_blocks.{up}.upsamplers.0.conv", "same"))
    return pairs


def _split(key: str, prefixes: Mapping[str, Any]) -> tuple[str, str]:
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in prefixes:
            return prefix, ".".join(parts[cut:])
    raise CheckpointError(f"unexpected VAE key {key!r} for this VAE configuration")


def _layer(suffix: str, table: Mapping[str, str], key: str) -> tuple[str, str]:
    """Split a suffix like ``to_out.0.weight`` into a known layer name and the parameter name."""
    for name in table:
        if suffix.startswith(name + "."):
            return name, suffix[len(name) + 1 :]
    raise CheckpointError(f"unexpected parameter in VAE key {key!r}")


def _convert(sd: Mapping[str, Tensor], cfg: VAEConfig, to_ldm: bool) -> dict[str, Tensor]:
    pairs = vae_module_map(cfg)
    lookup = {(d if to_ldm else ldm): ((ldm if to_ldm else d), kind) for ldm, d, kind in pairs}
    out: dict[str, Tensor] = {}
    for key, tensor in sd.items():
        prefix, suffix = _split(key, lookup)
        target, kind = lookup[prefix]
        if kind != "same":
            table = _TABLES[kind]
            if to_ldm:
                table = {v: k for k, v in table.items()}
                if kind == "attn":
                    table.update(_LEGACY_ATTN)
            name, param = _layer(suffix, table, key)
            suffix = f"{table[name]}.{param}"
            if kind == "attn" and param == "weight" and name not in ("norm", "group_norm"):
                # Linear (C, C) <-> 1x1 convolution (C, C, 1, 1).
                tensor = tensor.reshape(*tensor.shape[:2], 1, 1) if to_ldm else tensor.reshape(tensor.shape[:2])
        out[f"{target}.{suffix}"] = tensor
    return out


def diffusers_vae_to_ldm(sd: Mapping[str, Tensor], cfg: VAEConfig) -> dict[str, Tensor]:
    """Rename a diffusers VAE state dict to LDM ``AutoencoderKL`` keys (no ``first_stage_model.``)."""
    return _convert(sd, cfg, to_ldm=True)


def ldm_vae_to_diffusers(sd: Mapping[str, Tensor], cfg: VAEConfig) -> dict[str, Tensor]:
    """Rename an LDM VAE state dict (no ``first_stage_model.``) to diffusers ``AutoencoderKL`` keys."""
    return _convert(sd, cfg, to_ldm=False)


# ---------------------------------------------------------------------------------------------
# config.json <-> VAEConfig

_FIXED = {
    "act_fn": "silu",
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
    "latents_mean": None,
    "latents_std": None,
}


def diffusers_vae_config(cfg: VAEConfig) -> dict[str, Any]:
    """A diffusers ``AutoencoderKL`` config dict describing the same network as ``cfg``."""
    levels = len(cfg.ch_mult)
    return {
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_ch,
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": [cfg.ch * m for m in cfg.ch_mult],
        "layers_per_block": cfg.num_res_blocks,
        "act_fn": "silu",
        "latent_channels": cfg.z_channels,
        "norm_num_groups": cfg.norm_num_groups,
        "scaling_factor": cfg.scale_factor,
        "shift_factor": cfg.shift_factor or None,
    }


def vae_config_from_diffusers(d: Mapping[str, Any]) -> VAEConfig:
    """Read a diffusers ``AutoencoderKL`` config.json dict into a :class:`VAEConfig`."""
    for name, want in _FIXED.items():
        if d.get(name, want) != want:
            raise CheckpointError(f"VAE config.json: {name}={d.get(name)!r} is not supported (want {want!r})")
    widths = [int(w) for w in d.get("block_out_channels", (64,))]
    ch = widths[0]
    if any(w % ch for w in widths):
        raise CheckpointError(f"VAE config.json: block_out_channels {widths} are not multiples of the first")
    levels = len(widths)
    down = list(d.get("down_block_types", ["DownEncoderBlock2D"] * levels))
    up = list(d.get("up_block_types", ["UpDecoderBlock2D"] * levels))
    if down != ["DownEncoderBlock2D"] * levels or up != ["UpDecoderBlock2D"] * levels:
        raise CheckpointError(f"VAE config.json: block types {down} / {up} are not supported")
    shift = d.get("shift_factor")
    return VAEConfig(
        in_channels=int(d.get("in_channels", 3)),
        out_ch=int(d.get("out_channels", 3)),
        z_channels=int(d.get("latent_channels", 4)),
        ch=ch,
        ch_mult=tuple(w // ch for w in widths),
        num_res_blocks=int(d.get("layers_per_block", 1)),
        norm_num_groups=int(d.get("norm_num_groups", 32)),
        scale_factor=float(d.get("scaling_factor", 0.18215)),
        shift_factor=0.0 if shift is None else float(shift),
    )
