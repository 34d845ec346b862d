"""``huihua train-adapters``: reproduce the tiny LoRA and ControlNet shipped beside the default model."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

import huihua
from huihua.assets import default_model_path
from huihua.engine import Engine
from huihua.train.controlnet_train import (
    ControlNetTrainConfig,
    controlnet_effect,
    save_controlnet,
    silhouette_pairs,
    train_controlnet,
)
from huihua.train.lora_train import (
    LoraTrainConfig,
    lora_effect,
    red_lora_pairs,
    save_lora,
    train_lora,
)

LORA_NAME = "huihua-red"
CONTROLNET_NAME = "huihua-silhouette"


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, args.threads))
    began = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - began:6.0f}s] {msg}", file=sys.stderr, flush=True)

    model = args.model or default_model_path()
    work = args.work or args.out / "train"
    engine = huihua.load(model, device="cpu", dtype="fp32", lora_dirs=[args.out])
    if args.only in (None, "lora"):
        _lora(engine, args, work, log)
    if args.only in (None, "controlnet"):
        _controlnet(engine, args, work, log)
    print(f"done in {time.monotonic() - began:.0f}s")
    return 0


def _lora(engine: Engine, args: argparse.Namespace, work: Path, log: Callable[[str], None]) -> None:
    cfg = LoraTrainConfig()
    if args.steps is not None:
        cfg = replace(cfg, loop=replace(cfg.loop, steps=args.steps))
    clock = time.monotonic()
    network, losses = train_lora(engine, red_lora_pairs(cfg), cfg, work, not args.no_progress, log)
    seconds = time.monotonic() - clock
    path = save_lora(args.out / f"{LORA_NAME}.safetensors", network, engine,
                     {"huihua.trained_steps": str(cfg.loop.steps)})
    print(f"lora: wrote {path} ({path.stat().st_size} bytes) in {seconds:.0f}s, "
          f"{loss_change(losses)}")
    if not args.no_measure:
        effect = lora_effect(engine, LORA_NAME, seeds=(0, 1, 2, 3))
        print(f"lora: pictures with a detected red object {effect.without:.2f} without, {effect.with_lora:.2f} "
              f"with <lora:{LORA_NAME}:1> ({effect.pictures} prompts x seeds, 20 Euler steps, cfg 5)")


def _controlnet(engine: Engine, args: argparse.Namespace, work: Path, log: Callable[[str], None]) -> None:
    cfg = ControlNetTrainConfig()
    if args.steps is not None:
        cfg = replace(cfg, loop=replace(cfg.loop, steps=args.steps))
    clock = time.monotonic()
    pairs, hints = silhouette_pairs(cfg)
    net, losses = train_controlnet(engine, pairs, hints, cfg, work, not args.no_progress, log)
    seconds = time.monotonic() - clock
    path = save_controlnet(args.out / f"{CONTROLNET_NAME}.safetensors", net,
                           {"huihua.trained_steps": str(cfg.loop.steps)})
    print(f"controlnet: wrote {path} ({path.stat().st_size} bytes) in {seconds:.0f}s, "
          f"{loss_change(losses)}")
    if not args.no_measure:
        effect = controlnet_effect(engine, engine.load_controlnet(path), seeds=(0, 1, 2, 3))
        print(f"controlnet: object within 0.1 of the hint {effect.without:.2f} without, "
              f"{effect.with_controlnet:.2f} with; median colour-centroid distance "
              f"{effect.median_error_without:.3f} -> "
              f"{effect.median_error_with:.3f} ({effect.pictures} probes x seeds, 20 Euler steps, cfg 5)")


def _mean(values: list[float]) -> float:
    return sum(values) / max(len(values), 1)


def loss_change(losses: list[float]) -> str:
    """The mean loss of the first and the last quarter of the steps (disjoint windows, at most 20 steps each).

    Diffusion losses are noisy step to step (each step draws its own timesteps), so fewer than 8 steps
    say nothing and are reported as such.
    """
    if len(losses) < 8:
        return f"loss not compared ({len(losses)} steps; 8 or more are needed)"
    window = min(20, len(losses) // 4)
    first, last = _mean(losses[:window]), _mean(losses[-window:])
    change = (last - first) / first * 100 if first else 0.0
    return (f"mean loss of the first {window} steps {first:.4f} -> last {window} steps {last:.4f} "
            f"({change:+.0f}%)")
