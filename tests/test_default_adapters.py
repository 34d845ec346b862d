"""The adapter trainers (smoke runs on a tiny random engine) and the adapters shipped beside the
default model: the "red" LoRA paints the named objects red, the silhouette ControlNet puts the
object where the hint's silhouette is. Effects are measured with the world's detector (and, for the
ControlNet, also the centroid of the prompt colour's pixels).

Margins: measured effect sizes are in ``huihua/assets/adapters/README.md``; the thresholds here
leave about half of the measured difference as slack.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import huihua
from huihua.adapters.lora import load_lora
from huihua.adapters.lora_keys import build_targets
from huihua.adapters.patcher import LoraUse, WeightPatcher
from huihua.train.controlnet_train import (PLACEMENT_PROBES, ControlNetTrainConfig, build_controlnet,
                                           controlnet_effect, controlnet_loss_fn, save_controlnet, silhouette,
                                           silhouette_pairs, train_controlnet)
from huihua.train.ddpm_train import DDPMTrainConfig, ddpm_loss_fn
from huihua.train.lora_train import (RED_PROBE_PROMPTS, LoraNetwork, LoraTrainConfig, encode_pairs, lora_effect,
                                     recolour_edit, save_lora, target_layers, train_lora, world_pairs)
from huihua.train.loop import LoopConfig
from huihua.nn.unet import UNetModel
from huihua.nn.vae import AutoencoderKL
from huihua.train.clip_train import TinyCLIP
from huihua.train.default_model import export_model, quick_recipe

ASSETS = Path(huihua.__file__).parent / "assets"
MODEL = ASSETS / "huihua-default.safetensors"
ADAPTERS = ASSETS / "adapters"
LORA = ADAPTERS / "huihua-red.safetensors"
CONTROLNET = ADAPTERS / "huihua-silhouette.safetensors"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A random engine shaped like the default model's quick recipe (64x64, VAE downscale 4)."""
    r = quick_recipe()
    torch.manual_seed(0)
    clip = TinyCLIP(r.clip.text, r.clip.vision, r.clip.embed_dim)
    path = export_model(tmp_path_factory.mktemp("tiny") / "tiny.safetensors", UNetModel(r.unet),
                        AutoencoderKL(r.vae), clip, r, 1.0, {})
    return huihua.load(path, device="cpu")


def _mean_loss(loss_fn, steps: range) -> float:
    """The loss over fixed steps (same batches, timesteps and noise each time it is asked)."""
    with torch.no_grad():
        return float(np.mean([float(loss_fn(i)) for i in steps]))


# --- trainers on a tiny random engine ----------------------------------------------------------


def test_recolour_keeps_captions_and_paints_every_object() -> None:
    pairs = world_pairs(3, 12, recolour_edit("red"), size=32)
    assert len(pairs.captions) == 12 and pairs.images.shape == (12, 32, 32, 3)
    for scene, image in zip(pairs.scenes, pairs.images):
        assert scene.background != "red" and all(o.colour == "red" for o in scene.objects)
        assert (np.abs(image.astype(int) - (220, 30, 30)).sum(axis=-1) < 10).any()  # red pixels drawn
    # Captions still name other colours: what the LoRA learns is to paint them red anyway.
    assert any(c in caption for caption in pairs.captions for c in ("blue", "green", "yellow", "white"))


def test_silhouette_is_white_objects_on_black() -> None:
    probe = PLACEMENT_PROBES[0]
    mask = silhouette(probe.scene)
    assert mask.shape == (64, 64, 3) and mask[0, 0, 0] == 0
    ys, xs = np.nonzero(mask[:, :, 0] == 255)
    assert abs(xs.mean() / 64 - probe.centre[0]) < 0.03 and abs(ys.mean() / 64 - probe.centre[1]) < 0.03


