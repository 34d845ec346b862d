"""txt2img pipeline: seeds, batches, guidance, prompt schedules and AND, validation (tiny CPU models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from huihua.errors import ParameterError, PromptError
from huihua.pipelines.conditioning import GuidedDenoiser, PromptConds
from huihua.diffusion.guidance import Guidance
from huihua.pipelines.params import GenerationParams
from huihua.pipelines.seeds import NoiseRecipe, create_noise, slerp
from huihua.prompts.conditioning import CondSchedule, MultiCond, ScheduledCond
from tests.tiny_checkpoints import tiny_engine

FAST = dict(steps=2, sampler_name="Euler", width=32, height=32)



@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    return tiny_engine(tmp_path_factory.mktemp("sd1"), "sd1")


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def test_same_seed_same_pixels_and_batch_image_k_is_seed_plus_k(sd1) -> None:
    batch = sd1.generate(prompt="a red circle", seed=11, batch_size=2, n_iter=2, **FAST)
    assert batch.seeds == [11, 12, 13, 14]
    again = sd1.generate(prompt="a red circle", seed=11, batch_size=2, n_iter=2, **FAST)
    for a, b in zip(batch.images, again.images):
        assert (pixels(a) == pixels(b)).all()
    single = sd1.generate(prompt="a red circle", seed=12, **FAST)
    diff = np.abs(pixels(single.images[0]) - pixels(batch.images[1]))
    assert diff.max() <= 2 and diff.mean() < 0.05  # BLAS differs by batch size; Euler is exact in practice
    assert np.abs(pixels(batch.images[0]) - pixels(batch.images[1])).mean() > 1  # different seeds differ


def test_seed_minus_one_is_random_and_recorded(sd1) -> None:
    a = sd1.generate(prompt="x", seed=-1, **FAST)
    b = sd1.generate(prompt="x", seed=-1, **FAST)
    assert a.seeds[0] != b.seeds[0] and a.parameters.seed == a.seeds[0]
    assert f"Seed: {a.seeds[0]}," in a.infotexts[0]


def test_cfg_one_skips_the_uncond_pass_and_batches_cond_with_uncond(sd1, monkeypatch) -> None:
    calls = []
    original = sd1.unet.forward
    monkeypatch.setattr(sd1.unet, "forward", lambda x, *a, **k: calls.append(x.shape[0]) or original(x, *a, **k))
    sd1.generate(prompt="a", seed=1, cfg_scale=1.0, **FAST)
    assert calls == [1, 1]  # one image, no uncond, 2 steps
    calls.clear()
    sd1.generate(prompt="a", seed=1, cfg_scale=5.0, **FAST)
    assert calls == [2, 2]  # cond and uncond in one forward


def _const_schedule(value: float, end: int = 10) -> CondSchedule:
    return CondSchedule((ScheduledCond(end, torch.full((1, 77, 24), value), None),))


def test_guided_denoiser_combines_and_parts_a1111_style(sd1) -> None:
    """denoised = u + Σ w_i · s · (c_i − u); checked against separate single-term runs (tol 1e-4: batch BLAS)."""
    x, sigma = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([3.0])
    c1, c2, u = _const_schedule(0.1), _const_schedule(-0.2), _const_schedule(0.0)

    def single(schedule: CondSchedule) -> torch.Tensor:
        return GuidedDenoiser(sd1, PromptConds(MultiCond(((schedule, 1.0),)), None), Guidance(1.0))(x, sigma)

    both = GuidedDenoiser(sd1, PromptConds(MultiCond(((c1, 1.0), (c2, 0.5))), u), Guidance(3.0))(x, sigma)
    d1, d2, du = single(c1), single(c2), single(u)
    expected = du + 3.0 * (d1 - du) + 1.5 * (d2 - du)
    assert torch.allclose(both, expected, atol=1e-4)
    assert not torch.allclose(both, d1, atol=1e-2)


def test_prompt_editing_switches_conditioning_per_step(sd1, monkeypatch) -> None:
    seen = []
    ctx_a, ctx_b = torch.zeros(1, 77, 24), torch.ones(1, 77, 24)
    schedule = CondSchedule((ScheduledCond(1, ctx_a, None), ScheduledCond(4, ctx_b, None)))
    d = GuidedDenoiser(sd1, PromptConds(MultiCond(((schedule, 1.0),)), None), Guidance(1.0))
    original = sd1.unet.forward
    monkeypatch.setattr(sd1.unet, "forward", lambda x, t, ctx, **k: seen.append(float(ctx.mean())) or original(x, t, ctx, **k))
    for step in range(4):
        d(torch.zeros(1, 4, 8, 8), torch.tensor([1.0]))
        d.on_step(step)
    assert seen == [0.0, 0.0, 1.0, 1.0]  # A1111: entry used while step <= end_at_step


def test_prompt_language_changes_the_picture(sd1) -> None:
    def paint(prompt: str, steps: int = 2) -> np.ndarray:
        return pixels(sd1.generate(prompt=prompt, seed=4, **{**FAST, "steps": steps}).images[0])

    cat, edited = paint("a cat", 4), paint("a [dog:cat:0.5]", 4)
    assert np.abs(edited - cat).mean() > 0.3  # the early steps painted a dog (per-step switch: see above)
    plain = paint("a cat")
    for other in (paint("a cat AND a dog :1.2"), paint("a BREAK cat")):
        assert np.abs(plain - other).mean() > 0.3


def test_unknown_lora_is_a_prompt_error_naming_it(sd1) -> None:
    with pytest.raises(PromptError, match="detail_v2"):
        sd1.generate(prompt="a cat <lora:detail_v2:0.8>", seed=1, **FAST)


@pytest.mark.parametrize("bad, field", [
    (dict(steps=0), "steps"), (dict(cfg_scale=float("nan")), "cfg_scale"), (dict(width=100000), "width"),
    (dict(width=36), "width"), (dict(height=-8), "height"), (dict(sampler_name="Nope"), "sampler_name"),
    (dict(enable_hr=True, hr_upscaler="Nope"), "hr_upscaler"), (dict(enable_hr=True, hr_scale=100.0), "hr_scale"),
    (dict(denoising_strength=1.5), "denoising_strength"), (dict(mask_blur=-1), "mask_blur"),
])
def test_bad_values_are_refused_up_front_naming_the_field(sd1, bad, field) -> None:
    with pytest.raises(ParameterError, match=field):
        sd1.generate(prompt="a", seed=1, **{**FAST, **bad})


def test_aliases_and_unknown_keywords() -> None:
    p = GenerationParams.from_kwargs(sampler="Euler a", schedule="Karras")
    assert (p.sampler_name, p.scheduler) == ("Euler a", "Karras")
    with pytest.raises(ParameterError, match="bogus"):
        GenerationParams.from_kwargs(bogus=1)


def test_variation_seed_slerp_and_resize_seed_from() -> None:
    base = create_noise((1, 4, 8, 8), NoiseRecipe((7,)))
    other = create_noise((1, 4, 8, 8), NoiseRecipe((9,)))
    assert torch.equal(create_noise((1, 4, 8, 8), NoiseRecipe((7,), (9,), 0.0)), base)
    assert torch.allclose(create_noise((1, 4, 8, 8), NoiseRecipe((7,), (9,), 1.0)), other, atol=1e-5)
    mid = create_noise((1, 4, 8, 8), NoiseRecipe((7,), (9,), 0.5))
    assert torch.allclose(mid, slerp(0.5, base, other)) and not torch.allclose(mid, base)
    assert abs(float(mid.norm()) - float(base.norm())) < 0.15 * float(base.norm())  # slerp keeps the norm
    small = create_noise((1, 4, 6, 6), NoiseRecipe((7,)))
    grown = create_noise((1, 4, 8, 8), NoiseRecipe((7,), resize_from=(6, 6)))
    assert torch.equal(grown[..., 1:7, 1:7], small)  # the old composition sits in the centre


def test_variation_strength_moves_the_picture(sd1) -> None:
    a = sd1.generate(prompt="a", seed=3, **FAST).images[0]
    b = sd1.generate(prompt="a", seed=3, subseed=8, subseed_strength=0.5, **FAST)
    assert np.abs(pixels(a) - pixels(b.images[0])).mean() > 0.1
    assert "Variation seed: 8, Variation seed strength: 0.5" in b.infotexts[0]


def test_and_parts_of_different_lengths_run_in_one_forward_per_length(sd1, monkeypatch) -> None:
    long_part = ", ".join(["a red circle"] * 30)  # > 75 tokens: two 77-token windows
    shapes = []
    original = sd1.unet.forward
    monkeypatch.setattr(sd1.unet, "forward", lambda x, t, ctx, **k: shapes.append(tuple(ctx.shape[:2])) or original(x, t, ctx, **k))
    out = sd1.generate(prompt=f"{long_part} AND a cat AND a dog :0.5", seed=2, steps=1, sampler_name="Euler",
                   width=32, height=32)
    assert sorted(shapes) == [(1, 154), (3, 77)]  # long part alone; two short parts and the uncond together
    assert out.images[0].size == (32, 32)
