"""Options shared by the generating commands (A1111 names) and turning them into parameters."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from huihua.errors import HuihuaError, ParameterError
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
    p.add_argument("--width", "-W", type=int, default=None, help="default: the model's native size (img2img: the picture's)")
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


def lora_tags(args: argparse.Namespace) -> str:
    """``<lora:name:w>`` tags for the --lora options ("" when none)."""
    tags = []
    for text in getattr(args, "lora", None) or []:
        name, _, weight = text.rpartition(":") if ":" in text else (text, "", "1")
        try:
            value = float(weight)
        except ValueError:
            raise ParameterError(f"--lora: weight {weight!r} of {text!r} is not a number") from None
        if not name.strip():
            raise ParameterError(f"--lora: expected NAME[:WEIGHT], got {text!r}")
        tags.append(f"<lora:{name.strip()}:{value:g}>")
    return " ".join(tags)


def _per_unit(values: list, count: int, option: str) -> list:
    """One value for all units, one per unit, or none (empty list: the default)."""
    if not values:
        return [None] * count
    if len(values) == 1:
        return values * count
    if len(values) == count:
        return list(values)
    raise ParameterError(f"{option}: give it once or once per --controlnet ({count}), got {len(values)}")


def _unit_choice(value: str | None) -> str | int | None:
    return int(value) if value is not None and value.isdigit() else value


def controlnet_units(args: argparse.Namespace, engine) -> list:
    """ControlNet units from --controlnet and its per-unit options (models loaded for ``engine``)."""
    from huihua.adapters.controlnet import ControlNetUnit, parse_controlnet_arg
    from huihua.cli.img2img_cmd import open_image

    specs = [parse_controlnet_arg(text) for text in getattr(args, "controlnet", None) or []]
    n = len(specs)
    columns = {
        "preprocessor": _per_unit(args.controlnet_preprocessor, n, "--controlnet-preprocessor"),
        "guidance_start": _per_unit(args.controlnet_start, n, "--controlnet-start"),
        "guidance_end": _per_unit(args.controlnet_end, n, "--controlnet-end"),
        "control_mode": [_unit_choice(v) for v in _per_unit(args.controlnet_mode, n, "--controlnet-mode")],
        "resize_mode": [_unit_choice(v) for v in _per_unit(args.controlnet_resize_mode, n, "--controlnet-resize-mode")],
    }
    models: dict[str, object] = {}
    units = []
    for i, spec in enumerate(specs):
        if spec.model_path not in models:
            models[spec.model_path] = engine.load_controlnet(spec.model_path)
        settings = {k: v[i] for k, v in columns.items() if v[i] is not None}
        units.append(ControlNetUnit(models[spec.model_path], open_image(Path(spec.image_path)), weight=spec.weight,
                                    pixel_perfect=args.controlnet_pixel_perfect, **settings))
    return units


def adapter_kwargs(args: argparse.Namespace, engine) -> dict[str, Any]:
    """``engine.generate`` keywords from the adapter options: units, tiled VAE, previews."""
    from huihua.cli.output import preview_writer

    kwargs: dict[str, Any] = {"controlnet_units": controlnet_units(args, engine),
                              "tiled_vae": getattr(args, "tiled_vae", None)}
    if getattr(args, "preview_dir", None) is not None:
        kwargs.update(preview=preview_writer(args.preview_dir), preview_every=args.preview_every, taesd=args.taesd)
    return kwargs


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


def given_params(args: argparse.Namespace) -> dict[str, Any]:
    """The GenerationParams fields set on the command line (flags left out keep their defaults)."""
    values = {f.name: getattr(args, f.name, None) for f in fields(GenerationParams) if f.name != "prompt"}
    return {k: v for k, v in values.items() if v is not None}


def with_lora_tags(prompt: str, args: argparse.Namespace) -> str:
    """``prompt`` followed by the --lora tags."""
    tags = lora_tags(args)
    return f"{prompt} {tags}".strip() if tags else prompt


def params_from_args(args: argparse.Namespace, **extra: object) -> GenerationParams:
    """GenerationParams from parsed options (plus pipeline-specific fields); --lora tags join the prompt."""
    prompt = with_lora_tags(args.prompt or "", args)
    return GenerationParams.from_kwargs(prompt=prompt, **{**given_params(args), **extra})


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
                       prediction=args.prediction, zero_terminal_snr=getattr(args, "zero_terminal_snr", None),
                       lora_dirs=getattr(args, "lora_dir", ()),
                       embedding_dirs=getattr(args, "embedding_dir", ()))


def pipeline_hooks(args: argparse.Namespace, engine):
    """Hooks from the options: an ESRGAN-family file given as --hr-upscaler becomes a named upscaler."""
    from dataclasses import replace

    from huihua.pipelines.hooks import PipelineHooks

    hooks = engine.hooks or PipelineHooks()
    name = getattr(args, "hr_upscaler", None)
    if not name or not Path(name).is_file():
        return hooks
    from huihua.upscale import load_upscaler, upscale

    net = load_upscaler(name, device=engine.device, dtype=engine.dtype)

    def run(image, size):
        return upscale(image, net, scale=max(size[0] / image.width, size[1] / image.height))

    return replace(hooks, upscalers={**hooks.upscalers, name: run})


def read_png_params(path: Path) -> tuple[GenerationParams, int, dict | None]:
    """(parameters, image index in the batch, JSON record or None) of a picture huihua or A1111 made."""
    from huihua.infotext import read_infotext, read_json_params
    from huihua.pipelines.infotext import params_from_infotext, replay_params

    if not path.is_file():
        raise HuihuaError(f"{path}: no such file")
    record = read_json_params(path)
    if record is not None and "params" in record:
        p, index = replay_params(record)
        return p, index, record
    text = read_infotext(path)
    if not text:
        raise HuihuaError(f"{path}: carries no generation parameters")
    return params_from_infotext(text), 0, None


def warn_model_mismatch(record: dict | None, engine) -> None:
    """One line on stderr when the picture was painted by another checkpoint."""
    if not record:
        return
    want = record.get("models", {}).get("checkpoint", {})
    if want.get("hash") and want.get("hash") != engine.file_hash():
        print(f"huihua: warning: the picture was painted by {want.get('name')} [{want.get('hash')}], "
              f"not {engine.name} [{engine.file_hash()}]; pixels will differ", file=sys.stderr)
