"""Running the VAE without ever saving a black image: NaN/inf outputs are retried in fp32.

SDXL's original VAE overflows in fp16 (its activations exceed 65504); A1111 answers with
``--no-half-vae`` or "NaN check and retry in full precision". We do the latter automatically.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar, cast

import torch
from torch import nn

from huihua.errors import HuihuaError


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


class CodingVAE(Protocol):
    """What decode/encode need of a VAE module (AutoencoderKL, TAESD)."""

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...


V = TypeVar("V", bound=nn.Module)


def guarded(vae: V, call: Callable[[V, torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
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
    return guarded(vae, lambda m, z: cast(CodingVAE, m).decode(z), latents)


def encode(vae: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels -> unscaled latent mean, with the fp32 retry."""
    return guarded(vae, lambda m, p: cast(CodingVAE, m).encode(p), pixels)