def test_lora_trainer_lowers_the_loss_and_saves_a_kohya_file_the_loader_reads(engine, tmp_path: Path) -> None:
    cfg = LoraTrainConfig(rank=2, data=DDPMTrainConfig(dataset_size=8, batch=4, encode_chunk=8),
                          loop=LoopConfig(steps=30, lr=5e-2, warmup=1, checkpoint_seconds=1e9))
    pairs = world_pairs(0, 8, recolour_edit("red"))
    before = {k: v.clone() for k, v in engine.unet.state_dict().items()}
    network, losses = train_lora(engine, pairs, cfg, tmp_path / "work")
    assert len(losses) == 30 and all(np.isfinite(losses))
    data = encode_pairs(engine, pairs.images, pairs.captions)
    fixed = ddpm_loss_fn(engine.unet, data, replace(cfg.data, prediction=engine.spec.prediction), noise_seed=99)
    start = LoraNetwork(target_layers(engine.unet, cfg.targets), cfg.rank, cfg.alpha, cfg.seed)
    with start.attached(engine.unet):
        untrained = _mean_loss(fixed, range(6))
    with network.attached(engine.unet):
        trained = _mean_loss(fixed, range(6))
    # A random UNet's loss cannot go far below 1 (the noise variance); measured 1.106 -> 1.024.
    assert trained < untrained - 0.04, (untrained, trained)
    for key, value in engine.unet.state_dict().items():  # training never wrote the model's weights
        assert torch.equal(value, before[key]), key

    path = save_lora(tmp_path / "loras" / "tinyred.safetensors", network, engine)
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.") for k in keys)
    assert len(keys) == 3 * len(network.names)
    # Through the real loading path: names resolved by the loader, weights patched and restored.
    patches = load_lora(path, build_targets(engine.spec, engine.unet, engine.text_encoders))
    assert len(patches.patches) == len(network.names)
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    t, context = torch.tensor([900, 300]), data.contexts[:2].float()
    with torch.no_grad():
        plain = engine.unet(x, t, context)
        with network.attached(engine.unet):
            hooked = engine.unet(x, t, context)
        patcher = WeightPatcher.for_model(engine)
        patcher.apply([LoraUse(patches)])
        patched = engine.unet(x, t, context)
        patcher.restore()
    change = float((hooked - plain).abs().mean())
    assert change > 1e-3
    assert float((patched - hooked).abs().mean()) < 0.02 * change  # the file holds the factors in fp16
    for key, value in engine.unet.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_controlnet_trainer_starts_neutral_learns_and_round_trips(engine, tmp_path: Path) -> None:
    cfg = ControlNetTrainConfig(data=DDPMTrainConfig(dataset_size=8, batch=4, encode_chunk=8),
                                loop=LoopConfig(steps=25, lr=5e-3, warmup=1, checkpoint_seconds=1e9))
    pairs, hints = silhouette_pairs(cfg)
    assert hints.shape == (8, 1, 64, 64)
    downscale = engine.spec.vae.downscale
    start = build_controlnet(engine.unet, engine.spec.unet, cfg, downscale)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = start(x, torch.ones(1, 3, 64, 64), torch.tensor([500]), torch.zeros(1, 77, 32))
    assert all(float(o.abs().max()) == 0.0 for o in outs)  # zero convolutions: no effect before training
    assert torch.equal(start.input_blocks[1][0].in_layers[2].weight, engine.unet.input_blocks[1][0].in_layers[2].weight)

    net, losses = train_controlnet(engine, pairs, hints, cfg, tmp_path / "work")
    assert len(losses) == 25 and all(np.isfinite(losses))
    data = encode_pairs(engine, pairs.images, pairs.captions)
    hint_t = torch.from_numpy(hints)
    objective = replace(cfg.data, prediction=engine.spec.prediction)
    untrained = _mean_loss(controlnet_loss_fn(engine.unet, start, data, hint_t, objective, 99), range(6))
    trained = _mean_loss(controlnet_loss_fn(engine.unet, net, data, hint_t, objective, 99), range(6))
    assert trained < 0.8 * untrained, (untrained, trained)  # measured 1.101 -> 0.566

    loaded = engine.load_controlnet(save_controlnet(tmp_path / "cn.safetensors", net))
    assert loaded.control_cfg.hint_downscale == downscale
    for name, value in net.state_dict().items():
        assert torch.allclose(loaded.state_dict()[name], value, atol=1e-2, rtol=1e-2), name


# --- the shipped adapters on the shipped model ------------------------------------------------

shipped = pytest.mark.skipif(not (MODEL.is_file() and LORA.is_file() and CONTROLNET.is_file()),
                             reason="the default model or its shipped adapters are not in this checkout "
                                    "(build them with 'huihua train-default' and 'huihua train-adapters')")


@pytest.fixture(scope="module")
def default_engine():
    return huihua.load(MODEL, device="cpu", lora_dirs=[ADAPTERS])


@shipped
def test_shipped_lora_paints_the_objects_red_and_restores_the_weights(default_engine) -> None:
    before = {k: v.clone() for k, v in default_engine.unet.state_dict().items()}
    base = default_engine.generate(prompt="a blue square", seed=0, steps=10, sampler_name="Euler").images[0]
    zero = default_engine.generate(prompt="a blue square <lora:huihua-red:0>", seed=0, steps=10,
                                   sampler_name="Euler").images[0]
    assert np.array_equal(np.asarray(base), np.asarray(zero))
    # The detector's verdict on 8 prompts naming another colour x seeds 0-1, 10 Euler steps:
    # pictures with a detected red object, measured 0/16 without the LoRA and 6/16 with it.
    effect = lora_effect(default_engine, "huihua-red", seeds=(0, 1), steps=10)
    assert effect.pictures == 16
    assert effect.with_lora >= effect.without + 0.18, effect
    for key, value in default_engine.unet.state_dict().items():
        assert torch.equal(value, before[key]), key


@shipped
def test_shipped_controlnet_puts_the_object_on_the_silhouette(default_engine) -> None:
    net = default_engine.load_controlnet(CONTROLNET)
    effect = controlnet_effect(default_engine, net, PLACEMENT_PROBES, seeds=(0,), steps=10)
    # Measured on the 8 probes, seed 0, 10 Euler steps: a detected object of the prompt's colour
    # within 0.1 of the hint's centre 1/8 -> 7/8; median colour-centroid distance 0.296 -> 0.035.
    assert effect.median_error_with < 0.3 * effect.median_error_without, effect
    assert effect.with_controlnet >= effect.without + 0.375, effect
