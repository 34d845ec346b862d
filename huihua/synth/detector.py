"""A deterministic detector for pictures of the procedural world, in plain numpy.

1. Background: the palette colour most border pixels are close to (None if under half agree).
2. Segmentation: a pixel close to a palette colour takes it; any other pixel is read as a blend
   ``background + alpha * (colour - background)`` (anti-aliased edges, slightly-off generations)
   and takes the best-fitting colour when the fit is within ``colour_tolerance`` and
   ``alpha >= 0.5``.
3. Objects: 4-connected components of one colour (label propagation with pointer jumping);
   components under ``min_area`` or without a solid core (1-pixel rims between colours) go.
4. Shape from geometry: the object's soft mask (coverage of its colour over its grown outline)
   is compared with each upright template of the world - circle, square, upward triangle,
   five-point star, plus-shaped cross - given the same area and centroid; the template with the
   smallest L1 mismatch wins unless that mismatch exceeds ``max_fit_error`` (then the shape is
   None). Size from the larger bounding-box side, position from the coverage-weighted centroid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from huihua.errors import ParameterError
from huihua.synth.render import shape_coverage
from huihua.synth.scene import COLOURS, LARGE_THRESHOLD, PALETTE, SHAPES, shape_area


@dataclass(frozen=True)
class DetectorParams:
    """Tolerances of the detector; the defaults are validated on ground-truth renders."""

    colour_tolerance: float = 48.0   # RGB distance a pixel may sit from its explaining blend
    pure_tolerance: float = 30.0     # a pixel this close to a palette colour is that colour
    border_agreement: float = 0.5    # share of border pixels the background colour must take
    min_area: float = 0.003          # smallest object, as a fraction of the canvas area
    max_fit_error: float = 0.45     # a worse template fit than this is no known shape


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
    fit_error: float  # template mismatch of the best shape (0 = perfect)


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


def _segment(pixels: np.ndarray, palette: np.ndarray, bg: int,
             params: DetectorParams) -> tuple[np.ndarray, np.ndarray]:
    """(hard colour index per pixel, -1 for background/unexplained; alpha per palette colour).

    ``alpha[..., k]`` is the coverage of colour ``k`` when the pixel is read as a blend of it over
    the background (0 where that reading misses by more than the tolerance). A pixel close to a
    pure palette colour takes it outright, so that a flat orange area on red never reads as a
    half-covered yellow; other pixels take the best blend with coverage >= 0.5.
    """
    base = palette[bg]
    directions = palette - base                                      # (8, 3), zero for bg
    lengths = np.maximum(np.sum(directions ** 2, axis=1), 1.0)       # (8,)
    offset = pixels - base                                           # (H, W, 3)
    dots = offset @ directions.T                                     # (H, W, 8)
    alpha = np.clip(dots / lengths, 0.0, 1.0)
    alpha[..., bg] = 0.0
    # |offset - alpha d|^2 = |offset|^2 - 2 alpha (offset . d) + alpha^2 |d|^2
    residual = np.sum(offset ** 2, axis=-1)[..., None] - alpha * (2.0 * dots - alpha * lengths)
    alpha = np.where(residual <= params.colour_tolerance ** 2, alpha, 0.0)
    best = np.argmin(residual, axis=-1)
    best_alpha = np.take_along_axis(alpha, best[..., None], axis=-1)[..., 0]
    hard = np.where(best_alpha >= 0.5, best, -1)
    pure_dist = (np.sum(pixels ** 2, axis=-1)[..., None] - 2.0 * (pixels @ palette.T)
                 + np.sum(palette ** 2, axis=1))                     # (H, W, 8)
    nearest = np.argmin(pure_dist, axis=-1)
    is_pure = np.take_along_axis(pure_dist, nearest[..., None], axis=-1)[..., 0] <= (
        params.pure_tolerance ** 2)
    hard = np.where(is_pure, np.where(nearest == bg, -1, nearest), hard)
    return hard, alpha


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


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation (numpy shifts)."""
    grown = mask.copy()
    grown[1:, :] |= mask[:-1, :]
    grown[:-1, :] |= mask[1:, :]
    wide = grown.copy()
    wide[:, 1:] |= grown[:, :-1]
    wide[:, :-1] |= grown[:, 1:]
    return wide


