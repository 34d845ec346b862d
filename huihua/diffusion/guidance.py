"""Classifier-free guidance as a denoiser: the UNet under every conditioning a step needs, then combined.

CFG (Ho & Salimans 2022) with composable diffusion's weighted AND parts (Liu et al. 2022), as A1111
computes it: ``uncond + Σ weight_i · cfg_scale · (cond_i − uncond)``, then CFG rescale (Lin et al.
2023, eq. 15-16). The uncond forward is skipped when the scale is 1 and the weights sum to 1 (it
would cancel out). The terms of one step run through the UNet in one batched forward per context
length. Nothing here knows about prompts: the caller hands over the terms in effect at each call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from huihua.diffusion.parametrization import ModelSampling, make_denoiser

# The UNet as guidance calls it: (x, t, context, y, cond_mask) -> raw output (eps or v).
# ``cond_mask`` (B,) bool marks the conditional rows, so ControlNet's "ControlNet is more important"
# can spare the uncond rows.
GuidedUNet = Callable[[Tensor, Tensor, Tensor, Tensor | None, Tensor], Tensor]


@dataclass(frozen=True)
class Guidance:
    """The guidance numbers: CFG scale and CFG rescale (Lin et al. 2023, eq. 15-16)."""

    cfg_scale: float
    cfg_rescale: float = 0.0


@dataclass(frozen=True, eq=False)
class Term:
    """One forward a step needs: context (1, T, D), SDXL label y (1, adm) or None, AND weight, uncond or not."""

    context: Tensor
    y: Tensor | None
    weight: float
    uncond: bool = False


def needs_uncond(weights: Sequence[float], cfg_scale: float) -> bool:
    """Whether guidance needs the uncond prediction (not when scale 1 and the weights sum to 1)."""
    return not (cfg_scale == 1.0 and abs(sum(weights) - 1.0) < 1e-9)


def rescale(guided: Tensor, cond: Tensor, phi: float) -> Tensor:
    """CFG rescale: match the guided prediction's std to the cond prediction's, mixed by ``phi``."""
    dims = tuple(range(1, guided.ndim))
    ratio = cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
    return phi * guided * ratio + (1 - phi) * guided


def combine(conds: Sequence[tuple[float, Tensor]], uncond: Tensor | None, guidance: Guidance) -> Tensor:
    """The guided prediction from the weighted cond predictions and the uncond one (None: weighted sum)."""
    if uncond is None:
        total = sum(w * c for w, c in conds)
        assert isinstance(total, Tensor)
        return total
    result = uncond.clone()
    for w, c in conds:
        result += (c - uncond) * (w * guidance.cfg_scale)
    return rescale(result, conds[0][1], guidance.cfg_rescale) if guidance.cfg_rescale > 0 else result


class CFGDenoiser:
    """``denoise(x, sigma) -> x0`` under classifier-free guidance; ``terms()`` gives the terms of each call."""

    def __init__(self, unet: GuidedUNet, model_sampling: ModelSampling, guidance: Guidance,
                 terms: Callable[[], Sequence[Term]]) -> None:
        self.unet, self.guidance, self.terms = unet, guidance, terms
        self._inputs: tuple[Tensor, Tensor | None, Tensor] | None = None
        self._denoise = make_denoiser(self._model, model_sampling)

    def _model(self, x: Tensor, t: Tensor) -> Tensor:
        assert self._inputs is not None
        context, y, cond_mask = self._inputs
        return self.unet(x, t, context, y, cond_mask)

    def _run(self, x: Tensor, sigma: Tensor, terms: Sequence[Term]) -> list[Tensor]:
        """Denoise x under every term; one batched forward per context length."""
        b = x.shape[0]
        out: list[Tensor | None] = [None] * len(terms)
        groups: dict[int, list[int]] = {}
        for i, term in enumerate(terms):
            groups.setdefault(term.context.shape[1], []).append(i)
        for idxs in groups.values():
            n = len(idxs)
            context = torch.cat([terms[i].context.to(x.device).expand(b, -1, -1) for i in idxs])
            labels = [terms[i].y for i in idxs]
            y = None if labels[0] is None else torch.cat(
                [lab.to(x.device).expand(b, -1) for lab in labels if lab is not None]
            )
            cond_mask = torch.tensor([not terms[i].uncond for i in idxs for _ in range(b)])
            self._inputs = (context, y, cond_mask)
            try:
                results = self._denoise(x.repeat(n, 1, 1, 1), sigma.reshape(-1).expand(b).repeat(n)).chunk(n)
            finally:
                self._inputs = None
            for i, r in zip(idxs, results, strict=True):
                out[i] = r
        return [r for r in out if r is not None]

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        terms = list(self.terms())
        outs = self._run(x, sigma, terms)
        conds = [(t.weight, o) for t, o in zip(terms, outs, strict=True) if not t.uncond]
        uncond = next((o for t, o in zip(terms, outs, strict=True) if t.uncond), None)
        return combine(conds, uncond, self.guidance)
