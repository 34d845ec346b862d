"""A1111 infotext: byte-exact formatting, parsing of real-world texts, and image-file round trips."""

from __future__ import annotations

import dataclasses
import os
import struct

import pytest
from PIL import Image

from huihua.errors import HuihuaError
from huihua.imagefile import exif_user_comment, read_infotext, read_json_params, write_image, write_png
from huihua.infotext import format_infotext, parse, quote, split_sampler_name, unquote

# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------

HIRES_PARAMS = {
    "Steps": 30, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 6.5, "Seed": 42,
    "Size": "512x512", "Model hash": "e6bb9ea85b", "Model": "realisticVision_v51",
    "VAE hash": "235745af8d", "VAE": "vae-ft-mse-840000-ema-pruned.safetensors",
    "Denoising strength": 0.45, "Clip skip": 2, "Hires upscale": 2, "Hires steps": 15,
    "Hires upscaler": "R-ESRGAN 4x+", "Lora hashes": "add_detail: 7c6bad76eb54",
    "TI hashes": "EasyNegative: c74b4e810b03", "Version": "v1.10.1",
}
HIRES_TEXT = (
    "a photo of a cat <lora:add_detail:0.5>, sitting on a couch\n"
    "Negative prompt: EasyNegative, blurry\n"
    "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 42, Size: 512x512, "
    "Model hash: e6bb9ea85b, Model: realisticVision_v51, VAE hash: 235745af8d, "
    "VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.45, Clip skip: 2, "
    "Hires upscale: 2, Hires steps: 15, Hires upscaler: R-ESRGAN 4x+, "
    'Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "EasyNegative: c74b4e810b03", Version: v1.10.1'
)


def test_format_is_byte_exact_for_a_known_example() -> None:
    text = format_infotext(HIRES_PARAMS, "a photo of a cat <lora:add_detail:0.5>, sitting on a couch",
                           "EasyNegative, blurry")
    assert text == HIRES_TEXT


def test_format_orders_keys_like_a1111() -> None:
    shuffled = dict(reversed(list(HIRES_PARAMS.items())))
    text = format_infotext(shuffled, "p", "n")
    # A1111's fixed keys first, then the extras in the caller's order, then Version.
    assert text.split("\n")[2] == (
        "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 42, Size: 512x512, "
        "Model hash: e6bb9ea85b, Model: realisticVision_v51, VAE hash: 235745af8d, "
        "VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.45, Clip skip: 2, "
        'TI hashes: "EasyNegative: c74b4e810b03", Lora hashes: "add_detail: 7c6bad76eb54", '
        "Hires upscaler: R-ESRGAN 4x+, Hires steps: 15, Hires upscale: 2, Version: v1.10.1"
    )


def test_format_rules_none_clip_skip_flags_quotes_and_strip() -> None:
    params = {"Steps": 20, "Sampler": "Euler a", "CFG scale": 7.0, "Seed": 1, "Size": "512x512",
              "Clip skip": 1, "Variation seed": None, "Tiling": "Tiling", "Note": 'say "hi"\nthen, 猫',
              "Template": "a: b"}
    assert format_infotext(params, "  a cat  ", "") == (
        "a cat  \nSteps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 1, Size: 512x512, Tiling, "
        'Note: "say \\"hi\\"\\nthen, 猫", Template: "a: b"'
    )
    assert format_infotext({"Steps": 5}, "", "") == "Steps: 5"
    assert quote("plain") == "plain" and quote(7) == "7" and quote("a,b") == '"a,b"'
    assert unquote('"a \\"b\\", c"') == 'a "b", c' and unquote('"broken') == '"broken' and unquote('"1"') == "1"


def test_format_reads_prompt_from_params_and_dataclasses() -> None:
    assert format_infotext({"Prompt": "p", "Negative prompt": "n", "Steps": 3, "Seed": 9}) == (
        "p\nNegative prompt: n\nSteps: 3, Seed: 9"
    )

    @dataclasses.dataclass(frozen=True)
    class Params:
        steps: int = dataclasses.field(default=20, metadata={"infotext": "Steps"})
        cfg: float = dataclasses.field(default=7.5, metadata={"infotext": "CFG scale"})
        internal: str = "not written"

    assert format_infotext(Params(), "x") == "x\nSteps: 20, CFG scale: 7.5"


# --------------------------------------------------------------------------------------------
# Parsing: realistic A1111 infotexts
# --------------------------------------------------------------------------------------------


