"""Architecture detection from key names and tensor shapes alone (no tensor data is read).

The family is decided by the text encoders' layout (``cond_stage_model.transformer`` = SD1,
``cond_stage_model.model`` = SD2, ``conditioner.embedders`` = SDXL base or refiner), so reduced-width
models of the same families are recognised too. Widths, depths and context width come from shapes.
The few hyper-parameters shapes cannot reveal (head counts of reduced models, the VAE's scale
factor, the prediction type) come from the ``huihua.arch`` JSON metadata field when present, else
from the family's published values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Literal

from huihua.checkpoints.io import TensorInfo
from huihua.checkpoints.specs import ModelSpec, TextEncoderUse
from huihua.errors import DetectionError
from huihua.families import (
    SD1_TEXT_PREFIX,
    SDXL_TEXT_PREFIXES,
    UNET_PREFIX,
    VAE_PREFIX,
    Family,
    family_info,
)
from huihua.nn.configs import CLIPTextConfig, UNetConfig, VAEConfig

ARCH_METADATA_KEY = "huihua.arch"

Shapes = Mapping[str, TensorInfo]


def require_shape(info: Shapes, key: str, name: str) -> tuple[int, ...]:
    if key not in info:
        raise DetectionError(f"{name}: missing tensor {key!r}")
    return info[key].shape


def count_children(info: Shapes, prefix: str) -> int:
    """Number of consecutive numbered children ``prefix{i}.`` present among the keys."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in info if (m := pat.match(k))}
    return max(found) + 1 if found else 0


def _has_prefix(info: Shapes, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in info)


def parse_arch_metadata(metadata: Mapping[str, str]) -> dict:
    """The ``huihua.arch`` metadata field as a dict (empty when absent); malformed JSON is an error."""
    raw = metadata.get(ARCH_METADATA_KEY)
    if not raw:
        return {}
    try:
        arch = json.loads(raw)
    except json.JSONDecodeError:
        raise DetectionError(f"metadata field {ARCH_METADATA_KEY!r} is not valid JSON") from None
    if not isinstance(arch, dict):
        raise DetectionError(f"metadata field {ARCH_METADATA_KEY!r} must be a JSON object")
    return arch


