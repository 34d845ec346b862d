"""The painting commands end to end on a tiny checkpoint file: generate, --from-png, png-info, img2img, inpaint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from huihua.cli.main import main
from huihua.imagefile import read_infotext, read_json_params
from tests.tiny_checkpoints import tiny_reference, write_single_file



@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_single_file(tiny_reference("sd1"), tmp_path_factory.mktemp("m") / "tiny.safetensors")


def run(model: Path, *args: str) -> int:
    return main([*args, "--model", str(model), "--device", "cpu", "--dtype", "fp32", "-q"])


def px(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.int16)


def test_generate_writes_png_chunks_never_overwrites_and_from_png_replays(model, tmp_path, capsys) -> None:
    out = tmp_path / "out" / "cat.png"
    assert run(model, "generate", "a cat", "--steps", "2", "--sampler", "DPM++ 2M", "--seed", "7",
               "--batch-size", "2", "-o", str(out)) == 0
    first, second = tmp_path / "out" / "cat-0.png", tmp_path / "out" / "cat-1.png"
    assert capsys.readouterr().out.split() == [str(first), str(second)]
    text = read_infotext(second)
    assert text.startswith("a cat\n") and "Seed: 8," in text and "Sampler: DPM++ 2M" in text
    record = read_json_params(second)
    assert record["params"]["seed"] == 7 and record["image_index"] == 1
    replay = tmp_path / "replay.png"
    assert run(model, "generate", "--from-png", str(second), "-o", str(replay)) == 0
    assert (px(replay) == px(second)).all()  # exact: the same batch is painted again
    capsys.readouterr()
    assert run(model, "generate", "--from-png", str(second), "-o", str(replay)) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "replay-1.png")  # never overwritten
    assert (px(tmp_path / "replay-1.png") == px(second)).all()


def test_from_png_falls_back_to_the_a1111_text(model, tmp_path) -> None:
    out = tmp_path / "a.png"
    assert run(model, "generate", "a dog", "--steps", "2", "--sampler", "Euler", "--seed", "3", "-o", str(out)) == 0
    plain = tmp_path / "plain.png"
    Image.open(out).save(plain, pnginfo=_text_only(read_infotext(out)))
    assert read_json_params(plain) is None
    assert run(model, "generate", "--from-png", str(plain), "-o", str(tmp_path / "b.png")) == 0
    assert (px(tmp_path / "b.png") == px(out)).all()


def _text_only(text: str):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    return info


def test_png_info_prints_text_and_json(model, tmp_path, capsys) -> None:
    out = tmp_path / "a.png"
    run(model, "generate", "a bird", "--steps", "1", "--seed", "1", "-o", str(out))
    capsys.readouterr()
    assert main(["png-info", str(out)]) == 0
    assert capsys.readouterr().out.startswith("a bird\nSteps: 1,")
    assert main(["png-info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"]["prompt"] == "a bird"
    assert main(["png-info", str(tmp_path / "missing.png")]) == 2


def test_img2img_and_inpaint_commands(model, tmp_path, capsys) -> None:
    pic = tmp_path / "pic.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(pic)
    mask = tmp_path / "mask.png"
    m = Image.new("L", (32, 32), 0)
    m.paste(255, (8, 8, 24, 24))
    m.save(mask)
    assert run(model, "img2img", "a cat", "-i", str(pic), "--denoising-strength", "0.5", "--steps", "2",
               "--resize-mode", "crop and resize", "-W", "40", "-H", "32", "-o", str(tmp_path / "i.png")) == 0
    assert Image.open(tmp_path / "i.png").size == (40, 32)
    assert "Denoising strength: 0.5" in read_infotext(tmp_path / "i.png")
    assert run(model, "inpaint", "a dog", "-i", str(pic), "--mask", str(mask), "--mask-blur", "0", "--steps", "2",
               "--inpainting-fill", "latent noise", "-o", str(tmp_path / "p.png")) == 0
    keep = np.asarray(m) == 0
    assert (px(tmp_path / "p.png")[keep] == px(pic)[keep]).all()
    assert "Masked content: latent noise" in read_infotext(tmp_path / "p.png")
    assert run(model, "inpaint", "a dog", "-i", str(pic), "--outpaint-right", "8", "--steps", "2",
               "-o", str(tmp_path / "o.png")) == 0
    assert (px(tmp_path / "o.png")[:, :32] == px(pic)).all()


def test_bad_options_fail_with_one_line_naming_the_field(model, tmp_path, capsys) -> None:
    assert run(model, "generate", "a", "--steps", "0", "-o", str(tmp_path / "x.png")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("huihua: error: steps:") and "\n" not in err
    assert not (tmp_path / "x.png").exists()
    assert run(model, "generate", "a <lora:nowhere:1>", "--steps", "1", "-o", str(tmp_path / "x.png")) == 2
    assert "nowhere" in capsys.readouterr().err
