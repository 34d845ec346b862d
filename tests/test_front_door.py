"""The first hour of a new user: set-up scripts, the CLI doing what it says, the bundled model and adapters.

Most commands run in-process on the embedded 64×64 model (2 steps: fractions of a second each).
"""

from __future__ import annotations

import argparse
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import huihua
from huihua.cli.main import main
from huihua.cli.parser import build_parser
from huihua.cli.train_adapters_cmd import loss_change
from huihua.imagefile import read_infotext, read_json_params

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--steps", "2", "--seed", "3", "-q", "--device", "cpu"]


def px(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# --- set-up scripts ------------------------------------------------------------------------------


def _plan(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], env={**os.environ, "HUIHUA_SETUP_PLAN": "1",
                          **env}, capture_output=True, text=True, check=False)


def test_setup_picks_the_cpu_build_without_a_gpu_and_cuda_with_one(tmp_path: Path) -> None:
    no_gpu = {"PATH": f"{tmp_path}:/usr/bin:/bin", "HUIHUA_TORCH": "auto"}
    assert "torch: cpu" in _plan(no_gpu).stdout
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\necho "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"\n')
    fake.chmod(0o755)
    assert "torch: cuda" in _plan(no_gpu).stdout
    assert "torch: cpu" in _plan({**no_gpu, "HUIHUA_TORCH": "cpu"}).stdout  # the user's choice wins
    bad = _plan({"HUIHUA_TORCH": "rocm"})
    assert bad.returncode == 2 and "HUIHUA_TORCH must be cpu or cuda" in bad.stderr
    assert f"venv: {ROOT / '.venv'}" in _plan({}).stdout  # a project venv by default


