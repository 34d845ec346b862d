"""Running the VAE without ever saving a black image: NaN/inf outputs are retried in fp32.

SDXL's original VAE overflows in fp16 (its activations exceed 65504); A1111 answers with
``--no-half-vae`` or "NaN check and retry in full precision". We do the latter automatically.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from huihua.errors import HuihuaError


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def guarded(vae: nn.Module, call: Callable[[nn.Module, torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``call(vae, x)``; when the result has NaN/inf and the VAE is half precision, rerun it in fp32."""
    dtype = next(vae.parameters()).dtype
    out = call(vae, x.to(dtype))
    if _finite(out):
        return out
    if dtype != torch.float32:
        vae.to(torch.float32)
        try:
            out = call(vae, x.float())
        finally:
            vae.to(dtype)  # fp16/bf16 -> fp32 -> back is exact: nothing is lost
        if _finite(out):
            return out
    raise HuihuaError("the VAE produced NaN/inf values even in fp32; the latents are broken (nothing was saved)")


def decode(vae: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Unscaled latents -> pixels, with the fp32 retry."""
    return guarded(vae, lambda m, z: m.decode(z), latents)


def encode(vae: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels -> unscaled latent mean, with the fp32 retry."""
    return guarded(vae, lambda m, p: m.encode(p), pixels)
