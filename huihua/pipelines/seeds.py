"""Seeds and initial noise: consecutive seeds per image, variation seeds (slerp) and "resize seed from".

Every image has its own seed and its own CPU generator (``huihua.diffusion.noise.seeded_randn``),
so a seed paints the same picture on any device and image k of a batch equals a single run with
seed + k. A1111's rules: the variation seed of image k is ``subseed + k``; its noise is mixed in by
spherical interpolation with weight ``subseed_strength``; with "resize seed from" the noise is drawn
at the old size and pasted, centred, into noise of the new size, so the composition survives a
change of size.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from huihua.diffusion.noise import seeded_randn

SEED_LIMIT = 2**32
MAX_IMAGES = 2**20  # room left above a random seed for seed + k


def random_seed() -> int:
    """A fresh random seed (what -1 stands for)."""
    return secrets.randbelow(SEED_LIMIT - MAX_IMAGES)


def resolve_seed(seed: int) -> int:
    """``seed``, or a random one for -1."""
    return random_seed() if seed == -1 else seed


def resolve_seeds(seed: int, count: int) -> list[int]:
    """``count`` consecutive seeds starting at ``seed``; -1 picks a random start."""
    start = resolve_seed(seed)
    return [start + k for k in range(count)]


@dataclass(frozen=True)
class NoiseRecipe:
    """How the initial noise of a batch is drawn: seeds, variation seeds and their strength, old size."""

    seeds: tuple[int, ...]
    subseeds: tuple[int, ...] = ()
    subseed_strength: float = 0.0
    resize_from: tuple[int, int] | None = None  # (height, width) in latent pixels

    def for_image(self, k: int) -> NoiseRecipe:
        """The recipe of image ``k`` alone."""
        sub = self.subseeds[k : k + 1] if self.subseeds else ()
        return NoiseRecipe((self.seeds[k],), sub, self.subseed_strength, self.resize_from)


def slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from ``low`` (t=0) to ``high`` (t=1), each image on its own sphere."""
    flat_lo, flat_hi = low.flatten(1).double(), high.flatten(1).double()
    unit_lo = flat_lo / flat_lo.norm(dim=1, keepdim=True)
    unit_hi = flat_hi / flat_hi.norm(dim=1, keepdim=True)
    dot = (unit_lo * unit_hi).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    near = dot.abs() > 0.9995  # nearly parallel: plain linear interpolation is exact enough
    safe = torch.where(near, torch.ones_like(sin_omega), sin_omega)
    a = torch.where(near, torch.full_like(dot, 1 - t), torch.sin((1 - t) * omega) / safe)
    b = torch.where(near, torch.full_like(dot, t), torch.sin(t * omega) / safe)
    return (a * flat_lo + b * flat_hi).reshape(low.shape).to(low.dtype)


def _paste_centred(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``source`` (B, C, h, w) placed at the centre of ``target`` (B, C, H, W), cropped where larger."""
    out = target.clone()
    (h, w), (th, tw) = source.shape[-2:], target.shape[-2:]
    dy, dx = (th - h) // 2, (tw - w) // 2
    ch, cw = min(h, th), min(w, tw)
    ty, tx, sy, sx = max(dy, 0), max(dx, 0), max(-dy, 0), max(-dx, 0)
    out[..., ty : ty + ch, tx : tx + cw] = source[..., sy : sy + ch, sx : sx + cw]
    return out


def create_noise(shape: Sequence[int], recipe: NoiseRecipe, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Initial noise (B, C, H, W) of a batch, drawn on the CPU and moved to ``device``/``dtype``."""
    shape = tuple(shape)
    batch, channels, height, width = shape
    draw_shape = shape
    if recipe.resize_from is not None and tuple(recipe.resize_from) != (height, width):
        draw_shape = (batch, channels, *recipe.resize_from)
    noise = seeded_randn(draw_shape, recipe.seeds)
    if recipe.subseed_strength > 0 and recipe.subseeds:
        noise = slerp(recipe.subseed_strength, noise, seeded_randn(draw_shape, recipe.subseeds))
    if draw_shape != shape:
        noise = _paste_centred(seeded_randn(shape, recipe.seeds), noise)
    return noise.to(device=device, dtype=dtype)


def noise_recipe(seeds: Sequence[int], subseed: int, subseed_strength: float,
                 resize_from_hw: tuple[int, int], downscale: int) -> NoiseRecipe:
    """The recipe of a batch: variation seed k is ``subseed + k``; resize-from in pixels -> latent pixels."""
    subseeds = tuple(subseed + k for k in range(len(seeds))) if subseed_strength > 0 else ()
    h, w = resize_from_hw
    resize = (h // downscale, w // downscale) if h > 0 and w > 0 else None
    return NoiseRecipe(tuple(seeds), subseeds, subseed_strength, resize)