def detect_unet(info: Shapes, prefix: str = UNET_PREFIX, name: str = "checkpoint") -> UNetConfig:
    """Rebuild the LDM UNet's hyper-parameters from key shapes (heads are left to the caller)."""
    model_channels, in_channels = require_shape(info, f"{prefix}input_blocks.0.0.weight", name)[:2]
    # A ControlNet has the UNet's encoder but no output head: then out = in.
    out = info.get(f"{prefix}out.2.weight")
    out_channels = out.shape[0] if out is not None else in_channels
    n_input = count_children(info, f"{prefix}input_blocks.")
    mults: list[int] = []
    res_counts: list[int] = [0]
    depths: list[int] = [0]
    context_dim = 0
    linear = False
    for i in range(1, n_input):
        block = f"{prefix}input_blocks.{i}."
        if f"{block}0.op.weight" in info:
            res_counts.append(0)
            depths.append(0)
            continue
        ch = require_shape(info, f"{block}0.out_layers.3.weight", name)[0]
        level = len(res_counts) - 1
        if len(mults) <= level:
            mults.append(ch // model_channels)
        res_counts[-1] += 1
        depth = count_children(info, f"{block}1.transformer_blocks.")
        depths[-1] = max(depths[-1], depth)
        if depth:
            context_dim = require_shape(info, f"{block}1.transformer_blocks.0.attn2.to_k.weight", name)[1]
            linear = len(require_shape(info, f"{block}1.proj_in.weight", name)) == 2
    if not mults or len(set(res_counts)) != 1:
        raise DetectionError(f"{name}: UNet input blocks have an unrecognised layout")
    middle_depth = count_children(info, f"{prefix}middle_block.1.transformer_blocks.")
    if not context_dim and middle_depth:
        context_dim = require_shape(info, f"{prefix}middle_block.1.transformer_blocks.0.attn2.to_k.weight", name)[1]
    label = info.get(f"{prefix}label_emb.0.0.weight")
    return UNetConfig(
        in_channels=in_channels,
        out_channels=out_channels,
        model_channels=model_channels,
        channel_mult=tuple(mults),
        num_res_blocks=res_counts[0],
        transformer_depth=tuple(depths),
        transformer_depth_middle=middle_depth,
        context_dim=context_dim,
        use_linear_in_transformer=linear,
        adm_in_channels=label.shape[1] if label is not None else None,
    )


def detect_vae(info: Shapes, prefix: str = VAE_PREFIX, name: str = "checkpoint") -> VAEConfig:
    """Rebuild the LDM AutoencoderKL's hyper-parameters from key shapes."""
    ch, in_channels = require_shape(info, f"{prefix}encoder.conv_in.weight", name)[:2]
    levels = count_children(info, f"{prefix}encoder.down.")
    mult = tuple(
        require_shape(info, f"{prefix}encoder.down.{i}.block.0.conv2.weight", name)[0] // ch for i in range(levels)
    )
    return VAEConfig(
        in_channels=in_channels,
        out_ch=require_shape(info, f"{prefix}decoder.conv_out.weight", name)[0],
        z_channels=require_shape(info, f"{prefix}decoder.conv_in.weight", name)[1],
        ch=ch,
        ch_mult=mult,
        num_res_blocks=count_children(info, f"{prefix}encoder.down.0.block."),
    )


def detect_text_encoder(info: Shapes, prefix: str, name: str = "checkpoint") -> CLIPTextConfig:
    """Rebuild one CLIP text tower's hyper-parameters (heads default to width / 64, as in every release)."""
    hf = f"{prefix}transformer.text_model."
    oc = f"{prefix}model."
    if f"{hf}embeddings.token_embedding.weight" in info:
        vocab, width = require_shape(info, f"{hf}embeddings.token_embedding.weight", name)
        proj = info.get(f"{prefix}transformer.text_projection.weight")
        return CLIPTextConfig(
            layout="hf",
            vocab_size=vocab,
            width=width,
            max_positions=require_shape(info, f"{hf}embeddings.position_embedding.weight", name)[0],
            layers=count_children(info, f"{hf}encoder.layers."),
            heads=max(1, width // 64),
            intermediate=require_shape(info, f"{hf}encoder.layers.0.mlp.fc1.weight", name)[0],
            act="quick_gelu",
            projection_dim=proj.shape[0] if proj is not None else None,
            pad_token=49407,
        )
    if f"{oc}token_embedding.weight" in info:
        vocab, width = require_shape(info, f"{oc}token_embedding.weight", name)
        proj = info.get(f"{oc}text_projection")
        return CLIPTextConfig(
            layout="openclip",
            vocab_size=vocab,
            width=width,
            max_positions=require_shape(info, f"{oc}positional_embedding", name)[0],
            layers=count_children(info, f"{oc}transformer.resblocks."),
            heads=max(1, width // 64),
            intermediate=require_shape(info, f"{oc}transformer.resblocks.0.mlp.c_fc.weight", name)[0],
            act="gelu",
            projection_dim=proj.shape[1] if proj is not None else None,
            pad_token=0,
        )
    raise DetectionError(f"{name}: no CLIP text encoder under {prefix!r}")


def detect_family(info: Shapes, name: str = "checkpoint") -> Family:
    """Decide the model family from which text-encoder layouts are present."""
    if not _has_prefix(info, UNET_PREFIX):
        raise DetectionError(_not_a_model_reason(info, name))
    if _has_prefix(info, SDXL_TEXT_PREFIXES[0]):
        if _has_prefix(info, SDXL_TEXT_PREFIXES[1]):
            return "sdxl"
        return "sdxl_refiner"
    if _has_prefix(info, f"{SD1_TEXT_PREFIX}transformer."):
        return "sd1"
    if _has_prefix(info, f"{SD1_TEXT_PREFIX}model."):
        return "sd2"
    raise DetectionError(f"{name}: has a UNet but no text encoder this engine knows (SD1, SD2 or SDXL layouts)")


FileKind = Literal["checkpoint", "vae", "lora", "embedding", "controlnet", "unknown"]


def file_kind(keys: Iterable[str]) -> FileKind:
    """What a weights file holds, from its tensor names alone."""
    names = list(keys)
    if any(k.startswith(UNET_PREFIX) for k in names):
        return "checkpoint"
    if any(k.startswith(("control_model.", "input_hint_block.", "controlnet_")) or ".input_hint_block." in k
           for k in names):
        return "controlnet"
    if any(k.startswith(("lora_", "lycoris_")) or ".lora_" in k or "_lora." in k or ".lora." in k for k in names):
        return "lora"
    if any(k.split(".")[0] in ("string_to_param", "emb_params", "clip_l", "clip_g") for k in names):
        return "embedding"
    if any(k.startswith(("encoder.conv_in", "decoder.conv_out", VAE_PREFIX)) for k in names):
        return "vae"
    if len(names) == 1 and "." not in names[0]:  # diffusers' learned_embeds.bin: {"<token>": vector}
        return "embedding"
    return "unknown"


def _not_a_model_reason(info: Shapes, name: str) -> str:
    kind = file_kind(info)
    reasons = {
        "vae": "this is a VAE, not a full model checkpoint (pass it with --vae)",
        "lora": "this is a LoRA, not a full model checkpoint (use it with <lora:name:weight>)",
        "embedding": "this is a textual-inversion embedding, not a full model checkpoint",
        "controlnet": "this is a ControlNet, not a full model checkpoint",
    }
    reason = reasons.get(kind, "not a Stable Diffusion checkpoint (no 'model.diffusion_model.*' UNet weights)")
    return f"{name}: {reason}"


def _text_uses(info: Shapes, family: Family, arch: dict, name: str) -> tuple[TextEncoderUse, ...]:
    heads = arch.get("text_heads") or []
    layers = arch.get("text_layer") or []
    uses = []
    for i, tower in enumerate(family_info(family).text_towers):
        prefix, layer = tower.prefix, tower.layer
        cfg = detect_text_encoder(info, prefix, name)
        if i < len(heads):
            cfg = replace(cfg, heads=int(heads[i]))
        if i < len(layers):
            layer = int(layers[i])
        uses.append(TextEncoderUse(cfg, prefix, layer=layer, final_norm=tower.final_norm, pooled=tower.pooled))
    return tuple(uses)


def detect_spec(info: Shapes, metadata: Mapping[str, str] | None = None, name: str = "checkpoint") -> ModelSpec:
    """Detect a full single-file checkpoint's :class:`ModelSpec` from its key shapes and metadata."""
    arch = parse_arch_metadata(metadata or {})
    family = detect_family(info, name)
    unet = detect_unet(info, UNET_PREFIX, name)
    if "num_heads" in arch:
        unet = replace(unet, num_heads=int(arch["num_heads"]), num_head_channels=None)
    elif "num_head_channels" in arch:
        unet = replace(unet, num_heads=None, num_head_channels=int(arch["num_head_channels"]))
    elif (head_channels := family_info(family).head_channels) is not None:
        unet = replace(unet, num_heads=None, num_head_channels=head_channels)
    vae = detect_vae(info, VAE_PREFIX, name)
    vae = replace(
        vae,
        scale_factor=float(arch.get("scale_factor", family_info(family).scale_factor)),
        shift_factor=float(arch.get("shift_factor", 0.0)),
        norm_num_groups=int(arch.get("vae_norm_groups", 32)),
    )
    texts = _text_uses(info, family, arch, name)
    if family_info(family).is_sdxl and unet.adm_in_channels is None:
        raise DetectionError(f"{name}: SDXL text encoders but the UNet has no label_emb (size conditioning)")
    return ModelSpec(
        family=family,
        unet=unet,
        vae=vae,
        text_encoders=texts,
        inpainting=unet.in_channels == 2 * vae.z_channels + 1,
        native_resolution=int(arch.get("resolution", family_info(family).native_resolution)),
        zero_terminal_snr=arch.get("zero_terminal_snr", False) is True,
    )
