"""Training huihua's KL autoencoder on the world's images: L1 + L2 reconstruction and a tiny KL term.

The reconstruction error may weigh edge pixels more (``edge_weight``): a small star or cross is a
few percent of the canvas, so a plain per-pixel mean lets the autoencoder round it into a blob at
almost no cost, and the shape is exactly what a picture of the world is judged on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from huihua.nn.vae import AutoencoderKL
from huihua.synth.scoring import score
from huihua.synth.world import make_batch
from huihua.train.clip_train import to_pixels
from huihua.train.loop import step_generator


@dataclass(frozen=True)
class VAETrainConfig:
    """Data and loss weights of the autoencoder stage."""

    batch: int = 16
    kl_weight: float = 1e-6
    l2_weight: float = 1.0
    # Pixels within two pixels of a colour edge of the target weigh 1 + edge_weight (0 = plain mean).
    edge_weight: float = 0.0


def edge_map(pixels: Tensor, threshold: float = 0.05) -> Tensor:
    """1 where a pixel is within two pixels of a colour change of ``pixels`` (B, 3, H, W), else 0 (B, 1, H, W)."""
    dx = (pixels[..., :, 1:] - pixels[..., :, :-1]).abs().amax(dim=1, keepdim=True) > threshold
    dy = (pixels[..., 1:, :] - pixels[..., :-1, :]).abs().amax(dim=1, keepdim=True) > threshold
    edge = torch.zeros_like(pixels[:, :1])
    edge[..., :, 1:] += dx
    edge[..., :, :-1] += dx
    edge[..., 1:, :] += dy
    edge[..., :-1, :] += dy
    return F.max_pool2d((edge > 0).to(pixels.dtype), 3, stride=1, padding=1)


def reconstruction_loss(recon: Tensor, pixels: Tensor, cfg: VAETrainConfig) -> Tensor:
    """L1 + ``l2_weight`` x L2 per pixel, edge pixels weighed ``1 + edge_weight``, averaged."""
    err = recon - pixels
    per_pixel = err.abs() + cfg.l2_weight * err.pow(2)
    if cfg.edge_weight > 0:
        per_pixel = per_pixel * (1.0 + cfg.edge_weight * edge_map(pixels))
    return per_pixel.mean()


def vae_loss(vae: AutoencoderKL, pixels: Tensor, cfg: VAETrainConfig, generator: torch.Generator) -> Tensor:
    """The reconstruction loss of a posterior sample + ``kl_weight`` x KL to N(0, I)."""
    mean, logvar = vae.encode_moments(pixels)
    eps = torch.randn(mean.shape, generator=generator).to(mean.device)
    z = mean + torch.exp(0.5 * logvar) * eps
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3)).mean()
    return reconstruction_loss(vae.decode(z), pixels, cfg) + cfg.kl_weight * kl


def vae_loss_fn(vae: AutoencoderKL, cfg: VAETrainConfig, data_seed: int, noise_seed: int):
    """The loss of step ``i``: world batch ``data_seed + i``, posterior noise from (noise_seed, i)."""

    device = vae.quant_conv.weight.device

    def loss(step: int) -> Tensor:
        images, _ = make_batch(data_seed + step, cfg.batch, "train")
        return vae_loss(vae, to_pixels(images).to(device), cfg, step_generator(noise_seed, step))

    return loss


def to_uint8(pixels: Tensor) -> np.ndarray:
    """Float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3), clamped and rounded."""
    return ((pixels.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 image stacks (over all pixels)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


@torch.no_grad()
def _heldout_reconstructions(vae: AutoencoderKL, seed: int, n: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``n`` held-out-split renders (unseen images), their captions and mean-latent reconstructions (uint8)."""
    images, captions = make_batch(seed, n, "heldout")
    recon = vae.decode(vae.encode(to_pixels(images).to(vae.quant_conv.weight.device)))
    return images, captions, to_uint8(recon.cpu())


def heldout_psnr(vae: AutoencoderKL, seed: int, n: int = 64) -> float:
    """PSNR of mean-latent reconstructions of ``n`` held-out-split renders."""
    images, _, recon = _heldout_reconstructions(vae, seed, n)
    return psnr(recon, images)


def heldout_detector_accuracy(vae: AutoencoderKL, seed: int, n: int = 64) -> float:
    """Share of ``n`` held-out renders whose reconstruction the world's detector still judges true to
    the caption: the ceiling the autoencoder sets on the benchmark."""

    _, captions, recon = _heldout_reconstructions(vae, seed, n)
    return sum(score(image, caption).correct for image, caption in zip(recon, captions, strict=True)) / n


@torch.no_grad()
def latent_scale_factor(vae: AutoencoderKL, seed: int, n: int = 256) -> float:
    """1 / std of the latent means of ``n`` training images (how SD chose 0.18215)."""
    images, _ = make_batch(seed, n, "train")
    return float(1.0 / vae.encode(to_pixels(images).to(vae.quant_conv.weight.device)).std())


def decoder_loss_fn(vae: AutoencoderKL, cfg: VAETrainConfig, data_seed: int):
    """Decoder fine-tuning (SD's ft-MSE idea): the reconstruction loss of the frozen encoder's latent means.

    The encoder, hence the latent space the UNet learns, stays exactly as it was.
    """
    device = vae.quant_conv.weight.device
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)

    def loss(step: int) -> Tensor:
        images, _ = make_batch(data_seed + step, cfg.batch, "train")
        pixels = to_pixels(images).to(device)
        with torch.no_grad():
            mean = vae.encode(pixels)
        return reconstruction_loss(vae.decode(mean), pixels, cfg)

    return loss
