"""huihua (绘画): a Stable Diffusion engine in plain PyTorch.

The small public API::

    import huihua
    engine = huihua.load("model.safetensors")          # or a diffusers folder
    result = engine.generate(prompt="a red circle above a blue square", seed=1)
    result.images[0].save("out.png")

Attributes are imported lazily so that ``import huihua`` stays cheap and does nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from huihua.version import __version__

_LAZY = {
    "load": ("huihua.engine", "load"),
    "Engine": ("huihua.engine", "Engine"),
    "GenerationResult": ("huihua.pipelines.types", "GenerationResult"),
    "GenerationInputs": ("huihua.pipelines.types", "GenerationInputs"),
    "Callbacks": ("huihua.pipelines.types", "Callbacks"),
    "ReplayRecord": ("huihua.pipelines.types", "ReplayRecord"),
    "PromptEmbedding": ("huihua.prompts.encode", "PromptEmbedding"),
    "GenerationParams": ("huihua.pipelines.params", "GenerationParams"),
    "Model": ("huihua.model", "Model"),
    "ModelSpec": ("huihua.checkpoints.specs", "ModelSpec"),
    "HuihuaError": ("huihua.errors", "HuihuaError"),
    "default_model_path": ("huihua.assets", "default_model_path"),
}

__all__ = [
    "Callbacks", "Engine", "GenerationInputs", "GenerationParams", "GenerationResult", "HuihuaError", "Model",
    "ModelSpec", "PromptEmbedding", "ReplayRecord", "__version__", "default_model_path", "load",
]

if TYPE_CHECKING:  # what the lazy names are, for type checkers (importing them here would load torch)
    from huihua.assets import default_model_path
    from huihua.checkpoints.specs import ModelSpec
    from huihua.engine import Engine, load
    from huihua.errors import HuihuaError
    from huihua.model import Model
    from huihua.pipelines.params import GenerationParams
    from huihua.pipelines.types import (
        Callbacks,
        GenerationInputs,
        GenerationResult,
        ReplayRecord,
    )
    from huihua.prompts.encode import PromptEmbedding


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'huihua' has no attribute {name!r}")
