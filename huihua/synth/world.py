"""The procedural world: seeded sampling of caption specs, scenes, images and training batches.

A sample starts from a `CaptionSpec` (what the caption will claim), builds a `Scene` that makes
every claim true with a clear margin (rejection sampling of positions; objects never overlap and
stay inside the canvas; an object never has the background's colour), renders it and words the
caption with variation. Scenes contain exactly the objects the caption mentions; size, position,
colour and background are free wherever the caption does not mention them.

`HELDOUT` lists the compositions kept out of the ``"train"`` split, in its captions *and* its
pictures: three colour-shape pairs (no purple triangle, orange circle or white star is ever drawn)
and two relations between shape pairs (no circle is ever drawn above a square, no triangle to the
right of a star, judged with the evaluator's margin). The ``"heldout"`` split draws captions that
each claim at least one of them, in the colors, counting, color_attr and position categories.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from huihua.errors import HuihuaError, ParameterError
from huihua.synth.captions import caption_text, parse_caption
from huihua.synth.render import render
from huihua.synth.scene import (
    CANVAS_MARGIN,
    CATEGORIES,
    COLOURS,
    INVERSE_RELATION,
    OBJECT_GAP,
    POSITION_DRAW_CENTER,
    POSITION_DRAW_EDGE,
    POSITIONS,
    RELATION_DRAW_MARGIN,
    RELATION_DRAW_SLANT,
    RELATIONS,
    SHAPES,
    SIZE_RANGES,
    SIZES,
    CaptionSpec,
    ObjectClaim,
    Scene,
    SceneObject,
    relation_holds,
    shape_extent,
)

SPLITS: tuple[str, ...] = ("train", "heldout")
HELDOUT_CATEGORIES: tuple[str, ...] = ("colors", "counting", "color_attr", "position")


@dataclass(frozen=True)
class Heldout:
    """Compositions absent from the training split: (colour, shape) pairs and relations."""

    colour_shapes: tuple[tuple[str, str], ...]
    relations: tuple[tuple[str, str, str], ...]

    def holds_pair(self, colour: str | None, shape: str) -> bool:
        """Whether ``colour`` ``shape`` is a held-out pair."""
        return (colour, shape) in self.colour_shapes

    def holds_relation(self, shape_a: str, relation: str, shape_b: str) -> bool:
        """Whether "shape_a relation shape_b" (or its mirror statement) is held out."""
        mirrored = (shape_b, INVERSE_RELATION[relation], shape_a)
        return (shape_a, relation, shape_b) in self.relations or mirrored in self.relations

    def holds_spec(self, spec: CaptionSpec) -> bool:
        """Whether a caption claims any held-out composition."""
        if any(self.holds_pair(c.colour, c.shape) for c in spec.objects):
            return True
        if spec.relation is not None:
            a, b = spec.objects
            return self.holds_relation(a.shape, spec.relation, b.shape)
        return False

    def holds_scene(self, scene: Scene) -> bool:
        """Whether a picture shows any held-out composition (relations with the eval margin)."""
        return self.holds_objects(scene.objects)

    def holds_objects(self, objs: tuple[SceneObject, ...]) -> bool:
        """Whether these objects show any held-out composition."""
        if any(self.holds_pair(o.colour, o.shape) for o in objs):
            return True
        for shape_a, relation, shape_b in self.relations:
            for a in objs:
                for b in objs:
                    if (a is not b and a.shape == shape_a and b.shape == shape_b
                            and relation_holds((a.cx, a.cy), (b.cx, b.cy), relation)):
                        return True
        return False


HELDOUT = Heldout(
    colour_shapes=(("purple", "triangle"), ("orange", "circle"), ("white", "star")),
    relations=(("circle", "above", "square"), ("triangle", "right of", "star")),
)

_P_SIZE = 0.25
_P_POSITION = 0.25
_P_BACKGROUND = 0.25
_P_LARGE = {1: 0.5, 2: 0.4, 3: 0.25}
_OPPOSITE_POSITIONS = (("left", "right"), ("right", "left"), ("top", "bottom"), ("bottom", "top"))
_PLACEMENT_TRIES = 60
_SPEC_TRIES = 1000


def _choice(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    """One option, uniformly."""
    return options[int(rng.integers(len(options)))]


def _maybe(rng: np.random.Generator, p: float, options: tuple[str, ...]) -> str | None:
    """With probability ``p`` one option, else None."""
    return _choice(rng, options) if rng.random() < p else None


def _claim(rng: np.random.Generator, shape: str, colour: str | None, count: int = 1,
           p_position: float = _P_POSITION) -> ObjectClaim:
    """A claim with the given shape and colour, and maybe a size and a position."""
    return ObjectClaim(shape=shape, colour=colour, count=count, size=_maybe(rng, _P_SIZE, SIZES),
                       position=_maybe(rng, p_position, POSITIONS))


def _pair_claims(rng: np.random.Generator, shapes: tuple[str, str],
                 colours: tuple[str | None, str | None]) -> tuple[ObjectClaim, ObjectClaim]:
    """Two claims without relation; sometimes at opposite sides of the canvas."""
    positions: tuple[str | None, str | None] = (None, None)
    if rng.random() < _P_POSITION:
        positions = _OPPOSITE_POSITIONS[int(rng.integers(len(_OPPOSITE_POSITIONS)))]
    return tuple(ObjectClaim(shape=s, colour=c, size=_maybe(rng, _P_SIZE, SIZES), position=p)
                 for s, c, p in zip(shapes, colours, positions, strict=True))  # type: ignore[return-value]


def _forced_pair(rng: np.random.Generator, forced: bool) -> tuple[str, str]:
    """(colour, shape): a held-out pair when ``forced``, else any pair."""
    if forced:
        colour, shape = HELDOUT.colour_shapes[int(rng.integers(len(HELDOUT.colour_shapes)))]
        return colour, shape
    return _choice(rng, COLOURS), _choice(rng, SHAPES)


def _position_spec(rng: np.random.Generator, forced: bool) -> tuple[tuple[ObjectClaim, ...], str]:
    """Claims and relation of a position caption (held-out composition when ``forced``)."""
    if forced and rng.random() < 0.5:
        shape_a, relation, shape_b = HELDOUT.relations[int(rng.integers(len(HELDOUT.relations)))]
        if rng.random() < 0.5:
            shape_a, relation, shape_b = shape_b, INVERSE_RELATION[relation], shape_a
        coloured = rng.random() < 0.5
        colours = (_choice(rng, COLOURS), _choice(rng, COLOURS)) if coloured else (None, None)
    else:
        colour_a, shape_a = _forced_pair(rng, forced)
        colour_b, shape_b = _forced_pair(rng, False)
        relation = _choice(rng, RELATIONS)
        coloured = forced or rng.random() < 0.5 or shape_a == shape_b
        colours = (colour_a, colour_b) if coloured else (None, None)
        if forced and rng.random() < 0.5:
            shape_a, shape_b = shape_b, shape_a
            colours = (colour_b, colour_a) if coloured else (None, None)
    if shape_a == shape_b:  # two objects of one shape are told apart by their colours
        first = colours[0] or _choice(rng, COLOURS)
        colours = (first, _choice(rng, [c for c in COLOURS if c != first]))
    claims = tuple(ObjectClaim(shape=s, colour=c, size=_maybe(rng, _P_SIZE, SIZES))
                   for s, c in zip((shape_a, shape_b), colours, strict=True))
    return claims, relation


def _claims_for(rng: np.random.Generator, category: str,
                forced: bool) -> tuple[tuple[ObjectClaim, ...], str | None]:
    """Claims (and relation) of one caption of ``category``."""
    if category == "single_object":
        return (_claim(rng, _choice(rng, SHAPES), None),), None
    if category == "colors":
        colour, shape = _forced_pair(rng, forced)
        return (_claim(rng, shape, colour),), None
    if category == "counting":
        colour, shape = _forced_pair(rng, forced)
        colour_or_none = colour if forced or rng.random() < 0.5 else None
        count = int(rng.integers(1, 4))
        return (_claim(rng, shape, colour_or_none, count, p_position=0.2),), None
    if category == "two_objects":
        first = _choice(rng, SHAPES)
        second = _choice(rng, [s for s in SHAPES if s != first])
        return _pair_claims(rng, (first, second), (None, None)), None
    if category == "color_attr":
        colour_a, shape_a = _forced_pair(rng, forced)
        colour_b, shape_b = _forced_pair(rng, False)
        while (colour_a, shape_a) == (colour_b, shape_b):
            colour_b = _choice(rng, COLOURS)
        if rng.random() < 0.5:
            (colour_a, shape_a), (colour_b, shape_b) = (colour_b, shape_b), (colour_a, shape_a)
        return _pair_claims(rng, (shape_a, shape_b), (colour_a, colour_b)), None
    if category == "position":
        return _position_spec(rng, forced)
    raise ParameterError(f"category must be one of {', '.join(CATEGORIES)}, got {category!r}")


def sample_spec(rng: np.random.Generator, split: str = "train",
                category: str | None = None) -> CaptionSpec:
    """A random caption spec of ``split`` (category uniform unless given)."""
    _check_split(split)
    heldout = split == "heldout"
    if category is None:
        category = _choice(rng, HELDOUT_CATEGORIES if heldout else CATEGORIES)
    if heldout and category not in HELDOUT_CATEGORIES:
        raise ParameterError(f"category: the heldout split has {', '.join(HELDOUT_CATEGORIES)}")
    for _ in range(_SPEC_TRIES):
        claims, relation = _claims_for(rng, category, forced=heldout)
        claimed = {c.colour for c in claims}
        background = _maybe(rng, _P_BACKGROUND, tuple(c for c in COLOURS if c not in claimed))
        spec = CaptionSpec(category=category, objects=claims, relation=relation,
                           background=background)
        if HELDOUT.holds_spec(spec) == heldout:
            return spec
    raise HuihuaError(f"world: no {split} caption of category {category} found")  # unreachable


def _centroid_box(shape: str, size: float,
                  position: str | None) -> tuple[float, float, float, float]:
    """(x_lo, x_hi, y_lo, y_hi) where the centroid may go: inside the canvas and the position."""
    left, top, right, bottom = shape_extent(shape, size)
    x_lo, x_hi = left + CANVAS_MARGIN, 1.0 - right - CANVAS_MARGIN
    y_lo, y_hi = top + CANVAS_MARGIN, 1.0 - bottom - CANVAS_MARGIN
    edge, centre = POSITION_DRAW_EDGE, POSITION_DRAW_CENTER
    if position == "left":
        x_hi = min(x_hi, edge)
    elif position == "right":
        x_lo = max(x_lo, 1.0 - edge)
    elif position == "top":
        y_hi = min(y_hi, edge)
    elif position == "bottom":
        y_lo = max(y_lo, 1.0 - edge)
    elif position == "center":
        x_lo, x_hi = max(x_lo, 0.5 - centre), min(x_hi, 0.5 + centre)
        y_lo, y_hi = max(y_lo, 0.5 - centre), min(y_hi, 0.5 + centre)
    return x_lo, x_hi, y_lo, y_hi


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float | None:
    """A uniform number in [lo, hi], or None for an empty interval."""
    return None if hi < lo else lo + (hi - lo) * float(rng.random())


def _related_centroid(rng: np.random.Generator, box: tuple[float, float, float, float],
                      anchor: tuple[float, float], relation: str) -> tuple[float, float] | None:
    """A centroid in ``box`` standing clearly in ``relation`` to ``anchor`` (None if impossible)."""
    axis = 1 if relation in ("above", "below") else 0
    sign = -1.0 if relation in ("above", "left of") else 1.0
    lo, hi = box[2 * axis], box[2 * axis + 1]
    c_lo, c_hi = box[2 - 2 * axis], box[3 - 2 * axis]
    base, across = anchor[axis], anchor[1 - axis]
    along_lo, along_hi = (lo - base, hi - base) if sign > 0 else (base - hi, base - lo)
    along = _uniform(rng, max(along_lo, RELATION_DRAW_MARGIN), along_hi)
    if along is None:
        return None
    spread = RELATION_DRAW_SLANT * along
    other = _uniform(rng, max(c_lo, across - spread), min(c_hi, across + spread))
    if other is None:
        return None
    coord = base + sign * along
    return (coord, other) if axis == 0 else (other, coord)


def _apart(a: SceneObject, b: SceneObject) -> bool:
    """Whether two objects' bounding boxes are separated by at least the drawing gap."""
    al, at, ar, ab = a.extent()
    bl, bt, br, bb = b.extent()
    return (ar + OBJECT_GAP <= bl or br + OBJECT_GAP <= al
            or ab + OBJECT_GAP <= bt or bb + OBJECT_GAP <= at)


