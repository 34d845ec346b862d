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
    p.add_argument("--vae", default=None, help="a separate VAE file replacing the checkpoint's (default: its own)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--dtype", default=None, help="fp32, fp16 or bf16 (default: fp16 on GPU, fp32 on CPU)")
    p.add_argument("--prediction", choices=["eps", "v"], default=None,
                   help="override the model's prediction type (SD2 768-v models; default: detected)")
    p.add_argument("--zero-terminal-snr", action="store_true", default=None,
                   help="sample with the zero-terminal-SNR schedule (models trained on it; read from the "
                        "file's metadata when it says so)")
    p.add_argument("--lora-dir", action="append", type=Path, default=[], help="folder of LoRA files (repeatable)")
    p.add_argument("--embedding-dir", action="append", type=Path, default=[],
                   help="folder of textual-inversion embeddings (repeatable)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: PyTorch's choice)")


def add_generation_options(p: argparse.ArgumentParser) -> None:
    """The A1111 generation parameters as --options (defaults None: the GenerationParams default)."""
    p.add_argument("--negative-prompt", "-n", default=None, help="what not to paint (default: none)")
    p.add_argument("--steps", type=int, default=None, help=f"default {_D.steps}")
    p.add_argument("--sampler", "--sampler-name", dest="sampler_name", default=None,
                   help=f'e.g. "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "UniPC" (default {_D.sampler_name})')
    p.add_argument("--scheduler", "--schedule", dest="scheduler", default=None,
                   help=f'e.g. Automatic, Karras, Exponential, "SGM Uniform" (default {_D.scheduler})')
    p.add_argument("--cfg-scale", type=float, default=None, help=f"default {_D.cfg_scale}")
    p.add_argument("--cfg-rescale", type=float, default=None, help=f"CFG rescale phi, 0..1 (default {_D.cfg_rescale})")
    p.add_argument("--seed", type=int, default=None, help="-1 (default) picks a random seed")
    p.add_argument("--subseed", type=int, default=None, help="variation seed (default -1: random)")
    p.add_argument("--subseed-strength", type=float, default=None, help="variation strength, 0..1 (default 0)")
    p.add_argument("--seed-resize-from-w", type=int, default=None, help="resize seed from width (default 0: off)")
    p.add_argument("--seed-resize-from-h", type=int, default=None, help="resize seed from height (default 0: off)")
    p.add_argument("--width", "-W", type=int, default=None,
                   help="default: the model's native size (img2img: the picture's)")
    p.add_argument("--height", "-H", type=int, default=None, help="default: as --width")
    p.add_argument("--batch-size", type=int, default=None, help=f"pictures per batch (default {_D.batch_size})")
    p.add_argument("--n-iter", type=int, default=None, help=f"number of batches (default {_D.n_iter})")
    p.add_argument("--clip-skip", type=int, default=None,
                   help=f"CLIP layers to skip from the end (default {_D.clip_skip})")
    p.add_argument("--eta", type=float, default=None, help="noise of ancestral/DDIM samplers (default: the sampler's)")
    p.add_argument("--refiner-checkpoint", default=None, help="SDXL refiner checkpoint (default: none)")
    p.add_argument("--refiner-switch-at", type=float, default=None, help=f"default {_D.refiner_switch_at}")
    p.add_argument("--from-png", type=Path, default=None,
                   help="take every parameter from a PNG's JSON chunk (else its A1111 text) and paint it again")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar (default: shown)")


