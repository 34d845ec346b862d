"""Seeded noise: the same seed gives the same noise on any device, image by image.

Every image of a batch has its own seed and its own CPU random stream, so a batch of N images with
seeds s..s+N-1 equals N single runs.  Noise is drawn in float32 on the CPU and then moved to the
latent's device and dtype.

- :func:`seeded_randn`: one draw per image (the initial latent noise).
- :class:`GaussianNoiseSampler`: fresh N(0, 1) noise at every call, continuing each image's stream
  (by default after one draw, which the pipeline used for the initial noise: this is the stream
  A1111 draws its ancestral noise from when its RNG source is "CPU").
- :class:`BrownianTreeNoiseSampler`: the normalised increment (W(sigma_next) - W(sigma)) /
  sqrt(|sigma_next - sigma|) of one Brownian motion W per image, fixed by the seed over the whole
  sigma range, so SDE samplers see consistent noise whatever the step count (the virtual Brownian
  tree of Li et al. 2020, "Scalable Gradients for Stochastic Differential Equations").

Both samplers follow k-diffusion's contract ``noise_sampler(sigma, sigma_next) -> noise like x``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from huihua.errors import ParameterError

NoiseSampler = Callable[[float, float], Tensor]

_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (splitmix64 chained); used to seed tree nodes."""
    h = 0
    for part in parts:
        h = _splitmix64(h ^ (part & _MASK64))
    return h >> 1


