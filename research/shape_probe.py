"""Where does the default model lose the shapes? An img2img probe with the benchmark's detector.

Ground-truth renders of 8 prompts (2 seeds each) are noised to each denoising strength and
denoised again (Euler, 20 steps, CFG 5); strength 1.0 is plain text-to-image. The detector's
verdicts per strength show whether the UNet fails to draw shapes (low scores already at 0.5, where
the layout is given) or only to choose a layout (high scores until close to 1.0).

    python research/shape_probe.py [--model FILE] [--grid probe.png]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

import huihua
from huihua.assets import default_model_path
from huihua.synth.scoring import score
from huihua.synth.world import render_caption

PROMPTS = ("a red circle", "a yellow star", "a blue square and a white triangle",
           "a green cross and an orange star", "a purple circle", "a black cross",
           "a square above a star", "a red square and a blue circle")
STRENGTHS = (0.3, 0.5, 0.7, 0.85, 1.0)
SEEDS = (0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model_path()))
    parser.add_argument("--grid", help="save the pictures as one PNG (a row per strength)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = huihua.load(args.model, device="cpu")
    rows = []
    for strength in STRENGTHS:
        correct, row = 0, []
        for i, prompt in enumerate(PROMPTS):
            for seed in SEEDS:
                kwargs = dict(prompt=prompt, seed=seed, steps=20, cfg_scale=5.0, sampler_name="Euler")
                if strength < 1.0:
                    init = Image.fromarray(render_caption(prompt, seed=100 + 7 * i + seed))
                    kwargs.update(init_images=[init], denoising_strength=strength)
                picture = np.asarray(engine.generate(**kwargs).images[0].convert("RGB"))
                correct += score(picture, prompt).correct
                row.append(picture)
        print(f"strength {strength}: detector passes {correct}/{len(PROMPTS) * len(SEEDS)}", flush=True)
        rows.append(np.concatenate(row, axis=1))
    if args.grid:
        Image.fromarray(np.concatenate(rows, axis=0)).save(args.grid)


if __name__ == "__main__":
    main()
