"""The Engine: the friendly facade of the Python API over one loaded :class:`~huihua.model.Model`.

``huihua.load(...)`` returns an Engine; ``engine.generate(...)`` paints. Everything it does is a
call into ``huihua.api``, the typed API the CLI and the server use too; the Engine only remembers
the model, the adapter folders and a swapped-in VAE between calls.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from huihua import api
from huihua.adapters.controlnet import load_controlnet
from huihua.checkpoints.specs import ModelSpec
from huihua.checkpoints.tokenizer import CLIPTokenizer
from huihua.diffusion.parametrization import ModelSampling
from huihua.errors import HuihuaError
from huihua.model import Model, with_own_vae, with_vae
from huihua.nn.controlnet import ControlNet
from huihua.pipelines.hooks import PipelineHooks
from huihua.pipelines.params import GenerationParams
from huihua.prompts.encode import PromptEmbedding
from huihua.runtime.memory import release_memory


class Engine:
    """A loaded Stable Diffusion model. Create it with :func:`huihua.load`."""

    def __init__(self, model: Model, hooks: PipelineHooks | None = None) -> None:
        self._model: Model | None = model
        # What generations may call outside the pipelines: LoRA/embedding folders, upscalers, refiners.
        self.hooks = hooks
        # The checkpoint's own VAE bundle while another VAE is swapped in (None: not swapped).
        self._own: Model | None = None

    @property
    def model(self) -> Model:
        """The model bundle the API functions take."""
        if self._model is None:
            raise HuihuaError("engine: unloaded; load the model again with huihua.load")
        return self._model

    # The bundle's fields, for the README's ``engine.unet(...)`` and friends.
    spec: ModelSpec = property(lambda self: self.model.spec)  # type: ignore[assignment]
    unet: nn.Module = property(lambda self: self.model.unet)  # type: ignore[assignment]
    vae: nn.Module = property(lambda self: self.model.vae)  # type: ignore[assignment]
    text_encoders: tuple[nn.Module, ...] = property(lambda self: self.model.text_encoders)  # type: ignore[assignment]
    device: torch.device = property(lambda self: self.model.device)  # type: ignore[assignment]
    dtype: torch.dtype = property(lambda self: self.model.dtype)  # type: ignore[assignment]
    path: Path = property(lambda self: self.model.path)  # type: ignore[assignment]
    vae_path: Path | None = property(lambda self: self.model.vae_path)  # type: ignore[assignment]
    tokenizer: CLIPTokenizer = property(lambda self: self.model.tokenizer)  # type: ignore[assignment]
    model_sampling: ModelSampling = property(lambda self: self.model.model_sampling)  # type: ignore[assignment]
    name: str = property(lambda self: self.model.name)  # type: ignore[assignment]

    def file_hash(self, path: Path | None = None) -> str:
        """A1111 short hash (first 10 hex digits of sha256) of the model file (or ``path``); cached."""
        return self.model.file_hash(path)

    def encode_prompt(self, prompt: str, clip_skip: int = 1) -> PromptEmbedding:
        """Encode a prompt with A1111's prompt language: context (1, 77·chunks, D) and pooled (1, P) or None.

        Embedding names from the engine's embedding folders are honoured, as in ``generate``.
        """
        return api.encode_prompt(self.model, prompt, clip_skip, self._hooks().networks)

    def generate(
        self,
        params: GenerationParams | None = None,
        *,
        inputs: api.GenerationInputs | None = None,
        callbacks: api.Callbacks | None = None,
        **fields: object,
    ) -> api.GenerationResult:
        """Paint with the typed API: ``params`` and keyword GenerationParams fields, plus inputs and callbacks.

        Besides the fields it takes the GenerationInputs and Callbacks fields as keywords
        (``init_images=``, ``mask=``, ``controlnet_units=``, ``callback=``, ``progress=`` ...).
        """
        p, inp, cbs = api.split_generate_kwargs(params, inputs, callbacks, fields, self._hooks())
        return api.generate(self.model, p, inp, cbs)

    def _hooks(self) -> PipelineHooks:
        return self.hooks or PipelineHooks()

    def swap_vae(self, path: str | Path | None) -> None:
        """Use the VAE in ``path`` from now on (None: back to the checkpoint's own VAE).

        The checkpoint's VAE is kept, so switching back costs nothing; a VAE that does not fit
        is refused and the current one stays.
        """
        if path is None:
            self._model, self._own = self._own or with_own_vae(self.model), None
            return
        own = self._own or (self.model if self.model.vae_path is None else None)
        self._model, self._own = with_vae(self.model, path), own

    @contextmanager
    def using_vae(self, path: str | Path | None) -> Iterator[None]:
        """Use the VAE in ``path`` inside the block (None: keep the current one); restore it afterwards."""
        before = (self._model, self._own)
        self._model = with_vae(self.model, path)  # refuses a VAE that does not fit, leaving the engine as it was
        try:
            yield
        finally:
            self._model, self._own = before

    def load_controlnet(self, path: str | Path) -> ControlNet:
        """Load a ControlNet (LDM or diffusers layout) that fits this model; ``cn(x, hint, t, context, y)``."""
        return load_controlnet(self.model, path)

    def unload(self) -> None:
        """Drop the networks and give their memory back to the operating system."""
        self._model = self._own = None
        release_memory()


def load(
    path: str | Path | None = None,
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

    ``path`` None or ``"huihua-default"`` is the embedded default model. ``prediction`` and
    ``zero_terminal_snr`` override what the file says (A1111's v-prediction sidecar and "Noise
    schedule for sampling" option). ``lora_dirs`` / ``embedding_dirs`` are searched by name for
    ``<lora:name:w>`` and embedding names in prompts, before the adapters bundled with huihua.
    """
    model = api.load_model(path, vae=vae, device=device, dtype=dtype, prediction=prediction,
                           zero_terminal_snr=zero_terminal_snr)
    return Engine(model, api.adapter_hooks(lora_dirs, embedding_dirs))


__all__ = ["Engine", "load"]
