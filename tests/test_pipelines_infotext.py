"""Infotext write -> read round trips for every parameter, and the JSON replay record (no model needed)."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from huihua.infotext import parse
from huihua.imagefile import read_infotext, read_json_params, write_png
from huihua.pipelines.types import ReplayRecord
from huihua.pipelines.infotext import RunInfo, format_infotext_for, json_record, params_from_infotext, replay_params
from huihua.pipelines.params import GenerationParams


class FakeEngine:
    """What the infotext reads of an engine."""

    name = "tiny-model"
    vae_path = None
    spec = SimpleNamespace(zero_terminal_snr=False)

    def file_hash(self, path: Path | None = None) -> str:
        return "0123456789"


TXT2IMG = GenerationParams(
    prompt="a cat, [on:under:0.5] a table\nsecond line", negative_prompt="blurry, (bad:1.2)", steps=23,
    sampler_name="DPM++ 2M SDE", scheduler="Karras", cfg_scale=6.5, seed=1234, subseed=99, subseed_strength=0.25,
    seed_resize_from_h=384, seed_resize_from_w=448, width=512, height=640, clip_skip=2, eta=0.7,
    denoising_strength=0.45, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent (bicubic)", hr_second_pass_steps=12,
    hr_sampler_name="Euler a", hr_scheduler="Exponential", hr_prompt="a cat, sharp", hr_negative_prompt="soft",
    cfg_rescale=0.3, sdxl_original_width=1024, sdxl_original_height=768, sdxl_crop_top=16, sdxl_crop_left=8,
    sdxl_aesthetic_score=7.0, sdxl_negative_aesthetic_score=2.0, refiner_checkpoint="refiner_v1",
    refiner_switch_at=0.7,
)
INPAINT = GenerationParams(
    prompt="a dog", negative_prompt="", steps=30, sampler_name="Euler a", scheduler="Uniform", cfg_scale=5.0,
    seed=77, width=512, height=512, denoising_strength=0.6, resize_mode=2, mask_blur=8, inpainting_fill=2,
    inpaint_full_res=True, inpaint_full_res_padding=48, inpainting_mask_invert=1, outpaint_left=64,
    outpaint_bottom=32,
)
# Fields the text does not carry for a single image (the call's batch layout) or that it folds together.
NOT_IN_TEXT = {"batch_size", "n_iter", "hr_denoising_strength"}


def _compare(original: GenerationParams, parsed: GenerationParams, mode: str) -> None:
    for f in fields(GenerationParams):
        if f.name in NOT_IN_TEXT or (mode != "txt2img" and f.name.startswith(("hr_", "enable_hr"))):
            continue
        if mode == "txt2img" and f.name in ("resize_mode", "mask_blur", "inpainting_fill", "inpaint_full_res",
                                             "inpaint_full_res_padding", "inpainting_mask_invert"):
            continue
        assert getattr(parsed, f.name) == getattr(original, f.name), f.name


@pytest.mark.parametrize("params, mode", [(TXT2IMG, "txt2img"), (INPAINT, "inpaint")])
def test_text_round_trip_for_every_parameter(params: GenerationParams, mode: str) -> None:
    text = format_infotext_for(FakeEngine(), params, seed=params.seed, info=RunInfo(mode=mode))  # type: ignore[arg-type]
    parsed = params_from_infotext(text)
    _compare(params, parsed, mode)
    assert "Model hash: 0123456789" in text and "Version: huihua" in text


def test_zero_terminal_snr_models_write_a1111_noise_schedule() -> None:
    plain = format_infotext_for(FakeEngine(), TXT2IMG, seed=TXT2IMG.seed)  # type: ignore[arg-type]
    assert "Noise Schedule" not in plain
    engine = FakeEngine()
    engine.spec = SimpleNamespace(zero_terminal_snr=True)
    text = format_infotext_for(engine, TXT2IMG, seed=TXT2IMG.seed)  # type: ignore[arg-type]
    assert "Noise Schedule: Zero Terminal SNR" in text
    assert parse(text)["Noise Schedule"] == "Zero Terminal SNR"


def test_image_k_carries_its_own_seeds() -> None:
    text = format_infotext_for(FakeEngine(), TXT2IMG, seed=TXT2IMG.seed + 3, index=3)  # type: ignore[arg-type]
    parsed = params_from_infotext(text)
    assert (parsed.seed, parsed.subseed) == (1237, 102)


def test_a1111_text_defaults() -> None:
    p = params_from_infotext("a house\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 5, Size: 512x768")
    assert (p.sampler_name, p.scheduler, p.width, p.height, p.enable_hr) == ("DPM++ 2M", "Karras", 512, 768, False)


def test_json_record_replays_the_batch_of_image_k(tmp_path: Path) -> None:
    p = replace(TXT2IMG, batch_size=3, n_iter=2)
    record = json_record(FakeEngine(), p, 4, RunInfo(files={"lora_a": "abc"}))  # type: ignore[arg-type]
    path = write_png(tmp_path / "x.png", __import__("PIL.Image").Image.new("RGB", (8, 8)), "text", record.to_json())
    back = read_json_params(path)
    assert back == record.to_json() and read_infotext(path) == "text"
    assert ReplayRecord.from_json(back) == record
    again, k = replay_params(ReplayRecord.from_json(back))
    assert (again.seed, again.subseed, again.n_iter, again.batch_size, k) == (1237, 102, 1, 3, 1)
    assert replace(again, seed=p.seed, subseed=p.subseed, n_iter=2) == p
    assert back["models"]["checkpoint"] == {"name": "tiny-model", "hash": "0123456789"}
    assert back["models"]["adapters"] == {"lora_a": "abc"}