def _to_device(noise: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Move CPU float32 noise to ``device`` and ``dtype`` without blocking the host on CUDA."""
    if device.type == "cuda":
        return noise.pin_memory().to(device, non_blocking=True).to(dtype)
    return noise.to(device=device, dtype=dtype)


def _check_seeds(seeds: Sequence[int], batch: int) -> list[int]:
    seeds = [int(s) for s in seeds]
    if len(seeds) != batch:
        raise ParameterError(f"seeds: {len(seeds)} seeds for a batch of {batch}")
    return seeds


def seeded_randn(
    shape: Sequence[int], seeds: Sequence[int], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Tensor:
    """N(0, 1) noise of ``shape`` (B, ...), image i drawn from a CPU generator seeded with seeds[i]."""
    seeds = _check_seeds(seeds, shape[0])
    draws = [torch.randn(tuple(shape[1:]), generator=torch.Generator().manual_seed(s)) for s in seeds]
    return _to_device(torch.stack(draws), torch.device(device), dtype)


class GaussianNoiseSampler:
    """Fresh N(0, 1) noise like ``x`` at every call, from one seeded CPU stream per image."""

    def __init__(self, x: Tensor, seeds: Sequence[int], skip: int = 1) -> None:
        self._device, self._dtype = x.device, x.dtype
        self._shape = tuple(x.shape[1:])
        self._generators = [torch.Generator().manual_seed(s) for s in _check_seeds(seeds, x.shape[0])]
        for g in self._generators:
            for _ in range(skip):
                torch.randn(self._shape, generator=g)

    def __call__(self, sigma: float, sigma_next: float) -> Tensor:
        """The next draw of every image's stream, stacked (B, ...); the sigmas are not used."""
        draws = [torch.randn(self._shape, generator=g) for g in self._generators]
        return _to_device(torch.stack(draws), self._device, self._dtype)


@dataclass(frozen=True, eq=False)
class _Node:
    """An interval [a, b] of the tree with the Brownian values (B, ...) at its ends; ``index`` names it."""

    index: int
    a: float
    b: float
    wa: Tensor
    wb: Tensor


def _default_depth(t0: float, t1: float) -> int:
    """Levels so that a leaf is at most t0 / 100 wide (2^-20 of the range when t0 is 0), capped at 30."""
    width = t0 / 100 if t0 > 0 else (t1 - t0) * 2.0**-20
    return min(30, max(1, math.ceil(math.log2((t1 - t0) / width))))


class VirtualBrownianTree:
    """One Brownian motion W per seed on [t0, t1] with W(t0) = 0, every value a function of (seed, t).

    W(t1) and the midpoint of every dyadic interval are drawn from generators seeded by (seed, node)
    (Brownian-bridge bisection, ``depth`` levels); inside a leaf, W(t) is a bridge sample seeded by
    t itself.  The last root-to-leaf path is kept, so nearby queries cost few draws.  Values are
    float32 CPU tensors (B, *shape), one row per seed; rows never mix.  By default a leaf is at most
    t0 / 100 wide, so two sigmas of a schedule practically never share one.
    """

    def __init__(
        self, seeds: Sequence[int], t0: float, t1: float, shape: Sequence[int], depth: int | None = None
    ) -> None:
        if not t1 > t0:
            raise ParameterError(f"Brownian tree: interval [{t0}, {t1}] is empty")
        self.seeds, self.t0, self.t1 = [int(s) for s in seeds], float(t0), float(t1)
        self.depth = depth if depth is not None else _default_depth(self.t0, self.t1)
        self._shape = tuple(shape)
        self._gen = torch.Generator()
        root_end = self._normal(0).mul_(math.sqrt(self.t1 - self.t0))
        self._path = [_Node(1, self.t0, self.t1, torch.zeros_like(root_end), root_end)]

    def _normal(self, *key: int) -> Tensor:
        out = torch.empty((len(self.seeds), *self._shape))
        for row, seed in zip(out, self.seeds, strict=True):
            self._gen.manual_seed(mix_seed(seed, *key))
            torch.randn(self._shape, generator=self._gen, out=row)
        return out

    def _child(self, node: _Node, t: float) -> _Node:
        mid = 0.5 * (node.a + node.b)
        w_mid = self._normal(1, node.index).mul_(math.sqrt(0.25 * (node.b - node.a)))
        w_mid.add_(node.wa, alpha=0.5).add_(node.wb, alpha=0.5)
        if t < mid:
            return _Node(2 * node.index, node.a, mid, node.wa, w_mid)
        return _Node(2 * node.index + 1, mid, node.b, w_mid, node.wb)

    def __call__(self, t: float) -> Tensor:
        """W(t) (B, *shape), t clamped to [t0, t1]."""
        t = min(max(float(t), self.t0), self.t1)
        old, path = self._path, self._path[:1]
        for level in range(1, self.depth + 1):
            parent = path[-1]
            want = 2 * parent.index + (0 if t < 0.5 * (parent.a + parent.b) else 1)
            reuse = level < len(old) and old[level].index == want  # an index names one node
            path.append(old[level] if reuse else self._child(parent, t))
        self._path = path
        leaf = path[-1]
        if t in (leaf.a, leaf.b):
            return leaf.wa if t == leaf.a else leaf.wb
        frac = (t - leaf.a) / (leaf.b - leaf.a)
        spread = math.sqrt((t - leaf.a) * (leaf.b - t) / (leaf.b - leaf.a))
        w = self._normal(2, leaf.index, _float_bits(t)).mul_(spread)
        return w.add_(leaf.wa, alpha=1 - frac).add_(leaf.wb, alpha=frac)

    def normal_at(self, t: float) -> Tensor:
        """Standard normal draws (B, *shape) fixed by (seed, t), independent of W."""
        return self._normal(3, _float_bits(float(t)))


def _float_bits(t: float) -> int:
    return int.from_bytes(struct.pack("<d", t), "little")


class BrownianTreeNoiseSampler:
    """Brownian-increment noise for SDE samplers: one virtual Brownian motion per image, seeded.

    Times are sigmas: ``sigma_min`` and ``sigma_max`` bound the tree (queries are clamped to them).
    """

    def __init__(
        self, x: Tensor, sigma_min: float, sigma_max: float, seeds: Sequence[int], depth: int | None = None
    ) -> None:
        seeds = _check_seeds(seeds, x.shape[0])
        lo, hi = float(sigma_min), float(sigma_max)
        hi = hi if hi > lo else lo + 1.0  # a one-level schedule: any non-empty interval will do
        self._device, self._dtype = x.device, x.dtype
        self._tree = VirtualBrownianTree(seeds, lo, hi, x.shape[1:], depth)
        self._recent: dict[float, Tensor] = {}

    def _w(self, t: float) -> Tensor:
        w = self._recent.get(t)
        if w is None:
            w = self._tree(t)
            if len(self._recent) >= 4:
                self._recent.pop(next(iter(self._recent)))
            self._recent[t] = w
        return w

    def __call__(self, sigma: float, sigma_next: float) -> Tensor:
        """(W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|) for every image, like x."""
        tree = self._tree
        a = min(max(float(sigma), tree.t0), tree.t1)
        b = min(max(float(sigma_next), tree.t0), tree.t1)
        if a == b:  # an empty interval (repeated or out-of-range sigmas): plain seeded noise
            return _to_device(tree.normal_at(a), self._device, self._dtype)
        return _to_device((self._w(b) - self._w(a)) / math.sqrt(abs(b - a)), self._device, self._dtype)
