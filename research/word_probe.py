"""Which caption words does a UNet use? A diffusion classifier on the world's pictures, no sampling.

Each probe picture is rendered from a caption such as "a large red star on the left"; its latent is
noised at fixed timesteps with fixed noise, and the UNet's loss (on its own target, v or eps) is
measured under the true caption and under captions that change one word (the shape, the colour or
the position). The accuracy is the share of pictures whose true caption gives the lowest loss
(chance: 0.2). It tracks how far training has gone in minutes, where sampling a benchmark takes
longer and is noisier.

It also prints how far one changed word moves the text tower's 77 output positions, which the UNet
attends to: the largest and the mean change over the positions, relative to their norm.

    python research/word_probe.py MODEL [MODEL ...]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import huihua
from huihua.synth.scene import COLOURS, SHAPES
from huihua.synth.world import render_caption
from huihua.train.clip_train import to_pixels
from huihua.train.ddpm_train import alphas_cumprod, noised

TIMESTEPS = (150, 300, 450, 600, 750, 900)
POSITIONS = ("on the left", "on the right", "at the top", "at the bottom", "in the center")


def _caption(size: str, colour: str, shape: str, position: str) -> str:
    return f"a {size} {colour} {shape} {position}"


@torch.no_grad()
def probe(engine: huihua.Engine, pictures: int, timesteps: tuple[int, ...] = TIMESTEPS) -> dict[str, float]:
    """Accuracy of picking the true shape, colour and position word among five by the UNet's loss."""
    abar = alphas_cumprod(zero_terminal_snr=engine.spec.zero_terminal_snr)  # the model's own schedule
    scale = engine.spec.vae.scale_factor
    rng = np.random.default_rng(5)
    hits = {"shape": 0, "colour": 0, "position": 0}
    contexts: dict[str, torch.Tensor] = {}  # the same captions recur across pictures
    for i in range(pictures):
        shape, size, position = SHAPES[i % 5], ("small", "large")[i % 2], POSITIONS[rng.integers(5)]
        colours = [str(c) for c in rng.permutation(COLOURS)[:5]]  # five distinct, the first is true
        truth = _caption(size, colours[0], shape, position)
        image = render_caption(truth, 1000 + i)
        x0 = engine.vae.encode(to_pixels(image[None])) * scale
        t = torch.tensor(timesteps * 2)
        noise = torch.randn((len(t),) + x0.shape[1:], generator=torch.Generator().manual_seed(i))
        x_t, target = noised(x0, noise, abar[t].float().view(-1, 1, 1, 1), engine.spec.prediction)
        options = {"shape": [_caption(size, colours[0], s, position) for s in SHAPES],
                   "colour": [_caption(size, c, shape, position) for c in colours],
                   "position": [_caption(size, colours[0], shape, p) for p in POSITIONS]}
        for word, captions in options.items():
            losses = []
            for caption in captions:
                if caption not in contexts:
                    contexts[caption] = engine.encode_prompt(caption).context.float()
                context = contexts[caption].expand(len(t), -1, -1)
                losses.append(float((engine.unet(x_t, t, context) - target).pow(2).mean()))
            hits[word] += int(captions[int(np.argmin(losses))] == truth)
    return {word: n / pictures for word, n in hits.items()}


WORD_PAIRS = {"colour": ("a large red square", "a large blue square"),
              "shape": ("a large red square", "a large red circle"),
              "position": ("a large red square on the left", "a large red square on the right"),
              "relation": ("a red square above a blue circle", "a red square below a blue circle")}


@torch.no_grad()
def context_spread(engine: huihua.Engine) -> dict[str, tuple[float, float]]:
    """(largest, mean) change over the context positions when one word changes, over the mean norm."""
    spread = {}
    for word, (a, b) in WORD_PAIRS.items():
        x, y = (engine.encode_prompt(p).context[0].float() for p in (a, b))
        change, norm = (x - y).norm(dim=-1), x.norm(dim=-1).mean()
        spread[word] = (float(change.max() / norm), float(change.mean() / norm))
    return spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--pictures", type=int, default=60)
    parser.add_argument("--timesteps", type=int, nargs="+", default=list(TIMESTEPS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for path in args.models:
        engine = huihua.load(path, device="cpu")
        scores = probe(engine, args.pictures, tuple(args.timesteps))
        print(f"{path}: " + ", ".join(f"{word} {value:.3f}" for word, value in scores.items()), flush=True)
        spread = context_spread(engine)
        print("  context change (largest / mean over positions): "
              + ", ".join(f"{word} {top:.2f} / {mean:.2f}" for word, (top, mean) in spread.items()), flush=True)


if __name__ == "__main__":
    main()
