"""Latent-diffusion training: DDPM noise prediction on VAE latents, conditioned on the text tower.

The schedule is SD's: 1000 steps of scaled-linear betas from 0.00085 to 0.012. A fixed data set of
world pairs is encoded once (scaled latent means and 77-token text contexts, fp16) and then sampled
with replacement; ``caption_dropout`` of the contexts are swapped for the empty caption's, which is
what classifier-free guidance needs at sampling time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from huihua.checkpoints.specs import ModelSpec, Prediction
from huihua.checkpoints.tokenizer import CLIPTokenizer
from huihua.diffusion.parametrization import (
    rescale_zero_terminal_snr,
    scaled_linear_alphas_cumprod,
)
from huihua.errors import ParameterError
from huihua.nn.clip import CLIPTextEncoder
from huihua.nn.unet import UNetModel
from huihua.nn.vae import AutoencoderKL
from huihua.synth.world import make_batch
from huihua.train.clip_train import to_pixels, tokenize
from huihua.train.loop import step_generator

TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 0.00085, 0.012


@dataclass(frozen=True)
class DDPMTrainConfig:
    """Data of the diffusion stage."""

    dataset_size: int = 16_000
    batch: int = 32
    caption_dropout: float = 0.1
    encode_chunk: int = 64
    # Min-SNR-gamma weighting (Hang et al. 2023): each sample's loss times min(SNR, gamma) / SNR, which
    # stops the nearly noise-free timesteps from dominating; None = plain noise MSE.
    min_snr_gamma: float | None = None
    # Offset noise: a per-image, per-channel constant of this std is added to the noise, so the mean
    # colour of a noisy latent stops revealing the picture's and the prompt has to decide it.
    offset_noise: float = 0.0
    # What the UNet predicts: "eps" (the noise) or "v" (sqrt(abar) * noise - sqrt(1 - abar) * x0). The v
    # loss weighs x0 errors by 1 + SNR instead of SNR, so the layout, decided at high noise, is learnt.
    prediction: Prediction = "eps"
    # Timestep sampling: None draws t uniformly; (mean, std) draws t / 1000 from a logit-normal (SD3's
    # sampling) for a share ``1 - timestep_uniform_share`` of each batch, uniformly for the rest.
    timestep_logit_normal: tuple[float, float] | None = None
    timestep_uniform_share: float = 0.0
    # Zero terminal SNR (Lin et al. 2023): SD's schedule rescaled so its last timestep is pure noise
    # (SD's own never hides the coarse layout: at t = 999 an 8x8 block mean of 16x16x4 latents still
    # has an SNR above 1). Needs v-prediction; the model must be sampled with the same schedule
    # (``zero_terminal_snr`` in its ``huihua.arch`` metadata). A full default-recipe run with it did
    # not make place words work (README, model card).
    zero_terminal_snr: bool = False

    def __post_init__(self) -> None:
        if self.zero_terminal_snr and self.prediction != "v":
            raise ParameterError(f"zero_terminal_snr: needs prediction 'v' (at zero SNR an eps model "
                                 f"cannot tell the picture), got {self.prediction!r}")


@dataclass(frozen=True)
class LatentDataset:
    """Encoded pairs: scaled latents (N, z, h, w), contexts (N, 77, D), the empty caption's (77, D)."""

    latents: Tensor
    contexts: Tensor
    empty_context: Tensor


def alphas_cumprod(steps: int = TRAIN_TIMESTEPS, zero_terminal_snr: bool = False) -> Tensor:
    """SD's cumulative alpha products for scaled-linear betas (optionally zero-terminal-SNR), float64 (steps,)."""
    abar = scaled_linear_alphas_cumprod(BETA_START, BETA_END, steps)
    return rescale_zero_terminal_snr(abar) if zero_terminal_snr else abar


@torch.no_grad()
def text_context(text: CLIPTextEncoder, tokenizer: CLIPTokenizer, captions: list[str]) -> Tensor:
    """The UNet's conditioning as SD1 reads it: last layer, final norm, 77 positions (B, 77, D)."""
    device = next(text.parameters()).device
    return text(tokenize(tokenizer, captions).to(device), layer=-1, final_norm=True, want_pooled=False).hidden.cpu()


@torch.no_grad()
def encode_dataset(vae: AutoencoderKL, text: CLIPTextEncoder, tokenizer: CLIPTokenizer,
                   scale_factor: float, seed: int, cfg: DDPMTrainConfig) -> LatentDataset:
    """Draw ``dataset_size`` training pairs from ``seed`` and encode them once (fp16)."""
    latents, contexts = [], []
    for i, start in enumerate(range(0, cfg.dataset_size, cfg.encode_chunk)):
        n = min(cfg.encode_chunk, cfg.dataset_size - start)
        images, captions = make_batch(seed + i, n, "train")
        pixels = to_pixels(images).to(vae.quant_conv.weight.device)
        latents.append((vae.encode(pixels) * scale_factor).half().cpu())
        contexts.append(text_context(text, tokenizer, captions).half())
    empty = text_context(text, tokenizer, [""])[0].half()
    return LatentDataset(torch.cat(latents), torch.cat(contexts), empty)


