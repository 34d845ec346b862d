"""The recipe of huihua's embedded default model: hyper-parameters, the stages, and the export.

Stages, each resumable from its own checkpoint in the output folder: ``clip`` (contrastive text +
vision towers), ``vae`` (KL autoencoder, edges weighed up), ``decoder`` (the decoder fine-tuned on
the frozen encoder's latent means), ``latents`` (encode a fixed data set once), ``unet``
(v-prediction diffusion with EMA). ``export`` writes one SD1-layout ``.safetensors`` with the
``huihua.arch`` metadata the loader needs. Every random draw is seeded from the recipe's seed and
the step number.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from huihua.checkpoints.detect import ARCH_METADATA_KEY
from huihua.checkpoints.tokenizer import CLIPTokenizer
from huihua.errors import ParameterError
from huihua.families import SD1_TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX
from huihua.nn.configs import CLIPTextConfig, UNetConfig, VAEConfig
from huihua.nn.unet import UNetModel
from huihua.nn.vae import AutoencoderKL
from huihua.train.clip_train import (
    CLIPTrainConfig,
    TinyCLIP,
    clip_loss_fn,
    zero_shot_accuracy,
)
from huihua.train.ddpm_train import (
    DDPMTrainConfig,
    LatentDataset,
    ddpm_loss_fn,
    encode_dataset,
)
from huihua.train.loop import LoopConfig, train_loop
from huihua.train.vae_train import (
    VAETrainConfig,
    decoder_loss_fn,
    heldout_detector_accuracy,
    heldout_psnr,
    latent_scale_factor,
    vae_loss_fn,
)
from huihua.train.vision import ViTConfig

CLIP_PREFIX = "huihua_clip."
MODEL_FILE = "huihua-default.safetensors"
_TEXT = CLIPTextConfig(width=128, layers=4, heads=4, intermediate=512)


@dataclass(frozen=True)
class DefaultRecipe:
    """Every hyper-parameter of the default model; ``DefaultRecipe()`` reproduces the shipped file."""

    seed: int = 20_241_123
    # parse_weight stays 0: at 5 the caption-reading loss spreads shape and place words over the
    # text tower's outputs, and the UNet then tells shapes apart better, but a full run with it
    # scored no better on eval-synth (README, model card).
    clip: CLIPTrainConfig = CLIPTrainConfig(text=_TEXT, vision=ViTConfig(), embed_dim=128, batch=64)
    clip_loop: LoopConfig = LoopConfig(steps=300, lr=1e-3, warmup=30)
    vae: VAEConfig = VAEConfig(ch=16, ch_mult=(1, 2, 4), num_res_blocks=1, norm_num_groups=8,
                               z_channels=4)
    # Edge pixels weigh 1 + edge_weight: a plain per-pixel loss rounds small stars and crosses into
    # blobs. Held-out reconstructions the detector passes after 800 steps: 32/128 with weight 0,
    # 46 with 4, 77 with 12, 80 with 24, 42 with 48 (unstable).
    vae_train: VAETrainConfig = VAETrainConfig(batch=16, kl_weight=1e-6, edge_weight=16.0)
    vae_loop: LoopConfig = LoopConfig(steps=4000, lr=1e-3, warmup=40)
    decoder_loop: LoopConfig = LoopConfig(steps=1000, lr=5e-4, warmup=20)
    unet: UNetConfig = UNetConfig(model_channels=32, channel_mult=(1, 2, 4), num_res_blocks=1,
                                  transformer_depth=(0, 1, 1), transformer_depth_middle=1,
                                  num_heads=4, context_dim=128)
    # v-prediction (its loss weighs x0 errors by 1 + SNR, so the layout, decided at high noise, is
    # learnt; eps weighs them by the SNR, about 0.005 there, and its samples lock in textures) and
    # offset noise (the prompt, not the starting noise's mean, must decide the background).
    ddpm: DDPMTrainConfig = DDPMTrainConfig(dataset_size=36_000, batch=32, caption_dropout=0.1,
                                            offset_noise=0.1, prediction="v")
    latents_seed_offset: int = 500_000
    unet_loop: LoopConfig = LoopConfig(steps=16_000, lr=1e-3, warmup=200, ema_decay=0.999)
    resolution: int = 64
    # Images used to measure the stages: CLIP zero-shot, VAE held-out PSNR, latent scale factor.
    probe_images: tuple[int, int, int] = (200, 64, 256)


def quick_recipe(seed: int = 0) -> DefaultRecipe:
    """A seconds-long recipe with tiny widths, for smoke tests of the whole pipeline."""
    text = CLIPTextConfig(width=32, layers=1, heads=2, intermediate=64)
    fast = LoopConfig(steps=3, lr=1e-3, warmup=1, checkpoint_seconds=0.0)
    return DefaultRecipe(
        seed=seed,
        clip=CLIPTrainConfig(text=text, vision=ViTConfig(width=32, layers=1, heads=2, embed_dim=16),
                             embed_dim=16, batch=8, tokens=24),
        clip_loop=fast,
        vae=VAEConfig(ch=8, ch_mult=(1, 1, 2), num_res_blocks=1, norm_num_groups=4, z_channels=4),
        vae_train=VAETrainConfig(batch=4),
        vae_loop=fast,
        decoder_loop=fast,
        unet=UNetConfig(model_channels=32, channel_mult=(1, 1), num_res_blocks=1, transformer_depth=(0, 1),
                        transformer_depth_middle=0, num_heads=2, context_dim=32),
        ddpm=DDPMTrainConfig(dataset_size=16, batch=4, encode_chunk=8, offset_noise=0.1, prediction="v"),
        unet_loop=LoopConfig(steps=4, lr=1e-3, warmup=1, ema_decay=0.9, checkpoint_seconds=0.0),
        probe_images=(8, 4, 16),
    )


@dataclass(frozen=True)
class TrainResult:
    """Where the model went and what was measured on the way."""

    path: Path
    metrics: dict[str, float] = field(default_factory=dict)


M = TypeVar("M", bound=nn.Module)


def seeded_module(seed: int, build: Callable[[], M]) -> M:
    """Build a module with its initial weights drawn from ``seed`` (a private generator state)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _stage_clip(r: DefaultRecipe, out: Path, tok: CLIPTokenizer, progress: bool, log, device) -> tuple[TinyCLIP, dict]:
    """Train the tiny CLIP; return it frozen with its zero-shot figures."""
    c = r.clip
    model = seeded_module(
        r.seed + 1, lambda: TinyCLIP(c.text, c.vision, c.embed_dim, caption_heads=c.parse_weight > 0)
    ).to(device)
    losses, _ = train_loop("clip", model, clip_loss_fn(model, c, tok, r.seed * 7 + 100_000), r.clip_loop,
                           out / "clip.pt", progress, log)
    model.requires_grad_(False)
    metrics = zero_shot_accuracy(model, tok, seed=r.seed + 999, n=r.probe_images[0], tokens=c.tokens)
    metrics["clip_final_loss"] = sum(losses[-20:]) / len(losses[-20:])
    return model, metrics


