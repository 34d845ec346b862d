"""The adapter options of the painting commands end to end: --controlnet (+ per-unit options), --lora,
--embedding-dir, --vae, --tiled-vae, --preview-dir, on a tiny checkpoint file (32x32, 2 steps)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from huihua.cli.main import main
from huihua.cli.args import _per_unit, lora_tags
from huihua.errors import ParameterError
from huihua.imagefile import read_infotext
from huihua.nn.controlnet import ControlNet, ControlNetConfig
from tests.tiny_checkpoints import tiny_reference, write_single_file
from tests.tiny_models import tiny_unet_config


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from tests.test_lora import _sd1_kohya
    from tests.test_vae_swap import _other_vae

    root = tmp_path_factory.mktemp("cli_adapters")
    out = {"model": write_single_file(tiny_reference("sd1"), root / "tiny.safetensors")}
    torch.manual_seed(11)
    net = ControlNet(ControlNetConfig(unet=tiny_unet_config("sd1"), hint_widths=(4, 8)))
    out["cn"] = root / "cn_tiny.safetensors"
    save_file({f"control_model.{k}": v.contiguous() * 3 for k, v in net.state_dict().items()}, str(out["cn"]))
    out["image"] = root / "control.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(out["image"])
    out["loras"] = root / "loras"
    out["loras"].mkdir()
    save_file(_sd1_kohya(alpha=4.0), str(out["loras"] / "inky.safetensors"))
    out["embeddings"] = root / "embeddings"
    out["embeddings"].mkdir()
    save_file({"emb_params": torch.randn(2, 24, generator=torch.Generator().manual_seed(3))},
              str(out["embeddings"] / "inkstyle.safetensors"))
    out["vae"] = _other_vae(root, seed=9)
    return out


def run(files: dict[str, Path], *args: str) -> int:
    return main([*args, "--model", str(files["model"]), "--device", "cpu", "--dtype", "fp32", "-q",
                 "--steps", "2", "-W", "32", "-H", "32", "--seed", "4", "--sampler", "Euler"])


def test_generate_with_every_adapter_option(files, tmp_path) -> None:
    out, previews = tmp_path / "all.png", tmp_path / "previews"
    code = run(files, "generate", "a inkstyle cat", "--lora", "inky:0.5", "--lora-dir", str(files["loras"]),
               "--embedding-dir", str(files["embeddings"]), "--vae", str(files["vae"]),
               "--controlnet", f"{files['cn']}:{files['image']}:0.7", "--controlnet-mode", "1",
               "--controlnet-start", "0.25", "--controlnet-preprocessor", "invert", "--tiled-vae",
               "--preview-dir", str(previews), "--preview-every", "1", "-o", str(out))
    assert code == 0
    text = read_infotext(out)
    assert text.startswith("a inkstyle cat <lora:inky:0.5>\n")
    for field in ('Lora hashes: "inky: ', 'TI hashes: "inkstyle: ', f"VAE: {files['vae'].name}",
                  'ControlNet 0: "Module: invert, Model: cn_tiny, Weight: 0.7, Resize Mode: Crop and Resize, '
                  "Guidance Start: 0.25, Guidance End: 1, Pixel Perfect: False, Control Mode: My prompt is more "
                  'important"'):
        assert field in text, field
    assert sorted(p.name for p in previews.iterdir()) == ["preview-0000.png", "preview-0001.png"]
    assert Image.open(previews / "preview-0001.png").size == (32, 32)


def test_controlnet_changes_img2img_and_inpaint(files, tmp_path) -> None:
    mask = tmp_path / "mask.png"
    m = Image.new("L", (32, 32), 0)
    m.paste(255, (8, 8, 24, 24))
    m.save(mask)
    for command, extra in (("img2img", []), ("inpaint", ["--mask", str(mask)])):
        plain, ctrl = tmp_path / f"{command}-plain.png", tmp_path / f"{command}-cn.png"
        common = [command, "a cat", "-i", str(files["image"]), *extra]
        assert run(files, *common, "-o", str(plain)) == 0
        assert run(files, *common, "--controlnet", f"{files['cn']}:{files['image']}", "-o", str(ctrl)) == 0
        a = np.asarray(Image.open(plain)).astype(float)
        b = np.asarray(Image.open(ctrl)).astype(float)
        assert np.abs(a - b).mean() > 0.5, command
        assert "ControlNet 0: " in read_infotext(ctrl)


def test_bad_adapter_options_are_one_line_errors(files, tmp_path, capsys) -> None:
    unit = f"{files['cn']}:{files['image']}"
    code = run(files, "generate", "a cat", "--controlnet", unit, "--controlnet", unit,
               "--controlnet-start", "0", "--controlnet-start", "0.1", "--controlnet-start", "0.2",
               "-o", str(tmp_path / "x.png"))
    err = capsys.readouterr().err
    assert code != 0 and "--controlnet-start" in err
    code = run(files, "generate", "a cat", "--lora", "missing", "-o", str(tmp_path / "y.png"))
    assert code != 0 and "missing" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()


def test_lora_tags_and_per_unit_values() -> None:
    ns = argparse.Namespace(lora=["inky:0.8", "detail", "sub/dir:1.25"])
    assert lora_tags(ns) == "<lora:inky:0.8> <lora:detail:1> <lora:sub/dir:1.25>"
    with pytest.raises(ParameterError, match="--lora"):
        lora_tags(argparse.Namespace(lora=["inky:lots"]))
    assert _per_unit([], 2, "--x") == [None, None]
    assert _per_unit([0.3], 3, "--x") == [0.3, 0.3, 0.3]
    assert _per_unit([1, 2], 2, "--x") == [1, 2]
    with pytest.raises(ParameterError, match="--x"):
        _per_unit([1, 2], 3, "--x")
