"""A shared, resumable training loop: AdamW with warmup + cosine, EMA, timed checkpoints, progress bar.

Determinism comes from the callers: the loss of step ``i`` must depend only on the weights and on
``i`` (data and noise seeded from the step number), so a run resumed from a checkpoint retraces
exactly the steps an uninterrupted run would take.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from huihua.errors import CheckpointError, ParameterError


@dataclass(frozen=True)
class LoopConfig:
    """Optimisation hyper-parameters of one training stage."""

    steps: int
    lr: float
    warmup: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float | None = None
    checkpoint_seconds: float = 120.0


def lr_at(step: int, cfg: LoopConfig) -> float:
    """Learning rate of ``step``: linear warmup, then cosine decay to ``min_lr_ratio * lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(cfg.steps - cfg.warmup, 1)
    progress = min((step - cfg.warmup) / span, 1.0)
    ratio = cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr * ratio


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator seeded from (seed, step): the randomness of one training step."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Blend the model in; the decay ramps up early so the average is not stuck at init."""
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[key].mul_(decay).add_(value.detach(), alpha=1.0 - decay)
            else:
                self.shadow[key].copy_(value)

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged weights (a state dict for the same module)."""
        return self.shadow


def _save_atomic(obj: object, path: Path) -> None:
    """torch.save to a temporary file, then rename, so a kill never leaves half a checkpoint."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _progress(total: int, initial: int, desc: str, enabled: bool):
    """A tqdm bar (tqdm is imported lazily)."""

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, mininterval=5.0,
                dynamic_ncols=True)


def train_loop(name: str, model: nn.Module, loss_fn: Callable[[int], Tensor], cfg: LoopConfig,
               checkpoint: Path, progress: bool = True,
               log: Callable[[str], None] | None = None) -> tuple[list[float], EMA | None]:
    """Optimise ``model`` for ``cfg.steps`` steps of ``loss_fn(step)``; resume from ``checkpoint``.

    Returns the loss of every step and the EMA (None without ``ema_decay``). The checkpoint file is
    rewritten every ``checkpoint_seconds`` and at the end.
    """
    if cfg.steps < 1:
        raise ParameterError(f"{name}: steps must be at least 1, got {cfg.steps}")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay is not None else None
    losses: list[float] = []
    start = 0
    if checkpoint.exists():
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt file names itself
            raise CheckpointError(f"{checkpoint}: cannot read training checkpoint ({exc})") from None
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.shadow = {k: v.to(params[0].device) for k, v in state["ema"].items()}
        losses, start = list(state["losses"]), int(state["step"])

    def save(step: int) -> None:
        _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(),
                      "ema": ema.shadow if ema is not None else None, "losses": losses,
                      "step": step}, checkpoint)

    last_save = time.monotonic()
    began = time.monotonic()
    model.train()
    with _progress(cfg.steps, start, name, progress) as bar:
        for step in range(start, cfg.steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            loss = loss_fn(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            if ema is not None:
                ema.update(model, step)
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}", refresh=False)
            if log is not None and (step + 1) % 50 == 0:
                rate = (step + 1 - start) / max(time.monotonic() - began, 1e-9)
                log(f"{name} step {step + 1}/{cfg.steps} loss {sum(losses[-50:]) / 50:.5f} "
                    f"{rate:.3f} steps/s")
            if time.monotonic() - last_save >= cfg.checkpoint_seconds:
                save(step + 1)
                last_save = time.monotonic()
    save(cfg.steps)
    model.eval()
    return losses, ema
