"""The Engine: one loaded checkpoint with its networks, tokenizer and sampling schedule."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from huihua.checkpoints.loader import load_checkpoint
from huihua.checkpoints.specs import ModelSpec
from huihua.runtime.devices import resolve_device, resolve_dtype
from huihua.runtime.memory import release_memory

if TYPE_CHECKING:
    from PIL import Image

    from huihua.checkpoints.tokenizer import CLIPTokenizer
    from huihua.diffusion.parametrization import ModelSampling
    from huihua.nn.controlnet import ControlNet
    from huihua.pipelines.hooks import PipelineHooks


@dataclass(frozen=True)
class PromptEmbedding:
    """Text conditioning: ``context`` (B, T, D) for cross-attention, ``pooled`` (B, P) or None."""

    context: torch.Tensor
    pooled: torch.Tensor | None

    def __iter__(self):  # allows ``context, pooled = engine.encode_prompt(...)``
        return iter((self.context, self.pooled))


@dataclass(frozen=True)
class GenerationResult:
    """Images of one generation call with the seeds and infotexts that reproduce them."""

    images: list[Image.Image]
    seeds: list[int]
    infotexts: list[str]
    parameters: Any = None


class Engine:
    """A loaded Stable Diffusion model. Create it with :func:`huihua.load`."""

    def __init__(
        self,
        *,
        spec: ModelSpec,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        text_encoders: tuple[torch.nn.Module, ...],
        device: torch.device,
        dtype: torch.dtype,
        path: Path,
        vae_path: Path | None = None,
        hooks: PipelineHooks | None = None,
    ) -> None:
        self.spec = spec
        self.unet = unet
        self.vae = vae
        self.text_encoders = text_encoders
        self.device = device
        self.dtype = dtype
        self.path = path
        self.vae_path = vae_path
        # What generations may call outside the pipelines: LoRA/embedding folders, upscalers, refiners.
        self.hooks = hooks
        self._hashes: dict[Path, str] = {}
        # The checkpoint's own VAE while another one is swapped in (None: not swapped, or never loaded).
        self._own_vae: torch.nn.Module | None = None

    @cached_property
    def tokenizer(self) -> CLIPTokenizer:
        """The CLIP BPE tokenizer (the vendored vocabulary, shared by every CLIP tower)."""
        from huihua.checkpoints.tokenizer import CLIPTokenizer

        return CLIPTokenizer.default()

    @cached_property
    def model_sampling(self) -> ModelSampling:
        """The model's discrete training schedule with its eps/v parametrization."""
        from huihua.diffusion.parametrization import ModelSampling

        return ModelSampling.for_sd(self.spec.prediction, zero_terminal_snr=self.spec.zero_terminal_snr)

    @property
    def name(self) -> str:
        """The model's name as A1111 shows it: the file name without extension."""
        return self.path.stem if self.path.is_file() else self.path.name

    def file_hash(self, path: Path | None = None) -> str:
        """A1111 short hash (first 10 hex digits of sha256) of the model file (or ``path``); cached."""
        from huihua.checkpoints.io import short_hash

        p = path or self.path
        if p not in self._hashes:
            self._hashes[p] = short_hash(p) if p.is_file() else ""
        return self._hashes[p]

    def encode_prompt(self, prompt: str, clip_skip: int = 1) -> PromptEmbedding:
        """Encode a prompt with A1111's prompt language: context (1, 77·chunks, D) and pooled (1, P) or None."""
        from huihua.prompts.encode import encode_prompt

        return encode_prompt(self, prompt, clip_skip=clip_skip)

    def generate(self, **kwargs: Any) -> GenerationResult:
        """Text-to-image (and the other pipelines via their parameters); see ``GenerationParams``."""
        from huihua.pipelines.generate import generate

        if self.hooks is not None:
            kwargs.setdefault("hooks", self.hooks)
        return generate(self, **kwargs)

    def swap_vae(self, path: str | Path | None) -> None:
        """Use the VAE in ``path`` from now on (None: back to the checkpoint's own VAE).

        The checkpoint's VAE is kept, so switching back costs nothing; a VAE that does not fit
        is refused and the current one stays.
        """
        from huihua.checkpoints.loader import load_vae

        if path is None:
            if self.vae_path is None:
                return
            # Loaded with an external VAE from the start: read the checkpoint's own one (single files).
            own = self._own_vae or load_vae(self.path, self.spec.vae, self.dtype, self.device)
            self.vae, self.vae_path, self._own_vae = own, None, None
            return
        new = load_vae(Path(path), self.spec.vae, self.dtype, self.device)
        if self.vae_path is None:
            self._own_vae = self.vae
        self.vae, self.vae_path = new, Path(path)

    @contextmanager
    def using_vae(self, path: str | Path | None) -> Iterator[None]:
        """Use the VAE in ``path`` inside the block (None: keep the current one); restore it afterwards."""
        if path is None or (self.vae_path is not None and Path(path) == self.vae_path):
            yield
            return
        before = (self.vae, self.vae_path, self._own_vae)
        self.swap_vae(path)  # refuses a VAE that does not fit, leaving the engine as it was
        try:
            yield
        finally:
            self.vae, self.vae_path, self._own_vae = before

    def load_controlnet(self, path: str | Path) -> ControlNet:
        """Load a ControlNet (LDM or diffusers layout) that fits this model; ``cn(x, hint, t, context, y)``."""
        from huihua.adapters.controlnet import load_controlnet

        return load_controlnet(self, path)

    def unload(self) -> None:
        """Drop the networks and give their memory back to the operating system."""
        self.unet = self.vae = self._own_vae = None  # type: ignore[assignment]
        self.text_encoders = ()
        self.__dict__.pop("model_sampling", None)
        release_memory()


def load(
    path: str | Path,
    *,
    vae: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    prediction: str | None = None,
    zero_terminal_snr: bool | None = None,
    lora_dirs: Sequence[str | Path] = (),
    embedding_dirs: Sequence[str | Path] = (),
) -> Engine:
    """Load a single-file checkpoint (.safetensors/.ckpt) or a diffusers folder into an :class:`Engine`.

    ``prediction`` and ``zero_terminal_snr`` override what the file says (A1111's v-prediction
    sidecar and "Noise schedule for sampling" option). ``lora_dirs`` / ``embedding_dirs`` are
    searched by name for ``<lora:name:w>`` and embedding names in prompts.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    loaded = load_checkpoint(path, vae=vae, device=dev, dtype=dt, prediction=prediction)
    spec = loaded.spec
    if zero_terminal_snr is not None:
        spec = replace(spec, zero_terminal_snr=bool(zero_terminal_snr))
    return Engine(
        spec=spec,
        unet=loaded.unet,
        vae=loaded.vae,
        text_encoders=loaded.text_encoders,
        device=dev,
        dtype=dt,
        path=Path(path),
        vae_path=Path(vae) if vae else None,
        hooks=_hooks(lora_dirs, embedding_dirs),
    )


def _hooks(lora_dirs: Sequence[str | Path], embedding_dirs: Sequence[str | Path]) -> PipelineHooks | None:
    """Pipeline hooks over the adapter folders (None: the pipelines' defaults, no adapters)."""
    if not lora_dirs and not embedding_dirs:
        return None
    from huihua.adapters.lora_networks import FolderNetworks
    from huihua.pipelines.hooks import PipelineHooks

    return PipelineHooks(networks=FolderNetworks(lora_dirs, embedding_dirs))
