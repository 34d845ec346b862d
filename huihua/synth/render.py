"""Rasterise a `Scene` to an RGB array: flat background, filled shapes, supersampled edges.

Each object's coverage is estimated on a ``supersample`` x ``supersample`` grid per pixel over the
object's bounding box only, and the pixel is blended ``background + coverage * (colour - background)``;
a fully covered pixel is therefore exactly the palette colour.
"""

from __future__ import annotations

import math

import numpy as np

from huihua.errors import ParameterError
from huihua.synth.scene import (CROSS_ARM, PALETTE, STAR_INNER_RATIO, TRIANGLE_HEIGHT, Scene,
                                SceneObject)

_STAR_HALF_SECTOR = math.pi / 5.0  # 36 degrees between an outer and the next inner vertex


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, size: float) -> np.ndarray:
    """Boolean mask of sample points (offsets from the centroid, in pixels) inside the shape."""
    half = size / 2.0
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "cross":
        arm = size * CROSS_ARM / 2.0
        ax, ay = np.abs(dx), np.abs(dy)
        return ((ax <= half) & (ay <= arm)) | ((ax <= arm) & (ay <= half))
    if shape == "triangle":
        height = size * TRIANGLE_HEIGHT
        from_apex = dy + 2.0 * height / 3.0
        return (from_apex >= 0.0) & (from_apex <= height) & (np.abs(dx) <= from_apex * half / height)
    if shape == "star":
        return _inside_star(dx, dy, half)
    raise ParameterError(f"scene: unknown shape {shape!r}")


def _inside_star(dx: np.ndarray, dy: np.ndarray, outer: float) -> np.ndarray:
    """Inside test of a five-pointed star pointing up, by folding every angle onto one edge."""
    rho = np.hypot(dx, dy)
    phi = np.arctan2(dx, -dy)  # 0 straight up, growing clockwise
    psi = np.abs(np.mod(phi, 2.0 * _STAR_HALF_SECTOR) - _STAR_HALF_SECTOR)
    psi = _STAR_HALF_SECTOR - psi  # 0 at an outer vertex, 36 degrees at an inner one
    inner = outer * STAR_INNER_RATIO
    # Edge from the outer vertex O=(0, outer) to the inner vertex I=(inner sin36, inner cos36), in a
    # frame where the sample is P=(rho sin psi, rho cos psi); P is inside when on the centre's side.
    ix, iy = inner * math.sin(_STAR_HALF_SECTOR), inner * math.cos(_STAR_HALF_SECTOR)
    ex, ey = ix, iy - outer
    px, py = rho * np.sin(psi), rho * np.cos(psi) - outer
    cross_p = ex * py - ey * px
    cross_centre = ex * (-outer)
    return cross_p * cross_centre >= 0.0


def _draw(canvas: np.ndarray, obj: SceneObject, background: np.ndarray, supersample: int) -> None:
    """Blend one object into ``canvas`` (float, H x W x 3) over its bounding box."""
    side = canvas.shape[0]
    left, top, right, bottom = obj.extent()
    x0, y0 = max(int(math.floor(left * side)), 0), max(int(math.floor(top * side)), 0)
    x1, y1 = min(int(math.ceil(right * side)), side), min(int(math.ceil(bottom * side)), side)
    if x1 <= x0 or y1 <= y0:
        return
    offsets = (np.arange(supersample) + 0.5) / supersample
    xs = (np.arange(x0, x1)[:, None] + offsets[None, :]).ravel() - obj.cx * side
    ys = (np.arange(y0, y1)[:, None] + offsets[None, :]).ravel() - obj.cy * side
    inside = _inside(obj.shape, xs[None, :], ys[:, None], obj.size * side)
    coverage = inside.reshape(y1 - y0, supersample, x1 - x0, supersample).mean(axis=(1, 3))
    colour = np.asarray(PALETTE[obj.colour], dtype=np.float64)
    region = canvas[y0:y1, x0:x1]
    covered = coverage > 0.0
    region[covered] = background + coverage[covered, None] * (colour - background)


def render(scene: Scene, size: int = 64, supersample: int = 4) -> np.ndarray:
    """Draw ``scene`` as a ``(size, size, 3)`` uint8 RGB array; deterministic, interiors exact."""
    if size < 8:
        raise ParameterError(f"render: size must be at least 8, got {size}")
    if supersample < 1:
        raise ParameterError(f"render: supersample must be at least 1, got {supersample}")
    if scene.background not in PALETTE:
        raise ParameterError(f"scene: unknown background colour {scene.background!r}")
    background = np.asarray(PALETTE[scene.background], dtype=np.float64)
    canvas = np.empty((size, size, 3), dtype=np.float64)
    canvas[...] = background
    for obj in scene.objects:
        if obj.colour not in PALETTE:
            raise ParameterError(f"scene: unknown object colour {obj.colour!r}")
        _draw(canvas, obj, background, supersample)
    return np.rint(canvas).astype(np.uint8)
