"""From how much noise can the default model find its way back? Partial-noise restoration, judged by the detector.

96 training-split pictures are encoded, noised to the training sigma of a start timestep t0, and
restored (one x0 prediction, or Euler in 10 steps down the training timesteps), conditional on their
own captions without CFG. The detector's pass rate per t0 shows where along the trajectory the
pictures are lost: near 1 from low t0 and near the text-to-image score from t0 = 800 or more.

    python research/trajectory_probe.py [--model FILE]
"""

from __future__ import annotations

import torch
from _probe import load_probe, pass_rate

from huihua.diffusion.parametrization import make_denoiser
from huihua.train.clip_train import to_pixels
from huihua.train.vae_train import to_uint8

START_TIMESTEPS = (100, 300, 500, 600, 700, 800)
EULER_STEPS = 10


def main() -> None:
    engine, images, captions = load_probe(__doc__.splitlines()[0])
    ms, scale = engine.model_sampling, engine.spec.vae.scale_factor
    n = len(captions)

    def passes(z: torch.Tensor) -> float:
        return pass_rate(to_uint8(engine.vae.decode((z / scale).to(engine.dtype)).float()), captions)

    with torch.inference_mode():
        x0 = engine.vae.encode(to_pixels(images).to(engine.dtype)).float() * scale
        context = torch.cat([engine.encode_prompt(c).context for c in captions]).to(engine.dtype)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
        denoise = make_denoiser(lambda x, t: engine.unet(x.to(engine.dtype), t, context).float(), ms)
        print(f"undisturbed: {passes(x0):.3f}")
        for t0 in START_TIMESTEPS:
            sigma0 = ms.sigmas[t0].item()
            x = x0 + sigma0 * noise
            one_step = passes(denoise(x, torch.full((n,), sigma0)))
            timesteps = torch.linspace(t0, 0, EULER_STEPS + 1)[:-1].round().long()
            sigmas = torch.cat([ms.sigmas[timesteps].to(torch.float64), torch.zeros(1, dtype=torch.float64)])
            z = x.clone()
            for i in range(EULER_STEPS):
                d = denoise(z, torch.full((n,), float(sigmas[i])))
                z = z + (z - d) * float((sigmas[i + 1] - sigmas[i]) / sigmas[i])
            print(f"t0 {t0} (sigma {sigma0:.2f}): one step {one_step:.3f}, Euler {EULER_STEPS} {passes(z):.3f}", flush=True)


if __name__ == "__main__":
    main()
