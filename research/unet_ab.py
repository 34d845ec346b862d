"""Paired A/B of UNet shapes for the default model: the same batches and noise, the mean loss compared.

Trains each candidate for ``--steps`` steps of the recipe's UNet stage (its loss function, seeds and
learning-rate schedule over ``--schedule-steps``) on the latents a ``train-default`` run cached, and
prints the mean loss over the second half. Every candidate sees the same draws, so small differences
are real; a lower loss did not by itself give better pictures (see the README's model card).

    python research/unet_ab.py --run runs/default --steps 600 shipped c64 c64-attn16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from huihua.nn.unet import UNetModel
from huihua.train.ddpm_train import LatentDataset, ddpm_loss_fn
from huihua.train.default_model import DefaultRecipe, seeded_module
from huihua.train.loop import train_loop

BASE = DefaultRecipe().unet
CANDIDATES = {
    "shipped": BASE,
    "res2": replace(BASE, num_res_blocks=2),
    "c64": replace(BASE, model_channels=64, channel_mult=(1, 2, 2)),
    "c64-attn16": replace(BASE, model_channels=64, channel_mult=(1, 2, 2), transformer_depth=(1, 1, 1)),
}


class _Stop(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="+", choices=sorted(CANDIDATES))
    parser.add_argument("--run", required=True, help="a train-default output folder holding latents.pt")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--schedule-steps", type=int, default=20_000, help="length of the lr schedule")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = DefaultRecipe()
    state = torch.load(Path(args.run) / "latents.pt", map_location="cpu", weights_only=True)
    data = LatentDataset(state["latents"], state["contexts"], state["empty_context"])
    loop = replace(recipe.unet_loop, steps=args.schedule_steps)
    for name in args.candidates:
        unet = seeded_module(recipe.seed + 3, lambda: UNetModel(CANDIDATES[name]))
        step_loss, losses = ddpm_loss_fn(unet, data, recipe.ddpm, recipe.seed + 3), []

        def loss(step: int) -> torch.Tensor:
            if step >= args.steps:
                raise _Stop
            value = step_loss(step)
            losses.append(value.item())
            return value

        clock = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                train_loop(name, unet, loss, loop, Path(tmp) / "ab.pt", progress=False)
            except _Stop:
                pass
        half = losses[args.steps // 2:]
        params = sum(p.numel() for p in unet.parameters()) / 1e6
        print(f"{name}: {params:.2f}M parameters, {(time.monotonic() - clock) / args.steps:.3f} s/step, "
              f"mean loss of steps {args.steps // 2}-{args.steps}: {sum(half) / len(half):.4f}", flush=True)


if __name__ == "__main__":
    main()
