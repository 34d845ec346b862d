"""``huihua generate PROMPT``: txt2img with A1111 option names; PNGs carry their infotext."""

from __future__ import annotations

import argparse
from pathlib import Path

from huihua.cli.options import add_generation_options, add_model_options, load_engine, params_from_args
from huihua.cli.output import save_results


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="paint a prompt (txt2img)")
    p.add_argument("prompt", help="the prompt, in AUTOMATIC1111's prompt language")
    add_model_options(p)
    add_generation_options(p)
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output PNG (never overwritten: a free name beside it is used); default: outputs/")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    params = params_from_args(args)
    engine = load_engine(args)
    result = engine.generate(params=params, progress=not args.quiet)
    for path in save_results(result, args.output):
        print(path)
    return 0
