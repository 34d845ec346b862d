"""Benchmark one CFG step (batch 2) of an SD1.5-architecture UNet: huihua's vs diffusers'.

Both models share the very same random weight tensors (ours built on meta and initialised, the
diffusers one loaded from our converted state dict with ``assign=True``), and are timed
alternately in one process. Reports median wall seconds per step, their ratio, median process CPU
seconds (steadier than wall time on a shared machine), the peak RSS rise during a step, and the
process's peak RSS.

    python bench/unet_step.py --sizes 32 --repeats 5          # fp32 CPU, 2 threads
    python bench/unet_step.py --device cuda --dtype fp16 --sizes 64 128
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from huihua.checkpoints.diffusers.unet import diffusers_unet_config, ldm_unet_to_diffusers  # noqa: E402
from huihua.nn.configs import UNetConfig  # noqa: E402
from huihua.nn.unet import UNetModel  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def rss_mib(field: str) -> float:
    """VmRSS / VmHWM of this process in MiB (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def build_models(cfg: UNetConfig, device: torch.device, dtype: torch.dtype) -> tuple[nn.Module, nn.Module]:
    """(ours, diffusers') sharing one set of randomly initialised weights."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        ours = UNetModel(cfg)
        ref = UNet2DConditionModel(**diffusers_unet_config(cfg))
    ours.to_empty(device=device)
    torch.manual_seed(0)
    with torch.no_grad():
        for module in ours.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    ours.to(dtype)
    ref.load_state_dict(ldm_unet_to_diffusers(ours.state_dict(), cfg), strict=True, assign=True)
    return ours.eval(), ref.eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], Tensor], device: torch.device) -> tuple[float, float, float]:
    """(wall seconds, process CPU seconds, peak RSS rise in MiB over the RSS before) of one call."""
    base = rss_mib("VmRSS")
    reset_peak_rss()
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return seconds, cpu, rss_mib("VmHWM") - base


def bench_size(ours: nn.Module, ref: nn.Module, size: int, args: argparse.Namespace) -> dict[str, float]:
    """Alternate ours/diffusers ``args.repeats`` times at one latent size; return the medians."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    gen = torch.Generator().manual_seed(size)
    x = torch.randn(2, 4, size, size, generator=gen).to(device, dtype)
    t = torch.tensor([500.0, 500.0], device=device)
    context = torch.randn(2, 77, 768, generator=gen).to(device, dtype)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    runs = {
        "huihua": lambda: ours(x, t, context),
        "diffusers": lambda: ref(x, t, context, return_dict=False)[0],
    }
    with torch.inference_mode():
        diff = (runs["huihua"]().float() - runs["diffusers"]().float()).abs().max().item()
        for _ in range(args.warmup):
            for fn in runs.values():
                fn()
        times: dict[str, list[float]] = {name: [] for name in runs}
        cpus: dict[str, list[float]] = {name: [] for name in runs}
        peaks: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                seconds, cpu, peak = measure(fn, device)
                times[name].append(seconds)
                cpus[name].append(cpu)
                peaks[name].append(peak)
    out = {f"{name}_s": statistics.median(v) for name, v in times.items()}
    out.update({f"{name}_cpu": statistics.median(v) for name, v in cpus.items()})
    out.update({f"{name}_peak_mib": max(v) for name, v in peaks.items()})
    out["ratio"] = out["huihua_s"] / out["diffusers_s"]
    out["max_abs_diff"] = diff
    return out


def main(argv: list[str] | None = None) -> None:
    """Parse options, build both UNets, print one line per latent size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="latent sizes (H = W)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--channels-last", action="store_true", help="feed channels-last latents to both")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    ours, ref = build_models(UNetConfig(), torch.device(args.device), DTYPES[args.dtype])
    params = sum(p.numel() for p in ours.parameters())
    print(f"SD1.5 UNet, {params / 1e6:.1f}M parameters shared by both models, built in "
          f"{time.perf_counter() - start:.1f}s; {args.device} {args.dtype}, {args.threads} threads, "
          f"channels_last={args.channels_last}, batch 2 (one CFG step), median of {args.repeats}")
    print(f"{'latent':>7} {'huihua s':>9} {'diffusers s':>12} {'ratio':>6} {'cpu s (h/d)':>13} "
          f"{'huihua +MiB':>12} {'diffusers +MiB':>15} {'max|diff|':>10}")
    for size in args.sizes:
        r = bench_size(ours, ref, size, args)
        cpu = f"{r['huihua_cpu']:.2f}/{r['diffusers_cpu']:.2f}"
        print(f"{size:>4}x{size:<2} {r['huihua_s']:>9.3f} {r['diffusers_s']:>12.3f} {r['ratio']:>6.3f} {cpu:>13} "
              f"{r['huihua_peak_mib']:>12.0f} {r['diffusers_peak_mib']:>15.0f} {r['max_abs_diff']:>10.2e}")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    weights_mib = params * ours.time_embed[0].weight.element_size() / 2**20
    print(f"process peak RSS {peak_kib / 1024:.0f} MiB (weights {weights_mib:.0f} MiB)")


if __name__ == "__main__":
    main()
