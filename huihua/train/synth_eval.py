"""Scoring a loaded model on the procedural world: the generator `evaluate` calls, and the prompt sets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from huihua.assets import EMBEDDED_MODEL_SETTINGS
from huihua.errors import ParameterError
from huihua.synth import evaluate as ev


@dataclass(frozen=True)
class SynthEvalParams:
    """How pictures are made for the benchmark (the defaults are the shipped model's best)."""

    steps: int = EMBEDDED_MODEL_SETTINGS.steps
    cfg_scale: float = EMBEDDED_MODEL_SETTINGS.cfg_scale
    sampler: str = EMBEDDED_MODEL_SETTINGS.sampler_name
    seeds: tuple[int, ...] = (0,)
    limit: int | None = None  # first N prompts per prompt set (per category), None = all


def make_generate_fn(engine, params: SynthEvalParams) -> Callable[[str, int], np.ndarray]:
    """A ``generate_fn(prompt, seed) -> uint8 (H, W, 3)`` driving ``engine.generate`` at native size."""

    def generate(prompt: str, seed: int) -> np.ndarray:
        result = engine.generate(prompt=prompt, seed=seed, steps=params.steps, cfg_scale=params.cfg_scale,
                                 sampler_name=params.sampler)
        return np.asarray(result.images[0].convert("RGB"), dtype=np.uint8)

    return generate


def limited(prompts: list[str], per_category: int, limit: int | None) -> list[str]:
    """The first ``limit`` prompts of each category block (prompt sets are grouped by category)."""
    if limit is None:
        return prompts
    if limit < 1:
        raise ParameterError(f"--limit must be at least 1, got {limit}")
    return [p for i, p in enumerate(prompts) if i % per_category < limit]


def prompt_sets(limit: int | None = None) -> dict[str, list[str]]:
    """The fixed in-distribution and held-out prompt sets, optionally cut to ``limit`` per category."""

    return {"in_distribution": limited(ev.in_distribution_prompts(), ev.IN_DISTRIBUTION_PER_CATEGORY, limit),
            "heldout": limited(ev.heldout_prompts(), ev.HELDOUT_PER_CATEGORY, limit)}
