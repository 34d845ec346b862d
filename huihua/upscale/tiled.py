"""Tiled application of image-to-image networks: memory bounded by the tile, overlaps blended.

One routine serves the ESRGAN-family upscalers and the tiled VAE: the input (B, C, H, W) is cut
into overlapping tiles, each tile goes through the network on its own, and each output tile is
added into the result with a weight that ramps linearly from 0 to 1 across the overlap, so no tile
edge can be seen. The ramp starts ``margin`` pixels inside a tile edge: a purely convolutional
network whose receptive radius is at most ``margin`` gives exactly its untiled result.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from PIL import Image
from torch import Tensor

from huihua.errors import HuihuaError, ParameterError
from huihua.upscale.lanczos import lanczos_to
from huihua.upscale.models import Upscaler

TileFn = Callable[[Tensor], Tensor]
MAX_SCALE = 16.0


def tile_starts(size: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Offsets of tiles of length ``tile`` covering ``size``; neighbours share at least ``overlap``."""
    if size <= tile:
        return [0]
    stride = max(align, (tile - overlap) // align * align)
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def _ramp(length: int, lo: bool, hi: bool, overlap: int, margin: int) -> Tensor:
    """1-D blending weight of one tile: linear ramps at the edges it shares with a neighbour."""
    d = torch.arange(length, dtype=torch.float32)
    width = float(max(overlap - 2 * margin, 1))
    w = torch.ones(length)
    if lo:
        w = torch.minimum(w, ((d - margin + 0.5) / width).clamp(0.0, 1.0))
    if hi:
        w = torch.minimum(w, ((length - 1 - d - margin + 0.5) / width).clamp(0.0, 1.0))
    return w


def _check(x: Tensor, tile: int, overlap: int, up: int, down: int) -> None:
    if x.dim() != 4:
        raise ParameterError(f"tiled input: expected (B, C, H, W), got shape {tuple(x.shape)}")
    if up < 1 or down < 1:
        raise ParameterError(f"tiled scale: up={up} and down={down} must be positive integers")
    if not 0 <= overlap < tile:
        raise ParameterError(f"overlap: must be in [0, tile={tile}), got {overlap}")
    if tile < down or tile % down or overlap % down:
        raise ParameterError(f"tile/overlap: {tile}/{overlap} must be multiples of the downscale {down}")
    if x.shape[-2] % down or x.shape[-1] % down:
        raise ParameterError(f"tiled input: size {tuple(x.shape[-2:])} is not a multiple of {down}")


def tiled_map(
    fn: TileFn, x: Tensor, tile: int, overlap: int, up: int = 1, down: int = 1, margin: int | None = None
) -> Tensor:
    """Apply ``fn`` (B, C, h, w) -> (B, C', h*up/down, w*up/down) tile by tile, blending the overlaps.

    ``tile`` and ``overlap`` are in input pixels; ``margin`` (default overlap // 4) is how far inside a
    shared tile edge the blending ramp begins. Accumulators are float32 on ``x``'s device; the result
    has the network's dtype.
    """
    _check(x, tile, overlap, up, down)
    height, width = x.shape[-2:]
    th, tw = min(tile, height), min(tile, width)
    ys, xs = tile_starts(height, th, overlap, down), tile_starts(width, tw, overlap, down)
    if len(ys) == 1 and len(xs) == 1:
        return fn(x).to(x.device)
    margin = overlap // 4 if margin is None else margin
    ov_out, m_out = overlap * up // down, margin * up // down
    oh, ow = th * up // down, tw * up // down
    out: Tensor | None = None
    result_dtype = x.dtype
    wsum = torch.zeros(height * up // down, width * up // down, device=x.device)
    for y0 in ys:
        wy = _ramp(oh, y0 > 0, y0 + th < height, ov_out, m_out).to(x.device)
        for x0 in xs:
            patch = fn(x[:, :, y0 : y0 + th, x0 : x0 + tw]).to(x.device)
            if tuple(patch.shape[-2:]) != (oh, ow):
                raise HuihuaError(f"tiled network: tile {th}x{tw} gave {tuple(patch.shape[-2:])}, expected {oh}x{ow}")
            if out is None:
                out = torch.zeros(*patch.shape[:2], *wsum.shape, device=x.device, dtype=torch.float32)
                result_dtype = patch.dtype
            wx = _ramp(ow, x0 > 0, x0 + tw < width, ov_out, m_out).to(x.device)
            w = wy[:, None] * wx[None, :]
            oy, ox = y0 * up // down, x0 * up // down
            out[:, :, oy : oy + oh, ox : ox + ow].add_(patch.float() * w)
            wsum[oy : oy + oh, ox : ox + ow].add_(w)
    assert out is not None
    return out.div_(wsum).to(result_dtype)


def pil_to_tensor(image: Image.Image, channels: int = 3) -> Tensor:
    """PIL image -> float32 (1, channels, H, W) in [0, 1] (mode L for 1 channel, RGBA for 4)."""
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels)
    if mode is None:
        raise ParameterError(f"channels: images have 1, 3 or 4 channels, not {channels}")
    data = torch.frombuffer(bytearray(image.convert(mode).tobytes()), dtype=torch.uint8)
    t = data.view(image.height, image.width, channels).permute(2, 0, 1)
    return t.unsqueeze(0).float().div_(255.0)


def tensor_to_pil(x: Tensor) -> Image.Image:
    """(1, C, H, W) or (C, H, W) in [0, 1] -> PIL image (C of 1, 3 or 4); values are clamped and rounded."""
    if x.dim() == 4:
        x = x[0]
    arr = x.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)


def _run_tiled(upscaler: Upscaler, x: Tensor, tile: int, overlap: int) -> Tensor:
    """One pass of the network over ``x`` (1, C, H, W), tile by tile."""
    param = next(upscaler.net.parameters())
    def run(tile_in: Tensor) -> Tensor:
        return upscaler.net(tile_in.to(param.device, param.dtype)).float()

    return tiled_map(run, x, tile, overlap, up=upscaler.scale)


def upscale(
    image: Image.Image, upscaler: Upscaler, scale: float | None = None, tile: int = 512, overlap: int = 32
) -> Image.Image:
    """Upscale ``image`` by ``scale`` (default: the net's own) with ``upscaler``, in overlapping tiles.

    The network runs as many passes as it takes to reach ``scale`` (one at least, three at most),
    then the result is resized to exactly ``round(size * scale)`` with Lanczos. ``tile=0`` runs the
    whole image at once.
    """

    target = float(upscaler.scale if scale is None else scale)
    if not 0 < target <= MAX_SCALE:
        raise ParameterError(f"scale: must be in (0, {MAX_SCALE}], got {scale}")
    passes = 1 if upscaler.scale == 1 else min(3, max(1, math.ceil(math.log(target, upscaler.scale) - 1e-9)))
    size = (max(1, round(image.width * target)), max(1, round(image.height * target)))
    x = pil_to_tensor(image, upscaler.in_channels)
    with torch.inference_mode():
        for _ in range(passes):
            t = tile or max(x.shape[-2:])
            x = _run_tiled(upscaler, x, t, min(overlap, t - 1)).clamp_(0.0, 1.0)
    out = tensor_to_pil(x)
    return out if out.size == size else lanczos_to(out, size)
