"""Resources a generation names by file: hires upscaler models and ControlNet models, loaded once.

``hires_hooks(hooks, model, name)`` turns an ESRGAN-family file given as ``hr_upscaler`` into a
named upscaler (A1111's names, the latent modes and Lanczos are built into the pipelines).
``ControlNetCache`` loads each ControlNet file once per model and hands out the loaded network; a
ControlNet may be named by path or by name (found in the given folders, then among the bundled adapters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from PIL import Image

from huihua.adapters.controlnet import load_controlnet
from huihua.adapters.registry import FileKinds, find_file, list_files
from huihua.assets import bundled_adapter_dir
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


CONTROLNET_EXTENSIONS = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")


def controlnet_dirs(dirs: Sequence[str | Path] = ()) -> list[Path]:
    """Where ControlNets are looked up by name: the user's folders, then the bundled adapters."""
    bundled = bundled_adapter_dir()
    return [*(Path(d) for d in dirs), *([bundled] if bundled.is_dir() else [])]


def list_controlnets(dirs: Sequence[str | Path] = (), kinds: FileKinds | None = None) -> list[Path]:
    """ControlNet files in ``dirs`` and among the bundled adapters (``huihua list controlnets``)."""
    return list_files(controlnet_dirs(dirs), CONTROLNET_EXTENSIONS, "controlnet", kinds)


class ControlNetCache:
    """ControlNet files loaded for one model, each once (keyed by resolved path)."""

    def __init__(self, model: Model, dirs: Sequence[str | Path] = ()) -> None:
        self.model = model
        self.dirs = controlnet_dirs(dirs)
        self._kinds = FileKinds()
        self._loaded: dict[Path, ControlNet] = {}

    def resolve(self, name: str | Path) -> Path:
        """The file ``name`` means: an existing path, else a ControlNet called so in the folders."""
        path = Path(name)
        if path.is_file():
            return path
        return find_file(str(name), self.dirs, CONTROLNET_EXTENSIONS, "ControlNet",
                         accept=lambda p: self._kinds(p) == "controlnet")

    def get(self, name: str | Path) -> ControlNet:
        """The ControlNet at path or called ``name``, loaded for the model the first time it is asked for."""
        path = self.resolve(name)
        key = path.resolve()
        if key not in self._loaded:
            self._loaded[key] = load_controlnet(self.model, path)
        return self._loaded[key]
