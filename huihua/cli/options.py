"""Options shared by the generating commands (A1111 names) and turning them into parameters."""

from __future__ import annotations

import argparse
from pathlib import Path

from huihua.pipelines.params import GenerationParams


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--model, --vae, --device, --dtype, --prediction."""
    p.add_argument("--model", "-m", default=None,
                   help="checkpoint file or diffusers folder (default: the embedded model)")
    p.add_argument("--vae", default=None, help="a separate VAE file replacing the checkpoint's")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--dtype", default=None, help="fp32, fp16 or bf16 (default: fp16 on GPU, fp32 on CPU)")
    p.add_argument("--prediction", choices=["eps", "v"], default=None,
                   help="override the model's prediction type (SD2 768-v models)")


def add_generation_options(p: argparse.ArgumentParser) -> None:
    """The A1111 generation parameters as --options."""
    d = GenerationParams()
    p.add_argument("--negative-prompt", "-n", default=d.negative_prompt)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--sampler", "--sampler-name", dest="sampler_name", default=d.sampler_name,
                   help='e.g. "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "UniPC"')
    p.add_argument("--scheduler", "--schedule", dest="scheduler", default=d.scheduler,
                   help='e.g. Automatic, Karras, Exponential, "SGM Uniform"')
    p.add_argument("--cfg-scale", type=float, default=d.cfg_scale)
    p.add_argument("--cfg-rescale", type=float, default=d.cfg_rescale)
    p.add_argument("--seed", type=int, default=d.seed, help="-1 picks a random seed")
    p.add_argument("--subseed", type=int, default=d.subseed)
    p.add_argument("--subseed-strength", type=float, default=d.subseed_strength)
    p.add_argument("--width", "-W", type=int, default=None, help="default: the model's native size")
    p.add_argument("--height", "-H", type=int, default=None, help="default: the model's native size")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--n-iter", type=int, default=d.n_iter)
    p.add_argument("--clip-skip", type=int, default=d.clip_skip)
    p.add_argument("--eta", type=float, default=None)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


_PARAM_FIELDS = ("negative_prompt", "steps", "sampler_name", "scheduler", "cfg_scale", "cfg_rescale", "seed",
                 "subseed", "subseed_strength", "width", "height", "batch_size", "n_iter", "clip_skip", "eta")


def params_from_args(args: argparse.Namespace, **extra: object) -> GenerationParams:
    """GenerationParams from parsed options (plus pipeline-specific fields)."""
    values = {name: getattr(args, name) for name in _PARAM_FIELDS if hasattr(args, name)}
    return GenerationParams.from_kwargs(prompt=args.prompt, **values, **extra)


def model_path(args: argparse.Namespace) -> Path:
    """The --model path, or the embedded default model."""
    if args.model:
        return Path(args.model)
    from huihua.assets import default_model_path

    return default_model_path()


def load_engine(args: argparse.Namespace):
    """Load the engine the options ask for."""
    import huihua

    return huihua.load(model_path(args), vae=args.vae, device=args.device, dtype=args.dtype,
                       prediction=args.prediction)
