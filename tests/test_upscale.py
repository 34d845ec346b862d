"""Upscalers: ESRGAN-family detection/loading in every key layout, tiled == untiled, Lanczos, latent modes."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from huihua.errors import DetectionError, ParameterError
from huihua.upscale import (
    LATENT_MODES, build_upscaler, lanczos, load_upscaler, tiled_map, upscale, upscale_latents,
)
from huihua.upscale.models import RRDBConfig, RRDBNet, SRVGGConfig, SRVGGNetCompact
from huihua.upscale.tiled import pil_to_tensor, tile_starts


def _randomise(net: torch.nn.Module, seed: int, std: float = 0.1) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return net.eval()


def _tiny_rrdb(upsamples: int = 2, unshuffle: int = 1) -> RRDBNet:
    return _randomise(RRDBNet(RRDBConfig(nf=8, nb=2, gc=4, upsamples=upsamples, unshuffle=unshuffle)), 0)


def _tiny_srvgg(scale: int = 4) -> SRVGGNetCompact:
    return _randomise(SRVGGNetCompact(SRVGGConfig(nf=8, num_conv=2, scale=scale)), 1)


def _to_old_esrgan(sd: dict[str, torch.Tensor], nb: int, upsamples: int) -> dict[str, torch.Tensor]:
    """BasicSR names -> the original ESRGAN ``model.N`` layout (Sequential indices incl. activations)."""
    index = {"conv_first": 0}
    for i in range(upsamples):
        index[f"conv_up{i + 1}"] = 3 + 3 * i  # each stage is Upsample, conv, LeakyReLU after model.1
    index["conv_hr"] = 2 + 3 * upsamples
    index["conv_last"] = 4 + 3 * upsamples
    out = {}
    for k, v in sd.items():
        if m := re.match(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(\w+)$", k):
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}"] = v
        elif k.startswith("conv_body."):
            out[f"model.1.sub.{nb}.{k.split('.')[1]}"] = v
        else:
            name, kind = k.split(".")
            out[f"model.{index[name]}.{kind}"] = v
    return out


def _to_trunk(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^body\.(\d+)\.rdb(\d)", r"RRDB_trunk.\1.RDB\2", k)
        k = k.replace("conv_body.", "trunk_conv.").replace("conv_up", "upconv").replace("conv_hr.", "HRconv.")
        out[k] = v
    return out


def test_rrdb_loads_from_all_three_layouts_and_gives_the_same_output(tmp_path):
    net = _tiny_rrdb()
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    save_file(sd, str(tmp_path / "new.safetensors"))
    torch.save(_to_old_esrgan(sd, nb=2, upsamples=2), tmp_path / "old.pth")
    torch.save({"params_ema": _to_trunk(sd)}, tmp_path / "trunk.pth")  # BasicSR-style wrapper too
    x = torch.rand(1, 3, 10, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = net(x)
    assert expected.shape == (1, 3, 40, 48)
    for name in ("new.safetensors", "old.pth", "trunk.pth"):
        up = load_upscaler(tmp_path / name)
        assert (up.arch, up.scale, up.in_channels) == ("ESRGAN", 4, 3)
        assert up.net.cfg == net.cfg
        with torch.no_grad():
            torch.testing.assert_close(up.net(x), expected, atol=0, rtol=0)


@pytest.mark.parametrize("upsamples,unshuffle,scale", [(2, 2, 2), (2, 4, 1), (3, 1, 8), (1, 1, 2)])
def test_rrdb_scale_is_read_from_the_weights(upsamples, unshuffle, scale):
    net = _tiny_rrdb(upsamples, unshuffle)
    up = build_upscaler(dict(net.state_dict()))
    assert up.scale == scale and up.net.cfg == net.cfg
    with torch.no_grad():
        out = up.net(torch.rand(1, 3, 7, 9))  # odd sizes: unshuffle pads, output is cropped
    assert out.shape == (1, 3, 7 * scale, 9 * scale)


@pytest.mark.parametrize("scale", [2, 4])
def test_srvgg_loads_from_pth_with_params_wrapper(tmp_path, scale):
    net = _tiny_srvgg(scale)
    torch.save({"params": dict(net.state_dict())}, tmp_path / "compact.pth")
    up = load_upscaler(tmp_path / "compact.pth")
    assert (up.arch, up.scale) == ("SRVGG", scale) and up.net.cfg == net.cfg
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(up.net(x), net(x), atol=0, rtol=0)
        assert up.net(x).shape == (1, 3, 6 * scale, 5 * scale)


def test_unknown_layout_is_a_detection_error():
    with pytest.raises(DetectionError):
        build_upscaler({"foo.weight": torch.zeros(3, 3, 3, 3)})


def test_tile_starts_cover_with_overlap():
    for size in (33, 64, 100, 257):
        starts = tile_starts(size, 32, 8, align=4)
        assert starts[0] == 0 and starts[-1] == size - 32
        assert all(s % 4 == 0 for s in starts[:-1])
        assert all(b - a <= 32 - 8 for a, b in zip(starts, starts[1:]))


def test_tiled_equals_untiled_for_a_small_receptive_field_and_tiles_bound_memory():
    # SRVGG with 4 convolutions has a receptive radius of 4 input pixels <= margin = overlap // 4.
    net = _tiny_srvgg(2)
    x = torch.rand(1, 3, 50, 70, generator=torch.Generator().manual_seed(3))
    seen: list[tuple[int, int]] = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape[-2:]))
        return net(t)

    with torch.no_grad():
        full = net(x)
        tiled = tiled_map(fn, x, tile=32, overlap=16, up=2)
    assert len(seen) > 4 and max(max(s) for s in seen) <= 32  # no call ever saw more than a tile
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)  # tolerance: float32 summation order


def test_tiled_blend_is_a_partition_of_unity():
    x = torch.rand(1, 2, 45, 61)
    torch.testing.assert_close(tiled_map(lambda t: t * 3.0, x, 16, 6), x * 3.0, atol=1e-6, rtol=0)
    y = tiled_map(lambda t: t[:, :, ::4, ::4], torch.rand(1, 1, 48, 64), 16, 8, down=4)
    assert y.shape == (1, 1, 12, 16)


def test_upscale_image_sizes_and_tiling_rrdb():
    net = _tiny_rrdb()
    up = build_upscaler(dict(net.state_dict()))
    img = Image.fromarray((np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8))
    whole = upscale(img, up, tile=0)
    tiled = upscale(img, up, tile=16, overlap=12)
    assert whole.size == (96, 80) and tiled.size == (96, 80)
    diff = np.abs(np.asarray(whole, dtype=np.int16) - np.asarray(tiled, dtype=np.int16))
    assert diff.max() <= 2  # RRDB's receptive field exceeds the margin: near-equal, not exact
    assert upscale(img, up, scale=2.0, tile=0).size == (48, 40)  # one pass, then Lanczos down
    assert upscale(img, up, scale=6.0, tile=0).size == (144, 120)  # two passes
    with pytest.raises(ParameterError):
        upscale(img, up, scale=0)


def test_pil_tensor_roundtrip_and_lanczos():
    img = Image.fromarray((np.arange(48 * 3) % 256).astype(np.uint8).reshape(4, 12, 3))
    t = pil_to_tensor(img)
    assert t.shape == (1, 3, 4, 12) and float(t.max()) <= 1.0
    big = lanczos(img, 2.5)
    assert big.size == (30, 10)
    assert np.array_equal(np.asarray(big), np.asarray(img.resize((30, 10), Image.Resampling.LANCZOS)))
    with pytest.raises(ParameterError):
        lanczos(img, -1)


def test_latent_modes():
    z = torch.arange(16.0).view(1, 1, 4, 4)
    for mode in LATENT_MODES:
        assert upscale_latents(z, (8, 6), mode).shape == (1, 1, 8, 6)
    nearest = upscale_latents(z, (8, 8), "Latent (nearest)")
    assert torch.equal(nearest[0, 0, ::2, ::2], z[0, 0])
    with pytest.raises(ParameterError, match="Latent \\(bicubic\\)"):
        upscale_latents(z, (8, 8), "bogus")


def test_one_x_model_runs_once():
    net = _tiny_rrdb(2, 4)  # Real-ESRGAN-style 1x: unshuffle by 4, two 2x stages
    up = build_upscaler(dict(net.state_dict()))
    img = Image.fromarray((np.random.default_rng(1).random((12, 16, 3)) * 255).astype(np.uint8))
    out = upscale(img, up, tile=0)
    assert up.scale == 1 and out.size == img.size
    with torch.no_grad():
        ref = net(pil_to_tensor(img)).clamp(0, 1).mul(255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(out), ref)  # the net did run
