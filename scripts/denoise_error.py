"""How well does each model's UNet denoise? x0 error per timestep on fresh world pictures.

Each model encodes the same 256 unseen training-split pictures with its own VAE and its captions with
its own text encoder (``encode_prompt``, as sampling does), noises them with the same noise, and
predicts x0 in one call (conditional, no CFG). The table is the mean squared x0 error in scaled latent
units (the latents have unit variance), so models with different UNets or timestep weighting can be
compared where it matters: a model that wins at t = 150-500 but draws no better shapes shows that
denoising error there is not what limits the pictures.

    python scripts/denoise_error.py MODEL.safetensors [MODEL.safetensors ...]
"""

from __future__ import annotations

import argparse

import torch

import huihua
from huihua.synth.world import make_batch
from huihua.train.clip_train import to_pixels
from huihua.train.ddpm_train import alphas_cumprod

TIMESTEPS = (50, 150, 300, 400, 500, 700, 900)


@torch.inference_mode()
def x0_errors(path: str, n: int, seed: int, chunk: int = 64) -> list[float]:
    """Mean squared x0 error of ``path``'s UNet at each of `TIMESTEPS` (fp32, CPU)."""
    engine = huihua.load(path, device="cpu")
    images, captions = make_batch(seed, n, "train")
    x0 = engine.vae.encode(to_pixels(images).to(engine.dtype)).float() * engine.spec.vae.scale_factor
    context = torch.cat([engine.encode_prompt(c).context for c in captions]).float()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + 1))
    abar = alphas_cumprod().float()
    v_model = engine.spec.prediction == "v"
    out = []
    for t in TIMESTEPS:
        a = abar[t]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        preds = []
        for i in range(0, n, chunk):
            steps = torch.full((min(chunk, n - i),), t)
            y = engine.unet(x_t[i:i + chunk].to(engine.dtype), steps, context[i:i + chunk].to(engine.dtype)).float()
            preds.append(a.sqrt() * x_t[i:i + chunk] - (1 - a).sqrt() * y if v_model
                         else (x_t[i:i + chunk] - (1 - a).sqrt() * y) / a.sqrt())
        out.append(float((torch.cat(preds) - x0).pow(2).mean()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = {m: x0_errors(m, args.n, args.seed) for m in args.models}
    print("t     " + "  ".join(f"{m.split('/')[-1]:>24}" for m in table))
    for i, t in enumerate(TIMESTEPS):
        print(f"{t:<5} " + "  ".join(f"{table[m][i]:>24.4f}" for m in table))


if __name__ == "__main__":
    main()