def fit_shape(alpha: np.ndarray, x0: int = 0, y0: int = 0) -> tuple[str, float, float]:
    """(shape, error, width in pixels) of the upright template that best explains a soft mask.

    ``alpha`` is the coverage of one object over a window whose top-left pixel is ``(x0, y0)``.
    Each template gets the object's area and centroid; the error is the L1 difference of
    coverages (template area outside the window included) over the area: 0 is a perfect fit.
    """
    area = float(alpha.sum())
    if area <= 0.0:
        raise ParameterError("fit_shape: empty mask")
    h, w = alpha.shape
    cx = x0 + float((alpha.sum(axis=0) * (np.arange(w) + 0.5)).sum()) / area
    cy = y0 + float((alpha.sum(axis=1) * (np.arange(h) + 0.5)).sum()) / area
    best = ("", math.inf, 0.0)
    for shape in SHAPES:
        size = math.sqrt(area / shape_area(shape, 1.0))
        cover = shape_coverage(shape, size, cx, cy, x0, y0, w, h)
        error = (float(np.abs(cover - alpha).sum()) + area - float(cover.sum())) / area
        if error < best[1]:
            best = (shape, error, size)
    return best


def detect(image: np.ndarray, params: DetectorParams = DetectorParams()) -> Detections:
    """Find the background and the objects of an RGB uint8 ``(H, W, 3)`` picture."""
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 8:
        raise ParameterError(f"image must be RGB (H, W, 3), at least 8x8; got {image.shape}")
    pixels = image.astype(np.float64)
    palette = _palette_array()
    bg = _background(pixels, palette, params)
    if bg is None:
        return Detections(background=None, objects=())
    classes, alpha = _segment(pixels, palette, bg, params)
    labels = connected_components(classes)
    h, w = classes.shape
    flat = labels.ravel()
    areas = np.bincount(flat[flat >= 0], minlength=h * w)
    inner = labels[1:-1, 1:-1]
    solid = ((inner >= 0) & (inner == labels[:-2, 1:-1]) & (inner == labels[2:, 1:-1])
             & (inner == labels[1:-1, :-2]) & (inner == labels[1:-1, 2:]))
    cores = np.bincount(inner[solid], minlength=h * w)
    keep = np.nonzero((areas >= params.min_area * h * w) & (cores > 0))[0]
    objects = [_describe(labels == label, classes, alpha, params) for label in keep]
    return Detections(background=COLOURS[bg], objects=tuple(objects))


def _describe(mask: np.ndarray, classes: np.ndarray, alpha: np.ndarray,
              params: DetectorParams) -> Detection:
    """Colour, shape, size and position of one object given its hard mask."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    colour = int(classes[ys[0], xs[0]])
    # Soft window: the mask grown by one pixel (the anti-aliased rim), weighted by the coverage
    # of the object's colour.
    y0, y1 = max(int(ys.min()) - 2, 0), min(int(ys.max()) + 3, h)
    x0, x1 = max(int(xs.min()) - 2, 0), min(int(xs.max()) + 3, w)
    grown = _dilate(mask[y0:y1, x0:x1])
    soft = np.where(grown, alpha[y0:y1, x0:x1, colour], 0.0)
    soft[mask[y0:y1, x0:x1]] = np.maximum(soft[mask[y0:y1, x0:x1]], 0.5)
    shape, error, _ = fit_shape(soft, x0, y0)
    area = float(soft.sum())
    box_w, box_h = int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1
    side = float(max(h, w))
    return Detection(
        shape=shape if error <= params.max_fit_error else None, colour=COLOURS[colour],
        size="large" if max(box_w, box_h) / side > LARGE_THRESHOLD else "small",
        cx=x0 / w + float((soft.sum(axis=0) * (np.arange(x1 - x0) + 0.5)).sum()) / area / w,
        cy=y0 / h + float((soft.sum(axis=1) * (np.arange(y1 - y0) + 0.5)).sum()) / area / h,
        width=box_w / w, height=box_h / h, area=area / (h * w), fit_error=error)
