"""TAESD in every published key layout (diffusers AutoencoderTiny as parity oracle) and latent previews."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from huihua.errors import CheckpointError, DetectionError, ParameterError
from huihua.checkpoints.taesd import load_taesd
from huihua.families import SD1_LATENT_RGB, SDXL_LATENT_RGB, SDXL_LATENT_RGB_BIAS, family_info
from huihua.nn.taesd import TAESD, TinyDecoder, TinyEncoder, taesd_from_state_dict
from huihua.runtime.preview import PreviewCallback, latent_to_rgb_approx, preview_image


def _seeded(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 64
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 / fan_in) ** 0.5)
    return module.eval()


@pytest.fixture(scope="module")
def tiny_pair() -> tuple[TinyEncoder, TinyDecoder]:
    return _seeded(TinyEncoder(), 0), _seeded(TinyDecoder(), 1)  # type: ignore[return-value]


def _latents(c: int = 4, seed: int = 2) -> torch.Tensor:
    return torch.randn(1, c, 4, 3, generator=torch.Generator().manual_seed(seed))


def test_published_key_names_and_shapes(tiny_pair):
    enc, dec = tiny_pair
    dk, ek = dec.state_dict(), enc.state_dict()
    assert "0.weight" not in dk and dk["1.weight"].shape == (64, 4, 3, 3)  # layer 0 is the clamp
    assert "3.conv.0.weight" in dk and "3.skip.weight" not in dk and "7.weight" in dk and "7.bias" not in dk and dk["19.weight"].shape == (3, 64, 3, 3)
    assert ek["0.weight"].shape == (64, 3, 3, 3) and ek["14.weight"].shape == (4, 64, 3, 3) and "2.bias" not in ek
    assert sum(p.numel() for p in dec.parameters()) == 1_222_531  # the TAESD README's parameter counts
    assert sum(p.numel() for p in enc.parameters()) == 1_222_532


def test_separate_and_combined_files_load_the_same_network(tmp_path, tiny_pair):
    enc, dec = tiny_pair
    save_file(dict(dec.state_dict()), str(tmp_path / "taesd_decoder.safetensors"))
    torch.save(dict(enc.state_dict()), tmp_path / "taesd_encoder.pth")
    both = {f"taesd_decoder.{k}": v for k, v in dec.state_dict().items()}
    both.update({f"taesd_encoder.{k}": v for k, v in enc.state_dict().items()})
    both["vae_scale"] = torch.tensor(0.18215)
    save_file(both, str(tmp_path / "taesd_comfy.safetensors"))
    z = _latents()
    with torch.no_grad():
        expected_img = dec(z)
        expected_z = enc(expected_img.clamp(0, 1))
    assert expected_img.shape == (1, 3, 32, 24) and expected_img.std() > 1e-3
    for paths in (("taesd_decoder.safetensors", "taesd_encoder.pth"), ("taesd_comfy.safetensors",)):
        t = load_taesd(*(tmp_path / p for p in paths))
        with torch.no_grad():
            torch.testing.assert_close(t.decode(z), expected_img.clamp(0, 1) * 2 - 1, atol=0, rtol=0)
            torch.testing.assert_close(t.encode(expected_img.clamp(0, 1) * 2 - 1), expected_z, atol=1e-6, rtol=0)
    only_dec = load_taesd(tmp_path / "taesd_decoder.safetensors")
    assert only_dec.encoder is None
    with pytest.raises(CheckpointError, match="encoder"):
        only_dec.encode(torch.zeros(1, 3, 8, 8))


def test_parity_with_diffusers_autoencoder_tiny(tmp_path):
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    oracle = AutoencoderTiny().eval()
    _seeded(oracle, 3)
    save_file({k: v.contiguous() for k, v in oracle.state_dict().items()}, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    ours = load_taesd(tmp_path / "diffusion_pytorch_model.safetensors")
    z = _latents(seed=4) * 2
    pixels = torch.rand(1, 3, 24, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        ref_img = oracle.decoder(z)  # diffusers: [-1, 1], not clamped
        ref_z = oracle.encoder(pixels)
        assert ours.decoder is not None and ours.encoder is not None
        got_img = ours.decoder(z) * 2 - 1
        got_z = ours.encode(pixels)
    assert ref_img.std() > 1e-3 and ref_z.std() > 1e-3
    torch.testing.assert_close(got_img, ref_img, atol=1e-4, rtol=0)  # tolerance 1e-4 (float32)
    torch.testing.assert_close(got_z, ref_z, atol=1e-4, rtol=0)


def test_sixteen_channel_variant_and_bad_files():
    dec = _seeded(TinyDecoder(16), 6)
    t = taesd_from_state_dict({f"decoder.{k}": v for k, v in dec.state_dict().items()})
    assert t.decoder is not None and t.decoder.latent_channels == 16
    assert t.decode(_latents(16)).shape == (1, 3, 32, 24)
    with pytest.raises(DetectionError):
        taesd_from_state_dict({"first_stage_model.x.weight": torch.zeros(1)})
    bad = dict(dec.state_dict())
    bad.pop("3.conv.0.bias")
    with pytest.raises(CheckpointError, match="decoder"):
        taesd_from_state_dict(bad)
    assert (family_info("sdxl").taesd_name, family_info("sd2").taesd_name) == ("taesdxl_decoder", "taesd_decoder")


def test_latent_to_rgb_approx_applies_the_published_factors():
    z = torch.zeros(4, 3, 2)
    z[0, 0, 0] = 1.0  # pixel (0, 0): channel 0 only
    z[3, 1, 1] = -1.0  # pixel (1, 1): minus channel 3
    sd1 = latent_to_rgb_approx(z, "sd1")
    assert sd1.shape == (3, 2, 3) and sd1.dtype == np.uint8
    expect = lambda rgb: np.round((np.asarray(rgb) + 1) / 2 * 255)  # noqa: E731
    np.testing.assert_array_equal(sd1[0, 0], expect(SD1_LATENT_RGB[0]))
    np.testing.assert_array_equal(sd1[1, 1], expect(-np.asarray(SD1_LATENT_RGB[3])))
    np.testing.assert_array_equal(sd1[2, 0], [128, 128, 128])  # zero latent -> mid grey (127.5 rounds to even)
    xl = latent_to_rgb_approx(z[None], "sdxl")
    assert xl.shape == (1, 3, 2, 3)
    np.testing.assert_array_equal(xl[0, 0, 0], expect(np.add(SDXL_LATENT_RGB[0], SDXL_LATENT_RGB_BIAS)))
    assert (latent_to_rgb_approx(torch.full((4, 2, 2), 50.0), "sd2") <= 255).all()
    with pytest.raises(ParameterError):
        latent_to_rgb_approx(torch.zeros(16, 2, 2), "sd1")


def test_preview_callback_every_n_steps_with_and_without_taesd(tiny_pair):
    seen: list[tuple[int, tuple[int, int]]] = []
    inner_steps: list[int] = []
    cb = PreviewCallback(lambda s, im: seen.append((s, im.size)), "sd1", every=2, inner=lambda s, *_: inner_steps.append(s))
    x = torch.randn(2, 4, 3, 4)
    for step in range(5):
        cb(step, x, x * 0.5, torch.tensor(1.0))
    assert inner_steps == [0, 1, 2, 3, 4]
    assert seen == [(0, (4, 3)), (2, (4, 3)), (4, (4, 3))]
    taesd = TAESD(decoder=tiny_pair[1])
    img = preview_image(x, "sd1", taesd)
    assert img.size == (32, 24)
    with torch.no_grad():
        ref = ((taesd.decode(x[:1])[0] + 1) / 2 * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(np.asarray(img), ref)
    with pytest.raises(ParameterError):
        PreviewCallback(lambda s, im: None, "sd1", every=0)
