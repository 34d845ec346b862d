"""The model bundle: one loaded checkpoint's networks, spec, device, schedule and tokenizer.

``Model`` is what the prompts, adapters and pipelines take. It is frozen: a different VAE for a
call is a new bundle (``with_vae``), never a mutation. The networks inside are ordinary modules,
so LoRA patching (``adapters/patcher.py``) still changes their weights in place and restores them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from huihua.checkpoints.io import short_hash
from huihua.checkpoints.loader import load_checkpoint, load_vae
from huihua.checkpoints.specs import ModelSpec
from huihua.checkpoints.tokenizer import CLIPTokenizer
from huihua.diffusion.parametrization import ModelSampling
from huihua.runtime.devices import resolve_device, resolve_dtype


class FileHashes:
    """A1111 short hashes (first 10 hex digits of sha256) of model files, computed once per file."""

    def __init__(self) -> None:
        self._known: dict[Path, str] = {}

    def get(self, path: Path) -> str:
        """The short hash of ``path`` ("" for a folder)."""
        if path not in self._known:
            self._known[path] = short_hash(path) if path.is_file() else ""
        return self._known[path]


@dataclass(frozen=True, eq=False)
class Model:
    """A loaded Stable Diffusion checkpoint: what every floor below the API takes."""

    spec: ModelSpec
    unet: nn.Module
    vae: nn.Module
    text_encoders: tuple[nn.Module, ...]
    device: torch.device
    dtype: torch.dtype
    path: Path
    vae_path: Path | None = None
    hashes: FileHashes = field(default_factory=FileHashes, repr=False)

    @cached_property
    def model_sampling(self) -> ModelSampling:
        """The model's discrete training schedule with its eps/v parametrization."""
        return ModelSampling.for_sd(self.spec.prediction, zero_terminal_snr=self.spec.zero_terminal_snr)

    @cached_property
    def tokenizer(self) -> CLIPTokenizer:
        """The CLIP BPE tokenizer (the vendored vocabulary, shared by every CLIP tower)."""
        return CLIPTokenizer.default()

    @property
    def name(self) -> str:
        """The model's name as A1111 shows it: the file name without extension."""
        return self.path.stem if self.path.is_file() else self.path.name

    def file_hash(self, path: Path | None = None) -> str:
        """A1111 short hash of the model file (or of ``path``); cached."""
        return self.hashes.get(path or self.path)


def load_model(
    path: str | Path,
    *,
    vae: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    prediction: str | None = None,
    zero_terminal_snr: bool | None = None,
) -> Model:
    """Load a single-file checkpoint or a diffusers folder into a :class:`Model`.

    ``prediction`` and ``zero_terminal_snr`` override what the file says (A1111's v-prediction
    sidecar and "Noise schedule for sampling" option).
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    loaded = load_checkpoint(path, vae=vae, device=dev, dtype=dt, prediction=prediction)
    spec = loaded.spec
    if zero_terminal_snr is not None:
        spec = replace(spec, zero_terminal_snr=bool(zero_terminal_snr))
    return Model(spec=spec, unet=loaded.unet, vae=loaded.vae, text_encoders=loaded.text_encoders, device=dev,
                 dtype=dt, path=Path(path), vae_path=Path(vae) if vae else None)


def with_vae(model: Model, path: str | Path | None) -> Model:
    """``model`` with the VAE in ``path`` (None: ``model`` itself); a VAE that does not fit is refused."""
    if path is None or (model.vae_path is not None and Path(path) == model.vae_path):
        return model
    vae = load_vae(Path(path), model.spec.vae, model.dtype, model.device)
    return replace(model, vae=vae, vae_path=Path(path))


def with_own_vae(model: Model) -> Model:
    """``model`` with its checkpoint's own VAE read again (single files; a no-op when it has it)."""
    if model.vae_path is None:
        return model
    return replace(model, vae=load_vae(model.path, model.spec.vae, model.dtype, model.device), vae_path=None)
