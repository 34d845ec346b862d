"""Tiled VAE: close to the whole-image pass, and no seam where tiles meet.

GroupNorm statistics and mid-block attention are per tile, so tiled != whole exactly. The inputs are
periodic with a period that divides the tile stride, which makes every tile's statistics those of
the whole image; what is left is the tiles' edge effect, which blending must hide.
"""

from __future__ import annotations

import pytest
import torch

from huihua.nn.configs import VAEConfig
from huihua.errors import ParameterError
from huihua.nn.vae import AutoencoderKL
from huihua.pipelines.tiled_vae import tiled_decode, tiled_encode
from huihua.upscale.tiled import tile_starts, tiled_map

CFG = VAEConfig(ch=8, ch_mult=(1, 1, 2), num_res_blocks=1, norm_num_groups=4)  # downscale 4
F = CFG.downscale


@pytest.fixture(scope="module")
def vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(CFG).eval()


def _periodic_latents(size: int = 48, period: int = 8, seed: int = 1) -> torch.Tensor:
    cell = torch.randn(1, CFG.z_channels, period, period, generator=torch.Generator().manual_seed(seed))
    return cell.repeat(1, 1, size // period, size // period)


def _seam_ratio(err: torch.Tensor, edges: list[int], band: int) -> float:
    """Worst mean |error| of a column within ``band`` of a tile edge / 90th percentile of the other columns."""
    col = err.abs().mean(dim=(0, 1, 2))
    near = torch.zeros_like(col, dtype=torch.bool)
    for e in edges:
        near[max(0, e - band) : e + band] = True
    return float(col[near].max() / torch.quantile(col[~near], 0.9))


def _edges(size: int, tile: int, overlap: int) -> list[int]:
    """Output columns where a tile begins or ends inside the image."""
    starts = tile_starts(size, tile, overlap)
    return sorted({s * F for s in starts[1:]} | {(s + tile) * F for s in starts[:-1]})


def test_tiled_decode_is_close_to_whole_and_shows_no_seam(vae):
    z = _periodic_latents()
    with torch.no_grad():
        whole = vae.decode(z)
        tiled = tiled_decode(vae, z, tile=32, overlap=16)
        small = tiled_decode(vae, z, tile=24, overlap=8)
        hard = tiled_map(vae.decode, z, tile=24, overlap=0, up=F)  # tiles butted together, no blending
    assert tiled.shape == whole.shape == (1, 3, 192, 192)
    rel = float((tiled - whole).abs().mean() / whole.std())
    assert rel < 0.06, rel  # tolerance: 6% of the image's spread (per-tile GroupNorm/attention, tile edges)
    for out, tile, overlap in ((tiled, 32, 16), (small, 24, 8)):
        err = out - whole
        for e in (err, err.transpose(-1, -2)):  # columns, then rows
            assert _seam_ratio(e, _edges(48, tile, overlap), 2 * F) < 1.6  # no column stands out at a tile edge
    hard_err = hard - whole
    assert _seam_ratio(hard_err, [24 * F], 2 * F) > 2.5  # while a hard cut does stand out: the check can fail
    assert _seam_ratio(hard_err.transpose(-1, -2), [24 * F], 2 * F) > 2.5


def test_tiled_encode_is_close_to_whole(vae):
    cells = torch.tanh(_periodic_latents(size=40, period=8, seed=2)[:, :3])  # period 32 pixels
    pixels = cells.repeat_interleave(F, -1).repeat_interleave(F, -2)
    with torch.no_grad():
        whole = vae.encode(pixels)
        tiled = tiled_encode(vae, pixels, tile=96, overlap=32)
    assert tiled.shape == whole.shape == (1, CFG.z_channels, 40, 40)
    rel = float((tiled - whole).abs().mean() / whole.std())
    assert rel < 0.06, rel  # tolerance: 6% of the latents' spread
    with torch.no_grad():
        assert torch.equal(tiled_encode(vae, pixels, tile=512), whole)  # one tile: the plain pass


def test_bad_shapes_are_parameter_errors(vae):
    with pytest.raises(ParameterError, match="multiples of 4"):
        tiled_encode(vae, torch.zeros(1, 3, 30, 32))
    with pytest.raises(ParameterError, match="latents"):
        tiled_decode(vae, torch.zeros(1, 3, 8, 8))
    with pytest.raises(ParameterError, match="overlap"):
        tiled_decode(vae, torch.zeros(1, 4, 8, 8), tile=8, overlap=8)