def _stage_vae(r: DefaultRecipe, out: Path, progress: bool, log, device) -> tuple[AutoencoderKL, dict]:
    """Train the autoencoder; return it frozen with held-out PSNR and the latent scale factor."""
    vae = seeded_module(r.seed + 2, lambda: AutoencoderKL(r.vae)).to(device)
    losses, _ = train_loop("vae", vae, vae_loss_fn(vae, r.vae_train, r.seed * 7 + 200_000, r.seed + 2),
                           r.vae_loop, out / "vae.pt", progress, log)
    vae.requires_grad_(False)
    metrics = {"vae_heldout_psnr": heldout_psnr(vae, r.seed + 998, r.probe_images[1]),
               "scale_factor": latent_scale_factor(vae, r.seed + 997, r.probe_images[2]),
               "vae_final_loss": sum(losses[-20:]) / len(losses[-20:])}
    return vae, metrics


def stage_decoder(r: DefaultRecipe, out: Path, vae: AutoencoderKL, progress: bool, log) -> dict:
    """Fine-tune the decoder on frozen-encoder latents (in place); the latent space is unchanged."""
    losses, _ = train_loop("decoder", vae, decoder_loss_fn(vae, r.vae_train, r.seed * 7 + 400_000),
                           r.decoder_loop, out / "decoder.pt", progress, log)
    vae.requires_grad_(False)
    return {"vae_heldout_psnr_finetuned": heldout_psnr(vae, r.seed + 998, r.probe_images[1]),
            "vae_heldout_detector": heldout_detector_accuracy(vae, r.seed + 998, r.probe_images[1]),
            "decoder_final_loss": sum(losses[-20:]) / len(losses[-20:])}


def _stage_latents(r: DefaultRecipe, out: Path, vae: AutoencoderKL, clip: TinyCLIP, tok: CLIPTokenizer,
                   scale: float) -> LatentDataset:
    """Encode the diffusion data set once (cached in ``latents.pt``; a cache of another size is redone)."""
    cfg = r.ddpm
    path = out / "latents.pt"
    if path.exists():
        state = torch.load(path, map_location="cpu")
        if state["latents"].shape[0] == cfg.dataset_size:
            return LatentDataset(state["latents"], state["contexts"], state["empty_context"])
    data = encode_dataset(vae, clip.text, tok, scale, r.seed * 7 + r.latents_seed_offset, cfg)
    tmp = path.with_suffix(".tmp")
    torch.save({"latents": data.latents, "contexts": data.contexts, "empty_context": data.empty_context}, tmp)
    tmp.replace(path)
    return data