def _object_kinds(rng: np.random.Generator, spec: CaptionSpec, background: str,
                  split: str) -> list[tuple[str, str, float, str | None]]:
    """(shape, colour, size, position) of every object the spec asks for, free details drawn."""
    n_objects = sum(c.count for c in spec.objects)
    kinds = []
    for claim in spec.objects:
        for _ in range(claim.count):
            colour = claim.colour
            if colour is None:
                allowed = [c for c in COLOURS if c != background
                           and not (split == "train" and HELDOUT.holds_pair(c, claim.shape))]
                colour = _choice(rng, allowed)
            size_class = claim.size
            if size_class is None:
                size_class = "large" if rng.random() < _P_LARGE.get(n_objects, 0.25) else "small"
            lo, hi = SIZE_RANGES[size_class]
            size = lo + (hi - lo) * float(rng.random())
            kinds.append((claim.shape, colour, size, claim.position))
    return kinds


def _place(rng: np.random.Generator, kinds: list[tuple[str, str, float, str | None]],
           relation: str | None, split: str) -> tuple[SceneObject, ...] | None:
    """Positions for ``kinds`` satisfying every constraint, by rejection; None when none found."""
    boxes = [_centroid_box(shape, size, pos) for shape, _, size, pos in kinds]
    if any(b[1] < b[0] or b[3] < b[2] for b in boxes):
        return None
    # With a relation, the second object is the anchor: place it first, the first relative to it.
    order = [1, 0] if relation is not None else list(range(len(kinds)))
    for _ in range(_PLACEMENT_TRIES):
        placed: dict[int, SceneObject] = {}
        for i in order:
            shape, colour, size, _ = kinds[i]
            x_lo, x_hi, y_lo, y_hi = boxes[i]
            if relation is not None and i == 0:
                anchor = placed[1]
                centroid = _related_centroid(rng, boxes[0], (anchor.cx, anchor.cy), relation)
                if centroid is None:
                    break
                cx, cy = centroid
            else:
                cx = x_lo + (x_hi - x_lo) * float(rng.random())
                cy = y_lo + (y_hi - y_lo) * float(rng.random())
            obj = SceneObject(shape=shape, colour=colour, size=size, cx=cx, cy=cy)
            if not all(_apart(obj, other) for other in placed.values()):
                break
            placed[i] = obj
        else:
            objects = tuple(placed[i] for i in range(len(kinds)))
            if split != "train" or not HELDOUT.holds_objects(objects):
                return objects
    return None


