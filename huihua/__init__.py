"""huihua (绘画): a Stable Diffusion engine in plain PyTorch.

The small public API::

    import huihua
    engine = huihua.load("model.safetensors")          # or a diffusers folder
    result = engine.generate(prompt="a red circle above a blue square", seed=1)
    result.images[0].save("out.png")

Attributes are imported lazily so that ``import huihua`` stays cheap and does nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "load": ("huihua.engine", "load"),
    "Engine": ("huihua.engine", "Engine"),
    "GenerationResult": ("huihua.engine", "GenerationResult"),
    "PromptEmbedding": ("huihua.engine", "PromptEmbedding"),
    "GenerationParams": ("huihua.pipelines.params", "GenerationParams"),
    "ModelSpec": ("huihua.checkpoints.specs", "ModelSpec"),
    "HuihuaError": ("huihua.errors", "HuihuaError"),
    "default_model_path": ("huihua.assets", "default_model_path"),
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:
    from huihua.checkpoints.specs import ModelSpec
    from huihua.engine import Engine, GenerationResult, PromptEmbedding, load
    from huihua.errors import HuihuaError
    from huihua.pipelines.params import GenerationParams


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'huihua' has no attribute {name!r}")
