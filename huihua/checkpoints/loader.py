"""Files -> (spec, modules): build networks on the meta device and stream tensors into them.

Peak memory while loading is the model's in-memory size plus one tensor: each tensor is read,
cast to the target dtype and moved to the target device on its own, and replaces a meta
parameter. Which source decides the prediction type (eps or v), highest first:
explicit ``prediction=`` option > A1111 sidecar ``.yaml`` (``parameterization: "v"``) >
safetensors metadata (``huihua.prediction`` or ``modelspec.prediction_type``) >
a diffusers folder's ``scheduler/scheduler_config.json`` (``prediction_type``) > "eps".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from huihua.checkpoints.detect import detect_spec, detect_vae
from huihua.checkpoints.diffusers.folder import (
    diffusers_vae_file_to_source,
    is_diffusers_folder,
    open_diffusers_folder,
)
from huihua.checkpoints.io import TensorSource, open_source
from huihua.checkpoints.specs import ModelSpec, Prediction
from huihua.errors import CheckpointError
from huihua.families import UNET_PREFIX, VAE_PREFIX
from huihua.nn.clip import build_text_encoder
from huihua.nn.configs import VAEConfig
from huihua.nn.unet import UNetModel
from huihua.nn.vae import AutoencoderKL

_PREDICTIONS: dict[str, Prediction] = {
    "eps": "eps", "epsilon": "eps", "v": "v", "v_prediction": "v", "v-prediction": "v"
}


@dataclass
class LoadedModel:
    """The networks of one checkpoint, filled with its weights."""

    spec: ModelSpec
    unet: nn.Module
    vae: nn.Module
    text_encoders: tuple[nn.Module, ...]
    source_name: str
    # Keys under a component's prefix that no module parameter claimed (EMA copies etc. are outside).
    unexpected: dict[str, list[str]] = field(default_factory=dict)


M = TypeVar("M", bound=nn.Module)


def materialize(
    factory: Callable[[], M],
    source: TensorSource,
    prefix: str,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[M, list[str]]:
    """Build ``factory()`` on the meta device and fill every parameter from ``source[prefix + name]``.

    Returns the module (in eval mode, no grads) and the keys under ``prefix`` it did not use.
    """
    with torch.device("meta"):
        module = factory()
    if any(True for _ in module.buffers()):
        raise CheckpointError(f"{type(module).__name__} registers buffers; networks must keep all state in parameters")
    info = source.info()
    for name, param in list(module.named_parameters()):
        key = prefix + name
        if key not in info:
            raise CheckpointError(f"{source.name}: missing tensor {key!r}")
        if tuple(info[key].shape) != tuple(param.shape):
            raise CheckpointError(
                f"{source.name}: tensor {key!r} has shape {tuple(info[key].shape)}, expected {tuple(param.shape)}"
            )
        tensor = source.get(key)
        target = dtype if tensor.is_floating_point() else tensor.dtype
        tensor = tensor.to(device=device, dtype=target)
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        owner._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
    used = {prefix + n for n, _ in module.named_parameters()}
    unexpected = sorted(k for k in info if k.startswith(prefix) and k not in used)
    return module.eval(), unexpected


def _sidecar_prediction(path: Path) -> Prediction | None:
    for yaml in (path.with_suffix(".yaml"), path.with_suffix(".yml")):
        if yaml.is_file():
            m = re.search(r"^\s*parameterization:\s*[\"']?([\w-]+)[\"']?", yaml.read_text(errors="replace"), re.M)
            if m:
                return _parse_prediction(m.group(1), str(yaml))
    return None


def _parse_prediction(value: str, where: str) -> Prediction:
    try:
        return _PREDICTIONS[value.strip().lower()]
    except KeyError:
        raise CheckpointError(f"{where}: unknown prediction type {value!r} (expected eps or v)") from None


def resolve_prediction(
    path: Path, metadata: Mapping[str, str], option: str | None, scheduler_prediction: str | None = None
) -> tuple[Prediction, str]:
    """The prediction type and which source decided it (see the module docstring for the order)."""
    if option is not None:
        return _parse_prediction(option, "prediction"), "option"
    if (found := _sidecar_prediction(path)) is not None:
        return found, "yaml"
    for key in ("huihua.prediction", "modelspec.prediction_type", "prediction_type"):
        if metadata.get(key):
            return _parse_prediction(metadata[key], f"{path} metadata {key}"), "metadata"
    if scheduler_prediction:
        return _parse_prediction(scheduler_prediction, f"{path} scheduler_config.json"), "scheduler_config"
    return "eps", "default"


def _open_vae_source(path: Path) -> tuple[TensorSource, str]:
    """Open a standalone VAE file; returns the source and the key prefix its LDM weights sit under."""
    source = open_source(path)
    keys = source.info()
    if any(k.startswith(VAE_PREFIX) for k in keys):
        return source, VAE_PREFIX
    if "encoder.conv_in.weight" in keys and "decoder.conv_out.weight" in keys:
        if any(k.startswith("encoder.down_blocks.") for k in keys):

            return diffusers_vae_file_to_source(source, path), VAE_PREFIX
        return source, ""
    source.close()
    raise CheckpointError(f"{path}: not a VAE file (no encoder/decoder weights)")


def load_vae(path: Path, expected: VAEConfig, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """Load a separate VAE file whose shapes must fit ``expected``; its own scale factor is kept."""

    source, prefix = _open_vae_source(path)
    try:
        got = detect_vae(source.info(), prefix, str(path))
        want = replace(expected, scale_factor=got.scale_factor, shift_factor=got.shift_factor,
                       norm_num_groups=got.norm_num_groups)
        if got != want:
            raise CheckpointError(f"{path}: VAE does not fit this model (got {got}, need {want})")
        vae, _ = materialize(lambda: AutoencoderKL(expected), source, prefix, dtype, device)
        return vae
    finally:
        source.close()


def load_checkpoint(
    path: str | Path,
    *,
    vae: str | Path | None = None,
    device: torch.device,
    dtype: torch.dtype,
    prediction: str | None = None,
) -> LoadedModel:
    """Load a single-file checkpoint or a diffusers folder into our networks."""

    p = Path(path)
    scheduler_prediction = None
    if p.is_dir():
        if not is_diffusers_folder(p):
            raise CheckpointError(f"{p}: a folder, but not a diffusers model (no model_index.json)")
        source, scheduler_prediction = open_diffusers_folder(p)
    else:
        source = open_source(p)
    try:
        spec = detect_spec(source.info(), source.metadata(), str(p))
        pred, pred_source = resolve_prediction(p, source.metadata(), prediction, scheduler_prediction)
        spec = replace(spec, prediction=pred, prediction_source=pred_source)
        unexpected: dict[str, list[str]] = {}
        unet, unexpected["unet"] = materialize(lambda: UNetModel(spec.unet), source, UNET_PREFIX, dtype, device)
        texts = []
        for i, use in enumerate(spec.text_encoders):
            te, unexpected[f"text_encoder_{i}"] = materialize(
                partial(build_text_encoder, use.config), source, use.prefix, dtype, device
            )
            texts.append(te)
        if vae is not None:
            vae_module = load_vae(Path(vae), spec.vae, dtype, device)
        else:
            vae_module, unexpected["vae"] = materialize(
                lambda: AutoencoderKL(spec.vae), source, VAE_PREFIX, dtype, device
            )
    finally:
        source.close()
    return LoadedModel(spec, unet, vae_module, tuple(texts), str(p), unexpected)