def _stage_unet(r: DefaultRecipe, out: Path, data: LatentDataset, progress: bool, log, device
                ) -> tuple[UNetModel, dict]:
    """Train the UNet; return it holding its EMA weights."""
    unet = seeded_module(r.seed + 3, lambda: UNetModel(r.unet)).to(device)
    losses, ema = train_loop("unet", unet, ddpm_loss_fn(unet, data, r.ddpm, r.seed + 3), r.unet_loop,
                             out / "unet.pt", progress, log)
    if ema is not None:
        unet.load_state_dict(ema.state_dict())
    unet.requires_grad_(False)
    return unet, {"unet_final_loss": sum(losses[-50:]) / len(losses[-50:])}


def arch_metadata(r: DefaultRecipe, scale_factor: float) -> dict:
    """What shapes cannot reveal: heads, norm groups, latent scale and native resolution."""
    arch = {"num_heads": r.unet.num_heads, "text_heads": [r.clip.text.heads],
            "vae_norm_groups": r.vae.norm_num_groups, "scale_factor": scale_factor,
            "resolution": r.resolution, "prediction": r.ddpm.prediction}
    if r.ddpm.zero_terminal_snr:
        arch["zero_terminal_snr"] = True
    return arch


def export_state_dict(unet: UNetModel, vae: AutoencoderKL, clip: TinyCLIP) -> dict[str, Tensor]:
    """The LDM single-file layout (SD1 text prefix) plus the CLIP extras, fp16, contiguous."""
    out: dict[str, Tensor] = {}
    parts = ((UNET_PREFIX, unet.state_dict()), (VAE_PREFIX, vae.state_dict()),
             (SD1_TEXT_PREFIX, clip.text.state_dict()), (CLIP_PREFIX, clip.extra_state_dict()))
    for prefix, state in parts:
        for key, value in state.items():
            out[prefix + key] = value.detach().cpu().to(torch.float16).contiguous()
    return out


def export_model(path: Path, unet: UNetModel, vae: AutoencoderKL, clip: TinyCLIP, recipe: DefaultRecipe,
                 scale_factor: float, metrics: dict) -> Path:
    """Write the single ``.safetensors`` file with ``huihua.arch`` (and the recipe, metrics) metadata."""

    metadata = {ARCH_METADATA_KEY: json.dumps(arch_metadata(recipe, scale_factor)),
                "huihua.prediction": recipe.ddpm.prediction,
                "huihua.recipe": json.dumps(asdict(recipe)),
                "huihua.metrics": json.dumps({k: round(float(v), 5) for k, v in metrics.items()})}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(export_state_dict(unet, vae, clip), str(path), metadata=metadata)
    return path


def train_default(recipe: DefaultRecipe, out: Path, resume: bool = False, progress: bool = True,
                  log: Callable[[str], None] | None = None, device: str | torch.device = "cpu") -> TrainResult:
    """Run every stage into ``out`` (resuming its checkpoints when ``resume``) and export the model.

    Seeds fix every draw, so a device gives the same file each run; CPU and GPU arithmetic differ in
    rounding, so their files differ slightly (the shipped file was trained on CPU).
    """
    device = torch.device(device)
    out = Path(out)
    if out.exists() and any(out.glob("*.pt")) and not resume:
        raise ParameterError(f"--out {out}: holds training checkpoints; pass --resume or use an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _msg: None)
    tok = CLIPTokenizer.default()
    clock = time.monotonic()
    clip, metrics = _stage_clip(recipe, out, tok, progress, say, device)
    say(f"clip done {time.monotonic() - clock:.0f}s {metrics}")
    vae, vae_metrics = _stage_vae(recipe, out, progress, say, device)
    metrics.update(vae_metrics)
    say(f"vae done {time.monotonic() - clock:.0f}s {vae_metrics}")
    # Only the decoder changes, so the latent space (the UNet's inputs) stays that of the vae stage.
    decoder_metrics = stage_decoder(recipe, out, vae, progress, say)
    metrics.update(decoder_metrics)
    say(f"decoder done {time.monotonic() - clock:.0f}s {decoder_metrics}")
    data = _stage_latents(recipe, out, vae, clip, tok, metrics["scale_factor"])
    say(f"latents done {time.monotonic() - clock:.0f}s {tuple(data.latents.shape)}")
    unet, unet_metrics = _stage_unet(recipe, out, data, progress, say, device)
    metrics.update(unet_metrics)
    say(f"unet done {time.monotonic() - clock:.0f}s {unet_metrics}")
    path = export_model(out / MODEL_FILE, unet, vae, clip, recipe, metrics["scale_factor"], metrics)
    return TrainResult(path, metrics)
