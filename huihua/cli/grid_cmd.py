"""``huihua grid PROMPT --x "steps:10,20" --y "cfg_scale:4,7" --z "sampler_name:Euler a,DPM++ 2M"``: X/Y/Z plot.

Writes one labelled grid PNG per Z value and every cell as its own PNG (with its own infotext and
JSON chunk, so any cell can be painted again with ``huihua generate --from-png``).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from huihua import api
from huihua.api.saving import DEFAULT_OUTDIR, numbered_path, save_image
from huihua.cli.args import callbacks, hooks, load_model, with_recommended
from huihua.cli.generate_cmd import cli_params
from huihua.pipelines.grid import draw_grid, parse_axis, run_grid
from huihua.pipelines.params import GenerationParams
from huihua.pipelines.seeds import resolve_seed


def run(args: argparse.Namespace) -> int:
    x, y, z = (parse_axis(a) if a else None for a in (args.x, args.y, args.z))
    api.check_output(args.output)
    base, _ = cli_params(args)
    base = replace(base, seed=resolve_seed(base.seed), subseed=resolve_seed(base.subseed))
    model = load_model(args)
    base = with_recommended(base, args, model)
    inputs = api.GenerationInputs(hooks=hooks(args, model))
    progress = callbacks(args)
    file_given = args.output is not None and not args.output.is_dir()
    outdir = (args.output.parent if file_given else args.output) or DEFAULT_OUTDIR
    stem = args.output.stem if file_given else "grid"

    def paint(params: GenerationParams) -> api.GenerationResult:
        result = api.generate(model, params, inputs, progress)
        record = result.records[0] if result.records else None
        print(save_image(result.images[0], numbered_path(outdir / "cells", result.seeds[0]), result.infotexts[0],
                         record))
        return result

    for number, page in enumerate(run_grid(base, x, y, z, paint), start=1):
        images = [[cell.images[0] for cell in row] for row in page.cells]
        grid = draw_grid(images, page.x_labels, page.y_labels, page.title)
        name = f"{stem}-{number}.png" if z is not None else f"{stem}.png"  # Z pages are numbered from 1
        print(save_image(grid, outdir / name, page.cells[0][0].infotexts[0]))
    return 0
