"""ESRGAN-family upscalers (RRDBNet and Real-ESRGAN's compact SRVGG net), detected from weight shapes.

Attribute paths are the BasicSR / Real-ESRGAN keys (``conv_first``, ``body.N.rdb1.conv1``, ...,
``conv_last``; compact: ``body.N``). Older layouts are renamed into them on load: the original
ESRGAN ``model.0`` / ``model.1.sub.N.RDB1.conv1.0`` keys and the ``RRDB_trunk`` / ``trunk_conv``
keys of BSRGAN-style files. Images go in and come out as (B, C, H, W) in [0, 1].
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from huihua.checkpoints.io import load_pickle_state_dict, open_source, sniff_format
from huihua.errors import CheckpointError, DetectionError

Arch = Literal["ESRGAN", "SRVGG"]
_LRELU = 0.2  # ESRGAN's LeakyReLU slope
_RESIDUAL = 0.2  # ESRGAN's residual scaling inside dense blocks


@dataclass(frozen=True)
class RRDBConfig:
    """Hyper-parameters of an RRDBNet as recovered from its weights."""

    in_nc: int = 3
    out_nc: int = 3
    nf: int = 64
    nb: int = 23
    gc: int = 32
    upsamples: int = 2  # number of (nearest 2x, conv) stages
    unshuffle: int = 1  # Real-ESRGAN x2 / x1 models pixel-unshuffle the input by 2 / 4 first

    @property
    def scale(self) -> int:
        return 2**self.upsamples // self.unshuffle


@dataclass(frozen=True)
class SRVGGConfig:
    """Hyper-parameters of Real-ESRGAN's SRVGGNetCompact."""

    in_nc: int = 3
    out_nc: int = 3
    nf: int = 64
    num_conv: int = 16
    scale: int = 4


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions; the output is scaled by 0.2 and added to the input."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        for i in range(5):
            out = nf if i == 4 else gc
            setattr(self, f"conv{i + 1}", nn.Conv2d(nf + i * gc, out, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        """(B, nf, H, W) -> (B, nf, H, W)."""
        feats = [x]
        for i in range(1, 5):
            conv = getattr(self, f"conv{i}")
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), _LRELU))
        conv5 = cast(nn.Conv2d, self.conv5)
        return conv5(torch.cat(feats, 1)) * _RESIDUAL + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, residual scaled by 0.2."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(nf, gc)
        self.rdb2 = ResidualDenseBlock(nf, gc)
        self.rdb3 = ResidualDenseBlock(nf, gc)

    def forward(self, x: Tensor) -> Tensor:
        """(B, nf, H, W) -> (B, nf, H, W)."""
        return self.rdb3(self.rdb2(self.rdb1(x))) * _RESIDUAL + x


