"""The world's benchmark: fixed prompt sets and a GenEval-style evaluation of any generator.

`in_distribution_prompts` draws 24 captions per category from the training split and
`heldout_prompts` 10 per category from the held-out compositions (`world.HELDOUT`), both from
fixed seeds in canonical wording. `evaluate` asks a ``generate_fn(prompt, seed)`` for pictures,
scores each with the detector and reports accuracy per category, overall (the mean of the
categories, as GenEval does) and seconds per image.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from huihua.errors import ParameterError
from huihua.synth.captions import caption_text, parse_caption
from huihua.synth.detector import DetectorParams
from huihua.synth.scene import CATEGORIES, CaptionSpec
from huihua.synth.scoring import score
from huihua.synth.world import HELDOUT_CATEGORIES, sample_spec, scene_for_spec

_IN_DISTRIBUTION_SEED = 20_240_601
_HELDOUT_SEED = 20_240_602
IN_DISTRIBUTION_PER_CATEGORY = 24
HELDOUT_PER_CATEGORY = 10


@dataclass(frozen=True)
class PromptResult:
    """One generated picture's verdict."""

    prompt: str
    seed: int
    category: str
    correct: bool
    details: str
    seconds: float


@dataclass(frozen=True)
class CategoryAccuracy:
    """Correct pictures out of all pictures of one category."""

    category: str
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        """Fraction correct (0 for an empty category)."""
        return self.correct / self.total if self.total else 0.0


@dataclass(frozen=True)
class EvalReport:
    """Accuracy per category and overall, with every verdict and the generation speed."""

    categories: tuple[CategoryAccuracy, ...]
    results: tuple[PromptResult, ...]
    seconds_per_image: float

    @property
    def overall(self) -> float:
        """Mean of the category accuracies (GenEval's overall score)."""
        scored = [c.accuracy for c in self.categories if c.total]
        return sum(scored) / len(scored) if scored else 0.0

    @property
    def image_accuracy(self) -> float:
        """Fraction of all pictures judged correct."""
        return sum(r.correct for r in self.results) / len(self.results) if self.results else 0.0

    def accuracy(self, category: str) -> float:
        """Accuracy of one category."""
        for entry in self.categories:
            if entry.category == category:
                return entry.accuracy
        raise ParameterError(f"category {category!r} is not in this report")

    def format(self) -> str:
        """A small text table: one line per category, then overall and speed."""
        lines = [f"{'category':<14} {'accuracy':>8} {'n':>6}"]
        for entry in self.categories:
            lines.append(f"{entry.category:<14} {entry.accuracy:>8.3f} {entry.total:>6}")
        lines.append(f"{'overall':<14} {self.overall:>8.3f} {len(self.results):>6}")
        lines.append(f"seconds per image: {self.seconds_per_image:.4f}")
        return "\n".join(lines)


def _drawable(spec: CaptionSpec, split: str) -> bool:
    """Whether the world's ``split`` can picture ``spec`` (some captions imply held-out layouts)."""
    try:
        scene_for_spec(np.random.default_rng(0), spec, split)
    except ParameterError:
        return False
    return True


def _prompt_set(split: str, categories: tuple[str, ...], per_category: int, seed: int) -> list[str]:
    """``per_category`` distinct canonical captions of each category, from a fixed seed."""
    rng = np.random.default_rng(seed)
    prompts: list[str] = []
    for category in categories:
        chosen: list[str] = []
        for _ in range(per_category * 200):
            spec = sample_spec(rng, split, category)
            text = caption_text(spec)
            if text not in chosen and _drawable(spec, split):
                chosen.append(text)
            if len(chosen) == per_category:
                break
        prompts.extend(chosen)
    return prompts


def in_distribution_prompts() -> list[str]:
    """The fixed in-distribution prompt set: 24 training-split captions per category (144)."""
    return _prompt_set("train", CATEGORIES, IN_DISTRIBUTION_PER_CATEGORY, _IN_DISTRIBUTION_SEED)


def heldout_prompts() -> list[str]:
    """The fixed held-out prompt set: 10 held-out-composition captions per category (40)."""
    return _prompt_set("heldout", HELDOUT_CATEGORIES, HELDOUT_PER_CATEGORY, _HELDOUT_SEED)


def _checked(image: object, prompt: str) -> np.ndarray:
    """The generator's picture as RGB uint8, or a ParameterError naming the prompt."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3:
        raise ParameterError(f"generate_fn must return RGB uint8 (H, W, 3), not so for {prompt!r}")
    return image


def evaluate(generate_fn: Callable[[str, int], np.ndarray], prompts: Sequence[str],
             seeds: Sequence[int], params: DetectorParams = DetectorParams(),
             progress: Callable[[PromptResult], None] | None = None) -> EvalReport:
    """Generate every (prompt, seed), score each picture, and report accuracy and speed."""
    if not prompts or not seeds:
        raise ParameterError("evaluate: prompts and seeds must not be empty")
    specs = [parse_caption(p) for p in prompts]  # fail before any generation on a bad prompt
    results: list[PromptResult] = []
    generating = 0.0
    for prompt, spec in zip(prompts, specs, strict=True):
        for seed in seeds:
            start = time.perf_counter()
            image = _checked(generate_fn(prompt, int(seed)), prompt)
            seconds = time.perf_counter() - start
            generating += seconds
            verdict = score(image, spec, params)
            result = PromptResult(prompt, int(seed), verdict.category, verdict.correct,
                                  verdict.details, seconds)
            results.append(result)
            if progress is not None:
                progress(result)
    categories = tuple(
        CategoryAccuracy(c, sum(r.correct for r in results if r.category == c),
                         sum(r.category == c for r in results))
        for c in CATEGORIES if any(r.category == c for r in results))
    return EvalReport(categories=categories, results=tuple(results),
                      seconds_per_image=generating / len(results))