def test_parse_modern_hires_infotext() -> None:
    res = parse(HIRES_TEXT)
    assert res["Prompt"] == "a photo of a cat <lora:add_detail:0.5>, sitting on a couch"
    assert res["Negative prompt"] == "EasyNegative, blurry"
    assert (res["Steps"], res["Sampler"], res["Schedule type"], res["CFG scale"]) == ("30", "DPM++ 2M", "Karras", "6.5")
    assert (res["Size-1"], res["Size-2"], res["Seed"]) == ("512", "512", "42")
    assert res["Lora hashes"] == "add_detail: 7c6bad76eb54" and res["TI hashes"] == "EasyNegative: c74b4e810b03"
    assert (res["Hires upscale"], res["Hires steps"], res["Hires upscaler"]) == ("2", "15", "R-ESRGAN 4x+")
    assert (res["Denoising strength"], res["Clip skip"], res["Version"]) == ("0.45", "2", "v1.10.1")
    assert "Emphasis" not in res and "Downcast alphas_cumprod" not in res
    assert (res["Hires resize-1"], res["Hires sampler"], res["Masked area padding"]) == (0, "Use same sampler", 32)


def test_parse_old_combined_sampler_and_backcompat() -> None:
    text = ("masterpiece, best quality, 1girl, (blue eyes:1.2), [smile]\n"
            "Negative prompt: lowres, bad anatomy, (worst quality:1.4)\n"
            "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234567890, Size: 512x768, "
            "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, ENSD: 31337, Version: v1.5.1")
    res = parse(text)
    assert (res["Sampler"], res["Schedule type"]) == ("DPM++ 2M", "Karras")
    assert (res["Size-1"], res["Size-2"], res["ENSD"]) == ("512", "768", "31337")
    assert res["Emphasis"] == "Original"  # the prompt uses (x:1.2)
    assert res["Old prompt editing timelines"] is True and res["Downcast alphas_cumprod"] is True


def test_parse_full_dict_of_a_minimal_infotext() -> None:
    res = parse("a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512")
    assert res == {
        "Steps": "20", "Sampler": "Euler a", "CFG scale": "7", "Seed": "5", "Size-1": "512", "Size-2": "512",
        "Prompt": "a cat", "Negative prompt": "", "Clip skip": "1", "Hires resize-1": 0, "Hires resize-2": 0,
        "Hires sampler": "Use same sampler", "Hires schedule type": "Use same scheduler",
        "Hires checkpoint": "Use same checkpoint", "Hires prompt": "", "Hires negative prompt": "",
        "Mask mode": "Inpaint masked", "Masked content": "original", "Inpaint area": "Whole picture",
        "Masked area padding": 32, "RNG": "GPU", "Schedule type": "Automatic", "Schedule max sigma": 0,
        "Schedule min sigma": 0, "Schedule rho": 0, "VAE Encoder": "Full", "VAE Decoder": "Full",
        "FP8 weight": "Disable", "Refiner switch by sampling steps": False,
    }


def test_parse_multiline_prompt_with_colons_and_no_negative() -> None:
    text = ("line one of the prompt,\n  line two: with a colon  \n"
            "Steps: 25, Sampler: Euler a, CFG scale: 7.5, Seed: 3, Size: 768x512")
    res = parse(text)
    assert res["Prompt"] == "line one of the prompt,\nline two: with a colon"
    assert res["Negative prompt"] == "" and res["Size-1"] == "768"


def test_parse_windows_line_endings_and_multiline_negative() -> None:
    text = "a\r\nb\r\nNegative prompt: c,\r\nd\r\nSteps: 20, Sampler: UniPC, CFG scale: 4, Seed: 7, Size: 64x64\r\n"
    res = parse(text)
    assert (res["Prompt"], res["Negative prompt"], res["Sampler"]) == ("a\nb", "c,\nd", "UniPC")


def test_parse_text_without_a_parameter_line_is_all_prompt() -> None:
    res = parse("just a prompt, Steps: 20, Seed: 4")
    assert res["Prompt"] == "just a prompt, Steps: 20, Seed: 4" and "Steps" not in res


def test_parse_hypernet_and_old_hires_fix() -> None:
    text = ("castle\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 1024x1024, First pass size: 0x0, "
            "Hypernet: anime, Hypernet strength: 0.8, Denoising strength: 0.7")
    res = parse(text)
    assert res["Prompt"] == "castle<hypernet:anime:0.8>"
    assert (res["Size-1"], res["Size-2"], res["Hires resize-1"], res["Hires resize-2"]) == (512, 512, 1024, 1024)
    explicit = parse("x\nSteps: 20, Seed: 1, Size: 1280x768, First pass size: 640x384")
    assert (explicit["Size-1"], explicit["Size-2"], explicit["Hires resize-1"]) == (640, 384, 1280)


