"""The sixth full run of the default recipe: a finer latent grid (VAE downscale 2, 32x32x4 latents).

Everything else is ``DefaultRecipe()``, except what the finer grid costs: the VAE trains 2,500
steps (plus 500 of decoder fine-tuning) and the UNet, which gains a level at 32x32 (levels
(1, 2, 4, 4), attention at 8x8 and 4x4 as before), trains 6,500 steps instead of 16,000, so the
run fits the same CPU budget (about 95 min on the 2-core CI machine). The result is in the README's
model card; it was not shipped.

    python research/finer_grid_run.py --out runs/d2 [--resume] [--threads 2]
    huihua eval-synth --model runs/d2/huihua-default.safetensors --seeds 0
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from huihua.nn.configs import UNetConfig, VAEConfig
from huihua.train.default_model import DefaultRecipe, train_default
from huihua.train.loop import LoopConfig


def finer_grid_recipe() -> DefaultRecipe:
    """``DefaultRecipe()`` with a downscale-2 autoencoder and a UNet with one more (32x32) level."""
    return dataclasses.replace(
        DefaultRecipe(),
        vae=VAEConfig(ch=16, ch_mult=(1, 2), num_res_blocks=1, norm_num_groups=8, z_channels=4),
        vae_loop=LoopConfig(steps=2500, lr=1e-3, warmup=40),
        decoder_loop=LoopConfig(steps=500, lr=5e-4, warmup=20),
        unet=UNetConfig(model_channels=32, channel_mult=(1, 2, 4, 4), num_res_blocks=1,
                        transformer_depth=(0, 0, 1, 1), transformer_depth_middle=1, num_heads=4,
                        context_dim=128),
        unet_loop=LoopConfig(steps=6500, lr=1e-3, warmup=200, ema_decay=0.999),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = train_default(finer_grid_recipe(), args.out, resume=args.resume,
                           log=lambda msg: print(msg, flush=True))
    print(result.path, result.metrics)


if __name__ == "__main__":
    main()
