"""``huihua list`` and ``huihua upscale`` from the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from huihua.cli import main
from huihua.imagefile import read_infotext, write_png


def test_list_samplers_and_loras(tmp_path: Path, capsys) -> None:
    assert main(["list", "samplers"]) == 0
    names = capsys.readouterr().out.splitlines()
    assert "DPM++ 2M" in names and "Euler a" in names and "UniPC" in names
    (tmp_path / "sub").mkdir()
    save_file({"lora_unet_x.alpha": torch.tensor(1.0)}, str(tmp_path / "sub" / "inkwash.safetensors"))
    (tmp_path / "notes.txt").write_text("not a lora")
    assert main(["list", "loras", "--lora-dir", str(tmp_path)]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == ["inkwash", "huihua-red"]  # the user's folders first, then the bundled


def test_upscale_lanczos_keeps_infotext_and_never_overwrites(tmp_path: Path, capsys) -> None:
    src = tmp_path / "in.png"
    pixels = (np.arange(16 * 16 * 3).reshape(16, 16, 3) % 251).astype(np.uint8)
    write_png(src, Image.fromarray(pixels), "a cat\nSteps: 3, Seed: 7")
    assert main(["upscale", str(src), "--scale", "2"]) == 0
    out = Path(capsys.readouterr().out.strip())
    assert Image.open(out).size == (32, 32)
    assert read_infotext(out) == "a cat\nSteps: 3, Seed: 7"
    assert main(["upscale", str(src), "--scale", "3"]) == 0
    second = Path(capsys.readouterr().out.strip())
    assert second != out and Image.open(second).size == (48, 48) and Image.open(out).size == (32, 32)


def test_upscale_bad_image_is_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    assert main(["upscale", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.png" in err
