"""``huihua train-default``: reproduce the embedded default model from nothing (seeded, resumable)."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from huihua.train.default_model import DefaultRecipe, quick_recipe, train_default


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, args.threads))
    recipe = quick_recipe() if args.quick else DefaultRecipe()
    began = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - began:7.0f}s] {msg}", file=sys.stderr, flush=True)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    log(f"training on {device}")
    result = train_default(recipe, args.out, resume=args.resume, progress=not args.no_progress, log=log,
                           device=device)
    for key, value in result.metrics.items():
        print(f"{key:<24} {value:.4f}")
    print(f"wrote {result.path} in {time.monotonic() - began:.0f}s")
    return 0
