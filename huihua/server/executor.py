"""Running one job: the small interface a worker calls, and the local executor behind it.

``Executor.run(job, report) -> JobOutput`` is all the worker needs; this in-process executor holds the
loaded model and runs the typed API. (A cluster executor, one replica per GPU, can take its place
behind the same queue without changing the routes.)
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image

from huihua import api
from huihua.adapters.controlnet import ControlNetUnit
from huihua.assets import DEFAULT_MODEL_ALIAS
from huihua.errors import HuihuaError
from huihua.imagefile import read_infotext, write_png
from huihua.model import Model
from huihua.pipelines.generate import total_steps
from huihua.pipelines.hooks import PipelineHooks
from huihua.pipelines.params import GenerationParams
from huihua.pipelines.types import Mode
from huihua.server.config import ServerConfig
from huihua.server.models import Catalog, ModelEntry
from huihua.server.specs import upload_path
from huihua.server.store import Job, JsonDict, JsonValue
from huihua.upscale import lanczos, load_upscaler, upscale


class JobStopped(HuihuaError):
    """Raised from the step callback when a running job is canceled or interrupted."""

    def __init__(self, status: str) -> None:
        super().__init__(f"the job was {status}")
        self.status = status


@dataclass
class Report:
    """What the executor tells the worker while a job runs."""

    step: Callable[[int, int], None]  # (steps done, total)
    preview: Callable[[Image.Image], None]
    should_stop: Callable[[], str | None]  # "canceled"/"interrupted" when the job must stop


@dataclass(frozen=True)
class JobOutput:
    images: list[str]
    infotexts: list[str]
    info: JsonDict = field(default_factory=dict)


class Executor(Protocol):
    def run(self, job: Job, report: Report) -> JobOutput: ...


def encode_jpeg(image: Image.Image, size: int = 96) -> str:
    """A small JPEG preview as base64 (for progress events)."""
    thumb = image.convert("RGB")
    thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=70)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class LocalExecutor:
    """Runs jobs in this process on one loaded model; switches models between jobs."""

    def __init__(self, config: ServerConfig, catalog: Catalog) -> None:
        self.config = config
        self.catalog = catalog
        self.lock = threading.RLock()  # held while a job runs or the model changes
        self.model: Model | None = None
        self.entry: ModelEntry | None = None
        self.networks = catalog.networks()

    # --- the model ------------------------------------------------------------------------------

    def load(self, name: str | None) -> ModelEntry:
        """Make ``name`` (None: the configured default) the loaded model; on failure the old one stays."""
        wanted = name or self.config.model or DEFAULT_MODEL_ALIAS
        with self.lock:
            if self.config.model and Path(self.config.model).exists() and name is None:
                entry = self.catalog._entry(Path(self.config.model).stem, Path(self.config.model))
            else:
                entry = self.catalog.find_checkpoint(wanted)
            if self.entry is not None and self.entry.path == entry.path and self.model is not None:
                return entry
            model = api.load_model(entry.path, device=self.config.device, dtype=self.config.dtype)
            self.model, self.entry = model, entry  # only now: a failed load keeps the previous model
            return entry

    def current(self) -> tuple[Model, ModelEntry]:
        with self.lock:
            if self.model is None or self.entry is None:
                self.load(None)
            assert self.model is not None and self.entry is not None
            return self.model, self.entry

    def unload(self) -> None:
        with self.lock:
            self.model, self.entry = None, None

    # --- running --------------------------------------------------------------------------------

    def run(self, job: Job, report: Report) -> JobOutput:
        with self.lock:
            if job.kind == "upscale":
                return self._upscale(job, report)
            checkpoint = job.spec.get("checkpoint")
            previous = self.entry
            if isinstance(checkpoint, str) and checkpoint:
                self.load(checkpoint)
            model, _ = self.current()
            try:
                return self._generate(job, model, report)
            finally:  # A1111's override_settings_restore_afterwards
                if job.spec.get("restore_checkpoint") and previous is not None and self.entry != previous:
                    self.load(previous.name)

    def _images(self, job: Job) -> tuple[tuple[Image.Image, ...], Image.Image | None]:
        images = job.spec.get("images") or {}
        assert isinstance(images, dict)
        names = images.get("init_images") or []
        assert isinstance(names, list)
        init = tuple(_open(upload_path(str(n), self.config.uploads_dir), "RGB") for n in names)
        mask_name = images.get("mask")
        mask = _open(upload_path(str(mask_name), self.config.uploads_dir), "L") if mask_name else None
        return init, mask

    def _units(self, job: Job, model: Model) -> tuple[ControlNetUnit, ...]:
        raw = job.spec.get("controlnet") or []
        assert isinstance(raw, list)
        cache = api.ControlNetCache(model, self.config.controlnet_dirs)
        units = []
        for unit in raw:
            assert isinstance(unit, dict)
            settings = {k: unit[k] for k in ("weight", "guidance_start", "guidance_end", "control_mode", "resize_mode",
                                           "pixel_perfect", "preprocessor") if unit.get(k) is not None}
            image = _open(upload_path(str(unit["image"]), self.config.uploads_dir), "RGB")
            units.append(ControlNetUnit(cache.get(str(unit["model"])), image, **settings))  # type: ignore[arg-type]
        return tuple(units)

    def _generate(self, job: Job, model: Model, report: Report) -> JobOutput:
        raw = job.spec.get("params") or {}
        assert isinstance(raw, dict)
        params = GenerationParams.from_kwargs(**raw)
        init, mask = self._images(job)
        mode = Mode.INPAINT if mask is not None else Mode.IMG2IMG if init else Mode.TXT2IMG
        total = max(total_steps(params, mode), 1)
        done = [0]

        def on_step(step: int, x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> None:
            done[0] += 1
            report.step(min(done[0], total), total)
            stop = report.should_stop()
            if stop is not None:
                raise JobStopped(stop)

        inputs = api.GenerationInputs(init_images=init, mask=mask, hooks=PipelineHooks(networks=self.networks),
                                      controlnet_units=self._units(job, model))
        callbacks = api.Callbacks(on_step=on_step, preview=lambda _step, image: report.preview(image),
                                  preview_every=self.config.preview_every)
        report.step(0, total)
        result = api.generate(model, params, inputs, callbacks)
        names, infotexts = [], []
        self.config.images_dir.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(result.images):
            name = f"{job.id}-{i}.png"
            record = result.records[i] if i < len(result.records) else None
            write_png(self.config.images_dir / name, image, result.infotexts[i],
                      record.to_json() if record is not None else None, overwrite=True)
            names.append(name)
            infotexts.append(result.infotexts[i])
        seeds: list[JsonValue] = list(result.seeds)
        info: JsonDict = {"seeds": seeds, "mode": str(result.mode), "params": result.params.to_dict()}
        return JobOutput(names, infotexts, info)

    def _upscale(self, job: Job, report: Report) -> JobOutput:
        (image,), _ = self._images(job)
        name = str(job.spec.get("upscaler") or "Lanczos")
        scale = float(job.spec.get("scale") or 2.0)  # type: ignore[arg-type]
        report.step(0, 1)
        if name.lower() in ("lanczos", "none"):
            out = lanczos(image, scale) if name.lower() == "lanczos" else image
        else:
            entry = self.catalog.find_upscaler(name)
            out = upscale(image, load_upscaler(entry.path), scale)
        report.step(1, 1)
        self.config.images_dir.mkdir(parents=True, exist_ok=True)
        file_name = f"{job.id}-0.png"
        write_png(self.config.images_dir / file_name, out, "", overwrite=True)
        return JobOutput([file_name], [""], {"upscaler": name, "scale": scale})


def _open(path: Path, mode: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert(mode)


def infotext_of(path: Path) -> str:
    return read_infotext(path) or ""
