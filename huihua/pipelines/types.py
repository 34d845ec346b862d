"""The typed boundary of a generation: what goes in besides the parameters, and what comes out.

``generate(model, params, inputs, callbacks) -> GenerationResult``. The inputs hold the pictures,
the mask, ControlNet units, a VAE for the call and the hooks (extra networks, upscalers, refiner);
the callbacks hold the step callback, live previews and the progress bar. The result carries each
image's seed, A1111 infotext and a typed :class:`ReplayRecord` (the ``huihua`` JSON chunk).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path

from PIL import Image

from huihua.adapters.controlnet import ControlNetUnit, PreparedUnit
from huihua.diffusion.samplers import Callback as StepCallback
from huihua.errors import HuihuaError
from huihua.pipelines.hooks import PipelineHooks
from huihua.pipelines.params import GenerationParams
from huihua.runtime.preview import PreviewDecoder

PreviewFn = Callable[[int, Image.Image], None]  # (running step, preview picture)
REPLAY_FORMAT = 1  # version of the JSON record's layout


class Mode(StrEnum):
    """Which pipeline painted a picture."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"


class ResizeMode(IntEnum):
    """A1111's img2img resize modes (their integer codes are the A1111 field values)."""

    JUST_RESIZE = 0
    CROP_AND_RESIZE = 1
    RESIZE_AND_FILL = 2
    LATENT_UPSCALE = 3


class InpaintFill(IntEnum):
    """A1111's masked-content choices."""

    FILL = 0
    ORIGINAL = 1
    LATENT_NOISE = 2
    LATENT_NOTHING = 3


@dataclass(frozen=True, eq=False)
class GenerationInputs:
    """What a generation is given besides its parameters.

    ``init_images`` (img2img; with ``mask`` or outpaint sizes, inpainting), ControlNet units, a VAE
    file for this call only, tiled VAE (None: above 128×128 latents) and the hooks.
    """

    init_images: tuple[Image.Image, ...] = ()
    mask: Image.Image | None = None
    controlnet_units: tuple[ControlNetUnit | PreparedUnit, ...] = ()
    vae: Path | None = None
    tiled_vae: bool | None = None
    hooks: PipelineHooks = field(default_factory=PipelineHooks)


@dataclass(frozen=True, eq=False)
class Callbacks:
    """What a generation reports while it runs.

    ``on_step(step, x, denoised, sigma)`` after every sampler step; ``preview(step, image)`` every
    ``preview_every`` steps, decoded by ``taesd`` (a file or a loaded TAESD) or the linear
    approximation; ``progress`` shows a progress bar (steps, it/s, ETA) on stderr.
    """

    on_step: StepCallback | None = None
    preview: PreviewFn | None = None
    preview_every: int = 1
    taesd: Path | PreviewDecoder | None = None
    progress: bool = False


@dataclass(frozen=True)
class ModelFile:
    """A model file a picture used: its name (file stem) and A1111 short hash."""

    name: str
    hash: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "hash": self.hash}


@dataclass(frozen=True)
class ReplayRecord:
    """Everything that reproduces one picture: the ``huihua`` JSON chunk, typed."""

    mode: Mode
    params: GenerationParams  # the whole call's parameters (every batch)
    image_index: int
    checkpoint: ModelFile
    vae: ModelFile | None = None
    refiner: ModelFile | None = None
    adapters: tuple[tuple[str, str], ...] = ()  # (LoRA name, hash)
    controlnets: tuple[ModelFile, ...] = ()
    version: str = ""

    def to_json(self) -> dict[str, object]:
        """The JSON chunk as huihua writes it into PNG files."""
        models: dict[str, object] = {"checkpoint": self.checkpoint.to_json()}
        if self.vae is not None:
            models["vae"] = self.vae.to_json()
        if self.refiner is not None:
            models["refiner"] = self.refiner.to_json()
        if self.adapters:
            models["adapters"] = dict(self.adapters)
        if self.controlnets:
            models["controlnet"] = [c.to_json() for c in self.controlnets]
        return {"format": REPLAY_FORMAT, "huihua": self.version, "mode": str(self.mode),
                "params": self.params.to_dict(), "image_index": self.image_index, "models": models}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ReplayRecord:
        """Read a JSON chunk back; a HuihuaError naming what is wrong when it is not a huihua record."""
        try:
            raw_params = data["params"]
            models = data.get("models") or {}
            if not isinstance(raw_params, Mapping) or not isinstance(models, Mapping):
                raise TypeError("params and models must be objects")
            checkpoint = _file(models.get("checkpoint")) or ModelFile("", "")
            adapters = models.get("adapters") or {}
            if not isinstance(adapters, Mapping):
                raise TypeError("models.adapters must be an object")
            cns = models.get("controlnet") or []
            if not isinstance(cns, Sequence):
                raise TypeError("models.controlnet must be a list")
            index = data.get("image_index", 0)
            return cls(mode=Mode(str(data.get("mode", "txt2img"))), params=GenerationParams.from_dict(dict(raw_params)),
                       image_index=int(index) if isinstance(index, (int, str)) else 0, checkpoint=checkpoint,
                       vae=_file(models.get("vae")), refiner=_file(models.get("refiner")),
                       adapters=tuple((str(k), str(v)) for k, v in adapters.items()),
                       controlnets=tuple(f for f in (_file(c) for c in cns) if f is not None),
                       version=str(data.get("huihua", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise HuihuaError(f"JSON chunk: not a huihua record ({e})") from None


def _file(value: object) -> ModelFile | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a {{name, hash}} object, got {value!r}")
    return ModelFile(str(value.get("name", "")), str(value.get("hash", "")))


@dataclass(frozen=True)
class GenerationResult:
    """Images of one generation call with the seeds, infotexts and records that reproduce them."""

    images: list[Image.Image]
    seeds: list[int]
    infotexts: list[str]
    records: tuple[ReplayRecord, ...]
    params: GenerationParams  # resolved: concrete size and seeds
    mode: Mode = Mode.TXT2IMG

    @property
    def parameters(self) -> GenerationParams:
        """The resolved parameters (the older name of ``params``)."""
        return self.params