class RRDBNet(nn.Module):
    """ESRGAN / Real-ESRGAN generator: RRDB trunk, then nearest-neighbour 2x + conv stages."""

    def __init__(self, cfg: RRDBConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv_first = nn.Conv2d(cfg.in_nc * cfg.unshuffle**2, cfg.nf, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(cfg.nf, cfg.gc) for _ in range(cfg.nb)))
        self.conv_body = nn.Conv2d(cfg.nf, cfg.nf, 3, padding=1)
        for i in range(cfg.upsamples):
            setattr(self, f"conv_up{i + 1}", nn.Conv2d(cfg.nf, cfg.nf, 3, padding=1))
        self.conv_hr = nn.Conv2d(cfg.nf, cfg.nf, 3, padding=1)
        self.conv_last = nn.Conv2d(cfg.nf, cfg.out_nc, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_nc, H, W) -> (B, out_nc, H*scale, W*scale)."""
        height, width = x.shape[-2:]
        u = self.cfg.unshuffle
        if u > 1:
            pad_h, pad_w = -height % u, -width % u
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else x
            x = F.pixel_unshuffle(x, u)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for i in range(self.cfg.upsamples):
            up = getattr(self, f"conv_up{i + 1}")
            feat = F.leaky_relu(up(F.interpolate(feat, scale_factor=2.0, mode="nearest")), _LRELU)
        out = self.conv_last(F.leaky_relu(self.conv_hr(feat), _LRELU))
        s = self.cfg.scale
        return out[:, :, : height * s, : width * s]


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact net: a plain conv/PReLU stack, pixel shuffle, plus the nearest upsample."""

    def __init__(self, cfg: SRVGGConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_nc, cfg.nf, 3, padding=1), nn.PReLU(cfg.nf)]
        for _ in range(cfg.num_conv):
            layers += [nn.Conv2d(cfg.nf, cfg.nf, 3, padding=1), nn.PReLU(cfg.nf)]
        layers.append(nn.Conv2d(cfg.nf, cfg.out_nc * cfg.scale**2, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_nc, H, W) -> (B, out_nc, H*scale, W*scale)."""
        out = F.pixel_shuffle(self.body(x), self.cfg.scale)
        return out + F.interpolate(x, scale_factor=float(self.cfg.scale), mode="nearest")


@dataclass(frozen=True)
class Upscaler:
    """A loaded upscaling network with its native scale; ``net`` maps [0, 1] images to [0, 1] images."""

    name: str
    arch: Arch
    scale: int
    in_channels: int
    net: nn.Module


# --- key layouts -------------------------------------------------------------------------------

_OLD_RDB = re.compile(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_CONV = re.compile(r"model\.(\d+)\.(weight|bias)$")
_TRUNK_RENAMES = (
    ("RRDB_trunk.", "body."), ("trunk_conv.", "conv_body."), ("upconv", "conv_up"), ("HRconv.", "conv_hr."),
)


def _from_old_esrgan(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Original ESRGAN ``model.N`` keys -> BasicSR names (the conv after the trunk is ``model.1.sub.<nb>``)."""
    out: dict[str, Tensor] = {}
    blocks = {int(m.group(1)) for k in sd if (m := _OLD_RDB.match(k))}
    nb = max(blocks) + 1 if blocks else 0
    tail = sorted({int(m.group(1)) for k in sd if (m := _OLD_CONV.match(k)) and int(m.group(1)) >= 2})
    if len(tail) < 2:
        raise DetectionError("old-style ESRGAN: the HR and last convolutions (model.N with N >= 2) are missing")
    names = {0: "conv_first"}
    names.update({n: f"conv_up{i + 1}" for i, n in enumerate(tail[:-2])})
    names.update({tail[-2]: "conv_hr", tail[-1]: "conv_last"})
    for key, value in sd.items():
        if m := _OLD_RDB.match(key):
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = value
        elif key.startswith(f"model.1.sub.{nb}."):
            out["conv_body." + key.rsplit(".", 1)[1]] = value
        elif (m := _OLD_CONV.match(key)) and int(m.group(1)) in names:
            out[f"{names[int(m.group(1))]}.{m.group(2)}"] = value
        else:
            raise DetectionError(f"old-style ESRGAN: unexpected key {key!r}")
    return out


def _from_trunk_layout(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """``RRDB_trunk.N.RDB1`` / ``trunk_conv`` / ``upconvN`` / ``HRconv`` -> BasicSR names."""
    out = {}
    for key, value in sd.items():
        for old, new in _TRUNK_RENAMES:
            key = key.replace(old, new)
        out[re.sub(r"\.RDB(\d)\.", r".rdb\1.", key)] = value
    return out


def _rrdb_config(sd: dict[str, Tensor]) -> RRDBConfig:
    """Read an RRDBNet's hyper-parameters from BasicSR-named weights."""
    if "conv_last.weight" not in sd:
        raise DetectionError("ESRGAN/RRDBNet: the last convolution (conv_last) is missing")
    first, last = sd["conv_first.weight"], sd["conv_last.weight"]
    out_nc, in_raw = last.shape[0], first.shape[1]
    unshuffle = 4 if in_raw == out_nc * 16 else 2 if in_raw == out_nc * 4 else 1
    nb = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    upsamples = len([k for k in sd if re.fullmatch(r"conv_up\d+\.weight", k)])
    return RRDBConfig(
        in_nc=in_raw // unshuffle**2, out_nc=out_nc, nf=first.shape[0], nb=nb,
        gc=sd["body.0.rdb1.conv1.weight"].shape[0] if nb else 32, upsamples=upsamples, unshuffle=unshuffle,
    )


def _srvgg_config(sd: dict[str, Tensor]) -> SRVGGConfig:
    """Read an SRVGGNetCompact's hyper-parameters from its ``body.N`` weights."""
    convs = sorted(int(k.split(".")[1]) for k, v in sd.items() if k.endswith(".weight") and v.dim() == 4)
    prelus = [k for k, v in sd.items() if k.endswith(".weight") and v.dim() == 1]
    if len(prelus) != len(convs) - 1:
        raise DetectionError("compact SRVGG net: PReLU weights missing (ReLU variants cannot be told apart)")
    in_nc, nf = sd["body.0.weight"].shape[1], sd["body.0.weight"].shape[0]
    last_out = sd[f"body.{convs[-1]}.weight"].shape[0]
    scale = math.isqrt(last_out // in_nc)
    if scale * scale * in_nc != last_out:
        raise DetectionError(f"compact SRVGG net: last conv has {last_out} outputs, not {in_nc} x scale^2")
    return SRVGGConfig(in_nc=in_nc, out_nc=in_nc, nf=nf, num_conv=len(convs) - 2, scale=scale)


def _strip_wrappers(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop a DataParallel ``module.`` prefix shared by every key."""
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def build_upscaler(sd: dict[str, Tensor], name: str = "upscaler") -> Upscaler:
    """Recognise an upscaler from its state dict's keys and shapes and build it with these weights."""
    sd = _strip_wrappers(sd)
    net: nn.Module
    arch: Arch
    if "model.0.weight" in sd and any(_OLD_RDB.match(k) for k in sd):
        sd = _from_old_esrgan(sd)
    elif "RRDB_trunk.0.RDB1.conv1.weight" in sd:
        sd = _from_trunk_layout(sd)
    if "conv_first.weight" in sd and "body.0.rdb1.conv1.weight" in sd:
        cfg_r = _rrdb_config(sd)
        net, arch, scale, in_nc = RRDBNet(cfg_r), "ESRGAN", cfg_r.scale, cfg_r.in_nc
    elif "body.0.weight" in sd and "body.1.weight" in sd:
        cfg_s = _srvgg_config(sd)
        net, arch, scale, in_nc = SRVGGNetCompact(cfg_s), "SRVGG", cfg_s.scale, cfg_s.in_nc
    else:
        raise DetectionError(f"{name}: not an ESRGAN/RRDBNet or compact SRVGG upscaler (unknown key layout)")
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first_line = str(e).splitlines()[0][:160]
        raise CheckpointError(f"{name}: weights do not fit the detected {arch} net ({first_line})") from None
    return Upscaler(name=name, arch=arch, scale=scale, in_channels=in_nc, net=net.eval().requires_grad_(False))


def load_upscaler(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Upscaler:
    """Load an ESRGAN/Real-ESRGAN (RRDBNet) or compact SRVGG upscaler from ``.pth`` or ``.safetensors``."""
    p = Path(path)
    if sniff_format(p) == "safetensors":
        source = open_source(p)
        try:
            sd = {k: source.get(k) for k in source.info()}
        finally:
            source.close()
    else:
        sd = load_pickle_state_dict(p)
    up = build_upscaler({k: v.to(torch.float32) for k, v in sd.items()}, name=p.name)
    up.net.to(device=device, dtype=dtype)
    return up
