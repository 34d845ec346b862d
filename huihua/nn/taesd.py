"""TAESD, the tiny autoencoder of madebyollin: fast decodes and live previews of SD latents.

Attribute paths equal the published keys (``taesd_decoder.safetensors`` / ``taesdxl_decoder``: ``1.weight``,
``3.conv.0.weight``, ...). Other layouts are renamed on load: combined files with ``encoder.`` /
``decoder.`` or ComfyUI's ``taesd_encoder.`` / ``taesd_decoder.`` prefixes, and diffusers'
``AutoencoderTiny`` (``encoder.layers.N`` / ``decoder.layers.N``, whose decoder lacks the leading clamp).

Latent convention: TAESD works on SCALED latents, the sampler's space (VAE mean x ``scale_factor``,
values roughly in [-3, 3]); images are in [0, 1]. ``TAESD.decode`` / ``encode`` convert to and from
[-1, 1] pixels; unlike ``AutoencoderKL``, they take and give scaled latents.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from huihua.errors import CheckpointError, DetectionError

WIDTH = 64


def _conv(n_in: int, n_out: int, **kwargs: object) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)  # type: ignore[arg-type]


class Clamp(nn.Module):
    """Soft clamp of the latents to (-3, 3): ``3 * tanh(x / 3)``."""

    def forward(self, x: Tensor) -> Tensor:
        """Any shape -> same shape."""
        return torch.tanh(x / 3.0) * 3.0


class Block(nn.Module):
    """Three 3x3 convolutions with ReLUs between, a (1x1 when widths differ) skip, ReLU after the sum."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """(B, n_in, H, W) -> (B, n_out, H, W)."""
        return self.fuse(self.conv(x) + self.skip(x))


class TinyEncoder(nn.Sequential):
    """Image (B, 3, H, W) in [0, 1] -> scaled latents (B, C, H/8, W/8)."""

    def __init__(self, latent_channels: int = 4) -> None:
        layers: list[nn.Module] = [_conv(3, WIDTH), Block(WIDTH, WIDTH)]
        for _ in range(3):
            layers += [_conv(WIDTH, WIDTH, stride=2, bias=False), *(Block(WIDTH, WIDTH) for _ in range(3))]
        layers.append(_conv(WIDTH, latent_channels))
        super().__init__(*layers)
        self.latent_channels = latent_channels


class TinyDecoder(nn.Sequential):
    """Scaled latents (B, C, h, w) -> image (B, 3, 8h, 8w), roughly in [0, 1] (not clamped)."""

    def __init__(self, latent_channels: int = 4) -> None:
        layers: list[nn.Module] = [Clamp(), _conv(latent_channels, WIDTH), nn.ReLU()]
        for _ in range(3):
            layers += [*(Block(WIDTH, WIDTH) for _ in range(3))]
            layers += [nn.Upsample(scale_factor=2), _conv(WIDTH, WIDTH, bias=False)]
        layers += [Block(WIDTH, WIDTH), _conv(WIDTH, 3)]
        super().__init__(*layers)
        self.latent_channels = latent_channels


class TAESD(nn.Module):
    """A TAESD encoder and/or decoder; either may be absent (previews need only the decoder)."""

    def __init__(self, encoder: TinyEncoder | None = None, decoder: TinyDecoder | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents (B, C, h, w) -> pixels (B, 3, 8h, 8w) in [-1, 1] (clamped)."""
        if self.decoder is None:
            raise CheckpointError("TAESD: no decoder weights were loaded")
        weight = next(self.decoder.parameters())
        return self.decoder(latents.to(weight.device, weight.dtype)).clamp(0.0, 1.0).mul(2.0).sub(1.0)

    def encode(self, pixels: Tensor) -> Tensor:
        """Pixels (B, 3, H, W) in [-1, 1] -> scaled latents (B, C, H/8, W/8)."""
        if self.encoder is None:
            raise CheckpointError("TAESD: no encoder weights were loaded")
        weight = next(self.encoder.parameters())
        return self.encoder(pixels.to(weight.device, weight.dtype).add(1.0).div(2.0))


# --- loading -----------------------------------------------------------------------------------

_PREFIXES = {
    "encoder.layers.": ("encoder", 0), "decoder.layers.": ("decoder", 1),  # diffusers AutoencoderTiny
    "taesd_encoder.": ("encoder", 0), "taesd_decoder.": ("decoder", 0),  # ComfyUI
    "encoder.": ("encoder", 0), "decoder.": ("decoder", 0),  # madebyollin's TAESD module
}


def split_roles(sd: Mapping[str, Tensor], name: str) -> dict[str, dict[str, Tensor]]:
    """Sort keys into encoder/decoder state dicts in the published (bare, index-first) layout."""
    roles: dict[str, dict[str, Tensor]] = {}
    for key, value in sd.items():
        if key in ("vae_scale", "vae_shift"):
            continue  # ComfyUI stores its scaling beside the weights; we apply scaling elsewhere
        for prefix, (role, shift) in _PREFIXES.items():
            if key.startswith(prefix):
                index, rest = key[len(prefix):].split(".", 1)
                roles.setdefault(role, {})[f"{int(index) + shift}.{rest}"] = value
                break
        else:
            if not re.match(r"\d+\.", key):
                raise DetectionError(f"{name}: not a TAESD file (unexpected key {key!r})")
            # A bare file is a decoder when layer 0 has no weights (the clamp) and an encoder otherwise.
            role = "encoder" if "0.weight" in sd else "decoder"
            roles.setdefault(role, {})[key] = value
    return roles


def _latent_channels(role: str, sd: Mapping[str, Tensor], name: str) -> int:
    key = "1.weight" if role == "decoder" else f"{max(int(k.split('.')[0]) for k in sd)}.weight"
    if key not in sd or sd[key].dim() != 4:
        raise DetectionError(f"{name}: TAESD {role} without its {key!r} convolution")
    return int(sd[key].shape[1] if role == "decoder" else sd[key].shape[0])


def taesd_from_state_dict(sd: Mapping[str, Tensor], name: str = "taesd") -> TAESD:
    """Build a TAESD from a state dict in any of the supported key layouts."""
    built: dict[str, nn.Module] = {}
    for role, part in split_roles(sd, name).items():
        channels = _latent_channels(role, part, name)
        module = TinyEncoder(channels) if role == "encoder" else TinyDecoder(channels)
        try:
            module.load_state_dict(part, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{name}: TAESD {role} weights do not fit ({str(e).splitlines()[0][:160]})") from None
        built[role] = module.eval().requires_grad_(False)
    if not built:
        raise DetectionError(f"{name}: no TAESD weights found")
    return TAESD(encoder=built.get("encoder"), decoder=built.get("decoder"))  # type: ignore[arg-type]
