"""Judge a picture against its caption with the detector, in GenEval's six categories.

Semantics (as GenEval's, on the world's shapes): single object - an object of the shape is there;
two objects - both are there (two distinct objects); counting - exactly N objects match the claim;
colors - an object of the shape has the colour; position - two distinct matching objects whose
centroids stand in the relation (by `RELATION_EVAL_MARGIN` of the side); color_attr - both objects
with their own colours. Every other detail a caption states (size, a part of the canvas, the
background) is checked too: the caption is the truth about the picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np

from huihua.synth.captions import parse_caption
from huihua.synth.detector import Detection, Detections, DetectorParams, detect
from huihua.synth.scene import (
    PLURALS,
    CaptionSpec,
    ObjectClaim,
    position_holds,
    relation_holds,
)


@dataclass(frozen=True)
class ScoreResult:
    """Verdict on one picture: its caption's category, whether it is right, and why."""

    category: str
    correct: bool
    details: str


def claim_matches(detection: Detection, claim: ObjectClaim) -> bool:
    """Whether a detected object has every attribute the claim states."""
    return (detection.shape == claim.shape
            and (claim.colour is None or detection.colour == claim.colour)
            and (claim.size is None or detection.size == claim.size)
            and (claim.position is None
                 or position_holds(detection.cx, detection.cy, claim.position)))


def _describe(claim: ObjectClaim, plural: bool = False) -> str:
    """Short noun phrase for messages, e.g. "small red circle"."""
    noun = PLURALS[claim.shape] if plural else claim.shape
    words = [claim.size, claim.colour, noun]
    text = " ".join(w for w in words if w)
    return f"{text} ({claim.position})" if claim.position else text


def _judge_counts(spec: CaptionSpec, found: Detections) -> tuple[bool, str]:
    """Counting: each claim matches exactly its count of objects."""
    for claim in spec.objects:
        n = sum(claim_matches(d, claim) for d in found.objects)
        if n != claim.count:
            return False, f"found {n} {_describe(claim, plural=True)}, caption says {claim.count}"
    return True, "counts match"


def _judge_objects(spec: CaptionSpec, found: Detections) -> tuple[bool, str]:
    """Presence (and relation): distinct objects matching each claim, in the stated relation."""
    candidates = [[i for i, d in enumerate(found.objects) if claim_matches(d, claim)]
                  for claim in spec.objects]
    for claim, options in zip(spec.objects, candidates, strict=True):
        if not options:
            return False, f"no {_describe(claim)} found"
    pool = sorted({i for options in candidates for i in options})
    for chosen in permutations(pool, len(spec.objects)):
        if not all(i in options for i, options in zip(chosen, candidates, strict=False)):
            continue
        if spec.relation is None:
            return True, "all objects found"
        a, b = (found.objects[i] for i in chosen)
        if relation_holds((a.cx, a.cy), (b.cx, b.cy), spec.relation):
            return True, (f"{_describe(spec.objects[0])} is {spec.relation} "
                          f"{_describe(spec.objects[1])}")
    if spec.relation is not None:
        return False, (f"{_describe(spec.objects[0])} is not {spec.relation} "
                       f"{_describe(spec.objects[1])}")
    return False, "the claimed objects are not distinct objects"


def judge(spec: CaptionSpec, found: Detections) -> ScoreResult:
    """Score already-detected objects against a caption spec."""
    if spec.background is not None and found.background != spec.background:
        return ScoreResult(spec.category, False,
                           f"background is {found.background}, caption says {spec.background}")
    if spec.category == "counting":
        correct, details = _judge_counts(spec, found)
    else:
        correct, details = _judge_objects(spec, found)
    return ScoreResult(spec.category, correct, details)


def score(image: np.ndarray, caption: str | CaptionSpec,
          params: DetectorParams = DetectorParams()) -> ScoreResult:
    """Whether an RGB uint8 picture shows what its caption (text or spec) says."""
    spec = parse_caption(caption) if isinstance(caption, str) else caption
    return judge(spec, detect(image, params))
