"""The state one generation call shares across its passes: parameters, hooks, encoded prompts, progress.

Prompts are encoded once per (model, pass) and reused by every batch; extra-network calls have
already been cut out of the prompts (``generate.py`` applies them through the hooks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from huihua.adapters.controlnet import ControlledUNet, PreparedUnit, controlled_unet
from huihua.diffusion.guidance import Guidance
from huihua.diffusion.samplers import Callback as StepCallback
from huihua.model import Model
from huihua.pipelines.common import SizeCond, encode_pixels
from huihua.pipelines.conditioning import encode_conds
from huihua.pipelines.hooks import PipelineHooks
from huihua.pipelines.params import GenerationParams
from huihua.pipelines.resolved import ResolvedParams
from huihua.pipelines.sampling import PassSettings, Stage
from huihua.prompts.conditioning import EmbeddingLookup


@dataclass(frozen=True)
class Prompts:
    """The prompts of both passes with extra-network tags removed."""

    prompt: str
    negative_prompt: str
    hr_prompt: str
    hr_negative_prompt: str


@dataclass(eq=False)
class Job:
    """One generation call: resolved parameters, models, hooks and caches."""

    engine: Model
    rp: ResolvedParams
    prompts: Prompts
    hooks: PipelineHooks
    refiner: Model | None = None
    embeddings: Sequence[EmbeddingLookup | None] | None = None
    on_step: StepCallback | None = None
    control: tuple[PreparedUnit, ...] = ()  # ControlNet units, preprocessed once per generation
    tiled_vae: bool | None = None  # None: tile VAE calls by size
    used_embeddings: dict[str, None] = field(default_factory=dict)  # placed by the prompt encoder, in order
    _stages: dict[tuple, Stage] = field(default_factory=dict)

    @property
    def p(self) -> GenerationParams:
        """The resolved GenerationParams (concrete size and seeds)."""
        return self.rp.params

    def stage(self, engine: Model, hires: bool = False) -> Stage:
        """``engine`` with the first-pass (or hires-pass) prompts encoded by its towers; cached."""
        key = (id(engine), hires)
        if key not in self._stages:
            p, pr = self.p, self.prompts
            emb = self.embeddings if engine is self.engine else None
            used = self._note_embeddings if engine is self.engine else None
            if hires:
                conds = encode_conds(engine, pr.hr_prompt, pr.hr_negative_prompt, p.steps, p.cfg_scale,
                                     clip_skip=p.clip_skip, hires_steps=self.hires_steps, embeddings=emb,
                                     on_embeddings=used)
            else:
                conds = encode_conds(engine, pr.prompt, pr.negative_prompt, p.steps, p.cfg_scale,
                                     clip_skip=p.clip_skip, embeddings=emb, on_embeddings=used)
            self._stages[key] = Stage(engine, conds)
        return self._stages[key]

    def _note_embeddings(self, names: Sequence[str]) -> None:
        self.used_embeddings.update(dict.fromkeys(names))

    @property
    def hires_steps(self) -> int:
        """Steps of the hires second pass (0 in the parameters means the first pass's count)."""
        return self.p.hr_second_pass_steps or self.p.steps

    def refiner_stage(self, hires: bool = False) -> Stage | None:
        """The refiner with its own prompt encodings, or None."""
        return self.stage(self.refiner, hires) if self.refiner is not None else None

    def settings(self, width: int, height: int, hires: bool = False) -> PassSettings:
        """Sampler, guidance and SDXL size conditioning of a pass at ``width × height``."""
        p = self.p
        names = self.rp.hires if hires else self.rp.first
        original = (p.sdxl_original_height or height, p.sdxl_original_width or width)
        size = SizeCond(original, (p.sdxl_crop_top, p.sdxl_crop_left), (height, width),
                        p.sdxl_aesthetic_score, p.sdxl_negative_aesthetic_score)
        return PassSettings(names, p.eta, Guidance(p.cfg_scale, p.cfg_rescale), size)

    def controlled_unet(self, sigmas: torch.Tensor, width: int, height: int,
                        hires: bool = False) -> ControlledUNet | None:
        """The UNet with this job's ControlNet units for one pass down ``sigmas`` (None: no units)."""
        if not self.control:
            return None
        return controlled_unet(self.engine, self.control, sigmas, width, height, hires=hires)


def is_inpainting_model(engine: Model) -> bool:
    """Whether the UNet takes the 5 extra channels (mask + masked-image latents) of inpainting models."""
    return engine.spec.unet.in_channels == engine.spec.latent_channels + 5


def inpaint_concat(engine: Model, pixels: torch.Tensor, mask: torch.Tensor,
                   tiled: bool | None = None) -> torch.Tensor | None:
    """(B, 5, h, w) for 9-channel models: the binary mask and the latents of the picture with the mask blanked.

    ``pixels`` (B, 3, H, W) in [-1, 1]; ``mask`` (B or 1, 1, H, W) in {0, 1}, 1 = repaint. None for
    other models. ``tiled`` as ``common.encode_pixels``.
    """
    if not is_inpainting_model(engine):
        return None
    mask = mask.to(pixels.device, torch.float32)
    latents = encode_pixels(engine, pixels * (1.0 - mask), tiled)
    small = F.interpolate(mask, size=latents.shape[-2:]).expand(latents.shape[0], -1, -1, -1)
    return torch.cat([small.to(latents.dtype), latents], dim=1)


def blank_concat(engine: Model, batch: int, width: int, height: int,
                 tiled: bool | None = None) -> torch.Tensor | None:
    """The 9-channel conditioning when there is no picture: everything masked (txt2img, hires)."""
    if not is_inpainting_model(engine):
        return None
    pixels = torch.zeros(1, 3, height, width, device=engine.device)
    concat = inpaint_concat(engine, pixels, torch.ones(1, 1, height, width), tiled)
    assert concat is not None  # an inpainting model, checked above
    return concat.expand(batch, -1, -1, -1)
