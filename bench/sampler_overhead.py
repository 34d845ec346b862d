"""Per-step overhead of every sampler, next to one call of a tiny UNet.

Each sampler runs its default ("Automatic") schedule with a trivial denoiser (x0 = 0.9 x), so the
time per denoiser call is the sampler's own bookkeeping, step math and noise drawing.  It is
printed in microseconds and as a fraction of one forward pass of a tiny huihua UNet (2 levels of
32 / 64 channels, batch 2, 4x32x32 latents, CFG-free) on the same device.

    python bench/sampler_overhead.py                    # CPU (1 thread), 20 steps
    python bench/sampler_overhead.py --device cuda --sync-check

``--sync-check`` (CUDA only) runs every sampler except DPM adaptive under
``torch.cuda.set_sync_debug_mode("error")``, so any per-step host/device synchronisation fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from huihua.nn.configs import UNetConfig  # noqa: E402
from huihua.diffusion import names, samplers, schedules  # noqa: E402
from huihua.diffusion.parametrization import ModelSampling  # noqa: E402

TINY_UNET = UNetConfig(
    model_channels=32, channel_mult=(1, 2), num_res_blocks=2, transformer_depth=(1, 1),
    transformer_depth_middle=1, num_heads=4, num_head_channels=None, context_dim=24,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Fastest wall seconds of ``fn`` over ``repeats`` runs after one warm-up (robust on a busy machine)."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def unet_call_seconds(x: Tensor, device: torch.device, repeats: int) -> float:
    """Median time of one forward pass of the tiny UNet (a small conv net if the UNet is missing)."""
    try:
        from huihua.nn.unet import UNetModel

        unet = UNetModel(TINY_UNET).to(device).eval()
        context = torch.randn(x.shape[0], 77, TINY_UNET.context_dim, device=device)
        t = torch.full((x.shape[0],), 500.0, device=device)
        call = lambda: unet(x, t, context)  # noqa: E731
    except ImportError:
        net = torch.nn.Sequential(
            torch.nn.Conv2d(4, 64, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(64, 4, 3, padding=1)
        ).to(device)
        call = lambda: net(x)  # noqa: E731
    with torch.no_grad():
        return timed(call, device, repeats)


def sampler_seconds_per_call(key: str, x: Tensor, steps: int, repeats: int) -> tuple[float, int]:
    """(median seconds per denoiser call, denoiser calls per run) with a trivial denoiser."""
    ms = ModelSampling.for_sd()
    sigmas = schedules.get_sigmas("automatic", steps, ms, sampler=key).to(x.device)
    calls = [0]

    def denoise(xi: Tensor, sigma: Tensor) -> Tensor:
        calls[0] += 1
        return xi * 0.9

    with torch.no_grad():
        seconds = timed(lambda: samplers.sample(key, denoise, x, sigmas, seeds=range(x.shape[0])), x.device, repeats)
    per_run = calls[0] // (repeats + 1)
    return seconds / per_run, per_run


def sync_check(x: Tensor, steps: int) -> list[str]:
    """Samplers that synchronised the host with the device (CUDA only)."""
    ms = ModelSampling.for_sd()
    failures = []
    for key in samplers.SAMPLER_FUNCTIONS:
        if key == "dpm_adaptive":
            continue
        sigmas = schedules.get_sigmas("automatic", steps, ms, sampler=key).to(x.device)
        samplers.sample(key, lambda xi, s: xi * 0.9, x, sigmas, seeds=range(x.shape[0]))  # warm-up
        torch.cuda.set_sync_debug_mode("error")
        try:
            samplers.sample(key, lambda xi, s: xi * 0.9, x, sigmas, seeds=range(x.shape[0]))
        except RuntimeError as exc:
            failures.append(f"{key}: {exc}")
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=32, help="latent height and width")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 keeps shared machines fair)")
    parser.add_argument("--sync-check", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x = torch.randn(2, 4, args.size, args.size, device=device) * 14.6
    unet = unet_call_seconds(x, device, args.repeats)
    print(f"tiny UNet call: {unet * 1e6:9.1f} us  (batch 2, 4x{args.size}x{args.size}, {device})")
    print(f"{'sampler':20s} {'calls':>5s} {'us/call':>9s} {'of UNet':>8s}")
    for key in samplers.SAMPLER_FUNCTIONS:
        per_call, n_calls = sampler_seconds_per_call(key, x, args.steps, args.repeats)
        label = names.sampler_info(key).display
        print(f"{label:20s} {n_calls:5d} {per_call * 1e6:9.1f} {per_call / unet:8.1%}")
    if args.sync_check and device.type == "cuda":
        failures = sync_check(x, args.steps)
        print("sync check:", "no host/device synchronisation" if not failures else "; ".join(failures))


if __name__ == "__main__":
    main()
