"""ControlNet preprocessors that need no neural weights, built on OpenCV.

Names follow the AUTOMATIC1111 ControlNet extension (``canny``, ``mlsd``, ``scribble_xdog``, ...),
and so do the default thresholds. ``mlsd`` is ours: straight segments found by a probabilistic
Hough transform on Canny edges (no M-LSD network). A ready-made control map passes through
``none`` unchanged. Every function takes and returns a uint8 RGB array (H, W, 3); ``preprocess``
takes a PIL image or an array and returns a PIL image. All of them are deterministic (``shuffle``
draws from its ``seed``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np
from PIL import Image

from huihua.errors import HuihuaError, ParameterError

ImageLike = Image.Image | np.ndarray


@dataclass(frozen=True)
class PreprocessorParams:
    """Settings of the preprocessors; each one reads only its own fields."""

    # Shortest side the image is processed at (A1111's "Preprocessor Resolution"); None: as given.
    resolution: int | None = None
    canny_low: int = 100
    canny_high: int = 200
    # mlsd (Hough): minimum votes, shortest segment and largest gap bridged, in processed pixels.
    line_votes: int = 30
    line_min_length: int = 16
    line_max_gap: int = 4
    line_width: int = 1
    xdog_threshold: int = 32
    threshold: int = 127  # ``threshold``: white where every channel is above it
    binary_threshold: int = 0  # ``binary``: dark becomes white; 0 or 255 picks Otsu's threshold
    palette_cell: int = 64  # ``color``: the image is averaged over cells of this size
    shuffle_cell: int = 256  # ``shuffle``: size of the random warp's features (A1111's f)
    seed: int = 0
    down_sampling_rate: float = 1.0  # ``tile_resample``
    blur_sigma: float = 9.0  # ``blur_gaussian``

    def __post_init__(self) -> None:
        if self.resolution is not None and self.resolution < 1:
            raise ParameterError(f"resolution: must be positive, got {self.resolution}")
        for name in ("line_votes", "line_width", "palette_cell", "shuffle_cell"):
            if getattr(self, name) < 1:
                raise ParameterError(f"{name}: must be at least 1, got {getattr(self, name)}")
        for name in ("canny_low", "canny_high", "line_min_length", "line_max_gap", "blur_sigma"):
            if getattr(self, name) < 0:
                raise ParameterError(f"{name}: must not be negative, got {getattr(self, name)}")
        if self.down_sampling_rate <= 0:
            raise ParameterError(f"down_sampling_rate: must be positive, got {self.down_sampling_rate}")


def _cv2() -> ModuleType:
    try:
        import cv2  # noqa: PLC0415  (OpenCV loads in ~0.1 s; only ControlNet preprocessors need it)
    except ImportError:
        raise HuihuaError("ControlNet preprocessors need OpenCV: pip install opencv-python-headless") from None
    return cv2


def to_rgb_array(image: ImageLike) -> np.ndarray:
    """PIL image or uint8 array (H, W), (H, W, 1|3|4) -> uint8 RGB (H, W, 3); alpha is composited on white."""
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "P", "PA"):
            image = image.convert("RGBA")
        elif image.mode != "RGB":
            image = image.convert("RGB")
        arr = np.asarray(image)
    else:
        arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ParameterError(f"image: expected uint8 pixels, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ParameterError(f"image: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {arr.shape}")
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        rgb = arr[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.round(rgb).clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def resize_short_side(img: np.ndarray, resolution: int | None) -> np.ndarray:
    """Resize so the shortest side is ``resolution`` (area filter to shrink, cubic to enlarge)."""
    if resolution is None:
        return img
    h, w = img.shape[:2]
    k = resolution / min(h, w)
    if k == 1:
        return img
    cv2 = _cv2()
    size = (max(1, round(w * k)), max(1, round(h * k)))
    return cv2.resize(img, size, interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)


def _gray3(mask: np.ndarray) -> np.ndarray:
    return np.repeat(mask.astype(np.uint8)[:, :, None], 3, axis=2)


def canny(img: np.ndarray, params: PreprocessorParams) -> np.ndarray:
    """Canny edges: white one-pixel lines on black."""
    return _gray3(_cv2().Canny(img, params.canny_low, params.canny_high))


def mlsd(img: np.ndarray, params: PreprocessorParams) -> np.ndarray:
    """Straight line segments (M-LSD-like) from a probabilistic Hough transform on Canny edges."""
    cv2 = _cv2()
    edges = cv2.Canny(img, params.canny_low, params.canny_high)
    lines = cv2.HoughLinesP(
        edges, 1, np.pi / 180, params.line_votes, minLineLength=params.line_min_length, maxLineGap=params.line_max_gap
    )
    out = np.zeros(img.shape[:2], np.uint8)
    for x1, y1, x2, y2 in ([] if lines is None else lines.reshape(-1, 4)):  # (N, 1, 4) in OpenCV 4, (N, 4) in 5
        cv2.line(out, (int(x1), int(y1)), (int(x2), int(y2)), 255, params.line_width, lineType=cv2.LINE_8)
    return _gray3(out)


def scribble_xdog(img: np.ndarray, params: PreprocessorParams) -> np.ndarray:
    """Scribble from an extended difference of Gaussians (sigma 0.5 vs 5): white strokes on black."""
    cv2 = _cv2()
    x = img.astype(np.float32)
    # How much darker each pixel is than its wide surroundings, in the darkest channel.
    darkness = (cv2.GaussianBlur(x, (0, 0), 5.0) - cv2.GaussianBlur(x, (0, 0), 0.5)).min(axis=2).clip(0, 255)
    return _gray3((2 * darkness > params.xdog_threshold) * 255)


def threshold(img: np.ndarray, params: PreprocessorParams) -> np.ndarray:
    """White where every channel exceeds ``threshold``, black elsewhere."""
    return _gray3((img.min(axis=2) > params.threshold) * 255)


def binary(img: np.ndarray, params: PreprocessorParams) -> np.ndarray:
    """Inverted binarisation of the grey image (dark lines become white); Otsu when the threshold is 0/255."""
    cv2 = _cv2()
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if params.binary_threshold in (0, 255):
        _, out = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    else:
        _, out = cv2.threshold(gray, params.binary_threshold, 255, cv2.THRESH_BINARY_INV)
    return _gray3(out)


def color(img: np.ndarray, params: PreprocessorParams) -> np.ndarray:
    """Colour palette: shrink by ``palette_cell`` (cubic), then blow back up with nearest neighbour."""
    cv2 = _cv2()
    h, w = img.shape[:2]
    cell = params.palette_cell
    small = cv2.resize(img, (max(1, w // cell), max(1, h // cell)), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def _noise_disk(rng: np.random.Generator, h: int, w: int, f: int) -> np.ndarray:
    """Smooth noise in [0, 1] of shape (h, w): a coarse uniform grid, cubic-upsampled, normalised."""
    cv2 = _cv2()
    coarse = rng.uniform(0.0, 1.0, size=(h // f + 2, w // f + 2))
    noise = cv2.resize(coarse, (w + 2 * f, h + 2 * f), interpolation=cv2.INTER_CUBIC)[f : f + h, f : f + w]
    noise = noise - noise.min()
    return noise / max(float(noise.max()), 1e-12)


def shuffle(img: np.ndarray, params: PreprocessorParams) -> np.ndarray:
    """Content shuffle: every pixel is fetched from a smooth random place in the image (seeded)."""
    cv2 = _cv2()
    h, w = img.shape[:2]
    rng = np.random.default_rng(params.seed)
    map_x = (_noise_disk(rng, h, w, params.shuffle_cell) * (w - 1)).astype(np.float32)
    map_y = (_noise_disk(rng, h, w, params.shuffle_cell) * (h - 1)).astype(np.float32)
    return cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR)


def tile_resample(img: np.ndarray, params: PreprocessorParams) -> np.ndarray:
    """Tile model input: the image itself, shrunk by ``down_sampling_rate`` when it is above 1.1."""
    rate = params.down_sampling_rate
    if rate < 1.1:
        return img
    cv2 = _cv2()
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, int(w / rate)), max(1, int(h / rate))), interpolation=cv2.INTER_AREA)


def blur_gaussian(img: np.ndarray, params: PreprocessorParams) -> np.ndarray:
    """Tile/blur model input: a Gaussian blur of standard deviation ``blur_sigma``."""
    if params.blur_sigma <= 0:
        return img
    return _cv2().GaussianBlur(img, (0, 0), params.blur_sigma)


def invert(img: np.ndarray, params: PreprocessorParams) -> np.ndarray:
    """Negative image (turns black-on-white line art into the white-on-black maps models expect)."""
    return 255 - img


def none(img: np.ndarray, params: PreprocessorParams) -> np.ndarray:
    """A ready-made control map: returned as is."""
    return img


def _mask_array(mask: ImageLike, size: tuple[int, int]) -> np.ndarray:
    """Any mask image -> bool (H, W), True where to inpaint (above half intensity), at ``size`` (W, H)."""
    if isinstance(mask, np.ndarray) and mask.dtype == np.bool_:
        mask = mask.astype(np.uint8) * 255
    m = mask.convert("L") if isinstance(mask, Image.Image) else Image.fromarray(to_rgb_array(mask)).convert("L")
    if m.size != size:
        m = m.resize(size, resample=Image.Resampling.NEAREST)
    return np.asarray(m) > 127


def _colour_and_alpha(image: ImageLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Colour channels (H, W, 3) as stored, without compositing, and the alpha channel if there is one."""
    if isinstance(image, Image.Image):
        has_alpha = "A" in image.getbands()
        arr = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    else:
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            raise ParameterError(f"image: expected uint8 pixels, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 4:
        return np.ascontiguousarray(arr[:, :, :3]), arr[:, :, 3]
    return to_rgb_array(arr), None


def inpaint_only(image: ImageLike, mask: ImageLike | None = None, resolution: int | None = None) -> Image.Image:
    """Inpaint control map as RGBA: the image's colours, alpha 255 where to inpaint (from ``mask`` or alpha)."""
    rgb, alpha = _colour_and_alpha(image)
    if mask is not None:
        hole = _mask_array(mask, (rgb.shape[1], rgb.shape[0]))
    elif alpha is not None:
        hole = alpha > 127
    else:
        raise ParameterError("mask: inpaint_only needs a mask, or an image whose alpha channel is the mask")
    rgb = resize_short_side(rgb, resolution)
    alpha = resize_short_side(_gray3(hole * 255), resolution)[:, :, 0]
    alpha = np.where(alpha > 127, 255, 0).astype(np.uint8)
    return Image.fromarray(np.concatenate([rgb, alpha[:, :, None]], axis=2))


def inpaint_control(control: Image.Image) -> np.ndarray:
    """RGBA map from ``inpaint_only`` -> float32 (H, W, 3) in [0, 1], masked pixels set to -1 (the model's hint)."""
    rgba = np.asarray(control.convert("RGBA"))
    out = rgba[:, :, :3].astype(np.float32) / 255.0
    out[rgba[:, :, 3] > 127] = -1.0
    return out


_FUNCS: dict[str, Callable[[np.ndarray, PreprocessorParams], np.ndarray]] = {
    "none": none, "canny": canny, "mlsd": mlsd, "scribble_xdog": scribble_xdog, "threshold": threshold,
    "binary": binary, "color": color, "shuffle": shuffle, "tile_resample": tile_resample,
    "blur_gaussian": blur_gaussian, "invert": invert,
}
_ALIASES = {
    "blur": "blur_gaussian", "tile": "tile_resample", "invert (from white bg & black line)": "invert",
    "inpaint": "inpaint_only", "inpaint_global_harmonious": "inpaint_only",
}
PREPROCESSORS: tuple[str, ...] = tuple(_FUNCS) + ("inpaint_only",)


def preprocess(
    name: str, image: ImageLike, params: PreprocessorParams = PreprocessorParams(), *, mask: ImageLike | None = None
) -> Image.Image:
    """Run the preprocessor ``name`` (A1111 ControlNet names) on ``image``; RGB out (RGBA for inpaint_only)."""
    key = _ALIASES.get(name, name)
    if key == "inpaint_only":
        return inpaint_only(image, mask, params.resolution)
    func = _FUNCS.get(key)
    if func is None:
        raise ParameterError(f"preprocessor: unknown {name!r}; valid: {', '.join(PREPROCESSORS)}")
    if key == "none":
        return Image.fromarray(to_rgb_array(image))
    img = resize_short_side(to_rgb_array(image), params.resolution)
    return Image.fromarray(np.ascontiguousarray(func(img, params)))
