"""A deterministic detector for pictures of the procedural world, in plain numpy.

1. Background: the palette colour most of the border pixels are nearest to.
2. Segmentation: each pixel is explained as ``background + alpha * (colour - background)`` for
   every other palette colour (anti-aliased edges are such blends); the best-fitting colour wins
   when the fit is within ``colour_tolerance`` and ``alpha >= 0.5``.
3. Objects: 4-connected components of equal colour (label propagation with pointer jumping);
   components smaller than ``min_area`` or without a solid core (1-pixel rims) are dropped.
4. Shape from geometry: fill of the bounding box (square ~1, circle ~0.785, cross ~0.56,
   triangle ~0.5, star ~0.34), centroid offset inside the box (an upward triangle's centroid sits
   1/6 of its height below the box centre) and the farthest pixel's distance from the centroid
   relative to sqrt(area); size from the larger box side; position from the centroid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from huihua.errors import ParameterError
from huihua.synth.scene import COLOURS, LARGE_THRESHOLD, PALETTE


@dataclass(frozen=True)
class DetectorParams:
    """Tolerances of the detector; the defaults are validated on ground-truth renders."""

    colour_tolerance: float = 48.0   # RGB distance a pixel may sit from its explaining blend
    border_agreement: float = 0.5    # share of border pixels the background colour must take
    min_area: float = 0.003          # smallest object, as a fraction of the canvas area
    min_aspect: float = 0.6          # bounding-box width / height outside these is no shape
    max_aspect: float = 1.7


@dataclass(frozen=True)
class Detection:
    """One detected object; coordinates and sizes are fractions of the canvas side."""

    shape: str | None
    colour: str
    size: str
    cx: float
    cy: float
    width: float
    height: float
    area: float  # fraction of the canvas area


@dataclass(frozen=True)
class Detections:
    """What the detector sees: the background colour (None if unclear) and the objects."""

    background: str | None
    objects: tuple[Detection, ...]


def _palette_array() -> np.ndarray:
    """The palette as a float (8, 3) array, in `COLOURS` order."""
    return np.asarray([PALETTE[c] for c in COLOURS], dtype=np.float64)


def _background(pixels: np.ndarray, palette: np.ndarray, params: DetectorParams) -> int | None:
    """Index of the background colour from the border pixels, or None when they disagree."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    dist = np.linalg.norm(border[:, None, :] - palette[None, :, :], axis=-1)
    nearest = np.argmin(dist, axis=1)
    close = dist[np.arange(len(border)), nearest] <= params.colour_tolerance
    votes = np.bincount(nearest[close], minlength=len(palette))
    best = int(np.argmax(votes))
    return best if votes[best] >= params.border_agreement * len(border) else None


def _segment(pixels: np.ndarray, palette: np.ndarray, bg: int, tolerance: float) -> np.ndarray:
    """Per-pixel colour index of the object covering it, -1 for background or unexplained."""
    base = palette[bg]
    others = np.array([k for k in range(len(palette)) if k != bg])
    directions = palette[others] - base                              # (K, 3)
    offset = pixels - base                                           # (H, W, 3)
    alpha = np.einsum("hwc,kc->hwk", offset, directions) / np.sum(directions ** 2, axis=1)
    alpha = np.clip(alpha, 0.0, 1.0)
    residual = np.linalg.norm(offset[:, :, None, :] - alpha[..., None] * directions, axis=-1)
    best = np.argmin(residual, axis=-1)
    best_residual = np.take_along_axis(residual, best[..., None], axis=-1)[..., 0]
    best_alpha = np.take_along_axis(alpha, best[..., None], axis=-1)[..., 0]
    labels = others[best]
    return np.where((best_residual <= tolerance) & (best_alpha >= 0.5), labels, -1)


