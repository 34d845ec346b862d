"""Shared set-up of the default-model probes: the command line, the engine and the 96 probe pictures."""

from __future__ import annotations

import argparse

import numpy as np
import torch

import huihua
from huihua.assets import default_model_path
from huihua.synth.scoring import score
from huihua.synth.world import make_batch

PROBE_SEED, PROBE_PICTURES = 12345, 96


def load_probe(description: str) -> tuple[huihua.Engine, np.ndarray, list[str]]:
    """Parse ``--model``/``--threads``, load the model on CPU and draw the probe's training pictures."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=str(default_model_path()))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, captions = make_batch(PROBE_SEED, PROBE_PICTURES, "train")
    return huihua.load(args.model, device="cpu"), images, captions


def pass_rate(pictures: np.ndarray, captions: list[str]) -> float:
    """Share of uint8 (N, H, W, 3) pictures the benchmark's detector judges true to their captions."""
    return float(np.mean([score(p, c).correct for p, c in zip(pictures, captions)]))
