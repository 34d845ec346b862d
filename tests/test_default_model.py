"""The embedded default model: its training recipe (tiny smoke runs) and the shipped checkpoint."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

import huihua
from huihua.errors import ParameterError
from huihua.synth.evaluate import evaluate
from huihua.train.ddpm_train import alphas_cumprod
from huihua.train.default_model import CLIP_PREFIX, MODEL_FILE, DefaultRecipe, quick_recipe, train_default
from huihua.train.loop import LoopConfig, lr_at, step_generator, train_loop
from huihua.train.synth_eval import SynthEvalParams, make_generate_fn

SHIPPED = Path(huihua.__file__).parent / "assets" / MODEL_FILE
# A short benchmark: 2 in-distribution prompts of each of the 6 categories (canonical wording).
QUICK_PROMPTS = ["a red circle", "a yellow star", "a blue square and a white triangle",
                 "a green cross and an orange star", "two circles", "three squares",
                 "a purple circle", "a black cross", "a square above a star", "a circle left of a cross",
                 "a red square and a blue circle", "a yellow cross and a green triangle"]
# Seeds 0-3 of each prompt (48 pictures: one seed is too few to tell a model from chance).
QUICK_SEEDS = (0, 1, 2, 3)
# Accuracy a random-weight model cannot reach (it paints no recognisable shape: 0 of 48). The
# shipped model scores 7 of 48 (red and purple circles, a black cross, a red square and a blue
# circle); the floor leaves three pictures of slack for arithmetic that differs between machines.
QUICK_FLOOR = 4 / 48


def _regression_loss(model: nn.Module):
    """A deterministic toy problem: fit y = 3x - 1 from per-step seeded batches."""

    def loss(step: int) -> torch.Tensor:
        x = torch.randn(16, 1, generator=step_generator(5, step))
        return (model(x) - (3 * x - 1)).pow(2).mean()

    return loss


def _toy() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(1, 1)


def test_lr_schedule_warms_up_then_decays() -> None:
    cfg = LoopConfig(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)
    assert lr_at(40, cfg) > lr_at(80, cfg)


def test_loop_loss_decreases_and_resume_is_exact(tmp_path: Path) -> None:
    cfg = LoopConfig(steps=40, lr=0.1, warmup=2, ema_decay=0.9, checkpoint_seconds=0.0)
    straight = _toy()
    losses, ema = train_loop("toy", straight, _regression_loss(straight), cfg, tmp_path / "a.pt", progress=False)
    assert np.mean(losses[-5:]) < 0.1 * np.mean(losses[:5])
    assert ema is not None

    interrupted = _toy()
    base = _regression_loss(interrupted)

    def crash_at_17(step: int) -> torch.Tensor:
        if step == 17:
            raise KeyboardInterrupt
        return base(step)

    with pytest.raises(KeyboardInterrupt):
        train_loop("toy", interrupted, crash_at_17, cfg, tmp_path / "b.pt", progress=False)
    resumed = _toy()  # a fresh process: weights come back from the checkpoint
    losses_b, ema_b = train_loop("toy", resumed, _regression_loss(resumed), cfg, tmp_path / "b.pt", progress=False)
    assert losses_b == losses
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key])
        assert torch.equal(ema.state_dict()[key], ema_b.state_dict()[key])


def test_sd_noise_schedule() -> None:
    abar = alphas_cumprod()
    assert abar.shape == (1000,)
    assert float(1 - abar[0]) == pytest.approx(0.00085, rel=1e-6)
    sigma_max = float(((1 - abar[-1]) / abar[-1]).sqrt())
    assert sigma_max == pytest.approx(14.6146, abs=1e-3)  # SD1's largest sigma
    # Zero terminal SNR: training and sampling must share the schedule.
    from huihua.diffusion.parametrization import ModelSampling

    zsnr = alphas_cumprod(zero_terminal_snr=True)
    assert float(zsnr[0]) == pytest.approx(float(abar[0]), rel=1e-12) and float(zsnr[-1]) < 1e-7
    assert torch.all(zsnr[1:] < abar[1:])
    sampling = ModelSampling.for_sd("v", zero_terminal_snr=True).alphas_cumprod
    assert torch.allclose(sampling, zsnr, rtol=1e-5, atol=1e-9)
    from huihua.train.ddpm_train import DDPMTrainConfig

    with pytest.raises(ParameterError, match="zero_terminal_snr: needs prediction 'v'"):
        DDPMTrainConfig(zero_terminal_snr=True)


def test_quick_recipe_trains_exports_and_loads(tmp_path: Path) -> None:
    result = train_default(quick_recipe(), tmp_path, progress=False)
    assert result.path == tmp_path / MODEL_FILE
    with safe_open(str(result.path), framework="pt") as src:
        keys = set(src.keys())
        metadata = src.metadata()
    assert any(k.startswith(CLIP_PREFIX + "visual.") for k in keys)
    arch = json.loads(metadata["huihua.arch"])
    assert arch["resolution"] == 64 and arch["scale_factor"] == pytest.approx(result.metrics["scale_factor"])
    engine = huihua.load(result.path, device="cpu")
    assert engine.spec.family == "sd1" and engine.spec.native_resolution == 64
    assert engine.spec.unet.num_heads == 2 and engine.spec.vae.norm_num_groups == 4
    with pytest.raises(ParameterError):  # checkpoints present: refuse to start over silently
        train_default(quick_recipe(), tmp_path, progress=False)
    again = train_default(quick_recipe(), tmp_path, resume=True, progress=False)
    assert again.metrics == result.metrics  # completed stages resume to identical weights



@pytest.fixture(scope="module")
def shipped() -> huihua.Engine:
    return huihua.load(SHIPPED, device="cpu")


def test_shipped_model_is_small_and_detected(shipped: huihua.Engine) -> None:
    assert SHIPPED.stat().st_size <= 50 * 2**20
    spec = shipped.spec
    assert spec.family == "sd1" and spec.native_resolution == 64 and spec.prediction == "v"
    assert spec.vae.downscale == 4 and 0.1 < spec.vae.scale_factor < 10.0


def test_shipped_model_was_trained_by_the_code_recipe() -> None:
    # `huihua train-default` must reproduce the shipped file: the recipe stored in it is DefaultRecipe().
    # Options added to the code after the file was trained are absent from its metadata; they must sit
    # at their defaults, which keep the old behaviour (e.g. DDPMTrainConfig's timestep sampling).
    with safe_open(str(SHIPPED), "pt") as f:
        stored = json.loads(f.metadata()["huihua.recipe"])
    code = json.loads(json.dumps(asdict(DefaultRecipe())))
    added = {("ddpm", "timestep_logit_normal"): None, ("ddpm", "timestep_uniform_share"): 0.0,
             ("clip", "parse_weight"): 0.0, ("ddpm", "zero_terminal_snr"): False}
    for (part, key), default in added.items():
        if key not in stored[part]:
            assert code[part].pop(key) == default, (part, key)
    assert stored == code


def test_shipped_model_is_deterministic(shipped: huihua.Engine) -> None:
    a = shipped.generate(prompt="a red circle", seed=7, steps=8, cfg_scale=5.0, sampler_name="Euler").images[0]
    b = shipped.generate(prompt="a red circle", seed=7, steps=8, cfg_scale=5.0, sampler_name="Euler").images[0]
    c = shipped.generate(prompt="a red circle", seed=8, steps=8, cfg_scale=5.0, sampler_name="Euler").images[0]
    assert a.size == (64, 64)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_shipped_model_beats_a_random_floor(shipped: huihua.Engine) -> None:
    report = evaluate(make_generate_fn(shipped, SynthEvalParams()), QUICK_PROMPTS, seeds=QUICK_SEEDS)
    assert report.image_accuracy >= QUICK_FLOOR, report.format()


def test_random_weights_stay_under_the_floor() -> None:
    """The shipped model with its UNet re-drawn at random (same shapes): nothing to detect."""
    from huihua.nn.unet import UNetModel

    engine = huihua.load(SHIPPED, device="cpu")
    torch.manual_seed(0)
    engine.unet.load_state_dict(UNetModel(engine.spec.unet).state_dict())
    report = evaluate(make_generate_fn(engine, SynthEvalParams(steps=6)), QUICK_PROMPTS, seeds=QUICK_SEEDS)
    assert report.image_accuracy < QUICK_FLOOR, report.format()


def _oracle(x0: torch.Tensor, abar: torch.Tensor, kind: str):
    """A 'UNet' that knows the clean latents and returns the exact eps or v of its input."""

    def model(x_t: torch.Tensor, t: torch.Tensor, _context: torch.Tensor) -> torch.Tensor:
        a = abar[t].float().view(-1, 1, 1, 1)
        noise = (x_t - a.sqrt() * x0) / (1.0 - a).sqrt()
        return noise if kind == "eps" else a.sqrt() * noise - (1.0 - a).sqrt() * x0

    return model


@pytest.mark.parametrize("gamma", [None, 5.0])
@pytest.mark.parametrize("offset", [0.0, 0.1])
def test_ddpm_loss_targets_eps_and_v(gamma, offset) -> None:
    from huihua.train.ddpm_train import alphas_cumprod, ddpm_loss

    abar = alphas_cumprod()
    x0 = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ctx = torch.zeros(6, 3, 8)
    for kind in ("eps", "v"):
        exact = ddpm_loss(_oracle(x0, abar, kind), x0, ctx, abar, torch.Generator().manual_seed(1), gamma, offset, kind)
        other = "v" if kind == "eps" else "eps"
        wrong = ddpm_loss(_oracle(x0, abar, other), x0, ctx, abar, torch.Generator().manual_seed(1), gamma, offset, kind)
        assert float(exact) < 1e-8 and float(wrong) > 1e-3, (kind, float(exact), float(wrong))


def test_timestep_draws_uniform_or_logit_normal_mixture() -> None:
    from huihua.train.ddpm_train import draw_timesteps

    def g() -> torch.Generator:
        return torch.Generator().manual_seed(3)

    plain = draw_timesteps(4000, 1000, g())
    assert torch.equal(plain, torch.randint(0, 1000, (4000,), generator=g()))  # the old draws, unchanged
    assert torch.equal(draw_timesteps(4000, 1000, g(), (-0.4, 1.0), 1.0), plain)  # all uniform
    centred = draw_timesteps(4000, 1000, g(), (-0.4, 1.0), 0.0).double()
    assert centred.min() >= 0 and centred.max() <= 999
    # sigmoid(-0.4) = 0.401: the median; sigmoid(-0.4 +- 1) = 0.198 and 0.646 bound the middle 68%.
    assert abs(centred.median().item() - 401) < 15
    assert abs(((centred >= 198) & (centred < 646)).double().mean().item() - 0.683) < 0.03
    assert (plain >= 700).double().mean() > 0.25 > (centred >= 700).double().mean()
    with pytest.raises(ParameterError, match="std"):
        draw_timesteps(4, 1000, g(), (0.0, 0.0))


def test_quick_recipe_exports_its_prediction_type(tmp_path: Path) -> None:
    r = quick_recipe()
    assert r.ddpm.prediction == "v"
    path = train_default(r, tmp_path, progress=False).path
    assert huihua.load(path, device="cpu").spec.prediction == "v"
    other = replace(r, ddpm=replace(r.ddpm, prediction="eps"))
    path = train_default(other, tmp_path / "eps", progress=False).path
    assert huihua.load(path, device="cpu").spec.prediction == "eps"
    assert not huihua.load(path, device="cpu").spec.zero_terminal_snr
    zsnr = replace(r, ddpm=replace(r.ddpm, zero_terminal_snr=True))
    engine = huihua.load(train_default(zsnr, tmp_path / "zsnr", progress=False).path, device="cpu")
    assert engine.spec.zero_terminal_snr and engine.model_sampling.sigma_max > 4000
    # Adapter trainers take the loaded model's objective: v and its zero-terminal-SNR schedule.
    from huihua.train.ddpm_train import DDPMTrainConfig, model_objective

    objective = model_objective(DDPMTrainConfig(), engine.spec)
    assert (objective.prediction, objective.zero_terminal_snr) == ("v", True)


def test_edge_map_marks_colour_changes_only() -> None:
    from huihua.train.vae_train import edge_map

    pixels = torch.full((1, 3, 16, 16), -1.0)
    pixels[:, 0, 6:10, 6:10] = 1.0  # a red square on black
    edge = edge_map(pixels)[0, 0]
    assert edge.shape == (16, 16)
    assert edge[7, 5] == 1 and edge[6, 6] == 1 and edge[5, 5] == 1   # on and beside the outline
    assert edge[0, 0] == 0 and edge[15, 15] == 0 and edge[3, 8] == 0  # flat background
    assert float(edge_map(torch.zeros(2, 3, 8, 8)).sum()) == 0.0


def test_reconstruction_loss_weighs_edges() -> None:
    from huihua.train.vae_train import VAETrainConfig, reconstruction_loss

    target = torch.full((1, 3, 16, 16), -1.0)
    target[:, :, 6:10, 6:10] = 1.0
    blurred = torch.nn.functional.avg_pool2d(target, 3, stride=1, padding=1, count_include_pad=False)
    err = blurred - target
    plain = reconstruction_loss(blurred, target, VAETrainConfig(edge_weight=0.0))
    assert float(plain) == pytest.approx(float(err.abs().mean() + err.pow(2).mean()), rel=1e-6)
    weighted = reconstruction_loss(blurred, target, VAETrainConfig(edge_weight=10.0))
    # every error of a blur sits on the outline, so the weight multiplies all of it
    assert float(weighted) == pytest.approx(11.0 * float(plain), rel=1e-5)


def test_heldout_detector_accuracy_is_the_vae_ceiling() -> None:
    """A lossless autoencoder keeps every picture true to its caption; a random one keeps none."""
    from types import SimpleNamespace

    from huihua.nn.vae import AutoencoderKL
    from huihua.train.vae_train import heldout_detector_accuracy, heldout_psnr

    identity = SimpleNamespace(encode=lambda x: x, decode=lambda z: z,
                               quant_conv=SimpleNamespace(weight=torch.zeros(1)))
    assert heldout_detector_accuracy(identity, seed=5, n=8) == 1.0
    assert heldout_psnr(identity, seed=5, n=8) == float("inf")
    torch.manual_seed(0)
    random_vae = AutoencoderKL(quick_recipe().vae)
    assert heldout_detector_accuracy(random_vae, seed=5, n=8) == 0.0
