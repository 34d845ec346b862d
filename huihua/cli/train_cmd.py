"""``huihua train-default``: reproduce the embedded default model from nothing (seeded, resumable)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-default", help="train huihua's embedded default model from scratch")
    p.add_argument("--out", type=Path, default=Path("huihua-default-train"),
                   help="folder for stage checkpoints and the final .safetensors")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (1 is fastest on a busy 2-core machine)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run with tiny widths")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from huihua.train.default_model import DefaultRecipe, quick_recipe, train_default

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
