"""Training a kohya-format LoRA on a loaded model's UNet, with the default model's DDPM loss and loop.

The LoRA factors live outside the model: forward hooks add ``scale * up(down(x))`` to the outputs
of the chosen ``nn.Linear`` layers while training, so the model's own weights are never written.
The file is saved under kohya/A1111 names (``lora_unet_<diffusers module path>.lora_down.weight``
/ ``.lora_up.weight`` / ``.alpha``), found through the loader's own name tables (``lora_keys``), so
it goes back in through ``<lora:name:w>`` like any downloaded LoRA.

The shipped example, "red": pairs of the procedural world whose captions stay as they are while
every object is drawn red. At weight 1 the model paints red what the prompt names in any colour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from huihua.adapters.lora_keys import underscore, unet_table
from huihua.errors import ParameterError
from huihua.synth.captions import caption_text
from huihua.synth.detector import detect
from huihua.synth.render import render
from huihua.synth.scene import COLOURS, CaptionSpec, Scene
from huihua.synth.world import sample_scene
from huihua.train.clip_train import to_pixels
from huihua.train.ddpm_train import (
    DDPMTrainConfig,
    LatentDataset,
    ddpm_loss_fn,
    model_objective,
    text_context,
)
from huihua.train.loop import LoopConfig, train_loop

# Attention projections of every SpatialTransformer block (self- and cross-attention), and its MLP.
ATTENTION_PROJECTIONS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                         "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")
TRANSFORMER_LINEARS = ATTENTION_PROJECTIONS + ("ff.net.0.proj", "ff.net.2")

# A scene edit: (scene, caption spec, rng) -> the scene to draw, or None to skip the pair.
SceneEdit = Callable[[Scene, CaptionSpec, np.random.Generator], Scene | None]


@dataclass(frozen=True)
class LoraTrainConfig:
    """What a LoRA training run learns and how: rank, targets, data size and optimisation."""

    rank: int = 4
    alpha: float = 4.0
    targets: tuple[str, ...] = TRANSFORMER_LINEARS
    data: DDPMTrainConfig = DDPMTrainConfig(dataset_size=2048, batch=16, caption_dropout=0.1)
    loop: LoopConfig = LoopConfig(steps=700, lr=5e-3, warmup=30, checkpoint_seconds=60.0)
    seed: int = 7


@dataclass(frozen=True)
class WorldPairs:
    """Edited world pairs: uint8 images (N, H, W, 3), captions, and the scenes that were drawn."""

    images: np.ndarray
    captions: list[str]
    scenes: list[Scene]


def world_pairs(seed: int, n: int, edit: SceneEdit, size: int = 64) -> WorldPairs:
    """``n`` training-split pairs from ``seed`` whose scenes ``edit`` redraws (captions unchanged)."""
    if n < 1:
        raise ParameterError(f"dataset_size must be at least 1, got {n}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions: list[str] = []
    scenes: list[Scene] = []
    while len(captions) < n:
        scene, spec = sample_scene(rng, "train")
        caption = caption_text(spec, rng)
        edited = edit(scene, spec, rng)
        if edited is None:
            continue
        images[len(captions)] = render(edited, size=size)
        captions.append(caption)
        scenes.append(edited)
    return WorldPairs(images, captions, scenes)


def recolour_edit(colour: str) -> SceneEdit:
    """Draw every object in ``colour``; a background of that colour becomes another one."""
    if colour not in COLOURS:
        raise ParameterError(f"colour must be one of {', '.join(COLOURS)}, got {colour!r}")

    def edit(scene: Scene, spec: CaptionSpec, rng: np.random.Generator) -> Scene | None:
        if spec.background == colour:
            return None  # the caption would claim a background the objects now share
        background = scene.background
        if background == colour:
            others = [c for c in COLOURS if c != colour]
            background = others[int(rng.integers(len(others)))]
        return Scene(background, tuple(replace(o, colour=colour) for o in scene.objects))

    return edit


def background_edit(colour: str) -> SceneEdit:
    """Draw every scene on a ``colour`` background; scenes with an object of that colour are skipped."""
    if colour not in COLOURS:
        raise ParameterError(f"colour must be one of {', '.join(COLOURS)}, got {colour!r}")

    def edit(scene: Scene, spec: CaptionSpec, rng: np.random.Generator) -> Scene | None:
        if spec.background is not None or any(o.colour == colour for o in scene.objects):
            return None  # a caption naming the background, or an object that would vanish
        return Scene(colour, scene.objects)

    return edit


@torch.no_grad()
def encode_pairs(engine, images: np.ndarray, captions: list[str], chunk: int = 64) -> LatentDataset:
    """Encode pairs with the engine's VAE and text tower as the default model's training did (fp16)."""
    vae, text = engine.vae, engine.text_encoders[0]
    scale = engine.spec.vae.scale_factor
    latents, contexts = [], []
    for start in range(0, len(captions), chunk):
        pixels = to_pixels(images[start:start + chunk]).to(engine.device, engine.dtype)
        latents.append((vae.encode(pixels).float() * scale).half().cpu())
        contexts.append(text_context(text, engine.tokenizer, captions[start:start + chunk]).half())
    empty = text_context(text, engine.tokenizer, [""])[0].half()
    return LatentDataset(torch.cat(latents), torch.cat(contexts), empty)


def target_layers(unet: nn.Module, targets: tuple[str, ...]) -> dict[str, nn.Linear]:
    """The UNet's ``nn.Linear`` layers whose module path ends in one of ``targets`` (LDM names)."""
    found = {name: m for name, m in unet.named_modules()
             if isinstance(m, nn.Linear) and any(name.endswith("." + t) for t in targets)}
    if not found:
        raise ParameterError(f"targets: no Linear layer of the UNet ends in {', '.join(targets)}")
    return found


