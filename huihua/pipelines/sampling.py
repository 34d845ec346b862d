"""One sampling pass: a model (and optionally the SDXL refiner after the switch) from x down a schedule.

The refiner switch follows A1111's default rule (by noise level, not by step count): the refiner
takes over at the first step whose timestep ``t`` satisfies ``(999 - t) / 1000 >= refiner_switch_at``
(0.8: the last fifth of the noise levels, ``t < 200``, where SDXL's refiner was trained). Both
halves share one noise sampler so ancestral and SDE samplers see one continuous noise stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from huihua.diffusion import samplers
from huihua.diffusion.guidance import Guidance
from huihua.diffusion.names import ResolvedNames
from huihua.diffusion.samplers import Callback as StepCallback
from huihua.errors import HuihuaError
from huihua.model import Model
from huihua.pipelines.common import SizeCond, sample, sdxl_label
from huihua.pipelines.conditioning import (
    ControlledUNetFn,
    GuidedDenoiser,
    LatentBlend,
    PromptConds,
)

ConcatFn = Callable[[Model], torch.Tensor | None]


@dataclass(frozen=True, eq=False)
class Stage:
    """A model with the conditionings encoded by its own text towers."""

    engine: Model
    conds: PromptConds


@dataclass(frozen=True)
class PassSettings:
    """How one pass samples: sampler, eta, guidance and SDXL size conditioning."""

    names: ResolvedNames  # sampler and schedule
    eta: float | None
    guidance: Guidance
    size: SizeCond


def _label_fn(engine: Model, size: SizeCond):
    if engine.spec.unet.adm_in_channels is None:
        return None

    def label(pooled: torch.Tensor | None, negative: bool) -> torch.Tensor:
        if pooled is None:
            raise HuihuaError(f"{engine.name}: the model needs a pooled text embedding and has none")
        return sdxl_label(engine, pooled, size, negative)

    return label


def refiner_switch_step(engine: Model, sigmas: torch.Tensor, switch_at: float) -> int:
    """Index of the first step the refiner runs (len(sigmas)-1 when it never does)."""
    table = engine.model_sampling.sigmas.to(torch.float64)
    n = len(sigmas) - 1
    for i in range(n):
        t = int(torch.argmin((table - float(sigmas[i])).abs()))
        if (999 - t) / 1000 >= switch_at:
            return i
    return n


def _denoiser(stage: Stage, settings: PassSettings, concat: ConcatFn, blend: LatentBlend | None,
              first_step: int, unet: ControlledUNetFn | None = None) -> GuidedDenoiser:
    return GuidedDenoiser(stage.engine, stage.conds, settings.guidance, label=_label_fn(stage.engine, settings.size),
                          concat=concat(stage.engine), blend=blend, first_step=first_step, unet=unet)


def run_pass(
    base: Stage,
    settings: PassSettings,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    seeds: Sequence[int],
    *,
    concat: ConcatFn = lambda engine: None,
    blend: LatentBlend | None = None,
    refiner: Stage | None = None,
    switch_at: float = 1.0,
    on_step: StepCallback | None = None,
    unet: ControlledUNetFn | None = None,
) -> torch.Tensor:
    """Sample ``x`` (already at ``sigmas[0]``) to the end of ``sigmas``; refiner after the switch.

    ``unet`` (the ControlNet-controlled UNet of this pass) stands in for the base model's UNet.
    """
    n = len(sigmas) - 1
    k = refiner_switch_step(base.engine, sigmas, switch_at) if refiner is not None else n
    segments = [(base, 0, k), (refiner, k, n)] if refiner is not None else [(base, 0, n)]
    segments = [(stage, a, b) for stage, a, b in segments if b > a and stage is not None]
    noise_sampler = None
    if len(segments) > 1:
        info = settings.names.sampler
        host = sigmas.detach().to("cpu", torch.float64).tolist()
        noise_sampler = samplers.default_noise(info, x, host, list(seeds))
    for stage, start, end in segments:
        denoise = _denoiser(stage, settings, concat, blend, start, unet if stage is base else None)

        def hook(step: int, x_: torch.Tensor, denoised: torch.Tensor, sigma: float,
                 _d: GuidedDenoiser = denoise, _start: int = start) -> None:
            _d.on_step(step)
            if on_step is not None:
                on_step(_start + step, x_, denoised, sigma)

        x = sample(settings.names.sampler, denoise, x, sigmas[start : end + 1], seeds, eta=settings.eta,
                   on_step=hook, noise_sampler=noise_sampler)
    return blend.apply(x) if blend is not None else x
