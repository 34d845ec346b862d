"""What a generation can be given from outside: extra networks (LoRA, embeddings), pixel upscalers, refiners.

The pipelines never search folders or load adapter files themselves; they call these hooks:

- ``networks.activate(model, calls)``: the extra-network hook (``adapters/networks.py``).
- ``upscalers[name](image, (width, height)) -> image``: neural hires upscalers by A1111 name
  ("Lanczos" and the "Latent ..." modes are built in).
- ``load_refiner(checkpoint) -> Model``: how ``refiner_checkpoint`` is turned into a model
  (default: ``load_model`` on the same device and dtype).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from PIL import Image

from huihua.adapters.networks import ExtraNetworks, NoNetworks
from huihua.model import Model, load_model

PixelUpscaler = Callable[[Image.Image, tuple[int, int]], Image.Image]


def _load_same_device(model: Model) -> Callable[[str], Model]:
    def load(checkpoint: str) -> Model:
        return load_model(checkpoint, device=model.device, dtype=model.dtype)

    return load


@dataclass(frozen=True)
class PipelineHooks:
    """Everything a generation may call outside the pipelines; the defaults need no files."""

    networks: ExtraNetworks = field(default_factory=NoNetworks)
    upscalers: Mapping[str, PixelUpscaler] = field(default_factory=dict)
    load_refiner: Callable[[str], Model] | None = None

    def refiner_loader(self, model: Model) -> Callable[[str], Model]:
        """The refiner loader, defaulting to ``load_model`` on ``model``'s device and dtype."""
        return self.load_refiner or _load_same_device(model)
