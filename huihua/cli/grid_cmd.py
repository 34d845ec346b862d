"""``huihua grid PROMPT --x "steps:10,20" --y "cfg_scale:4,7" --z "sampler_name:Euler a,DPM++ 2M"``: X/Y/Z plot.

Writes one labelled grid PNG per Z value and every cell as its own PNG (with its own infotext and
JSON chunk, so any cell can be painted again with ``huihua generate --from-png``).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from huihua import api
from huihua.api.saving import DEFAULT_OUTDIR, numbered_path, save_image
from huihua.cli.args import callbacks, hooks, load_model
from huihua.cli.generate_cmd import cli_params
from huihua.pipelines.grid import draw_grid, parse_axis, run_grid
from huihua.pipelines.params import GenerationParams
from huihua.pipelines.seeds import resolve_seed


def run(args: argparse.Namespace) -> int:
    x, y, z = (parse_axis(a) if a else None for a in (args.x, args.y, args.z))
    base, _ = cli_params(args)
    base = replace(base, seed=resolve_seed(base.seed), subseed=resolve_seed(base.subseed))
    model = load_model(args)
    inputs = api.GenerationInputs(hooks=hooks(args, model))
    progress = callbacks(args)
    outdir = args.output.parent if args.output is not None else DEFAULT_OUTDIR
    stem = args.output.stem if args.output is not None else "grid"

    def paint(params: GenerationParams) -> api.GenerationResult:
        result = api.generate(model, params, inputs, progress)
        record = result.records[0] if result.records else None
        print(save_image(result.images[0], numbered_path(outdir / "cells", result.seeds[0]), result.infotexts[0],
                         record))
        return result

    for page in run_grid(base, x, y, z, paint):
        images = [[cell.images[0] for cell in row] for row in page.cells]
        grid = draw_grid(images, page.x_labels, page.y_labels, page.title)
        print(save_image(grid, outdir / f"{stem}.png", page.cells[0][0].infotexts[0]))
    return 0