class LoraNetwork(nn.Module):
    """Rank-``r`` factors for named Linear layers; ``attached(unet)`` adds them through forward hooks."""

    def __init__(self, layers: dict[str, nn.Linear], rank: int, alpha: float, seed: int) -> None:
        super().__init__()
        if rank < 1:
            raise ParameterError(f"rank must be at least 1, got {rank}")
        self.names = sorted(layers)
        self.rank, self.alpha = rank, float(alpha)
        g = torch.Generator().manual_seed(seed)
        # kohya's start: random down (variance 1/in), zero up, so the LoRA begins as the identity.
        self.down = nn.ParameterList(
            nn.Parameter(torch.randn(rank, layers[n].in_features, generator=g) / math.sqrt(layers[n].in_features))
            for n in self.names)
        self.up = nn.ParameterList(nn.Parameter(torch.zeros(layers[n].out_features, rank)) for n in self.names)

    @property
    def scale(self) -> float:
        """kohya's multiplier ``alpha / rank``."""
        return self.alpha / self.rank

    @contextmanager
    def attached(self, unet: nn.Module) -> Iterator[None]:
        """Hooks on the UNet's layers for the block; the UNet's parameters are frozen meanwhile."""
        modules = dict(unet.named_modules())
        flags = [(p, p.requires_grad) for p in unet.parameters()]
        unet.requires_grad_(False)
        handles = []
        for i, name in enumerate(self.names):
            handles.append(modules[name].register_forward_hook(self._hook(i)))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            for p, flag in flags:
                p.requires_grad_(flag)

    def _hook(self, i: int):
        def add_lora(_module: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> Tensor:
            x = inputs[0]
            return out + self.scale * F.linear(F.linear(x, self.down[i].to(x.dtype)), self.up[i].to(x.dtype))

        return add_lora


def kohya_state_dict(network: LoraNetwork, unet: nn.Module, unet_cfg) -> dict[str, Tensor]:
    """The factors under kohya SD1 names (diffusers module paths, from the loader's name table), fp16."""
    table = unet_table(unet, unet_cfg)
    out: dict[str, Tensor] = {}
    for name, down, up in zip(network.names, network.down, network.up, strict=True):
        own = underscore(name)
        aliases = [a for a, t in table.items() if t.weight.param == name + ".weight" and a != own]
        if len(aliases) != 1:
            raise ParameterError(f"targets: {name} has {len(aliases)} diffusers names, want exactly one")
        key = "lora_unet_" + aliases[0]
        out[key + ".lora_down.weight"] = down.detach().to(torch.float16).contiguous()
        out[key + ".lora_up.weight"] = up.detach().to(torch.float16).contiguous()
        out[key + ".alpha"] = torch.tensor(network.alpha, dtype=torch.float16)
    return out


def save_lora(path: Path, network: LoraNetwork, engine, metadata: dict[str, str] | None = None) -> Path:
    """Write the LoRA as a kohya-format ``.safetensors`` (with ``ss_network_*`` metadata)."""

    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(network.rank),
            "ss_network_alpha": f"{network.alpha:g}", "ss_base_model_version": "sd_v1",
            **(metadata or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(kohya_state_dict(network, engine.unet, engine.spec.unet), str(path), metadata=meta)
    return path


def _check_engine(engine) -> None:
    """Training needs fp32 weights (a CPU engine loads in fp32 by default)."""
    if engine.dtype != torch.float32:
        raise ParameterError(f"dtype: adapter training needs an fp32 engine, got {engine.dtype}")


def train_lora(engine, pairs: WorldPairs, cfg: LoraTrainConfig, work: Path, progress: bool = False,
               log: Callable[[str], None] | None = None) -> tuple[LoraNetwork, list[float]]:
    """Fit a LoRA on ``pairs`` with the DDPM loss (resumable from ``work/lora.pt``); returns it and the losses."""
    _check_engine(engine)
    data = encode_pairs(engine, pairs.images, pairs.captions, cfg.data.encode_chunk)
    network = LoraNetwork(target_layers(engine.unet, cfg.targets), cfg.rank, cfg.alpha, cfg.seed)
    network.to(engine.device)
    # The base model's own objective: eps or v and the schedule it was trained (and samples) with.
    loss = ddpm_loss_fn(engine.unet, data, model_objective(cfg.data, engine.spec), cfg.seed + 1)
    work.mkdir(parents=True, exist_ok=True)
    with network.attached(engine.unet):
        losses, _ = train_loop("lora", network, loss, cfg.loop, work / "lora.pt", progress, log)
    network.requires_grad_(False)
    return network, losses


def red_lora_pairs(cfg: LoraTrainConfig, colour: str = "red") -> WorldPairs:
    """The shipped LoRA's data: world pairs with every object drawn in ``colour``."""
    return world_pairs(cfg.seed, cfg.data.dataset_size, recolour_edit(colour))


def black_background_pairs(cfg: LoraTrainConfig) -> WorldPairs:
    """Another LoRA's data: world pairs drawn on a black background (captions unchanged)."""
    return world_pairs(cfg.seed, cfg.data.dataset_size, background_edit("black"))


# Prompts that name a colour other than red (and not orange, red's nearest palette neighbour).
RED_PROBE_PROMPTS = ("a blue square", "a green circle", "a yellow star", "a white cross",
                     "a purple square", "a blue triangle", "a green star", "a yellow circle")


def has_colour(image: np.ndarray, colour: str) -> bool:
    """Whether the detector finds an object of ``colour`` in an RGB uint8 picture."""

    return any(o.colour == colour for o in detect(image).objects)


def has_background(image: np.ndarray, colour: str) -> bool:
    """Whether the detector reads the picture's background as ``colour``."""

    return detect(image).background == colour


@dataclass(frozen=True)
class LoraEffect:
    """Share of probe pictures showing the LoRA's property, without and with it."""

    without: float
    with_lora: float
    pictures: int


def lora_effect(engine, name: str, prompts: tuple[str, ...] = RED_PROBE_PROMPTS, seeds: tuple[int, ...] = (0, 1),
                colour: str = "red", steps: int = 20, weight: float = 1.0,
                test: Callable[[np.ndarray, str], bool] = has_colour) -> LoraEffect:
    """Generate every (prompt, seed) plain and with ``<lora:name:weight>`` (engine loaded with lora_dirs);
    ``test(picture, colour)`` says whether a picture shows the property."""
    rates = []
    for suffix in ("", f" <lora:{name}:{weight:g}>"):
        hits = 0
        for prompt in prompts:
            for seed in seeds:
                image = engine.generate(prompt=prompt + suffix, seed=seed, steps=steps, cfg_scale=5.0,
                                        sampler_name="Euler").images[0]
                hits += test(np.asarray(image.convert("RGB")), colour)
        rates.append(hits / (len(prompts) * len(seeds)))
    return LoraEffect(rates[0], rates[1], len(prompts) * len(seeds))