def test_generate_script_runs_from_the_folder_holding_the_clone(tmp_path: Path) -> None:
    """A throw-away venv (seeing this interpreter's torch) and the real scripts, run from a folder that holds a
    folder called huihua (what broke ``python -m huihua``); the second run installs nothing."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    (tmp_path / "work" / "huihua").mkdir(parents=True)
    env = {**os.environ, "HUIHUA_VENV": str(venv)}
    cmd = ["bash", str(ROOT / "scripts" / "generate.sh"), "a green triangle", "-o", "x.png", "--steps", "2", "-q"]
    first = subprocess.run(cmd, cwd=tmp_path / "work", env=env, capture_output=True, text=True, timeout=600,
                           check=False)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "installing huihua" in first.stderr
    assert (tmp_path / "work" / "x.png").is_file()  # relative to where the command ran
    second = subprocess.run([*cmd[:4], "y.png", *cmd[5:]], cwd=tmp_path / "work", env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "installing" not in second.stderr and (tmp_path / "work" / "y.png").is_file()


# --- the embedded model and its adapters ---------------------------------------------------------


def test_load_without_a_path_is_the_embedded_model() -> None:
    engine = huihua.load(device="cpu")
    assert engine.model.path == huihua.default_model_path()
    assert huihua.load("huihua-default", device="cpu").model.path == engine.model.path


def test_list_shows_each_kind_of_bundled_adapter_once(capsys: pytest.CaptureFixture[str]) -> None:
    rows = {}
    for what in ("loras", "embeddings", "controlnets"):
        assert main(["list", what]) == 0
        captured = capsys.readouterr()
        rows[what] = [line.split("\t")[0] for line in captured.out.splitlines()]
        assert "--" in captured.err and "DIR to list your own" in captured.err  # a hint, not silence
    assert rows == {"loras": ["huihua-red"], "embeddings": [], "controlnets": ["huihua-silhouette"]}


def test_bundled_lora_and_controlnet_are_found_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hint = tmp_path / "hint.png"
    canvas = np.zeros((64, 64, 3), np.uint8)
    canvas[16:48, 16:48] = 255
    Image.fromarray(canvas).save(hint)
    out = tmp_path / "cn.png"
    assert main(["generate", "a circle <lora:huihua-red:1>", *QUICK, "--controlnet", f"huihua-silhouette:{hint}",
                 "-o", str(out)]) == 0
    text = read_infotext(out)
    assert "Lora hashes: \"huihua-red:" in text and "ControlNet 0: " in text and "huihua-silhouette" in text
    record = read_json_params(out)
    assert record is not None and [c["name"] for c in record["models"]["controlnet"]] == ["huihua-silhouette"]


def test_the_embedded_model_paints_with_its_benchmark_settings(tmp_path: Path) -> None:
    out = tmp_path / "a.png"
    assert main(["generate", "a red circle", "--seed", "1", "-q", "--device", "cpu", "-o", str(out)]) == 0
    text = read_infotext(out)
    assert "Steps: 20, Sampler: Euler, " in text and "CFG scale: 5.0," in text
    out2 = tmp_path / "b.png"
    assert main(["generate", "a red circle", "--seed", "1", "-q", "--cfg-scale", "7", "--device", "cpu",
                 "-o", str(out2)]) == 0
    assert "CFG scale: 7.0," in read_infotext(out2)  # what the user asks for wins


# --- output files --------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "magic"), [(".jpg", b"\xff\xd8\xff"), (".webp", b"RIFF")])
def test_jpeg_and_webp_are_written_as_such_with_the_infotext(tmp_path: Path, suffix: str, magic: bytes) -> None:
    out = tmp_path / f"x{suffix}"
    assert main(["generate", "a cat", *QUICK, "-o", str(out)]) == 0
    assert out.read_bytes().startswith(magic)
    assert read_infotext(out).startswith("a cat\n")


def test_bad_outputs_are_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing_model = ["--model", str(tmp_path / "nothing.safetensors")]  # loading it would fail: checks come first
    assert main(["generate", "a cat", *QUICK, *missing_model, "-o", str(tmp_path / "x.gif")]) == 2
    assert "unknown picture extension '.gif'" in one_line_error(capsys)
    (tmp_path / "afile").write_text("")
    assert main(["generate", "a cat", *QUICK, *missing_model, "-o", str(tmp_path / "afile" / "x.png")]) == 2
    assert "is a file, not a folder" in one_line_error(capsys)
    assert not list(tmp_path.glob("**/*.png"))


def test_output_folder_and_file_modes_follow_the_umask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    old = os.umask(0o022)
    try:
        assert main(["generate", "a cat", *QUICK, "-o", str(folder)]) == 0
    finally:
        os.umask(old)
    (written,) = [Path(p) for p in capsys.readouterr().out.split()]
    assert written.parent == folder and written.name == "00000-3.png"
    assert stat.S_IMODE(written.stat().st_mode) == 0o644


# --- commands that do what they say --------------------------------------------------------------


def test_inpaint_without_a_mask_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(init)
    assert main(["inpaint", "a cat", "-i", str(init), *QUICK, "-o", str(tmp_path / "x.png")]) == 2
    assert "--mask: required" in one_line_error(capsys)


def test_img2img_takes_the_prompt_after_the_init_image(tmp_path: Path) -> None:
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(init)
    out = tmp_path / "x.png"
    assert main(["img2img", "--init-image", str(init), "a blue star", *QUICK, "-o", str(out)]) == 0
    assert read_infotext(out).startswith("a blue star\n")


def test_from_png_replays_img2img_pixel_identically_and_refuses_what_it_cannot(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (30, 30, 200)).save(init)
    first = tmp_path / "first.png"
    assert main(["img2img", "a red square", "-i", str(init), "--denoising-strength", "0.6", *QUICK,
                 "-o", str(first)]) == 0
    assert main(["generate", "--from-png", str(first), "-q", "--device", "cpu", "-o", str(tmp_path / "no.png")]) == 2
    assert "painted by img2img: give its init picture" in one_line_error(capsys)
    again = tmp_path / "again.png"
    assert main(["img2img", "-i", str(init), "--from-png", str(first), "-q", "--device", "cpu", "-o", str(again)]) == 0
    assert np.array_equal(px(first), px(again))


def test_from_png_of_a_controlnet_picture_needs_its_units(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hint = tmp_path / "hint.png"
    Image.new("RGB", (64, 64), (255, 255, 255)).save(hint)
    first = tmp_path / "cn.png"
    assert main(["generate", "a star", *QUICK, "--controlnet", f"huihua-silhouette:{hint}", "-o", str(first)]) == 0
    assert main(["generate", "--from-png", str(first), "-q", "--device", "cpu", "-o", str(tmp_path / "n.png")]) == 2
    assert "1 ControlNet unit(s) (huihua-silhouette [" in one_line_error(capsys)
    again = tmp_path / "again.png"
    assert main(["generate", "--from-png", str(first), "--controlnet", f"huihua-silhouette:{hint}", "-q",
                 "--device", "cpu", "-o", str(again)]) == 0
    assert np.array_equal(px(first), px(again))


@pytest.mark.parametrize(("args", "expected"), [
    (["--device", "cuda"], "device: 'cuda' is not available here"),
    (["--width", "0"], "width: must be between"),
    (["--cfg-scale", "abc"], "argument --cfg-scale: invalid float value: 'abc'"),
    (["--threads", "0"], "--threads: must be at least 1"),
])
def test_bad_options_are_one_line_and_status_2(args: list[str], expected: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(["generate", "a cat", "--steps", "2", "-q", *args, "-o", str(tmp_path / "x.png")])
    except SystemExit as e:  # argparse's own errors exit
        code = int(e.code or 0)
    assert code == 2
    assert expected in one_line_error(capsys)


def test_far_from_native_sizes_warn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "a cat", *QUICK, "-W", "256", "-H", "256", "-o", str(tmp_path / "x.png")]) == 0
    assert "256x256 is far from 64x64, the size huihua-default was trained at" in capsys.readouterr().err
    assert main(["generate", "a cat", *QUICK, "-o", str(tmp_path / "y.png")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_debug_works_after_the_command() -> None:
    parser = build_parser()
    assert parser.parse_args(["generate", "x", "--debug"]).debug is True
    assert parser.parse_args(["--debug", "generate", "x"]).debug is True
    assert parser.parse_args(["generate", "x"]).debug is False


def test_every_option_has_help_and_commands_come_in_order() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == ["generate", "img2img", "inpaint", "grid", "upscale", "png-info", "list", "inspect",
                                 "serve", "train-default", "train-adapters", "eval-synth"]
    missing = [(name, a.dest) for name, p in sub.choices.items() for a in p._actions
               if not a.help and not isinstance(a, argparse._HelpAction)]
    assert missing == []
    assert "--threads" in sub.choices["generate"].format_help()
    assert "default 20" in sub.choices["generate"].format_help()


def test_grid_names_the_valid_axes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["grid", "a cat", "--x", "stepz:1,2", "-q"]) == 2
    line = one_line_error(capsys)
    assert "unknown parameter 'stepz'" in line and "steps" in line and "cfg_scale" in line and "prompt_sr" in line


def test_loss_change_uses_disjoint_windows() -> None:
    assert loss_change([1.0] * 5).startswith("loss not compared (5 steps")
    text = loss_change([1.0] * 10 + [0.5] * 10)
    assert "first 5 steps 1.0000 -> last 5 steps 0.5000 (-50%)" in text


def test_the_readme_snippets_run(tmp_path: Path) -> None:
    """Every ```bash line that starts with huihua and every ```python block of the README, on the embedded model."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = readme.split("```")[1::2]
    python = [b.removeprefix("python\n") for b in blocks if b.startswith("python\n")]
    shell = [line.split("  #")[0].strip() for b in blocks if b.startswith("bash\n") for line in b.splitlines()[1:]]
    commands = [c for c in shell if c.startswith("huihua ")]
    assert python and commands
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for code in python:
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600, check=False)
        assert done.returncode == 0, f"{code}\n{done.stderr[-2000:]}"
    for command in commands:  # in order, in one folder: a later command may read what an earlier one wrote
        argv = [sys.executable, "-m", "huihua", *shlex.split(command)[1:]]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
    # The README's first picture is the one it shows (CPU, fp32): pixel for pixel.
    assert np.array_equal(px(tmp_path / "first.png"), px(ROOT / "docs" / "first.png"))
    assert np.array_equal(px(tmp_path / "first.png"), px(tmp_path / "again.png"))