def add_adapter_options(p: argparse.ArgumentParser) -> None:
    """LoRA tags, ControlNet units, tiled VAE and previews."""
    p.add_argument("--lora", action="append", default=[], metavar="NAME[:WEIGHT]",
                   help="add <lora:NAME:WEIGHT> to the prompt (repeatable; found in --lora-dir)")
    p.add_argument("--controlnet", action="append", default=[], metavar="MODEL:IMAGE[:WEIGHT]",
                   help="a ControlNet unit: model file or name, control image, weight (default 1; repeatable)")
    p.add_argument("--controlnet-dir", action="append", type=Path, default=[],
                   help="folder of ControlNet files found by name (repeatable; the bundled ones come after)")
    per_unit = " (once for every unit, or once per unit in order)"
    p.add_argument("--controlnet-preprocessor", action="append", default=[],
                   help="canny, mlsd, scribble_xdog, ..., none (default)" + per_unit)
    p.add_argument("--controlnet-start", action="append", type=float, default=[],
                   help="guidance start, 0..1 (default 0)" + per_unit)
    p.add_argument("--controlnet-end", action="append", type=float, default=[],
                   help="guidance end, 0..1 (default 1)" + per_unit)
    p.add_argument("--controlnet-mode", action="append", default=[],
                   help='"Balanced" (default), "My prompt is more important", "ControlNet is more important" or 0-2'
                        + per_unit)
    p.add_argument("--controlnet-resize-mode", action="append", default=[],
                   help='"Just Resize", "Crop and Resize" (default), "Resize and Fill" or 0-2' + per_unit)
    p.add_argument("--controlnet-pixel-perfect", action="store_true",
                   help="pixel-perfect preprocessor resolution (default: off)")
    p.add_argument("--tiled-vae", action=argparse.BooleanOptionalAction, default=None,
                   help="VAE in tiles (default: only above 128x128 latents)")
    p.add_argument("--preview-dir", type=Path, default=None,
                   help="write live preview PNGs into this folder (default: no previews)")
    p.add_argument("--preview-every", type=int, default=1, help="steps between previews (default 1)")
    p.add_argument("--taesd", type=Path, default=None, help="TAESD decoder file for previews (default: approximation)")


def add_hires_options(p: argparse.ArgumentParser) -> None:
    """Hires fix (txt2img)."""
    p.add_argument("--enable-hr", action="store_true", default=None,
                   help="hires fix: upscale, then a second pass (default: off)")
    p.add_argument("--hr-scale", type=float, default=None, help=f"default {_D.hr_scale}")
    p.add_argument("--hr-upscaler", default=None,
                   help='"Latent", "Latent (bicubic)", "Latent (nearest)", "Lanczos", ... or an ESRGAN model file '
                        f'(default {_D.hr_upscaler})')
    p.add_argument("--hr-second-pass-steps", type=int, default=None, help="default 0: as --steps")
    p.add_argument("--hr-resize-x", type=int, default=None, help="hires width instead of --hr-scale (default 0)")
    p.add_argument("--hr-resize-y", type=int, default=None, help="hires height instead of --hr-scale (default 0)")
    p.add_argument("--hr-sampler-name", default=None, help="sampler of the second pass (default: as --sampler)")
    p.add_argument("--hr-scheduler", default=None, help="schedule of the second pass (default: as --scheduler)")
    p.add_argument("--hr-prompt", default=None, help="prompt of the second pass (default: the prompt)")
    p.add_argument("--hr-negative-prompt", default=None, help="negative prompt of the second pass (default: as -n)")
    p.add_argument("--denoising-strength", type=float, default=None,
                   help=f"of the second pass, 0..1 (default {_D.denoising_strength})")


def add_image_options(p: argparse.ArgumentParser) -> None:
    """img2img: init pictures, denoising strength, resize mode."""
    p.add_argument("--init-image", "-i", type=Path, action="append", required=True,
                   help="starting picture (repeat for several: the batch cycles through them)")
    p.add_argument("--denoising-strength", type=float, default=None, help=f"0..1 (default {_D.denoising_strength})")
    p.add_argument("--resize-mode", type=_choice(RESIZE_MODES), default=None,
                   help="0 just resize (default), 1 crop and resize, 2 resize and fill, 3 latent upscale")


def add_mask_options(p: argparse.ArgumentParser) -> None:
    """Inpainting and outpainting."""
    p.add_argument("--mask", type=Path, default=None, help="mask picture: white = repaint")
    p.add_argument("--mask-blur", type=int, default=None, help=f"default {_D.mask_blur}")
    p.add_argument("--inpainting-fill", type=_choice(INPAINTING_FILLS), default=None,
                   help="masked content: fill, original (default), latent noise, latent nothing (or 0-3)")
    p.add_argument("--inpaint-full-res", action="store_true", default=None,
                   help='inpaint area "only masked" (default: whole picture)')
    p.add_argument("--inpaint-full-res-padding", type=int, default=None,
                   help=f"only masked padding, pixels (default {_D.inpaint_full_res_padding})")
    p.add_argument("--inpainting-mask-invert", action="store_const", const=1, default=None,
                   help="repaint the black part instead (default: the white part)")
    for side in ("left", "right", "top", "bottom"):
        p.add_argument(f"--outpaint-{side}", type=int, default=None,
                       help=f"outpainting: pixels added on the {side} (default 0)")


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
                   help="output .png, .jpg or .webp, or a folder (never overwritten: a free name beside it is "
                        "used); default: outputs/")
