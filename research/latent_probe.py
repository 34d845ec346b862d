"""How do the default model's latents fail? Decode disturbed latents and ask the benchmark's detector.

96 world pictures are encoded, disturbed (white noise of a given std, or a box blur of the latent),
decoded, and scored against their captions. Pixel-space blurs of the same reach are shown for scale.

    python research/latent_probe.py [--model FILE]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _probe import load_probe, pass_rate

from huihua.train.clip_train import to_pixels
from huihua.train.vae_train import to_uint8


def _passes(pixels: torch.Tensor, captions: list[str]) -> float:
    """Share of pictures ((N, 3, H, W) in [-1, 1]) the detector judges true to their captions."""
    return pass_rate(to_uint8(pixels), captions)


def _blur(x: torch.Tensor, k: int) -> torch.Tensor:
    return F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)


def main() -> None:
    engine, images, captions = load_probe(__doc__.splitlines()[0])
    pixels = to_pixels(images)
    scale, down = engine.spec.vae.scale_factor, engine.spec.vae.downscale
    with torch.inference_mode():
        z = engine.vae.encode(pixels) * scale
        g = torch.Generator().manual_seed(0)
        for std in (0.0, 0.1, 0.2, 0.3):
            noisy = z + std * torch.randn(z.shape, generator=g)
            print(f"latent white noise std {std}: detector passes {_passes(engine.vae.decode(noisy / scale), captions):.3f}")
        for k in (3, 5):
            reach = down * k - down + 1
            print(f"latent box blur {k}x{k}: {_passes(engine.vae.decode(_blur(z, k) / scale), captions):.3f}; "
                  f"pixel box blur {reach}x{reach}: {_passes(_blur(pixels, reach), captions):.3f}")


if __name__ == "__main__":
    main()