def draw_timesteps(n: int, steps: int, generator: torch.Generator,
                   logit_normal: tuple[float, float] | None = None, uniform_share: float = 0.0) -> Tensor:
    """``n`` training timesteps in ``[0, steps)``: uniform, or logit-normal mixed with a uniform share.

    The logit-normal puts ``t / steps = sigmoid(mean + std * z)``, so ``mean`` < 0 centres the draws
    below the middle of the schedule (at 16x16 latents the outlines are settled at t of 200-600, where
    the noise's std is 0.6-2.3 times the latents'; uniform draws spend a third of the steps above 700).
    """
    uniform = torch.randint(0, steps, (n,), generator=generator)
    if logit_normal is None:
        return uniform
    mean, std = logit_normal
    if std <= 0 or not 0.0 <= uniform_share <= 1.0:
        raise ParameterError(f"timestep sampling: need std > 0 and a uniform share in [0, 1], "
                             f"got std {std}, share {uniform_share}")
    z = torch.randn(n, generator=generator, dtype=torch.float64)
    drawn = (torch.sigmoid(mean + std * z) * steps).long().clamp(0, steps - 1)
    keep_uniform = torch.rand(n, generator=generator) < uniform_share
    return torch.where(keep_uniform, uniform, drawn)


def noised(x0: Tensor, noise: Tensor, abar_t: Tensor, prediction: Prediction) -> tuple[Tensor, Tensor]:
    """(x_t, the UNet's target) for clean latents, noise and their ``abar`` (broadcastable to x0)."""
    x_t = abar_t.sqrt() * x0 + (1.0 - abar_t).sqrt() * noise
    return x_t, noise if prediction == "eps" else abar_t.sqrt() * noise - (1.0 - abar_t).sqrt() * x0


def ddpm_loss(unet: Callable[[Tensor, Tensor, Tensor], Tensor], x0: Tensor, context: Tensor, abar: Tensor,
              generator: torch.Generator, min_snr_gamma: float | None = None,
              offset_noise: float = 0.0, prediction: Prediction = "eps", *,
              timestep_logit_normal: tuple[float, float] | None = None,
              timestep_uniform_share: float = 0.0) -> Tensor:
    """MSE between the UNet's prediction and its target (the noise, or v) at drawn timesteps.

    ``min_snr_gamma`` weights each sample by ``min(SNR, gamma) / SNR`` (``/ (SNR + 1)`` for v);
    ``offset_noise`` adds a per-channel constant to the noise; the timesteps are drawn by
    `draw_timesteps` (all three leave the draws of the plain loss unchanged when off).
    """
    if prediction not in ("eps", "v"):
        raise ParameterError(f"prediction: must be 'eps' or 'v', got {prediction!r}")
    b = x0.shape[0]
    t = draw_timesteps(b, abar.shape[0], generator, timestep_logit_normal, timestep_uniform_share)
    noise = torch.randn(x0.shape, generator=generator)
    if offset_noise > 0:
        noise = noise + offset_noise * torch.randn((b, x0.shape[1], 1, 1), generator=generator)
    a = abar[t].float().view(-1, 1, 1, 1)
    t, noise, a = t.to(x0.device), noise.to(x0.device), a.to(x0.device)
    x_t, target = noised(x0, noise, a, prediction)
    if min_snr_gamma is None:
        return F.mse_loss(unet(x_t, t, context), target)
    per_sample = (unet(x_t, t, context) - target).pow(2).mean(dim=(1, 2, 3))
    snr = (a / (1.0 - a)).view(-1)
    weight = snr.clamp(max=min_snr_gamma) / (snr if prediction == "eps" else snr + 1.0)
    return (weight * per_sample).mean()


def model_objective(cfg: DDPMTrainConfig, spec: ModelSpec) -> DDPMTrainConfig:
    """``cfg`` with a loaded model's own objective: its prediction type and noise schedule (adapters)."""
    return replace(cfg, prediction=spec.prediction, zero_terminal_snr=spec.zero_terminal_snr)


def loss_options(cfg: DDPMTrainConfig) -> dict:
    """The keyword arguments of `ddpm_loss` that ``cfg`` sets (every trainer passes all of them)."""
    return {"min_snr_gamma": cfg.min_snr_gamma, "offset_noise": cfg.offset_noise, "prediction": cfg.prediction,
            "timestep_logit_normal": cfg.timestep_logit_normal,
            "timestep_uniform_share": cfg.timestep_uniform_share}


def ddpm_loss_fn(unet: UNetModel, data: LatentDataset, cfg: DDPMTrainConfig, noise_seed: int):
    """The loss of step ``i``: a batch drawn with replacement, seeded by (noise_seed, i)."""
    abar = alphas_cumprod(zero_terminal_snr=cfg.zero_terminal_snr)

    def loss(step: int) -> Tensor:
        g = step_generator(noise_seed, step)
        idx = torch.randint(0, data.latents.shape[0], (cfg.batch,), generator=g)
        context = data.contexts[idx].float()
        drop = torch.rand(cfg.batch, generator=g) < cfg.caption_dropout
        context[drop] = data.empty_context.float()
        device = next(unet.parameters()).device
        return ddpm_loss(unet, data.latents[idx].float().to(device), context.to(device), abar, g,
                         **loss_options(cfg))

    return loss
