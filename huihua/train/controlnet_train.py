"""Training an LDM ControlNet for a loaded model: silhouette hints of the procedural world.

As in the ControlNet paper, the network starts as a copy of the model's UNet encoder (time
embedding, input blocks, middle block) with every zero convolution, the middle output and the last
hint convolution at zero, so before training it changes nothing. Only the ControlNet learns; the
UNet is frozen and the loss is the default model's DDPM loss with the residuals fed into the UNet.
Without ``attention`` the copy leaves out the encoder's attention blocks (the hint says where, the
model's own cross-attention still says what), which halves the file and the step time.

The hint is the scene's silhouette: white objects on black, at the picture's size; for a model
whose VAE downscales by 4, the hint encoder has three widths (two stride-2 stages).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor, nn

from huihua.adapters.controlnet import ControlNetUnit
from huihua.errors import ParameterError
from huihua.nn.controlnet import ControlNet, ControlNetConfig, hint_layer_indices
from huihua.synth.detector import detect
from huihua.synth.render import render
from huihua.synth.scene import PALETTE, CaptionSpec, Scene, SceneObject
from huihua.train.ddpm_train import (
    DDPMTrainConfig,
    LatentDataset,
    alphas_cumprod,
    ddpm_loss,
    loss_options,
    model_objective,
)
from huihua.train.loop import LoopConfig, step_generator, train_loop
from huihua.train.lora_train import WorldPairs, encode_pairs, world_pairs

_MIDDLE_ATTENTION = "middle_block.1."  # the middle SpatialTransformer; the 2nd ResBlock follows it


@dataclass(frozen=True)
class ControlNetTrainConfig:
    """Shape of the ControlNet, its data and its optimisation."""

    hint_widths: tuple[int, ...] = (8, 16, 32)
    attention: bool = True
    data: DDPMTrainConfig = DDPMTrainConfig(dataset_size=2048, batch=16, caption_dropout=0.5)
    loop: LoopConfig = LoopConfig(steps=400, lr=1e-3, warmup=20, checkpoint_seconds=60.0)
    seed: int = 11


def silhouette(scene: Scene, size: int = 64) -> np.ndarray:
    """The scene's objects as white on black: uint8 (size, size, 3), 0 outside and 255 inside."""
    mask = Scene("black", tuple(replace(o, colour="white") for o in scene.objects))
    pixels = render(mask, size=size).astype(np.float32)
    lo, hi = float(PALETTE["black"][0]), float(PALETTE["white"][0])
    return np.clip(np.rint((pixels - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def silhouette_pairs(cfg: ControlNetTrainConfig, size: int = 64) -> tuple[WorldPairs, np.ndarray]:
    """World pairs as drawn, with their silhouettes as uint8 (N, 1, H, W) hints."""

    def keep(scene: Scene, _spec: CaptionSpec, _rng: np.random.Generator) -> Scene:
        return scene

    pairs = world_pairs(cfg.seed, cfg.data.dataset_size, keep, size)
    hints = np.stack([silhouette(s, size)[None, :, :, 0] for s in pairs.scenes])
    return pairs, hints


def controlnet_config(unet_cfg, cfg: ControlNetTrainConfig, downscale: int) -> ControlNetConfig:
    """The ControlNet's config for a UNet, checked against the VAE's ``downscale``."""
    unet = unet_cfg
    if not cfg.attention:
        unet = replace(unet_cfg, transformer_depth=(0,) * len(unet_cfg.channel_mult), transformer_depth_middle=0)
    out = ControlNetConfig(unet=unet, hint_channels=3, hint_widths=cfg.hint_widths)
    if out.hint_downscale != downscale:
        raise ParameterError(f"hint_widths: {len(cfg.hint_widths)} widths downscale the hint by "
                             f"{out.hint_downscale}, the VAE by {downscale}")
    return out


def _source_name(name: str, unet_cfg, attention: bool) -> str:
    """The UNet parameter a ControlNet parameter copies (the middle block renumbers without attention)."""
    if attention or unet_cfg.transformer_depth_middle == 0 or not name.startswith(_MIDDLE_ATTENTION):
        return name
    return "middle_block.2." + name[len(_MIDDLE_ATTENTION):]


def build_controlnet(unet: nn.Module, unet_cfg, cfg: ControlNetTrainConfig, downscale: int) -> ControlNet:
    """A ControlNet copied from ``unet``'s encoder, zero convolutions (and last hint conv) at zero."""
    ccfg = controlnet_config(unet_cfg, cfg, downscale)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = ControlNet(ccfg)
    own = dict(unet.state_dict())
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(("input_hint_block.", "zero_convs.", "middle_block_out.")):
                continue
            source = own.get(_source_name(name, unet_cfg, cfg.attention))
            if source is None or source.shape != param.shape:
                raise ParameterError(f"ControlNet parameter {name} has no twin in the UNet")
            param.copy_(source)
        last = hint_layer_indices(len(ccfg.hint_widths))[-1]
        zeroed = [net.input_hint_block[last], net.middle_block_out, *net.zero_convs]
        for module in zeroed:
            for p in module.parameters():
                p.zero_()
    return net.to(next(unet.parameters()).device)


def controlnet_loss_fn(unet: nn.Module, net: ControlNet, data: LatentDataset, hints: Tensor,
                       cfg: DDPMTrainConfig, noise_seed: int) -> Callable[[int], Tensor]:
    """The loss of step ``i``: a batch with its hints, the UNet fed the ControlNet's residuals."""
    abar = alphas_cumprod(zero_terminal_snr=cfg.zero_terminal_snr)
    device = next(unet.parameters()).device

    def loss(step: int) -> Tensor:
        g = step_generator(noise_seed, step)
        idx = torch.randint(0, data.latents.shape[0], (cfg.batch,), generator=g)
        context = data.contexts[idx].float()
        drop = torch.rand(cfg.batch, generator=g) < cfg.caption_dropout
        context[drop] = data.empty_context.float()
        hint = hints[idx].float().div(255.0).expand(-1, 3, -1, -1).to(device)

        def controlled(x: Tensor, t: Tensor, c: Tensor) -> Tensor:
            return unet(x, t, c, control=net(x, hint, t, c))

        return ddpm_loss(controlled, data.latents[idx].float().to(device), context.to(device), abar, g,
                         **loss_options(cfg))

    return loss


def train_controlnet(engine, pairs: WorldPairs, hints: np.ndarray, cfg: ControlNetTrainConfig, work: Path,
                     progress: bool = False,
                     log: Callable[[str], None] | None = None) -> tuple[ControlNet, list[float]]:
    """Fit a ControlNet on (pairs, hints) with the UNet frozen (resumable from ``work/controlnet.pt``)."""
    if engine.dtype != torch.float32:
        raise ParameterError(f"dtype: adapter training needs an fp32 engine, got {engine.dtype}")
    data = encode_pairs(engine, pairs.images, pairs.captions, cfg.data.encode_chunk)
    net = build_controlnet(engine.unet, engine.spec.unet, cfg, engine.spec.vae.downscale)
    loss = controlnet_loss_fn(engine.unet, net, data, torch.from_numpy(hints),
                              model_objective(cfg.data, engine.spec), cfg.seed + 1)
    work.mkdir(parents=True, exist_ok=True)
    flags = [(p, p.requires_grad) for p in engine.unet.parameters()]
    engine.unet.requires_grad_(False)
    try:
        losses, _ = train_loop("controlnet", net, loss, cfg.loop, work / "controlnet.pt", progress, log)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    net.requires_grad_(False)
    return net, losses


def save_controlnet(path: Path, net: ControlNet, metadata: dict[str, str] | None = None) -> Path:
    """Write the ControlNet in the LDM layout (``control_model.*``), fp16 safetensors."""

    tensors = {f"control_model.{k}": v.detach().cpu().to(torch.float16).contiguous()
               for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata or {})
    return path


@dataclass(frozen=True)
class PlacementProbe:
    """A prompt and the one-object scene whose silhouette is the hint."""

    prompt: str
    colour: str
    scene: Scene

    @property
    def centre(self) -> tuple[float, float]:
        """Centroid of the hinted object (fractions of the side)."""
        obj = self.scene.objects[0]
        return obj.cx, obj.cy


def _probe(colour: str, shape: str, cx: float, cy: float) -> PlacementProbe:
    return PlacementProbe(f"a {colour} {shape}", colour, Scene("black", (SceneObject(shape, colour, 0.38, cx, cy),)))


# Objects off the centre, one per corner and edge: a random placement rarely lands on them.
PLACEMENT_PROBES = (_probe("blue", "square", 0.28, 0.28), _probe("green", "circle", 0.72, 0.3),
                    _probe("yellow", "star", 0.3, 0.72), _probe("white", "cross", 0.7, 0.7),
                    _probe("red", "circle", 0.5, 0.27), _probe("purple", "square", 0.27, 0.5),
                    _probe("blue", "triangle", 0.73, 0.52), _probe("yellow", "square", 0.5, 0.73))
HIT_RADIUS = 0.1


def placement_error(image: np.ndarray, probe: PlacementProbe) -> float:
    """Distance from the hint's centroid to the nearest detected object of the prompt's colour (1 if none)."""

    cx, cy = probe.centre
    found = [o for o in detect(image).objects if o.colour == probe.colour]
    return min((float(np.hypot(o.cx - cx, o.cy - cy)) for o in found), default=1.0)


COLOUR_TOLERANCE = 60.0  # RGB distance of a pixel "of the prompt's colour" from its palette value
MIN_PIXELS = 20


def colour_centroid_error(image: np.ndarray, probe: PlacementProbe) -> float:
    """Distance from the hint's centroid to the centroid of the pixels near the prompt's palette colour
    (1 if fewer than ``MIN_PIXELS``): the detector's palette, without its flat-background requirement."""
    distance = np.linalg.norm(image.astype(np.float64) - np.asarray(PALETTE[probe.colour], dtype=np.float64), axis=-1)
    ys, xs = np.nonzero(distance <= COLOUR_TOLERANCE)
    if len(xs) < MIN_PIXELS:
        return 1.0
    h, w = image.shape[:2]
    cx, cy = probe.centre
    return float(np.hypot((xs.mean() + 0.5) / w - cx, (ys.mean() + 0.5) / h - cy))


@dataclass(frozen=True)
class ControlNetEffect:
    """Placement hit rates (a detected object of the prompt's colour within ``HIT_RADIUS`` of the hint's)
    and median distances of the prompt colour's pixel centroid to the hint's, without and with."""

    without: float
    with_controlnet: float
    median_error_without: float
    median_error_with: float
    pictures: int


def controlnet_effect(engine, net: ControlNet, probes: tuple[PlacementProbe, ...] = PLACEMENT_PROBES,
                      seeds: tuple[int, ...] = (0, 1), steps: int = 20, weight: float = 1.0) -> ControlNetEffect:
    """Generate every (probe, seed) plain and with the ControlNet unit fed the probe's silhouette."""


    errors: list[list[float]] = [[], []]
    centroids: list[list[float]] = [[], []]
    for probe in probes:
        hint = Image.fromarray(silhouette(probe.scene))
        for seed in seeds:
            for i, units in enumerate(((), (ControlNetUnit(net, hint, weight=weight),))):
                image = engine.generate(prompt=probe.prompt, seed=seed, steps=steps, cfg_scale=5.0,
                                        sampler_name="Euler", controlnet_units=units).images[0]
                pixels = np.asarray(image.convert("RGB"))
                errors[i].append(placement_error(pixels, probe))
                centroids[i].append(colour_centroid_error(pixels, probe))
    hits = [float(np.mean([e <= HIT_RADIUS for e in errs])) for errs in errors]
    medians = [float(np.median(errs)) for errs in centroids]
    return ControlNetEffect(hits[0], hits[1], medians[0], medians[1], len(errors[0]))
