"""ControlNet preprocessors: each one's defining property, asserted on pixel values of tiny images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from huihua.adapters.preprocessors import (
    PREPROCESSORS, PreprocessorParams, inpaint_control, preprocess, to_rgb_array,
)
from huihua.errors import ParameterError

P = PreprocessorParams()


def _square(size: int = 48, lo: int = 16, hi: int = 32) -> np.ndarray:
    """A white square [lo, hi) on black, RGB uint8."""
    img = np.zeros((size, size, 3), np.uint8)
    img[lo:hi, lo:hi] = 255
    return img


def _noise(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _boundary_band(inside: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood holds both inside and outside pixels."""
    pad = np.pad(inside, 1, mode="edge")
    views = [pad[1 + dy : pad.shape[0] - 1 + dy, 1 + dx : pad.shape[1] - 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return np.any(views, axis=0) & ~np.all(views, axis=0)


def test_canny_edges_lie_exactly_on_the_square_border():
    img = _square()
    edges = np.asarray(preprocess("canny", img))
    assert set(np.unique(edges)) == {0, 255}
    assert np.array_equal(edges[:, :, 0], edges[:, :, 1])
    on = edges[:, :, 0] > 0
    band = _boundary_band(img[:, :, 0] > 0)
    assert on.any() and not (on & ~band).any()  # no edge pixel off the border
    for rows, cols in ((slice(14, 18), slice(18, 30)), (slice(30, 34), slice(18, 30))):
        assert on[rows, cols].any(axis=0).all()  # top and bottom sides are traced along their length
    for rows, cols in ((slice(18, 30), slice(14, 18)), (slice(18, 30), slice(30, 34))):
        assert on[rows, cols].any(axis=1).all()  # and so are the left and right sides
    assert not np.asarray(preprocess("canny", np.full((16, 16, 3), 90, np.uint8))).any()


def test_mlsd_draws_straight_lines_only_where_they_are():
    img = np.zeros((64, 64, 3), np.uint8)
    img[30:34, 6:58] = 255  # a thick horizontal bar: two long straight edges
    out = np.asarray(preprocess("mlsd", img))[:, :, 0] > 0
    assert out.sum() >= 2 * 40
    rows = np.nonzero(out.any(axis=1))[0]
    assert rows.min() >= 28 and rows.max() <= 35  # nothing away from the bar's edges
    assert not np.asarray(preprocess("mlsd", _noise(64, 64) // 8 + 100)).any()  # faint texture: no lines


def test_scribble_xdog_marks_dark_strokes_and_nothing_on_flat_areas():
    img = np.full((48, 48, 3), 255, np.uint8)
    img[:, 23:25] = 0  # a black stroke
    out = np.asarray(preprocess("scribble_xdog", img))[:, :, 0]
    assert set(np.unique(out)) <= {0, 255}
    assert (out[:, 23:25] == 255).all()
    assert not out[:, :12].any() and not out[:, 36:].any()
    assert not np.asarray(preprocess("scribble_xdog", np.full((20, 20, 3), 128, np.uint8))).any()


def test_threshold_and_binary_are_binary_and_follow_the_threshold():
    ramp = np.repeat(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 4, axis=0), 3, axis=2)
    out = np.asarray(preprocess("threshold", ramp, PreprocessorParams(threshold=100)))
    assert set(np.unique(out)) == {0, 255}
    assert (out[:, :101] == 0).all() and (out[:, 101:] == 255).all()
    inv = np.asarray(preprocess("binary", ramp, PreprocessorParams(binary_threshold=100)))
    assert (inv[:, :101] == 255).all() and (inv[:, 101:] == 0).all()  # dark becomes white
    otsu = np.asarray(preprocess("binary", _square()))
    assert set(np.unique(otsu)) == {0, 255} and otsu[0, 0, 0] == 255 and otsu[20, 20, 0] == 0


def test_color_palette_has_at_most_one_colour_per_cell():
    img = _noise(48, 80)
    out = np.asarray(preprocess("color", img, PreprocessorParams(palette_cell=16)))
    assert out.shape == img.shape
    assert len(np.unique(out.reshape(-1, 3), axis=0)) <= (48 // 16) * (80 // 16)
    # the default cell of 64 on a 64x128 image: exactly two flat halves
    halves = np.asarray(preprocess("color", _noise(64, 128)))
    assert len(np.unique(halves[:, :64].reshape(-1, 3), axis=0)) == 1


def test_shuffle_is_seeded_and_only_moves_content():
    img = np.zeros((48, 48, 3), np.uint8)
    img[:, 24:] = (200, 40, 10)
    a = np.asarray(preprocess("shuffle", img, PreprocessorParams(seed=1, shuffle_cell=16)))
    b = np.asarray(preprocess("shuffle", img, PreprocessorParams(seed=1, shuffle_cell=16)))
    c = np.asarray(preprocess("shuffle", img, PreprocessorParams(seed=2, shuffle_cell=16)))
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, img)
    # every output pixel is a blend of the two input colours: t * (200, 40, 10) within rounding
    t = a[:, :, 0].astype(np.float64) / 200.0
    assert np.abs(a[:, :, 1] - t * 40).max() <= 1.0 and np.abs(a[:, :, 2] - t * 10).max() <= 1.0
    assert (a[:, :, 0] == 0).any() and (a[:, :, 0] == 200).any()  # both colours survive
    flat = np.full((20, 20, 3), 77, np.uint8)
    assert (np.asarray(preprocess("shuffle", flat)) == 77).all()


def test_tile_resample_blur_invert_none():
    img = _noise(40, 60)
    assert preprocess("tile_resample", img, PreprocessorParams(down_sampling_rate=2.0)).size == (30, 20)
    assert np.array_equal(np.asarray(preprocess("tile_resample", img)), img)
    flat = np.full((24, 24, 3), 123, np.uint8)
    assert (np.asarray(preprocess("blur", flat)) == 123).all()
    blurred = np.asarray(preprocess("blur_gaussian", img, PreprocessorParams(blur_sigma=3.0))).astype(float)
    assert blurred.std() < img.astype(float).std() / 3
    inv = np.asarray(preprocess("invert", img))
    assert np.array_equal(inv, 255 - img)
    assert np.array_equal(np.asarray(preprocess("invert", inv)), img)  # invert twice = identity
    assert np.array_equal(np.asarray(preprocess("none", img)), img)


def test_resolution_sets_the_shortest_side():
    out = preprocess("canny", _noise(40, 60), PreprocessorParams(resolution=20))
    assert out.size == (30, 20)


def test_inpaint_only_mask_from_alpha_or_argument():
    img = _noise(16, 16)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:12] = 255
    a = preprocess("inpaint_only", img, mask=mask)
    assert a.mode == "RGBA"
    arr = np.asarray(a)
    assert np.array_equal(arr[:, :, :3], img) and np.array_equal(arr[:, :, 3], mask)
    b = preprocess("inpaint_only", np.concatenate([img, mask[:, :, None]], axis=2))
    assert np.array_equal(np.asarray(b), arr)
    hint = inpaint_control(a)
    assert hint.dtype == np.float32 and (hint[4:8, 4:12] == -1).all()
    np.testing.assert_allclose(hint[0], img[0] / 255.0, atol=1e-7)
    with pytest.raises(ParameterError, match="mask"):
        preprocess("inpaint_only", img)


def test_input_forms_and_unknown_names():
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert np.array_equal(to_rgb_array(gray)[:, :, 2], gray)
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert (to_rgb_array(rgba) == 255).all()  # transparent composites on white
    with pytest.raises(ParameterError, match="canny"):
        preprocess("depth_midas", gray)
    with pytest.raises(ParameterError, match="uint8"):
        preprocess("canny", np.zeros((4, 4, 3), np.float32))
    for name in PREPROCESSORS:
        if name != "inpaint_only":
            assert preprocess(name, _noise(32, 32)).size == (32, 32) or name == "tile_resample"


def test_params_are_validated_and_bool_masks_work():
    with pytest.raises(ParameterError, match="line_votes"):
        PreprocessorParams(line_votes=0)
    with pytest.raises(ParameterError, match="resolution"):
        PreprocessorParams(resolution=0)
    hole = np.zeros((8, 12), bool)
    hole[2:4] = True
    out = preprocess("inpaint_only", _noise(8, 12), PreprocessorParams(resolution=16), mask=hole)
    alpha = np.asarray(out)[:, :, 3]
    assert out.size == (24, 16) and set(np.unique(alpha)) == {0, 255}
    assert (alpha[4:8] == 255).all() and (alpha[12:] == 0).all()
