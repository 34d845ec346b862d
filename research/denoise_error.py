"""How well does each model's UNet denoise? x0 error per timestep on fresh world pictures.

Each model encodes the same 256 unseen training-split pictures with its own VAE and its captions with
its own text encoder (``encode_prompt``, as sampling does), noises them with the same noise, and
predicts x0 in one call (conditional, no CFG). The table is the mean squared x0 error in scaled latent
units (the latents have unit variance), so models with different UNets or timestep weighting can be
compared where it matters: a model that wins at t = 150-500 but draws no better shapes shows that
denoising error there is not what limits the pictures.

    python research/denoise_error.py MODEL.safetensors [MODEL.safetensors ...]
"""

from __future__ import annotations

import argparse

import torch

import huihua
from huihua.diffusion.parametrization import make_denoiser
from huihua.synth.world import make_batch
from huihua.train.clip_train import to_pixels

TIMESTEPS = (50, 150, 300, 400, 500, 700, 900)


@torch.inference_mode()
def x0_errors(path: str, n: int, seed: int, chunk: int = 64) -> list[float]:
    """Mean squared x0 error of ``path``'s UNet at each of `TIMESTEPS`, through the samplers' denoiser."""
    engine = huihua.load(path, device="cpu")
    ms = engine.model_sampling
    images, captions = make_batch(seed, n, "train")
    x0 = engine.vae.encode(to_pixels(images).to(engine.dtype)).float() * engine.spec.vae.scale_factor
    context = torch.cat([engine.encode_prompt(c).context for c in captions]).to(engine.dtype)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + 1))
    out = []
    for t in TIMESTEPS:
        sigma = ms.sigmas[t].item()
        preds = []
        for i in range(0, n, chunk):
            ctx = context[i:i + chunk]
            denoise = make_denoiser(lambda x, ts, c=ctx: engine.unet(x.to(engine.dtype), ts, c).float(), ms)
            x = x0[i:i + chunk] + sigma * noise[i:i + chunk]  # the samplers' scale of x_t / sqrt(abar)
            preds.append(denoise(x, torch.full((x.shape[0],), sigma)))
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
