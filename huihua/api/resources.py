"""Resources a generation names by file: hires upscaler models and ControlNet models, loaded once.

``hires_hooks(hooks, model, name)`` turns an ESRGAN-family file given as ``hr_upscaler`` into a
named upscaler (A1111's names, the latent modes and Lanczos are built into the pipelines).
``ControlNetCache`` loads each ControlNet file once per model and hands out the loaded network.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PIL import Image

from huihua.adapters.controlnet import load_controlnet
from huihua.model import Model
from huihua.nn.controlnet import ControlNet
from huihua.pipelines.hooks import PipelineHooks
from huihua.upscale import load_upscaler, upscale


def hires_hooks(hooks: PipelineHooks, model: Model, name: str | None) -> PipelineHooks:
    """``hooks`` with the upscaler model file ``name`` as a named pixel upscaler (unchanged for other names)."""
    if not name or not Path(name).is_file():
        return hooks
    net = load_upscaler(name, device=model.device, dtype=model.dtype)

    def run(image: Image.Image, size: tuple[int, int]) -> Image.Image:
        return upscale(image, net, scale=max(size[0] / image.width, size[1] / image.height))

    return replace(hooks, upscalers={**hooks.upscalers, name: run})


class ControlNetCache:
    """ControlNet files loaded for one model, each once (keyed by resolved path)."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self._loaded: dict[Path, ControlNet] = {}

    def get(self, path: str | Path) -> ControlNet:
        """The ControlNet in ``path``, loaded for the model the first time it is asked for."""
        key = Path(path).resolve()
        if key not in self._loaded:
            self._loaded[key] = load_controlnet(self.model, path)
        return self._loaded[key]
