"""The vocabulary and geometry of the procedural world: palette, shapes, scenes and caption specs.

Coordinates are fractions of the canvas side, ``x`` to the right and ``y`` downwards; an object's
``(cx, cy)`` is the centroid of its filled area (what a detector measures) and ``size`` its width
(diameter of a circle or of a star's outer circle, side of a square, base of a triangle, width of a
cross). Every other module of ``huihua.synth`` builds on these definitions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Shape = Literal["circle", "square", "triangle", "star", "cross"]
Category = Literal["single_object", "two_objects", "counting", "colors", "position", "color_attr"]

#: The palette, in RGB; objects and backgrounds take exactly these colours.
PALETTE: Mapping[str, tuple[int, int, int]] = MappingProxyType({
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 30),
    "purple": (140, 50, 190),
    "orange": (245, 130, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
})
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
PLURALS: Mapping[str, str] = MappingProxyType({
    "circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
    "cross": "crosses"})
SIZES: tuple[str, ...] = ("small", "large")
#: Width of an object as a fraction of the canvas side: about 1/5 (small) and 2/5 (large).
SIZE_RANGES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {"small": (0.18, 0.22), "large": (0.36, 0.44)})
#: A detected object whose larger bounding-box side exceeds this fraction of the canvas is large.
LARGE_THRESHOLD = 0.29
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
RELATIONS: tuple[str, ...] = ("above", "below", "left of", "right of")
INVERSE_RELATION: Mapping[str, str] = MappingProxyType(
    {"above": "below", "below": "above", "left of": "right of", "right of": "left of"})
CATEGORIES: tuple[str, ...] = ("single_object", "two_objects", "counting", "colors", "position",
                               "color_attr")
COUNT_RANGE = (1, 3)

#: A star's inner radius as a fraction of its outer radius.
STAR_INNER_RATIO = 0.4
#: Height of the upward-pointing equilateral triangle as a fraction of its base.
TRIANGLE_HEIGHT = math.sqrt(3.0) / 2.0
#: Width of a cross's arms as a fraction of the cross's width.
CROSS_ARM = 1.0 / 3.0

# Evaluation thresholds (a picture is judged with these) and the stricter ones the world is drawn
# with, so that every ground-truth render passes with a clear margin.
POSITION_EVAL_EDGE = 0.4      # "left": centroid x < 0.4; "right": x > 0.6; likewise y
POSITION_EVAL_CENTER = 0.15   # "center": |x - 0.5| and |y - 0.5| both < 0.15
POSITION_DRAW_EDGE = 0.32
POSITION_DRAW_CENTER = 0.08
RELATION_EVAL_MARGIN = 0.1    # "A above B": B's centroid at least 0.1 of the side below A's
RELATION_DRAW_MARGIN = 0.25
RELATION_DRAW_SLANT = 0.5     # drawn offset across the relation's axis <= 0.5 x offset along it
CANVAS_MARGIN = 0.02          # drawn objects keep this far from the canvas edge
OBJECT_GAP = 0.05             # drawn objects' bounding boxes are at least this far apart


@dataclass(frozen=True)
class SceneObject:
    """One filled shape: its colour name, width (fraction of side) and centroid (fractions)."""

    shape: str
    colour: str
    size: float
    cx: float
    cy: float

    @property
    def size_class(self) -> str:
        """"small" or "large", the size word this object fits."""
        return "large" if self.size >= 0.3 else "small"

    def extent(self) -> tuple[float, float, float, float]:
        """Bounding box (left, top, right, bottom) in fractions of the canvas side."""
        dl, dt, dr, db = shape_extent(self.shape, self.size)
        return self.cx - dl, self.cy - dt, self.cx + dr, self.cy + db


@dataclass(frozen=True)
class Scene:
    """A picture of the world: a flat background colour and non-overlapping objects."""

    background: str
    objects: tuple[SceneObject, ...]


@dataclass(frozen=True)
class ObjectClaim:
    """What a caption says about one kind of object; None means the caption leaves it free."""

    shape: str
    colour: str | None = None
    count: int = 1
    size: str | None = None
    position: str | None = None


@dataclass(frozen=True)
class CaptionSpec:
    """The meaning of a caption: its GenEval category, claimed objects, relation and background.

    With a ``relation``, ``objects[0]`` stands in that relation to ``objects[1]``. In the
    ``counting`` category each claim's count is exact; elsewhere every count is 1 ("at least one").
    """

    category: str
    objects: tuple[ObjectClaim, ...]
    relation: str | None = None
    background: str | None = None


def shape_extent(shape: str, size: float) -> tuple[float, float, float, float]:
    """Distances (left, top, right, bottom) from a shape's centroid to its bounding box sides."""
    half = size / 2.0
    if shape == "triangle":
        height = size * TRIANGLE_HEIGHT
        return half, 2.0 * height / 3.0, half, height / 3.0
    if shape == "star":
        sx = half * math.sin(math.radians(72.0))
        return sx, half, sx, half * math.cos(math.radians(36.0))
    return half, half, half, half


def shape_area(shape: str, size: float) -> float:
    """Filled area of a shape of width ``size`` (in the square of size's unit)."""
    if shape == "circle":
        return math.pi * size * size / 4.0
    if shape == "square":
        return size * size
    if shape == "triangle":
        return size * size * TRIANGLE_HEIGHT / 2.0
    if shape == "cross":
        return size * size * (2.0 * CROSS_ARM - CROSS_ARM * CROSS_ARM)
    if shape == "star":
        outer = size / 2.0
        return 5.0 * outer * outer * STAR_INNER_RATIO * math.sin(math.radians(36.0))
    raise ValueError(f"unknown shape {shape!r}")


def position_holds(cx: float, cy: float, position: str, edge: float = POSITION_EVAL_EDGE,
                   center: float = POSITION_EVAL_CENTER) -> bool:
    """Whether a centroid (fractions of the side) lies in the named part of the canvas."""
    if position == "left":
        return cx < edge
    if position == "right":
        return cx > 1.0 - edge
    if position == "top":
        return cy < edge
    if position == "bottom":
        return cy > 1.0 - edge
    if position == "center":
        return abs(cx - 0.5) < center and abs(cy - 0.5) < center
    raise ValueError(f"unknown position {position!r}")


def relation_offsets(a: tuple[float, float], b: tuple[float, float],
                     relation: str) -> tuple[float, float]:
    """(offset along the relation's direction, offset across it) of centroid ``a`` from ``b``."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    if relation == "above":
        return -dy, dx
    if relation == "below":
        return dy, dx
    if relation == "left of":
        return -dx, dy
    if relation == "right of":
        return dx, dy
    raise ValueError(f"unknown relation {relation!r}")


def relation_holds(a: tuple[float, float], b: tuple[float, float], relation: str,
                   margin: float = RELATION_EVAL_MARGIN) -> bool:
    """Whether centroid ``a`` stands in ``relation`` to centroid ``b`` by at least ``margin``."""
    along, _ = relation_offsets(a, b, relation)
    return along > margin


def relation_clear(a: tuple[float, float], b: tuple[float, float], relation: str) -> bool:
    """Whether a drawn pair shows ``relation`` unmistakably (large offset, little slant)."""
    along, across = relation_offsets(a, b, relation)
    return along >= RELATION_DRAW_MARGIN and abs(across) <= RELATION_DRAW_SLANT * along
