"""X/Y/Z plot: axis parsing, cell parameters, labelled grids, and the ``huihua grid`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from huihua.errors import ParameterError
from huihua.imagefile import read_infotext
from huihua.pipelines.grid import Axis, cell_params, draw_grid, parse_axis, run_grid
from huihua.pipelines.params import GenerationParams


def test_parse_axis_types_aliases_ranges_and_quotes() -> None:
    assert parse_axis("steps:10,20,30") == Axis("steps", (10, 20, 30))
    assert parse_axis("CFG Scale: 4, 7.5") == Axis("cfg_scale", (4.0, 7.5))
    assert parse_axis("sampler:Euler a,DPM++ 2M") == Axis("sampler_name", ("Euler a", "DPM++ 2M"))
    assert parse_axis("steps:10-30 (+10)").values == (10, 20, 30)
    assert parse_axis("cfg_scale:1-2 [3]").values == (1.0, 1.5, 2.0)
    assert parse_axis('Prompt S/R:cat,"dog, big"').values == ("cat", "dog, big")
    assert parse_axis("enable_hr:true,false").values == (True, False)
    for bad in ("steps", "nope:1,2", "steps:a,b", "prompt:x,y"):
        with pytest.raises(ParameterError):
            parse_axis(bad)


def test_cell_params_and_prompt_search_replace() -> None:
    base = GenerationParams(prompt="a cat on a mat", negative_prompt="ugly cat", seed=5)
    table = cell_params(base, parse_axis("steps:1,2"), parse_axis("prompt_sr:cat,dog"), parse_axis("cfg_scale:3,4,5"))
    assert len(table) == 3 and len(table[0]) == 2 and len(table[0][0]) == 2
    cell = table[2][1][0]
    assert (cell.cfg_scale, cell.prompt, cell.negative_prompt, cell.steps, cell.seed) == (5.0, "a dog on a mat",
                                                                                         "ugly dog", 1, 5)
    with pytest.raises(ParameterError, match="prompt_sr"):
        cell_params(base, parse_axis("prompt_sr:horse,dog"), None, None)


def test_run_grid_pages_and_drawing() -> None:
    painted = []

    def paint(p: GenerationParams) -> Image.Image:
        painted.append(p)
        return Image.new("RGB", (16, 16), (p.steps * 40, int(p.cfg_scale) * 20, 0))

    pages = run_grid(GenerationParams(), parse_axis("steps:1,2,3"), parse_axis("cfg_scale:4,7"),
                     parse_axis("sampler_name:Euler,Heun"), paint)
    assert len(pages) == 2 and len(painted) == 12 and pages[1].title == "sampler_name: Heun"
    assert pages[0].x_labels == ("steps: 1", "steps: 2", "steps: 3")
    grid = draw_grid(pages[0].cells, pages[0].x_labels, pages[0].y_labels, pages[0].title)
    assert grid.width > 3 * 16 and grid.height > 2 * 16
    arr = np.asarray(grid)
    right, bottom = grid.width - 8, grid.height - 8  # the last cell: steps 3, cfg 7
    assert arr[bottom, right].tolist() == [120, 140, 0]


def test_grid_command_writes_one_grid_per_z_and_reproducible_cells(tmp_path: Path, capsys) -> None:
    from huihua.cli.main import main
    from tests.tiny_checkpoints import tiny_reference, write_single_file

    model = write_single_file(tiny_reference("sd1"), tmp_path / "tiny.safetensors")
    out = tmp_path / "plots" / "g.png"
    code = main(["grid", "a cat", "--x", "steps:1,2", "--z", "cfg_scale:1,3", "--seed", "4", "--sampler", "Euler",
                 "--model", str(model), "--device", "cpu", "--dtype", "fp32", "-q", "-o", str(out)])
    assert code == 0
    written = [Path(line) for line in capsys.readouterr().out.split()]
    cells = [p for p in written if p.parent.name == "cells"]
    grids = [p for p in written if p.parent.name == "plots"]
    assert len(cells) == 4 and [g.name for g in grids] == ["g-1.png", "g-2.png"]  # Z pages numbered from 1
    assert "Steps: 2," in read_infotext(cells[1]) and "CFG scale: 1.0," in read_infotext(cells[1])
    replay = tmp_path / "r.png"
    assert main(["generate", "--from-png", str(cells[3]), "--model", str(model), "--device", "cpu",
                 "--dtype", "fp32", "-q", "-o", str(replay)]) == 0
    assert (np.asarray(Image.open(replay)) == np.asarray(Image.open(cells[3]))).all()
