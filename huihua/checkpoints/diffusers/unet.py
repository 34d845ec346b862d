"""Diffusers ``UNet2DConditionModel`` <-> LDM ``UNetModel``: state-dict keys and configs.

The one place diffusers' UNet names are known. Both directions share one module map derived from a
:class:`UNetConfig`: pairs of (LDM module prefix, diffusers module prefix, kind), where the kind says
how parameter names below the prefix are rewritten (``res``: ResBlock layer names; ``same``: as is).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from huihua.errors import CheckpointError, ParameterError
from huihua.nn.configs import UNetConfig

# LDM ResBlock layer -> diffusers ResnetBlock2D layer.
_RES_LAYERS = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
_RES_LAYERS_INV = {v: k for k, v in _RES_LAYERS.items()}

ModuleMap = list[tuple[str, str, str]]


def unet_module_map(cfg: UNetConfig) -> ModuleMap:
    """(LDM prefix, diffusers prefix, kind) for every parametrised module of the UNet."""
    pairs: ModuleMap = [
        ("time_embed.0", "time_embedding.linear_1", "same"),
        ("time_embed.2", "time_embedding.linear_2", "same"),
        ("input_blocks.0.0", "conv_in", "same"),
        ("out.0", "conv_norm_out", "same"),
        ("out.2", "conv_out", "same"),
    ]
    if cfg.adm_in_channels is not None:
        pairs += [
            ("label_emb.0.0", "add_embedding.linear_1", "same"),
            ("label_emb.0.2", "add_embedding.linear_2", "same"),
        ]
    per_level = cfg.num_res_blocks + 1
    levels = len(cfg.channel_mult)
    for level in range(levels):
        has_attn = cfg.transformer_depth[level] > 0
        for j in range(cfg.num_res_blocks):
            block = f"input_blocks.{1 + level * per_level + j}"
            pairs.append((f"{block}.0", f"down_blocks.{level}.resnets.{j}", "res"))
            if has_attn:
                pairs.append((f"{block}.1", f"down_blocks.{level}.attentions.{j}", "same"))
        if level != levels - 1:
            block = f"input_blocks.{(level + 1) * per_level}"
            pairs.append((f"{block}.0.op", f"down_blocks.{level}.downsamplers.0.conv", "same"))
    pairs.append(("middle_block.0", "mid_block.resnets.0", "res"))
    if cfg.transformer_depth_middle > 0:
        pairs.append(("middle_block.1", "mid_block.attentions.0", "same"))
        pairs.append(("middle_block.2", "mid_block.resnets.1", "res"))
    else:
        pairs.append(("middle_block.1", "mid_block.resnets.1", "res"))
    for up in range(levels):
        level = levels - 1 - up
        has_attn = cfg.transformer_depth[level] > 0
        for j in range(per_level):
            block = f"output_blocks.{up * per_level + j}"
            pairs.append((f"{block}.0", f"up_blocks.{up}.resnets.{j}", "res"))
            if has_attn:
                pairs.append((f"{block}.1", f"up_blocks.{up}.attentions.{j}", "same"))
        if level != 0:
            block = f"output_blocks.{up * per_level + per_level - 1}"
            pairs.append((f"{block}.{2 if has_attn else 1}.conv", f"up_blocks.{up}.upsamplers.0.conv", "same"))
    return pairs


def _split(key: str, prefixes: Mapping[str, Any]) -> tuple[str, str]:
    """Split ``key`` into its longest registered module prefix and the rest."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in prefixes:
            return prefix, ".".join(parts[cut:])
    raise CheckpointError(f"unexpected UNet key {key!r} for this UNet configuration")


def _rename_suffix(suffix: str, kind: str, table: Mapping[str, str], key: str) -> str:
    if kind == "same":
        return suffix
    for name, new in table.items():
        if suffix.startswith(name + "."):
            return new + suffix[len(name) :]
    raise CheckpointError(f"unexpected ResBlock parameter in UNet key {key!r}")


