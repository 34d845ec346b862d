"""Conditioning inside the sampler: prompt schedules, composable diffusion (AND) and classifier-free guidance.

``encode_conds`` turns the prompt and negative prompt into per-step lookups (``MultiCond`` and
``CondSchedule`` from ``huihua.prompts.conditioning``). ``GuidedDenoiser`` is the ``denoise(x,
sigma)`` the samplers call: at each step it hands the conditionings in effect (every AND part and
the uncond) to classifier-free guidance (``huihua.diffusion.guidance``), which batches the UNet
forwards and combines them as A1111 does.

The step counter counts sampler steps (a second-order sampler's two calls of one step share it):
``on_step`` advances it, and prompt editing ``[a:b:when]`` switches at the step the schedule says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from huihua.diffusion.guidance import CFGDenoiser, Guidance, Term, needs_uncond
from huihua.model import Model
from huihua.prompts.conditioning import (
    CondSchedule,
    EmbeddingLookup,
    MultiCond,
    build_cond_schedule,
    build_multicond,
)
from huihua.prompts.encode import text_encode_fn
from huihua.prompts.parser import get_learned_conditioning_prompt_schedules

LabelFn = Callable[[torch.Tensor | None, bool], torch.Tensor]  # (pooled (1, P), is_uncond) -> y (1, adm)
# A UNet stand-in such as ``ControlledUNet``: (x, t, context, y=..., cond_mask=(B,) bool) -> output.
ControlledUNetFn = Callable[..., torch.Tensor]


@dataclass(frozen=True, eq=False)
class PromptConds:
    """A prompt's AND parts over the steps and the negative prompt's schedule (None: no uncond pass)."""

    cond: MultiCond
    uncond: CondSchedule | None


def encode_conds(
    engine: Model,
    prompt: str,
    negative_prompt: str,
    steps: int,
    cfg_scale: float,
    *,
    clip_skip: int = 1,
    hires_steps: int | None = None,
    embeddings: Sequence[EmbeddingLookup | None] | None = None,
    on_embeddings: Callable[[Sequence[str]], None] | None = None,
) -> PromptConds:
    """Encode a (network-free) prompt and negative prompt into per-step conditionings.

    ``on_embeddings`` is told the names of the embeddings each encoded text placed ("TI hashes").
    """
    encode = text_encode_fn(engine, clip_skip, embeddings, on_embeddings)
    with torch.inference_mode():
        cond = build_multicond(prompt, encode, steps, hires_steps)
        if not needs_uncond([weight for _, weight in cond.parts], cfg_scale):
            return PromptConds(cond, None)
        schedule = get_learned_conditioning_prompt_schedules([negative_prompt], steps, hires_steps)[0]
        return PromptConds(cond, build_cond_schedule(schedule, encode))


@dataclass(frozen=True)
class LatentBlend:
    """Inpainting with latent blending: ``keep`` (1, 1, h, w) is 1 where the original latent stays."""

    init_latent: torch.Tensor
    keep: torch.Tensor

    def apply(self, latents: torch.Tensor) -> torch.Tensor:
        """The original latent where ``keep`` is 1, ``latents`` elsewhere."""
        return self.init_latent * self.keep + latents * (1 - self.keep)


class GuidedDenoiser:
    """``denoise(x, sigma) -> x0`` with per-step prompts, AND, CFG, 9-channel concat and latent blending.

    The guidance itself is ``diffusion.guidance.CFGDenoiser``; this class picks the conditionings in
    effect at the current sampler step, adds the inpainting concat to the UNet input and blends the
    original latents back. ``unet`` replaces ``model.unet`` (ControlNet); it is told which rows of
    each batched forward are conditional (``cond_mask``).
    """

    def __init__(self, engine: Model, conds: PromptConds, guidance: Guidance, *, label: LabelFn | None = None,
                 concat: torch.Tensor | None = None, blend: LatentBlend | None = None, first_step: int = 0,
                 unet: ControlledUNetFn | None = None):
        self.engine, self.conds, self.label = engine, conds, label
        self.concat, self.blend, self.unet = concat, blend, unet
        self.step = first_step
        self._cfg = CFGDenoiser(self._unet, engine.model_sampling, guidance, self._terms)

    def on_step(self, step: int, *_: object) -> None:
        """Sampler callback: step ``step`` (relative to this run) is done."""
        self.step += 1

    def _unet(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None,
              cond_mask: torch.Tensor) -> torch.Tensor:
        if self.concat is not None:
            n = x.shape[0] // self.concat.shape[0]
            x = torch.cat([x, self.concat.repeat(n, 1, 1, 1).to(x.dtype)], dim=1)
        if self.unet is not None:
            return self.unet(x, t, context, y=y, cond_mask=cond_mask)
        return self.engine.unet(x, t, context, y=y)

    def _terms(self) -> list[Term]:
        """The terms of the current step: AND parts, then the uncond."""
        terms = [Term(ctx, self._label(pooled, False), weight) for ctx, pooled, weight in self.conds.cond.at(self.step)]
        if self.conds.uncond is not None:
            ctx, pooled = self.conds.uncond.at(self.step)
            terms.append(Term(ctx, self._label(pooled, True), 1.0, uncond=True))
        return terms

    def _label(self, pooled: torch.Tensor | None, negative: bool) -> torch.Tensor | None:
        return None if self.label is None else self.label(pooled, negative)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        result = self._cfg(x, sigma)
        return self.blend.apply(result) if self.blend is not None else result