def _check_split(split: str) -> None:
    """Raise ParameterError for an unknown split name."""
    if split not in SPLITS:
        raise ParameterError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def sample_scene(rng: np.random.Generator, split: str = "train",
                 category: str | None = None) -> tuple[Scene, CaptionSpec]:
    """A random (scene, caption spec) of ``split`` where the scene makes the spec true."""
    for _ in range(_SPEC_TRIES):
        spec = sample_spec(rng, split, category)
        claimed = {c.colour for c in spec.objects}
        background = spec.background or _choice(rng, [c for c in COLOURS if c not in claimed])
        objects = _place(rng, _object_kinds(rng, spec, background, split), spec.relation, split)
        if objects is not None:
            return Scene(background=background, objects=objects), spec
    raise HuihuaError(f"world: could not place a {split} scene")  # unreachable in practice


def scene_for_spec(rng: np.random.Generator, spec: CaptionSpec, split: str = "heldout") -> Scene:
    """A random scene that makes ``spec`` true; ``"train"`` also keeps held-out pictures out."""
    _check_split(split)
    claimed = {c.colour for c in spec.objects}
    for _ in range(_SPEC_TRIES // 10):
        background = spec.background or _choice(rng, [c for c in COLOURS if c not in claimed])
        if background in claimed:
            break
        objects = _place(rng, _object_kinds(rng, spec, background, split), spec.relation, split)
        if objects is not None:
            return Scene(background=background, objects=objects)
    raise ParameterError(f"caption: the world cannot draw {spec}")


def render_caption(caption: str | CaptionSpec, seed: int, size: int = 64) -> np.ndarray:
    """A ground-truth picture of a caption: the oracle ``generate_fn`` for `evaluate`."""
    spec = parse_caption(caption) if isinstance(caption, str) else caption
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), len(SPLITS)]))
    return render(scene_for_spec(rng, spec), size=size)


