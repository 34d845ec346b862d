"""Loading and painting: the typed entry points every client calls.

``load_model(path)`` (None or ``"huihua-default"``: the embedded model), ``generate(model, params,
inputs, callbacks)``, ``encode_prompt(model, prompt, clip_skip, networks)``, and the hooks over the
user's adapter folders. ``split_generate_kwargs`` is the keyword sugar of ``Engine.generate``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from os import PathLike
from pathlib import Path

import torch

from huihua.adapters.lora_networks import FolderNetworks
from huihua.adapters.networks import ExtraNetworks
from huihua.assets import DEFAULT_MODEL_ALIAS, EMBEDDED_MODEL_SETTINGS, RecommendedSettings, default_model_path
from huihua.errors import CheckpointError, ParameterError, PromptError
from huihua.model import Model
from huihua.model import load_model as _load_model
from huihua.pipelines.generate import generate
from huihua.pipelines.hooks import PipelineHooks
from huihua.pipelines.params import GenerationParams
from huihua.pipelines.types import Callbacks, GenerationInputs
from huihua.prompts.encode import PromptEmbedding, encode_text
from huihua.prompts.extra_networks import parse_extra_networks

__all__ = ["adapter_hooks", "encode_prompt", "generate", "load_model", "model_path", "recommended_settings",
           "size_warning", "split_generate_kwargs"]


def model_path(path: str | Path | None) -> Path:
    """The checkpoint a name means: None or ``"huihua-default"`` is the embedded model."""
    if path is None or str(path) == DEFAULT_MODEL_ALIAS:
        return default_model_path()
    return Path(path)


def load_model(
    path: str | Path | None = None,
    *,
    vae: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    prediction: str | None = None,
    zero_terminal_snr: bool | None = None,
) -> Model:
    """Load a checkpoint file or diffusers folder (None: the embedded default model) into a Model."""
    return _load_model(model_path(path), vae=vae, device=device, dtype=dtype, prediction=prediction,
                       zero_terminal_snr=zero_terminal_snr)


def recommended_settings(model: Model) -> RecommendedSettings | None:
    """The settings the model's published scores use (the embedded model's), or None when unknown."""
    try:
        embedded = default_model_path().resolve()
    except CheckpointError:
        return None
    return EMBEDDED_MODEL_SETTINGS if model.path.resolve() == embedded else None


# Sizes this far (or farther) from the training resolution, on either side, get a warning.
SIZE_WARNING_RATIO = 2.0


def size_warning(model: Model, width: int, height: int) -> str | None:
    """One line when ``width × height`` is far from the size the model was trained at (None otherwise)."""
    native = model.spec.native_resolution
    ratio = max(width, height) / native
    if 1 / SIZE_WARNING_RATIO < ratio < SIZE_WARNING_RATIO and min(width, height) / native > 1 / SIZE_WARNING_RATIO:
        return None
    return (f"{width}x{height} is far from {native}x{native}, the size {model.name} was trained at; "
            f"expect broken pictures (leave out --width/--height to use it)")


def adapter_hooks(lora_dirs: Sequence[str | Path] = (), embedding_dirs: Sequence[str | Path] = ()) -> PipelineHooks:
    """Pipeline hooks over the user's LoRA and embedding folders, then the adapters bundled with huihua."""
    return PipelineHooks(networks=FolderNetworks(lora_dirs, embedding_dirs))


def encode_prompt(model: Model, prompt: str, clip_skip: int = 1,
                  networks: ExtraNetworks | None = None) -> PromptEmbedding:
    """A plain prompt (emphasis, BREAK, long prompts) to context and pooled, with the embeddings ``networks`` has.

    ``<lora:...>`` tags are applied for the encoding (text-encoder LoRA), then removed.
    """
    text, calls = parse_extra_networks(prompt)
    if networks is None:
        if calls:
            raise PromptError(f"<{calls[0].kind}:{calls[0].name}>: no LoRA folder given")
        return encode_text(model, text, clip_skip=clip_skip)
    with networks.activate(model, calls) as act, torch.inference_mode():
        return encode_text(model, text, clip_skip=clip_skip, embeddings=act.embeddings)


_INPUT_FIELDS = {f.name for f in fields(GenerationInputs)}
_CALLBACK_FIELDS = {f.name for f in fields(Callbacks)} | {"callback"}


def split_generate_kwargs(params: GenerationParams | None, inputs: GenerationInputs | None,
                          callbacks: Callbacks | None, kwargs: Mapping[str, object],
                          hooks: PipelineHooks) -> tuple[GenerationParams, GenerationInputs, Callbacks]:
    """``(params, inputs, callbacks)`` from ``Engine.generate``'s keywords.

    GenerationParams fields (and the aliases ``sampler=``, ``schedule=``) override ``params``;
    GenerationInputs and Callbacks fields (``init_images=``, ``mask=``, ``controlnet_units=``,
    ``callback=``, ``progress=`` ...) override ``inputs`` and ``callbacks``.
    """
    param_kw = {k: v for k, v in kwargs.items() if k not in _INPUT_FIELDS and k not in _CALLBACK_FIELDS}
    input_kw = {k: v for k, v in kwargs.items() if k in _INPUT_FIELDS}
    callback_kw = {("on_step" if k == "callback" else k): v for k, v in kwargs.items() if k in _CALLBACK_FIELDS}
    base = params if params is not None else GenerationParams()
    p = GenerationParams.from_kwargs(**{**base.to_dict(), **param_kw}) if param_kw else base
    inp = inputs or GenerationInputs(hooks=hooks)
    for name in ("init_images", "controlnet_units"):
        if name in input_kw:
            input_kw[name] = _as_tuple(name, input_kw[name])
    vae = input_kw.get("vae")
    if vae is not None:
        if not isinstance(vae, (str, PathLike)):
            raise ParameterError(f"vae: a file path, got {type(vae).__name__}")
        input_kw["vae"] = Path(vae)
    if input_kw.get("hooks") is None:
        input_kw.pop("hooks", None)
    cbs = replace(callbacks or Callbacks(), **callback_kw)  # type: ignore[arg-type]
    return p, replace(inp, **input_kw), cbs  # type: ignore[arg-type]


def _as_tuple(name: str, value: object) -> tuple[object, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise ParameterError(f"{name}: a list, got {type(value).__name__}")
    return tuple(value)
