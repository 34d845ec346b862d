"""Tests of huihua.synth: rendering, captions, the held-out split, the detector and the eval."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from huihua.errors import ParameterError, PromptError
from huihua.synth.captions import caption_text, parse_caption
from huihua.synth.detector import connected_components, detect
from huihua.synth.evaluate import evaluate, heldout_prompts, in_distribution_prompts
from huihua.synth.render import render
from huihua.synth.scene import (CANVAS_MARGIN, CATEGORIES, OBJECT_GAP, PALETTE, CaptionSpec,
                                ObjectClaim, Scene, SceneObject, relation_clear,
                                shape_area)
from huihua.synth.scoring import score
from huihua.synth.world import (HELDOUT, HELDOUT_CATEGORIES, make_batch, render_caption,
                                sample_pair, sample_scene)


def _scenes(n: int, split: str, seed: int = 0) -> list[tuple[Scene, CaptionSpec]]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, split) for _ in range(n)]


def test_palette_exact_interiors_and_background() -> None:
    palette = {tuple(v) for v in PALETTE.values()}
    for scene, _ in _scenes(100, "train", seed=1):
        image = render(scene)
        assert tuple(image[0, 0]) == PALETTE[scene.background]
        assert all(o.colour != scene.background for o in scene.objects)
        # A pixel with a uniform 3x3 neighbourhood is inside a flat area: exactly a palette colour.
        flat = np.ones((62, 62), dtype=bool)
        for dy in range(3):
            for dx in range(3):
                flat &= np.all(image[dy:dy + 62, dx:dx + 62] == image[1:63, 1:63], axis=-1)
        assert {tuple(int(c) for c in p) for p in image[1:63, 1:63][flat]} <= palette
        for obj in scene.objects:  # the object's interior is exactly its colour
            left, top, right, bottom = (int(round(v * 64)) for v in obj.extent())
            box = image[top:bottom, left:right]
            exact = np.all(box == PALETTE[obj.colour], axis=-1).sum()
            assert exact >= 0.35 * shape_area(obj.shape, obj.size * 64)


def test_geometry_inside_canvas_apart_and_relations_clear() -> None:
    for split in ("train", "heldout"):
        for scene, spec in _scenes(400, split, seed=2):
            assert 1 <= len(scene.objects) <= 3
            boxes = [o.extent() for o in scene.objects]
            for left, top, right, bottom in boxes:
                assert left >= CANVAS_MARGIN - 1e-9 and top >= CANVAS_MARGIN - 1e-9
                assert right <= 1 - CANVAS_MARGIN + 1e-9 and bottom <= 1 - CANVAS_MARGIN + 1e-9
            for i, a in enumerate(boxes):
                for b in boxes[i + 1:]:
                    assert (a[2] + OBJECT_GAP <= b[0] + 1e-9 or b[2] + OBJECT_GAP <= a[0] + 1e-9
                            or a[3] + OBJECT_GAP <= b[1] + 1e-9 or b[3] + OBJECT_GAP <= a[1] + 1e-9)
            if spec.relation is not None:
                a, b = scene.objects
                assert relation_clear((a.cx, a.cy), (b.cx, b.cy), spec.relation)
            assert len(scene.objects) == sum(c.count for c in spec.objects)


def test_same_seed_same_bytes() -> None:
    image_a, caption_a, spec_a = sample_pair(123)
    image_b, caption_b, spec_b = sample_pair(123)
    assert image_a.dtype == np.uint8 and image_a.shape == (64, 64, 3)
    assert image_a.tobytes() == image_b.tobytes() and caption_a == caption_b and spec_a == spec_b
    batch_a, captions_a = make_batch(7, 24)
    batch_b, captions_b = make_batch(7, 24)
    assert batch_a.shape == (24, 64, 64, 3) and batch_a.tobytes() == batch_b.tobytes()
    assert captions_a == captions_b
    other, other_captions = make_batch(8, 24)
    assert other.tobytes() != batch_a.tobytes() and other_captions != captions_a
    heldout, _ = make_batch(7, 24, split="heldout")
    assert heldout.tobytes() != batch_a.tobytes()
    with pytest.raises(ParameterError):
        make_batch(7, 2, split="test")


def test_heldout_never_in_train() -> None:
    for scene, spec in _scenes(2000, "train", seed=3):
        assert not HELDOUT.holds_spec(spec)
        assert not HELDOUT.holds_scene(scene)
    for scene, spec in _scenes(300, "heldout", seed=4):
        assert HELDOUT.holds_spec(spec) and spec.category in HELDOUT_CATEGORIES
    # The mirror statement of a held-out relation is held out too.
    assert HELDOUT.holds_relation("square", "below", "circle")
    assert not HELDOUT.holds_relation("circle", "below", "square")
    assert HELDOUT.holds_scene(Scene("black", (SceneObject("circle", "red", 0.2, 0.5, 0.2),
                                               SceneObject("square", "blue", 0.2, 0.5, 0.7))))


def test_caption_round_trip() -> None:
    rng = np.random.default_rng(5)
    seen = set()
    for split in ("train", "heldout"):
        for _ in range(600):
            _, spec = sample_scene(rng, split)
            for text in (caption_text(spec, rng), caption_text(spec)):
                assert parse_caption(text) == spec, text
            seen.add(spec.category)
    assert seen == set(CATEGORIES)


@pytest.mark.parametrize("text, expected", [
    ("a red circle", CaptionSpec("colors", (ObjectClaim("circle", "red"),))),
    ("a small blue square on the left",
     CaptionSpec("colors", (ObjectClaim("square", "blue", size="small", position="left"),))),
    ("A large yellow star at the top.",
     CaptionSpec("colors", (ObjectClaim("star", "yellow", size="large", position="top"),))),
    ("two green triangles", CaptionSpec("counting", (ObjectClaim("triangle", "green", 2),))),
    ("three orange crosses on a black background",
     CaptionSpec("counting", (ObjectClaim("cross", "orange", 3),), background="black")),
    ("a red square and a green circle",
     CaptionSpec("color_attr", (ObjectClaim("square", "red"), ObjectClaim("circle", "green")))),
    ("a red circle above a blue square",
     CaptionSpec("position", (ObjectClaim("circle", "red"), ObjectClaim("square", "blue")),
                 "above")),
    ("a photo of a purple star to the right of a white cross",
     CaptionSpec("position", (ObjectClaim("star", "purple"), ObjectClaim("cross", "white")),
                 "right of")),
    ("a circle", CaptionSpec("single_object", (ObjectClaim("circle"),))),
    ("a star and a square",
     CaptionSpec("two_objects", (ObjectClaim("star"), ObjectClaim("square")))),
])
def test_issue_captions_parse(text: str, expected: CaptionSpec) -> None:
    assert parse_caption(text) == expected


@pytest.mark.parametrize("text", ["a dog", "two circle", "circles", "a blue",
                                  "a red circle above two squares"])
def test_parse_rejects_text_outside_the_grammar(text: str) -> None:
    with pytest.raises(PromptError):
        parse_caption(text)


def test_detector_agrees_with_ground_truth() -> None:
    rng = np.random.default_rng(6)
    correct: dict[str, list[bool]] = {c: [] for c in CATEGORIES}
    for i in range(640):
        image, caption, spec = sample_pair(rng, "train" if i % 3 else "heldout")
        correct[spec.category].append(score(image, caption).correct)
    rates = {c: sum(v) / len(v) for c, v in correct.items()}
    assert all(len(v) >= 60 for v in correct.values()), {c: len(v) for c, v in correct.items()}
    total = sum(sum(v) for v in correct.values()) / 640
    assert total >= 0.99 and min(rates.values()) >= 0.97, rates


def test_detector_reads_scene_attributes() -> None:
    for scene, _ in _scenes(120, "heldout", seed=7):
        found = detect(render(scene))
        assert found.background == scene.background
        assert len(found.objects) == len(scene.objects)
        for obj in scene.objects:
            near = min(found.objects, key=lambda d: (d.cx - obj.cx) ** 2 + (d.cy - obj.cy) ** 2)
            assert (near.shape, near.colour, near.size) == (obj.shape, obj.colour, obj.size_class)
            assert abs(near.cx - obj.cx) < 0.01 and abs(near.cy - obj.cy) < 0.01  # within 0.64 px


def test_detector_tolerates_slightly_off_pictures() -> None:
    rng = np.random.default_rng(8)
    hits = []
    for i in range(150):
        image, caption, _ = sample_pair(rng)
        blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(0.6)))
        shift = rng.uniform(-10, 10, size=3)
        noisy = blurred.astype(np.float64) + rng.normal(0, 6, size=image.shape) + shift
        hits.append(score(np.clip(noisy, 0, 255).astype(np.uint8), caption).correct)
    assert np.mean(hits) >= 0.95


def test_detector_rejects_blank_noise_and_wrong_captions() -> None:
    prompts = in_distribution_prompts()
    noise = np.random.default_rng(9).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    for colour in ("white", "black", "blue"):
        blank = np.empty((64, 64, 3), dtype=np.uint8)
        blank[...] = PALETTE[colour]
        assert detect(blank).objects == () and detect(blank).background == colour
        assert not any(score(blank, p).correct for p in prompts)
    assert detect(noise).objects == ()
    assert not any(score(noise, p).correct for p in prompts)
    # A ground-truth picture scored against another picture's caption is mostly wrong.
    rng = np.random.default_rng(10)
    pairs = [sample_pair(rng) for _ in range(120)]
    wrong = [score(pairs[i][0], pairs[(i + 1) % 120][1]).correct for i in range(120)]
    assert np.mean(wrong) < 0.15


def test_connected_components_four_connectivity() -> None:
    classes = np.array([[0, 0, -1, 1],
                        [-1, 0, -1, 1],
                        [2, -1, 0, 0],
                        [2, 2, -1, 0]])
    labels = connected_components(classes)
    assert (labels == -1).sum() == 5
    assert len(np.unique(labels[labels >= 0])) == 4  # diagonal contact does not join
    assert labels[0, 0] == labels[1, 1] and labels[2, 2] == labels[3, 3] != labels[0, 0]


def test_prompt_sets_and_oracle_evaluation() -> None:
    in_dist, held = in_distribution_prompts(), heldout_prompts()
    assert in_dist == in_distribution_prompts() and held == heldout_prompts()
    assert len(in_dist) >= 120 and len(set(in_dist)) == len(in_dist) and len(held) >= 30
    counts = {c: sum(parse_caption(p).category == c for p in in_dist) for c in CATEGORIES}
    assert set(counts.values()) == {len(in_dist) // len(CATEGORIES)}
    assert not any(HELDOUT.holds_spec(parse_caption(p)) for p in in_dist)
    assert all(HELDOUT.holds_spec(parse_caption(p)) for p in held)
    report = evaluate(render_caption, in_dist[::4] + held, seeds=[0])
    assert report.overall == 1.0 and report.image_accuracy == 1.0
    assert {c.category for c in report.categories} == set(CATEGORIES)
    assert report.seconds_per_image >= 0.0 and "overall" in report.format()


def test_evaluate_counts_per_category() -> None:
    prompts = ["a red circle", "two blue stars", "a square above a triangle"]

    def half_right(prompt: str, seed: int) -> np.ndarray:
        wrong = "a white cross"
        return render_caption(prompt if seed % 2 == 0 else wrong, seed)

    report = evaluate(half_right, prompts, seeds=[0, 1, 2, 3])
    assert [(c.category, c.correct, c.total) for c in report.categories] == [
        ("counting", 2, 4), ("colors", 2, 4), ("position", 2, 4)]
    assert report.accuracy("colors") == 0.5 and report.overall == 0.5
    with pytest.raises(ParameterError):
        evaluate(lambda p, s: np.zeros((64, 64, 3)), prompts, seeds=[0])