def _as_rng(seed_or_rng: int | np.random.Generator, split: str) -> np.random.Generator:
    """The generator itself, or a fresh one seeded from (seed, split)."""
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(np.random.SeedSequence([int(seed_or_rng), SPLITS.index(split)]))


def sample_pair(seed_or_rng: int | np.random.Generator, split: str = "train", size: int = 64,
                supersample: int = 4) -> tuple[np.ndarray, str, CaptionSpec]:
    """One (uint8 ``(size, size, 3)`` image, caption, spec) of ``split``; same seed, same bytes."""
    _check_split(split)
    rng = _as_rng(seed_or_rng, split)
    scene, spec = sample_scene(rng, split)
    caption = caption_text(spec, rng)
    return render(scene, size=size, supersample=supersample), caption, spec


def make_batch(seed: int, n: int, split: str = "train", size: int = 64,
               supersample: int = 4) -> tuple[np.ndarray, list[str]]:
    """``n`` training pairs as (uint8 ``(n, size, size, 3)`` images, captions), from ``seed``."""
    _check_split(split)
    if n < 1:
        raise ParameterError(f"n must be at least 1, got {n}")
    rng = _as_rng(seed, split)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions = []
    for i in range(n):
        images[i], caption, _ = sample_pair(rng, split, size, supersample)
        captions.append(caption)
    return images, captions