def diffusers_unet_to_ldm(sd: Mapping[str, Tensor], cfg: UNetConfig) -> dict[str, Tensor]:
    """Rename a diffusers UNet state dict to LDM ``UNetModel`` keys (no ``model.diffusion_model.``)."""
    by_diffusers = {d: (ldm, kind) for ldm, d, kind in unet_module_map(cfg)}
    out: dict[str, Tensor] = {}
    for key, tensor in sd.items():
        prefix, suffix = _split(key, by_diffusers)
        ldm, kind = by_diffusers[prefix]
        out[f"{ldm}.{_rename_suffix(suffix, kind, _RES_LAYERS_INV, key)}"] = tensor
    return out


def ldm_unet_to_diffusers(sd: Mapping[str, Tensor], cfg: UNetConfig) -> dict[str, Tensor]:
    """Rename an LDM ``UNetModel`` state dict (no ``model.diffusion_model.``) to diffusers keys."""
    by_ldm = {ldm: (d, kind) for ldm, d, kind in unet_module_map(cfg)}
    out: dict[str, Tensor] = {}
    for key, tensor in sd.items():
        prefix, suffix = _split(key, by_ldm)
        d, kind = by_ldm[prefix]
        out[f"{d}.{_rename_suffix(suffix, kind, _RES_LAYERS, key)}"] = tensor
    return out


# ---------------------------------------------------------------------------------------------
# config.json <-> UNetConfig

_FIXED = {
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "center_input_sample": False,
    "class_embed_type": None,
    "time_embedding_type": "positional",
    "resnet_time_scale_shift": "default",
    "dual_cross_attention": False,
    "only_cross_attention": False,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "encoder_hid_dim_type": None,
    "num_attention_heads": None,
    "time_cond_proj_dim": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "mid_block_scale_factor": 1,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "attention_type": "default",
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "encoder_hid_dim": None,
    "num_class_embeds": None,
    "class_embeddings_concat": False,
    "cross_attention_norm": None,
}


def _heads_per_level(cfg: UNetConfig) -> int | list[int]:
    if cfg.num_heads is not None:
        return cfg.num_heads
    return [cfg.heads_at(cfg.model_channels * m)[0] for m in cfg.channel_mult]


def diffusers_unet_config(cfg: UNetConfig, addition_time_embed_dim: int = 256) -> dict[str, Any]:
    """A diffusers ``UNet2DConditionModel`` config dict describing the same network as ``cfg``.

    ``addition_time_embed_dim`` is SDXL's per-number size embedding width (used only with adm).
    """
    depth = list(cfg.transformer_depth)
    if depth[-1] > 0 and depth[-1] != cfg.transformer_depth_middle:
        raise ParameterError("UNetConfig: diffusers needs transformer_depth_middle == transformer_depth[-1]")
    if cfg.transformer_depth_middle <= 0:
        raise ParameterError("UNetConfig: diffusers' UNet always has a middle transformer")
    # Levels without attention ignore their entry; the middle block reads the last one.
    layers = [d if d > 0 else cfg.transformer_depth_middle for d in depth]
    down = ["CrossAttnDownBlock2D" if d > 0 else "DownBlock2D" for d in depth]
    up = ["CrossAttnUpBlock2D" if d > 0 else "UpBlock2D" for d in reversed(depth)]
    d: dict[str, Any] = {
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "block_out_channels": [cfg.model_channels * m for m in cfg.channel_mult],
        "layers_per_block": cfg.num_res_blocks,
        "down_block_types": down,
        "up_block_types": up,
        "transformer_layers_per_block": layers,
        "attention_head_dim": _heads_per_level(cfg),
        "cross_attention_dim": cfg.context_dim,
        "use_linear_projection": cfg.use_linear_in_transformer,
        "norm_eps": 1e-5,
        "norm_num_groups": 32,
        "act_fn": "silu",
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
    }
    if cfg.adm_in_channels is not None:
        d["addition_embed_type"] = "text_time"
        d["addition_time_embed_dim"] = addition_time_embed_dim
        d["projection_class_embeddings_input_dim"] = cfg.adm_in_channels
    return d


def _per_level(d: Mapping[str, Any], name: str, levels: int, default: Any) -> list[Any]:
    value = d.get(name, default)
    if isinstance(value, (list, tuple)):
        if len(value) != levels:
            raise CheckpointError(f"UNet config.json: {name} has {len(value)} entries, want {levels}")
        return list(value)
    return [value] * levels


def _uniform(d: Mapping[str, Any], name: str, levels: int, default: Any) -> Any:
    values = _per_level(d, name, levels, default)
    if any(v != values[0] for v in values):
        raise CheckpointError(f"UNet config.json: per-level {name} {values} is not supported")
    return values[0]


