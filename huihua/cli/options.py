"""Options shared by the generating commands, with A1111's names (``args.py`` turns them into parameters)."""

from __future__ import annotations

import argparse
from pathlib import Path

from huihua.pipelines.params import INPAINTING_FILLS, RESIZE_MODES, GenerationParams

_D = GenerationParams()


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--model, --vae, --device, --dtype, --prediction."""
    p.add_argument("--model", "-m", default=None,
                   help="checkpoint file or diffusers folder (default: the embedded model)")
    p.add_argument("--vae", default=None, help="a separate VAE file replacing the checkpoint's")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--dtype", default=None, help="fp32, fp16 or bf16 (default: fp16 on GPU, fp32 on CPU)")
    p.add_argument("--prediction", choices=["eps", "v"], default=None,
                   help="override the model's prediction type (SD2 768-v models)")
    p.add_argument("--zero-terminal-snr", action="store_true", default=None,
                   help="sample with the zero-terminal-SNR schedule (models trained on it; read from the "
                        "file's metadata when it says so)")
    p.add_argument("--lora-dir", action="append", type=Path, default=[], help="folder of LoRA files (repeatable)")
    p.add_argument("--embedding-dir", action="append", type=Path, default=[],
                   help="folder of textual-inversion embeddings (repeatable)")


def add_generation_options(p: argparse.ArgumentParser) -> None:
    """The A1111 generation parameters as --options (defaults None: the GenerationParams default)."""
    p.add_argument("--negative-prompt", "-n", default=None)
    p.add_argument("--steps", type=int, default=None, help=f"default {_D.steps}")
    p.add_argument("--sampler", "--sampler-name", dest="sampler_name", default=None,
                   help=f'e.g. "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "UniPC" (default {_D.sampler_name})')
    p.add_argument("--scheduler", "--schedule", dest="scheduler", default=None,
                   help='e.g. Automatic, Karras, Exponential, "SGM Uniform"')
    p.add_argument("--cfg-scale", type=float, default=None, help=f"default {_D.cfg_scale}")
    p.add_argument("--cfg-rescale", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="-1 (default) picks a random seed")
    p.add_argument("--subseed", type=int, default=None, help="variation seed")
    p.add_argument("--subseed-strength", type=float, default=None, help="variation strength, 0..1")
    p.add_argument("--seed-resize-from-w", type=int, default=None)
    p.add_argument("--seed-resize-from-h", type=int, default=None)
    p.add_argument("--width", "-W", type=int, default=None,
                   help="default: the model's native size (img2img: the picture's)")
    p.add_argument("--height", "-H", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--n-iter", type=int, default=None, help="number of batches")
    p.add_argument("--clip-skip", type=int, default=None)
    p.add_argument("--eta", type=float, default=None)
    p.add_argument("--refiner-checkpoint", default=None, help="SDXL refiner checkpoint")
    p.add_argument("--refiner-switch-at", type=float, default=None, help=f"default {_D.refiner_switch_at}")
    p.add_argument("--from-png", type=Path, default=None,
                   help="take every parameter from a PNG's JSON chunk (else its A1111 text) and paint it again")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def add_adapter_options(p: argparse.ArgumentParser) -> None:
    """LoRA tags, ControlNet units, tiled VAE and previews."""
    p.add_argument("--lora", action="append", default=[], metavar="NAME[:WEIGHT]",
                   help="add <lora:NAME:WEIGHT> to the prompt (repeatable; found in --lora-dir)")
    p.add_argument("--controlnet", action="append", default=[], metavar="PATH:IMAGE[:WEIGHT]",
                   help="a ControlNet unit: model file, control image, weight (repeatable)")
    per_unit = " (once for every unit, or once per unit in order)"
    p.add_argument("--controlnet-preprocessor", action="append", default=[],
                   help="canny, mlsd, scribble_xdog, ..., none (default)" + per_unit)
    p.add_argument("--controlnet-start", action="append", type=float, default=[],
                   help="guidance start, 0..1" + per_unit)
    p.add_argument("--controlnet-end", action="append", type=float, default=[], help="guidance end, 0..1" + per_unit)
    p.add_argument("--controlnet-mode", action="append", default=[],
                   help='"Balanced", "My prompt is more important", "ControlNet is more important" or 0-2' + per_unit)
    p.add_argument("--controlnet-resize-mode", action="append", default=[],
                   help='"Just Resize", "Crop and Resize" (default), "Resize and Fill" or 0-2' + per_unit)
    p.add_argument("--controlnet-pixel-perfect", action="store_true", help="pixel-perfect preprocessor resolution")
    p.add_argument("--tiled-vae", action=argparse.BooleanOptionalAction, default=None,
                   help="VAE in tiles (default: only above 128x128 latents)")
    p.add_argument("--preview-dir", type=Path, default=None, help="write live preview PNGs into this folder")
    p.add_argument("--preview-every", type=int, default=1, help="steps between previews (default 1)")
    p.add_argument("--taesd", type=Path, default=None, help="TAESD decoder file for previews (default: approximation)")


def add_hires_options(p: argparse.ArgumentParser) -> None:
    """Hires fix (txt2img)."""
    p.add_argument("--enable-hr", action="store_true", default=None, help="hires fix: upscale, then a second pass")
    p.add_argument("--hr-scale", type=float, default=None, help=f"default {_D.hr_scale}")
    p.add_argument("--hr-upscaler", default=None,
                   help='"Latent", "Latent (bicubic)", "Latent (nearest)", "Lanczos", ... or an ESRGAN model file')
    p.add_argument("--hr-second-pass-steps", type=int, default=None)
    p.add_argument("--hr-resize-x", type=int, default=None)
    p.add_argument("--hr-resize-y", type=int, default=None)
    p.add_argument("--hr-sampler-name", default=None)
    p.add_argument("--hr-scheduler", default=None)
    p.add_argument("--hr-prompt", default=None)
    p.add_argument("--hr-negative-prompt", default=None)
    p.add_argument("--denoising-strength", type=float, default=None, help="of the second pass")


def add_image_options(p: argparse.ArgumentParser) -> None:
    """img2img: init pictures, denoising strength, resize mode."""
    p.add_argument("--init-image", "-i", type=Path, nargs="+", required=True, help="starting picture(s)")
    p.add_argument("--denoising-strength", type=float, default=None, help=f"0..1 (default {_D.denoising_strength})")
    p.add_argument("--resize-mode", type=_choice(RESIZE_MODES), default=None,
                   help="0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale")


def add_mask_options(p: argparse.ArgumentParser) -> None:
    """Inpainting and outpainting."""
    p.add_argument("--mask", type=Path, default=None, help="mask picture: white = repaint")
    p.add_argument("--mask-blur", type=int, default=None, help=f"default {_D.mask_blur}")
    p.add_argument("--inpainting-fill", type=_choice(INPAINTING_FILLS), default=None,
                   help="masked content: fill, original (default), latent noise, latent nothing (or 0-3)")
    p.add_argument("--inpaint-full-res", action="store_true", default=None, help='inpaint area "only masked"')
    p.add_argument("--inpaint-full-res-padding", type=int, default=None, help="only masked padding, pixels")
    p.add_argument("--inpainting-mask-invert", action="store_const", const=1, default=None,
                   help="repaint the black part instead")
    for side in ("left", "right", "top", "bottom"):
        p.add_argument(f"--outpaint-{side}", type=int, default=None, help=f"outpainting: pixels added on the {side}")


def _choice(names: tuple[str, ...]):
    def parse(text: str) -> int:
        if text.isdigit() and int(text) < len(names):
            return int(text)
        lowered = [n.lower() for n in names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        raise argparse.ArgumentTypeError(f"{text!r}: use one of {', '.join(names)} (or 0-{len(names) - 1})")

    return parse


def add_output_option(p: argparse.ArgumentParser) -> None:
    """-o/--output."""
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output PNG (never overwritten: a free name beside it is used); default: outputs/")
