"""Rasterise a `Scene` to an RGB array: flat background, filled shapes, supersampled edges.

Each object's coverage is estimated on a ``supersample`` x ``supersample`` grid per pixel over the
object's bounding box only, and the pixel is blended
``background + coverage * (colour - background)``; a fully covered pixel is therefore exactly the
palette colour.
"""

from __future__ import annotations

import math

import numpy as np

from huihua.errors import ParameterError
from huihua.synth.scene import (
    CROSS_ARM,
    PALETTE,
    STAR_INNER_RATIO,
    TRIANGLE_HEIGHT,
    Scene,
    SceneObject,
)

_STAR_HALF_SECTOR = math.pi / 5.0  # 36 degrees between an outer and the next inner vertex
# Unit vectors towards the five tips of an upward star, in image coordinates (y down).
_STAR_TIPS = tuple((math.sin(k * 2.0 * _STAR_HALF_SECTOR), -math.cos(k * 2.0 * _STAR_HALF_SECTOR))
                   for k in range(5))


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
        within = np.abs(dx) <= from_apex * (half / height)
        return (from_apex >= 0.0) & (from_apex <= height) & within
    if shape == "star":
        return _inside_star(dx, dy, half)
    raise ParameterError(f"scene: unknown shape {shape!r}")


def _inside_star(dx: np.ndarray, dy: np.ndarray, outer: float) -> np.ndarray:
    """Inside test of a five-pointed star pointing up, folding every point onto one edge.

    The point is expressed along the direction of its nearest tip (``along``) and across it
    (``across >= 0``); it is inside when on the centre's side of the edge from that tip to the
    neighbouring inner vertex.
    """
    along = np.full(np.broadcast_shapes(dx.shape, dy.shape), -np.inf)
    for ux, uy in _STAR_TIPS:
        along = np.maximum(along, dx * ux + dy * uy)
    across = np.sqrt(np.maximum(dx * dx + dy * dy - along * along, 0.0))
    inner = outer * STAR_INNER_RATIO
    # Edge from the tip (across 0, along outer) to the inner vertex (inner sin36, inner cos36).
    edge_across = inner * math.sin(_STAR_HALF_SECTOR)
    edge_along = inner * math.cos(_STAR_HALF_SECTOR) - outer
    # Sign of cross(edge, point - tip); the centre gives edge_across * (-outer) < 0.
    return edge_across * (along - outer) - edge_along * across <= 0.0


def shape_coverage(shape: str, size: float, cx: float, cy: float, x0: int, y0: int, width: int,
                   height: int, supersample: int = 4) -> np.ndarray:
    """Covered fraction of each pixel of the window ``[y0, y0+height) x [x0, x0+width)``.

    All lengths are in pixels: ``size`` is the shape's width, ``(cx, cy)`` its centroid.
    """
    offsets = (np.arange(supersample) + 0.5) / supersample
    xs = (np.arange(x0, x0 + width)[:, None] + offsets[None, :]).ravel() - cx
    ys = (np.arange(y0, y0 + height)[:, None] + offsets[None, :]).ravel() - cy
    inside = _inside(shape, xs[None, :], ys[:, None], size)
    counts = inside.reshape(height, supersample, width, supersample).sum(axis=(1, 3))
    return counts * (1.0 / (supersample * supersample))


def _draw(canvas: np.ndarray, obj: SceneObject, background: np.ndarray, supersample: int) -> None:
    """Blend one object into ``canvas`` (float, H x W x 3) over its bounding box."""
    side = canvas.shape[0]
    left, top, right, bottom = obj.extent()
    x0, y0 = max(math.floor(left * side), 0), max(math.floor(top * side), 0)
    x1, y1 = min(math.ceil(right * side), side), min(math.ceil(bottom * side), side)
    if x1 <= x0 or y1 <= y0:
        return
    coverage = shape_coverage(obj.shape, obj.size * side, obj.cx * side, obj.cy * side, x0, y0,
                              x1 - x0, y1 - y0, supersample)
    colour = np.asarray(PALETTE[obj.colour], dtype=np.float64)
    region = canvas[y0:y1, x0:x1]
    blend = background + coverage[..., None] * (colour - background)
    region[...] = np.where(coverage[..., None] > 0.0, blend, region)


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
