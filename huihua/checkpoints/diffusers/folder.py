"""Diffusers-format folders -> one LDM-keyed tensor source, so the rest of the loader sees one layout.

The key renaming itself lives beside this file (``unet.py``, ``vae.py``, ``clip.py``); this module
only finds the component files, reads their configs and records what shapes cannot tell
(head counts, VAE scale factor, which text-encoder layer to read) in ``huihua.arch`` metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from huihua.checkpoints.detect import ARCH_METADATA_KEY, detect_vae
from huihua.checkpoints.diffusers.clip import hf_clip_to_ldm
from huihua.checkpoints.diffusers.unet import (
    diffusers_unet_to_ldm,
    unet_config_from_diffusers,
)
from huihua.checkpoints.diffusers.vae import (
    diffusers_vae_to_ldm,
    vae_config_from_diffusers,
)
from huihua.checkpoints.io import (
    DictSource,
    TensorSource,
    load_pickle_state_dict,
    sniff_format,
)
from huihua.errors import CheckpointError
from huihua.families import SD1_TEXT_PREFIX, SDXL_TEXT_PREFIXES, UNET_PREFIX, VAE_PREFIX
from huihua.nn.configs import TextLayout

_WEIGHT_NAMES = (
    "diffusion_pytorch_model.safetensors", "model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors", "model.fp16.safetensors",
    "diffusion_pytorch_model.bin", "pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin", "pytorch_model.fp16.bin",
)


def is_diffusers_folder(path: Path) -> bool:
    """True when ``path`` is a folder with a diffusers ``model_index.json``."""
    return (path / "model_index.json").is_file()


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: not valid JSON") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of one component folder (safetensors preferred; pickles only as weights)."""
    for name in _WEIGHT_NAMES:
        f = folder / name
        if f.is_file():
            if sniff_format(f) == "safetensors":

                try:
                    return load_file(str(f))
                except Exception as e:
                    raise CheckpointError(f"{f}: corrupt safetensors file ({e})") from None
            return load_pickle_state_dict(f)
    raise CheckpointError(f"{folder}: no weight file (looked for {', '.join(_WEIGHT_NAMES[:2])}, ...)")


def _component(root: Path, index: dict, name: str) -> Path | None:
    entry = index.get(name)
    if not entry or entry == [None, None] or not (root / name).is_dir():
        return None
    return root / name


def _convert_text_encoder(folder: Path, layout: TextLayout, prefix: str, tensors: dict, arch: dict) -> None:
    cfg = read_json(folder / "config.json")
    for k, v in hf_clip_to_ldm(read_weights(folder), layout).items():
        tensors[prefix + k] = v
    arch.setdefault("text_heads", []).append(int(cfg.get("num_attention_heads", cfg.get("hidden_size", 768) // 64)))


def open_diffusers_folder(root: Path) -> tuple[TensorSource, str | None]:
    """Read a diffusers folder into an LDM-keyed source; also return the scheduler's prediction type."""

    index = read_json(root / "model_index.json")
    unet_dir = _component(root, index, "unet")
    vae_dir = _component(root, index, "vae")
    if unet_dir is None or vae_dir is None:
        raise CheckpointError(f"{root}: diffusers folder without unet/ or vae/")
    tensors: dict[str, torch.Tensor] = {}
    arch: dict = {}
    unet_cfg = unet_config_from_diffusers(read_json(unet_dir / "config.json"))
    for k, v in diffusers_unet_to_ldm(read_weights(unet_dir), unet_cfg).items():
        tensors[UNET_PREFIX + k] = v
    if unet_cfg.num_heads is not None:
        arch["num_heads"] = unet_cfg.num_heads
    else:
        arch["num_head_channels"] = unet_cfg.num_head_channels
    vae_json = read_json(vae_dir / "config.json")
    vae_cfg = vae_config_from_diffusers(vae_json)
    for k, v in diffusers_vae_to_ldm(read_weights(vae_dir), vae_cfg).items():
        tensors[VAE_PREFIX + k] = v
    arch["scale_factor"] = vae_cfg.scale_factor
    arch["shift_factor"] = vae_cfg.shift_factor
    arch["vae_norm_groups"] = vae_cfg.norm_num_groups

    te1 = _component(root, index, "text_encoder")
    te2 = _component(root, index, "text_encoder_2")
    if te1 is not None and te2 is not None:  # SDXL base
        _convert_text_encoder(te1, "hf", SDXL_TEXT_PREFIXES[0], tensors, arch)
        _convert_text_encoder(te2, "openclip", SDXL_TEXT_PREFIXES[1], tensors, arch)
    elif te2 is not None:  # SDXL refiner
        _convert_text_encoder(te2, "openclip", SDXL_TEXT_PREFIXES[0], tensors, arch)
    elif te1 is not None:
        cfg = read_json(te1 / "config.json")
        openclip = cfg.get("hidden_act") == "gelu"  # SD2's OpenCLIP tower; SD1's CLIP uses quick_gelu
        _convert_text_encoder(te1, "openclip" if openclip else "hf", SD1_TEXT_PREFIX, tensors, arch)
        if openclip:
            # diffusers stores SD2's tower already cut at the penultimate layer: read its last layer.
            arch["text_layer"] = [-1]
    else:
        raise CheckpointError(f"{root}: diffusers folder without a text encoder")

    prediction = None
    sched = root / "scheduler" / "scheduler_config.json"
    if sched.is_file():
        scheduler = read_json(sched)
        prediction = scheduler.get("prediction_type")
        if scheduler.get("rescale_betas_zero_snr") is True:
            arch["zero_terminal_snr"] = True
    return DictSource(str(root), tensors, {ARCH_METADATA_KEY: json.dumps(arch)}), prediction


def diffusers_vae_file_to_source(source: TensorSource, path: Path) -> TensorSource:
    """A single diffusers-format VAE file (``encoder.down_blocks.*``) as an LDM-keyed source."""

    info = source.info()
    tensors = {k: source.get(k) for k in list(info)}
    source.close()
    block_out = [tensors[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]
                 for i in range(len({k.split('.')[2] for k in tensors if k.startswith('encoder.down_blocks.')}))]
    cfg = vae_config_from_diffusers({
        "block_out_channels": block_out,
        "latent_channels": tensors["decoder.conv_in.weight"].shape[1],
        "layers_per_block": len({k.split('.')[4] for k in tensors if k.startswith('encoder.down_blocks.0.resnets.')}),
        "in_channels": tensors["encoder.conv_in.weight"].shape[1],
        "out_channels": tensors["decoder.conv_out.weight"].shape[0],
    })
    converted = {VAE_PREFIX + k: v for k, v in diffusers_vae_to_ldm(tensors, cfg).items()}
    detect_vae(DictSource(str(path), dict(converted)).info(), VAE_PREFIX, str(path))
    return DictSource(str(path), converted)
