"""Per-generation VAE swaps and the NaN guard (never a black image)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from huihua.checkpoints.diffusers.vae import diffusers_vae_to_ldm
from huihua.errors import CheckpointError, HuihuaError
from huihua.runtime import vae_guard
from tests.tiny_checkpoints import tiny_engine
from tests.tiny_models import tiny_diffusers_vae, tiny_vae_config


def _other_vae(tmp_path: Path, seed: int = 5) -> Path:
    other = tiny_diffusers_vae(tiny_vae_config(), seed=seed)
    sd = {k: v.contiguous() for k, v in diffusers_vae_to_ldm(other.state_dict(), tiny_vae_config()).items()}
    path = tmp_path / f"vae{seed}.safetensors"
    save_file(sd, str(path))
    return path


def test_swap_vae_and_back(tmp_path: Path) -> None:
    engine = tiny_engine(tmp_path, "sd1")
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        own = engine.vae.decode(z)
        engine.swap_vae(_other_vae(tmp_path))
        swapped = engine.vae.decode(z)
        assert engine.vae_path is not None and (own - swapped).abs().max() > 1e-3
        engine.swap_vae(None)
        assert engine.vae_path is None and torch.equal(engine.vae.decode(z), own)
        bad = tmp_path / "bad.safetensors"
        save_file({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)}, str(bad))
        with pytest.raises(CheckpointError, match="bad.safetensors"):
            engine.swap_vae(bad)
        assert torch.equal(engine.vae.decode(z), own)  # the previous VAE is still in place


def test_loaded_with_external_vae_can_return_to_its_own(tmp_path: Path) -> None:
    engine = tiny_engine(tmp_path, "sd1")
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        own = engine.vae.decode(z)
        other = tiny_engine(tmp_path, "sd1", vae=_other_vae(tmp_path))
        other.swap_vae(None)
        assert torch.equal(other.vae.decode(z), own)


def test_nan_in_half_precision_is_retried_in_fp32() -> None:
    class Overflowing(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(300.0))

        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return (z * self.w) * self.w * self.w / 1e6  # 300^3 overflows fp16, fine in fp32

    vae = Overflowing().half()
    out = vae_guard.decode(vae, torch.ones(1, 4))
    assert torch.isfinite(out).all() and torch.allclose(out.float(), torch.full((1, 4), 27.0))
    assert next(vae.parameters()).dtype == torch.float16  # put back as it was

    class Broken(Overflowing):
        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return z * float("nan")

    with pytest.raises(HuihuaError, match="NaN"):
        vae_guard.decode(Broken().half(), torch.ones(1, 4))
