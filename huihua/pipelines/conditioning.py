"""Conditioning inside the sampler: prompt schedules, composable diffusion (AND) and classifier-free guidance.

``encode_conds`` turns the prompt and negative prompt into per-step lookups (``MultiCond`` and
``CondSchedule`` from ``huihua.prompts.conditioning``). ``GuidedDenoiser`` is the ``denoise(x,
sigma)`` the samplers call: at each step it picks the conditionings in effect, runs every AND part
and the uncond through the UNet in one batched forward per context length, and combines them as
A1111 does: ``uncond + Σ weight_i · cfg_scale · (cond_i − uncond)``, then CFG rescale. The uncond
pass is skipped when the scale is 1 and the weights sum to 1 (it would cancel out).

The step counter counts sampler steps (a second-order sampler's two calls of one step share it):
``on_step`` advances it, and prompt editing ``[a:b:when]`` switches at the step the schedule says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from huihua.prompts.conditioning import CondSchedule, MultiCond, build_cond_schedule, build_multicond
from huihua.prompts.parser import get_learned_conditioning_prompt_schedules

if TYPE_CHECKING:
    from huihua.engine import Engine
    from huihua.prompts.conditioning import EmbeddingLookup

LabelFn = Callable[[torch.Tensor, bool], torch.Tensor]  # (pooled (1, P), is_uncond) -> y (1, adm)
# A UNet stand-in such as ``ControlledUNet``: (x, t, context, y=..., cond_mask=(B,) bool) -> output.
ControlledUNetFn = Callable[..., torch.Tensor]


@dataclass(frozen=True, eq=False)
class PromptConds:
    """A prompt's AND parts over the steps and the negative prompt's schedule (None: no uncond pass)."""

    cond: MultiCond
    uncond: CondSchedule | None


def needs_uncond(cond: MultiCond, cfg_scale: float) -> bool:
    """Whether guidance needs the uncond prediction (not when scale 1 and the weights sum to 1)."""
    total = sum(weight for _, weight in cond.parts)
    return not (cfg_scale == 1.0 and abs(total - 1.0) < 1e-9)


def encode_conds(
    engine: Engine,
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
    from huihua.prompts.encode import text_encode_fn

    encode = text_encode_fn(engine, clip_skip, embeddings, on_embeddings)
    with torch.inference_mode():
        cond = build_multicond(prompt, encode, steps, hires_steps)
        if not needs_uncond(cond, cfg_scale):
            return PromptConds(cond, None)
        schedule = get_learned_conditioning_prompt_schedules([negative_prompt], steps, hires_steps)[0]
        return PromptConds(cond, build_cond_schedule(schedule, encode))


@dataclass(frozen=True)
class Guidance:
    """The guidance numbers: CFG scale and CFG rescale (Lin et al. 2023, eq. 15-16)."""

    cfg_scale: float
    cfg_rescale: float = 0.0


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

    ``unet`` replaces ``engine.unet`` (ControlNet); it is told which rows of each batched forward
    are conditional (``cond_mask``), so "ControlNet is more important" can spare the uncond rows.
    """

    def __init__(self, engine: Engine, conds: PromptConds, guidance: Guidance, *, label: LabelFn | None = None,
                 concat: torch.Tensor | None = None, blend: LatentBlend | None = None, first_step: int = 0,
                 unet: ControlledUNetFn | None = None):
        from huihua.diffusion.parametrization import make_denoiser

        self.engine, self.conds, self.guidance = engine, conds, guidance
        self.label, self.concat, self.blend, self.unet = label, concat, blend, unet
        self.step = first_step
        self._inputs: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor] | None = None
        self._denoise = make_denoiser(self._model, engine.model_sampling)

    def on_step(self, step: int, *_: object) -> None:
        """Sampler callback: step ``step`` (relative to this run) is done."""
        self.step += 1

    def _model(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert self._inputs is not None
        context, y, concat, cond_mask = self._inputs
        if concat is not None:
            x = torch.cat([x, concat.to(x.dtype)], dim=1)
        if self.unet is not None:
            return self.unet(x, t, context, y=y, cond_mask=cond_mask)
        return self.engine.unet(x, t, context, y=y)

    def _terms(self) -> list[tuple[torch.Tensor, torch.Tensor | None, bool]]:
        """(context, pooled, is_uncond) of every forward this step needs: AND parts, then uncond."""
        terms = [(ctx, pooled, False) for ctx, pooled, _ in self.conds.cond.at(self.step)]
        if self.conds.uncond is not None:
            terms.append((*self.conds.uncond.at(self.step), True))
        return terms

    def _run(self, x: torch.Tensor, sigma: torch.Tensor, terms: list) -> list[torch.Tensor]:
        """Denoise x under every term; one batched forward per context length."""
        b = x.shape[0]
        out: list[torch.Tensor | None] = [None] * len(terms)
        groups: dict[int, list[int]] = {}
        for i, (ctx, _, _) in enumerate(terms):
            groups.setdefault(ctx.shape[1], []).append(i)
        for idxs in groups.values():
            n = len(idxs)
            context = torch.cat([terms[i][0].to(x.device).expand(b, -1, -1) for i in idxs])
            y = None
            if self.label is not None:
                y = torch.cat([self.label(terms[i][1], terms[i][2]).to(x.device).expand(b, -1) for i in idxs])
            concat = None if self.concat is None else self.concat.repeat(n, 1, 1, 1)
            cond_mask = torch.tensor([not terms[i][2] for i in idxs for _ in range(b)])
            self._inputs = (context, y, concat, cond_mask)
            try:
                results = self._denoise(x.repeat(n, 1, 1, 1), sigma.reshape(-1).expand(b).repeat(n)).chunk(n)
            finally:
                self._inputs = None
            for i, r in zip(idxs, results):
                out[i] = r
        return out  # type: ignore[return-value]

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        parts = self.conds.cond.at(self.step)
        outs = self._run(x, sigma, self._terms())
        if self.conds.uncond is None:
            result = sum(w * c for (_, _, w), c in zip(parts, outs))
        else:
            uncond, scale = outs[-1], self.guidance.cfg_scale
            result = uncond.clone()
            for (_, _, w), c in zip(parts, outs):
                result += (c - uncond) * (w * scale)
            result = self._rescale(result, outs[0]) if self.guidance.cfg_rescale > 0 else result
        assert isinstance(result, torch.Tensor)
        return self.blend.apply(result) if self.blend is not None else result

    def _rescale(self, guided: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """CFG rescale: match the guided prediction's std to the cond prediction's, mixed by ``cfg_rescale``."""
        dims = tuple(range(1, guided.ndim))
        ratio = cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
        phi = self.guidance.cfg_rescale
        return phi * guided * ratio + (1 - phi) * guided