def test_parse_quotes_empty_values_unknown_keys_and_fp8() -> None:
    text = ('p\nSteps: 20, Seed: 1, Template: "a \\"b\\", c", Empty: , Seed resize from: 512x512, '
            "My-Extension/Key: on, FP8 weight: Enable for SDXL, Hires sampler: DPM++ SDE Karras")
    res = parse(text)
    assert res["Template"] == 'a "b", c' and "Empty" not in res
    assert (res["Seed resize from-1"], res["Seed resize from-2"]) == ("512", "512")
    assert res["My-Extension/Key"] == "on" and res["Cache FP16 weight for LoRA"] is False
    assert (res["Hires sampler"], res["Hires schedule type"]) == ("DPM++ SDE", "Karras")


def test_parse_versions_and_sampler_names() -> None:
    forge = parse("p\nSteps: 20, Sampler: Euler, Seed: 1, Version: f2.0.1v1.10.1-previous-600-g3d6b")
    assert "Downcast alphas_cumprod" not in forge
    dev = parse("p [a:b:3]\nSteps: 20, Sampler: DDIM, Seed: 1, Version: v1.5.0-RC-12-gabc")
    assert dev["Pad conds v0"] is True and dev["Old prompt editing timelines"] is True
    tsnr = parse("p\nSteps: 20, Sampler: Euler, Seed: 1, Version: v1.7.0-224-g1234")
    assert tsnr["Downcast alphas_cumprod"] is True
    assert "Downcast alphas_cumprod" not in parse("p\nSteps: 20, Sampler: Euler, Seed: 1, Version: v1.7.0-225-g1")
    assert split_sampler_name("DPM++ 2M SDE SGMUniform") == ("DPM++ 2M SDE", "SGM Uniform")
    assert split_sampler_name("Euler a") == ("Euler a", None)
    assert split_sampler_name("DDIM") == ("DDIM", None)


def test_format_then_parse_round_trip() -> None:
    res = parse(HIRES_TEXT)
    keys = [k for k in HIRES_PARAMS if k != "Size"]
    assert {k: res[k] for k in keys} == {k: str(v) for k, v in HIRES_PARAMS.items() if k != "Size"}


# --------------------------------------------------------------------------------------------
# Image files
# --------------------------------------------------------------------------------------------


def image() -> Image.Image:
    return Image.new("RGB", (16, 8), (200, 30, 90))


@pytest.mark.parametrize("text", [HIRES_TEXT, "猫 (cat:1.2)\nNegative prompt: ブレ\nSteps: 4, Seed: 1, Size: 8x8"])
def test_png_round_trip_with_json_chunk(tmp_path, text: str) -> None:
    path = write_png(tmp_path / "a.png", image(), text, {"seed": 42, "prompt": "猫"})
    assert read_infotext(path) == text
    assert read_json_params(path) == {"seed": 42, "prompt": "猫"}
    with Image.open(path) as im:
        assert im.size == (16, 8) and im.getpixel((0, 0)) == (200, 30, 90)


@pytest.mark.parametrize("name", ["a.jpg", "a.jpeg", "a.webp", "a.png"])
def test_jpeg_webp_round_trip_through_exif(tmp_path, name: str) -> None:
    text = "a, b: c\nNegative prompt: ü 猫\nSteps: 4, Seed: 1, Size: 8x8"
    path = write_image(tmp_path / name, image(), text)
    assert read_infotext(path) == text


def test_exif_layout_is_what_a1111_writes() -> None:
    data = exif_user_comment("hi")
    assert data[:10] == b"Exif\x00\x00MM\x00\x2a"
    tiff = data[6:]
    exif_ifd = struct.unpack(">I", tiff[8 + 2 + 8 : 8 + 2 + 12])[0]
    tag, kind, count, offset = struct.unpack(">HHII", tiff[exif_ifd + 2 : exif_ifd + 14])
    assert (tag, kind, count) == (0x9286, 7, 12)  # UserComment, UNDEFINED, 8 + 2*2 bytes
    assert tiff[offset : offset + count] == b"UNICODE\x00\x00h\x00i"


def test_writers_never_overwrite_unless_asked(tmp_path) -> None:
    path = tmp_path / "x.png"
    write_png(path, image(), "first")
    with pytest.raises(HuihuaError, match="exists"):
        write_png(path, image(), "second")
    assert read_infotext(path) == "first"
    write_png(path, image(), "third", overwrite=True)
    assert read_infotext(path) == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


def test_failed_write_leaves_no_file(tmp_path, monkeypatch) -> None:
    img = image()

    def broken_save(fp, *args, **kwargs):
        fp.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(img, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_png(tmp_path / "y.png", img, "text")
    assert list(tmp_path.iterdir()) == []


def test_unknown_extension_and_missing_metadata(tmp_path) -> None:
    with pytest.raises(HuihuaError, match="unsupported"):
        write_image(tmp_path / "a.bmp", image(), "t")
    plain = tmp_path / "plain.png"
    image().save(plain)
    assert read_infotext(plain) is None and read_json_params(plain) is None
    assert not os.path.exists(tmp_path / "a.bmp")
