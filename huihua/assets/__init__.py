"""Files shipped inside the package: the embedded default model and its adapters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from huihua.errors import CheckpointError

DEFAULT_MODEL_NAME = "huihua-default.safetensors"
DEFAULT_MODEL_ALIAS = "huihua-default"  # what --model and huihua.load() accept for the embedded model


@dataclass(frozen=True)
class RecommendedSettings:
    """The settings a model's published scores are measured with (the CLI's defaults for that model)."""

    sampler_name: str
    scheduler: str
    steps: int
    cfg_scale: float


# The embedded model's benchmark settings (docs/model-card.md; huihua eval-synth uses them too).
EMBEDDED_MODEL_SETTINGS = RecommendedSettings(sampler_name="Euler", scheduler="Automatic", steps=20, cfg_scale=5.0)


def default_model_path() -> Path:
    """Path of the embedded default model; a clear error if this install does not ship it."""
    path = Path(__file__).with_name(DEFAULT_MODEL_NAME)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: the embedded default model is not in this install; pass --model FILE "
            "(or build it with 'huihua train-default')"
        )
    return path


def bundled_adapter_dir() -> Path:
    """The folder of adapters shipped beside the embedded model (the ``huihua-red`` LoRA, ...)."""
    return Path(__file__).with_name("adapters")
