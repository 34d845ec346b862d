"""``huihua grid PROMPT --x "steps:10,20" --y "cfg_scale:4,7" --z "sampler_name:Euler a,DPM++ 2M"``: X/Y/Z plot.

Writes one labelled grid PNG per Z value and every cell as its own PNG (with its own infotext and
JSON chunk, so any cell can be painted again with ``huihua generate --from-png``).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from huihua.cli.generate_cmd import add_output_option, cli_params
from huihua.cli.options import add_generation_options, add_hires_options, add_model_options, load_engine, pipeline_hooks
from huihua.cli.output import DEFAULT_OUTDIR, numbered_path, save_image


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grid", help="X/Y/Z plot: vary parameters along up to three axes")
    p.add_argument("prompt", nargs="?", default=None, help="the prompt, in AUTOMATIC1111's prompt language")
    p.add_argument("--x", default=None, help='e.g. "steps:10,20,30" or "prompt_sr:cat,dog"')
    p.add_argument("--y", default=None, help='e.g. "cfg_scale:4,7"')
    p.add_argument("--z", default=None, help='e.g. "sampler_name:Euler a,DPM++ 2M" (one grid per value)')
    add_model_options(p)
    add_generation_options(p)
    add_hires_options(p)
    add_output_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from huihua.pipelines.grid import draw_grid, parse_axis, run_grid
    from huihua.pipelines.seeds import resolve_seed

    axes = [parse_axis(a) if a else None for a in (args.x, args.y, args.z)]
    base, _, _ = cli_params(args)
    base = replace(base, seed=resolve_seed(base.seed), subseed=resolve_seed(base.subseed))
    engine = load_engine(args)
    hooks = pipeline_hooks(args, engine)
    outdir = args.output.parent if args.output is not None else DEFAULT_OUTDIR
    stem = args.output.stem if args.output is not None else "grid"

    def paint(params):
        result = engine.generate(params=params, hooks=hooks, progress=not args.quiet)
        record = result.records[0] if getattr(result, "records", ()) else None
        path = save_image(result.images[0], numbered_path(outdir / "cells", result.seeds[0]), result.infotexts[0], record)
        print(path)
        return result

    pages = run_grid(base, *axes, paint)
    for page in pages:
        images = [[cell.images[0] for cell in row] for row in page.cells]
        first = page.cells[0][0]
        grid = draw_grid(images, page.x_labels, page.y_labels, page.title)
        print(save_image(grid, outdir / f"{stem}.png", first.infotexts[0]))
    return 0
