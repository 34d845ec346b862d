"""The ``huihua`` argument parser: every command's options, built without importing torch.

Each command's parser sets ``command_module``: the module under ``huihua.cli`` whose ``run(args)``
does the work; ``main`` imports it only when that command runs, so ``huihua --help`` stays fast.
Commands are listed in the order people use them: painting, tools, then training and evaluation.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from huihua.cli.options import (
    add_adapter_options,
    add_generation_options,
    add_hires_options,
    add_image_options,
    add_mask_options,
    add_model_options,
    add_output_option,
)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (and a pointer to --help), not a page of usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _debug_option(p: argparse.ArgumentParser, default: object) -> None:
    p.add_argument("--debug", action="store_true", default=default, help="show full tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    """The full ``huihua`` argument parser."""
    parser = Parser(prog="huihua", description="huihua (绘画): Stable Diffusion in plain PyTorch")
    _debug_option(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add in (_generate, _img2img, _inpaint, _grid, _upscale, _pnginfo, _list, _inspect, _serve, _train,
                _train_adapters, _eval):
        add(sub)
    for command in sub.choices.values():  # --debug also works after the command's name
        _debug_option(command, argparse.SUPPRESS)
    return parser


def _generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="paint a prompt (txt2img, hires fix)")
    p.add_argument("prompt", nargs="?", default=None, help="the prompt, in AUTOMATIC1111's prompt language")
    add_model_options(p)
    add_generation_options(p)
    add_hires_options(p)
    add_adapter_options(p)
    add_output_option(p)
    p.set_defaults(command_module="generate_cmd")


def _img2img(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("img2img", help="repaint a picture (denoising strength, resize modes)")
    p.add_argument("prompt", nargs="?", default=None, help="the prompt, in AUTOMATIC1111's prompt language")
    add_model_options(p)
    add_image_options(p)
    add_generation_options(p)
    add_adapter_options(p)
    add_output_option(p)
    p.set_defaults(command_module="img2img_cmd")


def _inpaint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inpaint", help="repaint the masked part of a picture, or extend it (outpainting)")
    p.add_argument("prompt", nargs="?", default=None, help="the prompt, in AUTOMATIC1111's prompt language")
    add_model_options(p)
    add_image_options(p)
    add_mask_options(p)
    add_generation_options(p)
    add_adapter_options(p)
    add_output_option(p)
    p.set_defaults(command_module="inpaint_cmd")


def _grid(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grid", help="X/Y/Z plot: vary parameters along up to three axes")
    p.add_argument("prompt", nargs="?", default=None, help="the prompt, in AUTOMATIC1111's prompt language")
    p.add_argument("--x", default=None, help='e.g. "steps:10,20,30" or "prompt_sr:cat,dog"')
    p.add_argument("--y", default=None, help='e.g. "cfg_scale:4,7"')
    p.add_argument("--z", default=None, help='e.g. "sampler_name:Euler a,DPM++ 2M" (one grid per value)')
    add_model_options(p)
    add_generation_options(p)
    add_hires_options(p)
    add_output_option(p)
    p.set_defaults(command_module="grid_cmd")


def _upscale(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upscale", help="upscale an image with an ESRGAN-family model or Lanczos")
    p.add_argument("image", type=Path, help="the picture to upscale")
    p.add_argument("--model", default="Lanczos", help="upscaler .pth/.safetensors file, or Lanczos (default)")
    p.add_argument("--scale", type=float, default=None, help="default: the model's own scale (2 for Lanczos)")
    p.add_argument("--tile", type=int, default=512, help="tile side in pixels (default 512; 0: whole image at once)")
    p.add_argument("--overlap", type=int, default=32, help="blended overlap between tiles (default 32)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("-o", "--output", type=Path, default=None, help="default: IMAGE-upscaled.png (never overwritten)")
    p.set_defaults(command_module="upscale_cmd")


def _pnginfo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("png-info", help="print the generation parameters stored in a picture")
    p.add_argument("image", type=Path, help="a PNG, JPEG or WebP")
    p.add_argument("--json", action="store_true", help="print the JSON replay record instead of the text")
    p.set_defaults(command_module="pnginfo_cmd")


def _list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list LoRAs, embeddings, ControlNets, samplers or schedulers")
    p.add_argument("what", choices=["loras", "embeddings", "controlnets", "samplers", "schedulers"],
                   help="what to list (adapters: the given folders, then those bundled with huihua)")
    p.add_argument("--lora-dir", action="append", type=Path, default=[], help="folder of LoRA files (repeatable)")
    p.add_argument("--embedding-dir", action="append", type=Path, default=[],
                   help="folder of textual-inversion embeddings (repeatable)")
    p.add_argument("--controlnet-dir", action="append", type=Path, default=[],
                   help="folder of ControlNet files (repeatable)")
    p.set_defaults(command_module="list_cmd")


def _inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show a checkpoint's family, variant, dtype, sizes and hash")
    p.add_argument("file", type=Path, help="a .safetensors/.ckpt file or a diffusers folder")
    p.add_argument("--no-hash", action="store_true", help="skip hashing the file (fast on huge files)")
    p.set_defaults(command_module="inspect_cmd")


def _serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP server: AUTOMATIC1111-compatible API and a durable job queue")
    p.add_argument("--model", default=None, help="checkpoint file or a name in --models-dir (default: the embedded "
                   "model)")
    folders = " (repeatable)"
    p.add_argument("--models-dir", action="append", type=Path, default=[],
                   help="folder of checkpoints and upscalers the API may load by name" + folders)
    p.add_argument("--lora-dir", action="append", type=Path, default=[], help="folder of LoRA files" + folders)
    p.add_argument("--embedding-dir", action="append", type=Path, default=[],
                   help="folder of textual-inversion embeddings" + folders)
    p.add_argument("--controlnet-dir", action="append", type=Path, default=[],
                   help="folder of ControlNet files" + folders)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860, as A1111)")
    p.add_argument("--data", type=Path, default=Path("huihua-server"),
                   help="folder for the queue database and the pictures (default huihua-server)")
    p.add_argument("--api-auth", default=None, metavar="USER:PASS",
                   help="HTTP Basic credentials (or HUIHUA_API_AUTH; @FILE reads them from a file)")
    p.add_argument("--token", default=None, help="bearer token (or HUIHUA_TOKEN; @FILE reads it from a file)")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="allow a non-loopback bind without authentication (default: refused)")
    p.add_argument("--cors-allow-origins", action="append", default=[], metavar="ORIGIN",
                   help="origins allowed cross-site (repeatable; default: none)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="extra Host names the server answers to (repeatable; default: the bound address)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--dtype", default=None, help="fp32, fp16 or bf16 (default: fp16 on GPU, fp32 on CPU)")
    p.set_defaults(command_module="serve_cmd")


def _train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-default", help="train huihua's embedded default model from scratch")
    p.add_argument("--out", type=Path, default=Path("huihua-default-train"),
                   help="folder for stage checkpoints and the final .safetensors")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (1 is fastest on a busy 2-core machine)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run with tiny widths")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(command_module="train_cmd")


def _train_adapters(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-adapters", help="train the example LoRA (red) and ControlNet (silhouette)")
    p.add_argument("--model", type=Path, default=None, help="base model (default: the embedded one)")
    p.add_argument("--out", type=Path, default=Path("huihua-adapters"), help="folder for the adapter files")
    p.add_argument("--work", type=Path, default=None, help="folder for training checkpoints (default: OUT/train)")
    p.add_argument("--only", choices=("lora", "controlnet"), default=None, help="train one of the two")
    p.add_argument("--steps", type=int, default=None, help="override the training steps of both")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest on a busy 2-core machine)")
    p.add_argument("--no-measure", action="store_true", help="skip measuring the effect with the detector")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(command_module="train_adapters_cmd")


def _eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval-synth", help="score a model on the synthetic world (accuracy per category)")
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: the embedded model)")
    p.add_argument("--steps", type=int, default=None, help="default 20")
    p.add_argument("--cfg-scale", type=float, default=None, help="default 5")
    p.add_argument("--sampler", default=None, help="sampler name as A1111 spells it (default Euler)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds per prompt (default 0)")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts of each category")
    p.add_argument("--set", choices=("both", "in_distribution", "heldout"), default="both",
                   help="which prompt set (default both)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.set_defaults(command_module="eval_cmd")