def connected_components(classes: np.ndarray) -> np.ndarray:
    """Label 4-connected regions of equal non-negative class; -1 outside (ids are pixel indices)."""
    h, w = classes.shape
    fg = classes >= 0
    labels = np.where(fg, np.arange(h * w).reshape(h, w), -1)
    link_x = fg[:, :-1] & (classes[:, :-1] == classes[:, 1:])
    link_y = fg[:-1, :] & (classes[:-1, :] == classes[1:, :])
    while True:
        new = labels.copy()
        pair = np.minimum(new[:, :-1], new[:, 1:])
        new[:, :-1] = np.where(link_x, pair, new[:, :-1])
        new[:, 1:] = np.where(link_x, np.minimum(new[:, 1:], pair), new[:, 1:])
        pair = np.minimum(new[:-1, :], new[1:, :])
        new[:-1, :] = np.where(link_y, pair, new[:-1, :])
        new[1:, :] = np.where(link_y, np.minimum(new[1:, :], pair), new[1:, :])
        flat = new.ravel()
        flat[fg.ravel()] = flat[flat[fg.ravel()]]  # pointer jumping: a label is a pixel index
        if np.array_equal(new, labels):
            return new
        labels = new


def classify_shape(mask: np.ndarray, params: DetectorParams = DetectorParams()) -> str | None:
    """Shape name of a filled object's boolean mask (cropped to its bounding box), or None."""
    h, w = mask.shape
    area = float(mask.sum())
    aspect = w / h
    if area == 0 or not params.min_aspect <= aspect <= params.max_aspect:
        return None
    ys, xs = np.nonzero(mask)
    fill = area / (w * h)
    offset = ((ys.mean() + 0.5) - h / 2.0) / h  # centroid below the box centre, per box height
    reach = math.sqrt(float(np.max((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))) + 0.5
    spread = reach / math.sqrt(area)
    if fill >= 0.88:
        return "square"
    if fill >= 0.68:
        return "circle" if spread < 0.66 else None
    if offset >= 0.11:
        return "triangle"
    if fill >= 0.46:
        return "cross" if offset < 0.06 else None
    if fill >= 0.22:
        return "star" if spread >= 0.8 else None
    return None


def detect(image: np.ndarray, params: DetectorParams = DetectorParams()) -> Detections:
    """Find the background and the objects of an RGB uint8 ``(H, W, 3)`` picture."""
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 8:
        raise ParameterError(f"image must be an RGB (H, W, 3) array of at least 8x8, got {image.shape}")
    pixels = image.astype(np.float64)
    palette = _palette_array()
    bg = _background(pixels, palette, params)
    if bg is None:
        return Detections(background=None, objects=())
    classes = _segment(pixels, palette, bg, params.colour_tolerance)
    labels = connected_components(classes)
    h, w = classes.shape
    side = float(max(h, w))
    flat = labels.ravel()
    fg = flat >= 0
    areas = np.bincount(flat[fg], minlength=h * w)
    core = np.zeros((h, w), dtype=bool)
    core[1:-1, 1:-1] = ((labels[1:-1, 1:-1] >= 0) & (labels[1:-1, 1:-1] == labels[:-2, 1:-1])
                        & (labels[1:-1, 1:-1] == labels[2:, 1:-1])
                        & (labels[1:-1, 1:-1] == labels[1:-1, :-2])
                        & (labels[1:-1, 1:-1] == labels[1:-1, 2:]))
    cores = np.bincount(flat[core.ravel()], minlength=h * w)
    keep = np.nonzero((areas >= params.min_area * h * w) & (cores > 0))[0]
    objects = []
    for label in keep:  # ascending pixel index: top-to-bottom, left-to-right by first pixel
        ys, xs = np.nonzero(labels == label)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        mask = labels[y0:y1, x0:x1] == label
        objects.append(Detection(
            shape=classify_shape(mask, params), colour=COLOURS[int(classes.ravel()[label])],
            size="large" if max(x1 - x0, y1 - y0) / side > LARGE_THRESHOLD else "small",
            cx=(xs.mean() + 0.5) / w, cy=(ys.mean() + 0.5) / h,
            width=(x1 - x0) / w, height=(y1 - y0) / h, area=float(areas[label]) / (h * w)))
    return Detections(background=COLOURS[bg], objects=tuple(objects))