def _check_supported(d: Mapping[str, Any]) -> None:
    for name, want in _FIXED.items():
        value = d.get(name, want)
        if isinstance(value, (list, tuple)) and name == "only_cross_attention":
            value = any(value)
        if value != want:
            raise CheckpointError(f"UNet config.json: {name}={value!r} is not supported (want {want!r})")
    if d.get("addition_embed_type") not in (None, "text_time"):
        raise CheckpointError(f"UNet config.json: addition_embed_type={d['addition_embed_type']!r} is not supported")
    if d.get("reverse_transformer_layers_per_block") is not None:
        raise CheckpointError("UNet config.json: reverse_transformer_layers_per_block is not supported")
    eps = float(d.get("norm_eps", 1e-5))
    if abs(eps - 1e-5) > 1e-9:
        raise CheckpointError(f"UNet config.json: norm_eps={eps} is not supported (want 1e-05)")


def _heads_from_diffusers(
    d: Mapping[str, Any], widths: list[int], attn_levels: list[int]
) -> tuple[int | None, int | None]:
    """(num_heads, num_head_channels) from diffusers' (misnamed) ``attention_head_dim``."""
    raw = d.get("attention_head_dim", 8)
    if isinstance(raw, int):
        return raw, None
    heads = _per_level(d, "attention_head_dim", len(widths), 8)
    used = attn_levels + [len(widths) - 1]  # the middle block uses the last level's entry
    # A list is how diffusers writes SD2/SDXL's fixed 64-wide heads; try that reading first.
    head_widths = {widths[i] // heads[i] for i in used}
    if len(head_widths) == 1 and all(widths[i] % heads[i] == 0 for i in used):
        return None, head_widths.pop()
    if len({heads[i] for i in used}) == 1:
        return heads[used[0]], None
    raise CheckpointError(f"UNet config.json: attention_head_dim {heads} fits neither fixed heads nor fixed head width")


def unet_config_from_diffusers(d: Mapping[str, Any]) -> UNetConfig:
    """Read a diffusers ``UNet2DConditionModel`` config.json dict into a :class:`UNetConfig`."""
    _check_supported(d)
    widths = [int(w) for w in d.get("block_out_channels", (320, 640, 1280, 1280))]
    levels = len(widths)
    mc = widths[0]
    if any(w % mc for w in widths):
        raise CheckpointError(f"UNet config.json: block_out_channels {widths} are not multiples of the first")
    down = list(d.get("down_block_types", ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)))
    up = list(d.get("up_block_types", ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3))
    known = {"CrossAttnDownBlock2D", "DownBlock2D"}
    if len(down) != levels or any(t not in known for t in down):
        raise CheckpointError(f"UNet config.json: down_block_types {down} are not supported")
    want_up = ["CrossAttnUpBlock2D" if t == "CrossAttnDownBlock2D" else "UpBlock2D" for t in reversed(down)]
    if up != want_up:
        raise CheckpointError(f"UNet config.json: up_block_types {up} do not mirror down_block_types")
    layers = [int(n) for n in _per_level(d, "transformer_layers_per_block", levels, 1)]
    attn_levels = [i for i, t in enumerate(down) if t == "CrossAttnDownBlock2D"]
    depth = tuple(layers[i] if i in attn_levels else 0 for i in range(levels))
    num_heads, num_head_channels = _heads_from_diffusers(d, widths, attn_levels)
    adm = d.get("projection_class_embeddings_input_dim") if d.get("addition_embed_type") == "text_time" else None
    return UNetConfig(
        in_channels=int(d.get("in_channels", 4)),
        out_channels=int(d.get("out_channels", 4)),
        model_channels=mc,
        channel_mult=tuple(w // mc for w in widths),
        num_res_blocks=int(_uniform(d, "layers_per_block", levels, 2)),
        transformer_depth=depth,
        transformer_depth_middle=layers[-1],
        num_heads=num_heads,
        num_head_channels=num_head_channels,
        context_dim=int(_uniform(d, "cross_attention_dim", levels, 1280)),
        use_linear_in_transformer=bool(d.get("use_linear_projection", False)),
        adm_in_channels=None if adm is None else int(adm),
    )
