"""transformers CLIP text-model keys <-> our LDM text-encoder keys, for both layouts.

transformers' ``CLIPTextModel`` / ``CLIPTextModelWithProjection`` files (a diffusers folder's
``text_encoder``/``text_encoder_2``) hold ``text_model.*`` and ``text_projection.weight``; newer
transformers versions save a bare ``CLIPTextModel`` without the ``text_model.`` prefix, and both
are accepted. "hf" keeps the names under ``transformer.``; "openclip" renames them to OpenCLIP's,
fuses q/k/v into ``in_proj`` and transposes ``text_projection`` (OpenCLIP applies ``x @ P``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from huihua.errors import CheckpointError
from huihua.nn.configs import TextLayout

HF_PREFIX = "text_model."
HF_PROJECTION = "text_projection.weight"
# Non-weight buffers some transformers versions save; they are recomputed, so they are dropped.
_IGNORED = ("embeddings.position_ids",)
_HF_ROOTS = ("embeddings.", "encoder.", "final_layer_norm.")

# transformers name (after ``text_model.``) -> OpenCLIP name (after ``model.``); q/k/v are fused apart.
_OPENCLIP_FIXED = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}
_OPENCLIP_LAYER = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_OPENCLIP_FIXED_INV = {v: k for k, v in _OPENCLIP_FIXED.items()}
_OPENCLIP_LAYER_INV = {v: k for k, v in _OPENCLIP_LAYER.items()}
_HF_LAYER_KEY = re.compile(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)")
_OC_LAYER_KEY = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
_QKV = ("q_proj", "k_proj", "v_proj")


def _strip_hf(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The text model's tensors keyed without ``text_model.``, plus ``text_projection.weight``."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        name = key[len(HF_PREFIX) :] if key.startswith(HF_PREFIX) else key
        if name in _IGNORED:
            continue
        if name != HF_PROJECTION and not name.startswith(_HF_ROOTS):
            raise CheckpointError(f"CLIP text model: unexpected key {key!r}")
        out[name] = value
    return out


def _hf_layer_to_openclip(name: str, value: Tensor, fused: dict[tuple[str, str], dict[str, Tensor]]) -> str | None:
    """OpenCLIP name of one layer tensor; q/k/v parts are collected into ``fused`` instead (None)."""
    match = _HF_LAYER_KEY.fullmatch(name)
    if match is None:
        raise CheckpointError(f"CLIP text model: unexpected key {name!r}")
    index, module, kind = match.groups()
    if module.startswith("self_attn.") and module[len("self_attn.") :] in _QKV:
        fused.setdefault((index, kind), {})[module[len("self_attn.") :]] = value
        return None
    if module not in _OPENCLIP_LAYER:
        raise CheckpointError(f"CLIP text model: unexpected key {name!r}")
    return f"transformer.resblocks.{index}.{_OPENCLIP_LAYER[module]}.{kind}"


def hf_clip_to_ldm(sd: Mapping[str, Tensor], layout: TextLayout) -> dict[str, Tensor]:
    """Convert a transformers CLIP text state dict to our module's keys in ``layout``."""
    hf = _strip_hf(sd)
    if layout == "hf":
        return {
            ("transformer." + k if k == HF_PROJECTION else "transformer." + HF_PREFIX + k): v for k, v in hf.items()
        }
    if layout != "openclip":
        raise CheckpointError(f"CLIP text model: unknown layout {layout!r}")
    out: dict[str, Tensor] = {}
    fused: dict[tuple[str, str], dict[str, Tensor]] = {}
    for name, value in hf.items():
        if name == HF_PROJECTION:
            out["model.text_projection"] = value.t().contiguous()
        elif name in _OPENCLIP_FIXED:
            out["model." + _OPENCLIP_FIXED[name]] = value
        else:
            target = _hf_layer_to_openclip(name, value, fused)
            if target is not None:
                out["model." + target] = value
    for (index, kind), parts in fused.items():
        if set(parts) != set(_QKV):
            raise CheckpointError(f"CLIP text model: layer {index} lacks some of q/k/v_proj.{kind}")
        out[f"model.transformer.resblocks.{index}.attn.in_proj_{kind}"] = torch.cat([parts[p] for p in _QKV])
    return out


def _openclip_to_hf_name(name: str) -> str:
    """transformers name (after ``text_model.``) of one non-fused OpenCLIP tensor name."""
    if name in _OPENCLIP_FIXED_INV:
        return _OPENCLIP_FIXED_INV[name]
    match = _OC_LAYER_KEY.fullmatch(name)
    if match is not None:
        index, rest = match.groups()
        module, _, kind = rest.rpartition(".")
        if module in _OPENCLIP_LAYER_INV:
            return f"encoder.layers.{index}.{_OPENCLIP_LAYER_INV[module]}.{kind}"
    raise CheckpointError(f"OpenCLIP text model: unexpected key {'model.' + name!r}")


def ldm_clip_to_hf(sd: Mapping[str, Tensor], layout: TextLayout) -> dict[str, Tensor]:
    """Convert our module's keys in ``layout`` back to transformers' (``text_model.*``) keys."""
    prefix = {"hf": "transformer.", "openclip": "model."}.get(layout)
    if prefix is None:
        raise CheckpointError(f"CLIP text model: unknown layout {layout!r}")
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if not key.startswith(prefix):
            raise CheckpointError(f"CLIP text model: key {key!r} is not under {prefix!r}")
        name = key[len(prefix) :]
        if layout == "hf":
            out[name] = value
        elif name == "text_projection":
            out[HF_PROJECTION] = value.t().contiguous()
        elif name.endswith((".attn.in_proj_weight", ".attn.in_proj_bias")):
            index = name.split(".")[2]
            kind = name.rpartition("_")[2]
            for part, chunk in zip(_QKV, value.chunk(3, dim=0), strict=True):
                out[f"{HF_PREFIX}encoder.layers.{index}.self_attn.{part}.{kind}"] = chunk.contiguous()
        elif name == "logit_scale":
            continue  # CLIP's contrastive temperature: unused by a text encoder
        else:
            out[HF_PREFIX + _openclip_to_hf_name(name)] = value
    return out
