"""ControlNet files and units: loading (detected by shapes), control maps, and the controlled UNet call.

Loading takes an LDM-layout file (``input_hint_block``/``zero_convs``/``middle_block_out``, with or
without the ``control_model.`` prefix, "diff" ControlNets included), a diffusers-keyed file
(``controlnet_cond_embedding``/``controlnet_down_blocks``/``controlnet_mid_block``) or a diffusers
folder with ``config.json``. The architecture comes from shapes; head counts shapes cannot tell
come from the model the ControlNet is used with (or from config.json).

A unit's semantics follow the AUTOMATIC1111 ControlNet extension (``sd-webui-controlnet``):

* guidance start/end: at sampling step ``i`` of ``N`` (0-based, counted within the pass that runs:
  img2img's shortened schedule, the hires-fix second pass) the unit runs when
  ``guidance_start <= i / N <= guidance_end``. (A1111 reads a step counter its sampler callback
  updates after each step, so there a unit switches one evaluation later; we use the step itself.)
* control modes: "Balanced" scales every residual by ``weight``; "My prompt is more important"
  uses soft injection: residual ``i`` (input blocks, then the middle block) is scaled by
  ``weight * 0.825 ** (12 - i)`` on both halves of the CFG batch; "ControlNet is more important"
  uses the same soft scales and applies the residuals to the conditional rows only (unconditional
  rows get none). In the hires-fix pass, units whose preprocessor is a canny or mlsd one are given
  the soft scales whatever their mode, as A1111 does.
* resize modes ("Just Resize", "Crop and Resize", "Resize and Fill") and pixel-perfect sizing
  (the preprocessor resolution that maps the image onto the generation size) as A1111 computes them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from huihua.adapters.preprocessors import (
    ImageLike,
    PreprocessorParams,
    inpaint_control,
    preprocess,
    to_rgb_array,
)
from huihua.checkpoints.detect import detect_unet
from huihua.checkpoints.diffusers.controlnet import (
    controlnet_config_from_diffusers,
    controlnet_config_from_diffusers_keys,
    diffusers_controlnet_to_ldm,
)
from huihua.checkpoints.diffusers.folder import read_json, read_weights
from huihua.checkpoints.io import DictSource, TensorInfo, TensorSource, open_source
from huihua.checkpoints.loader import materialize
from huihua.diffusion.parametrization import ModelSampling
from huihua.errors import CheckpointError, ParameterError
from huihua.model import Model
from huihua.nn.configs import UNetConfig
from huihua.nn.controlnet import ControlNet, ControlNetConfig, hint_layer_indices

ControlMode = Literal["Balanced", "My prompt is more important", "ControlNet is more important"]
ResizeMode = Literal["Just Resize", "Crop and Resize", "Resize and Fill"]
CONTROL_MODES: tuple[ControlMode, ...] = ("Balanced", "My prompt is more important", "ControlNet is more important")
RESIZE_MODES: tuple[ResizeMode, ...] = ("Just Resize", "Crop and Resize", "Resize and Fill")
SOFT_INJECTION_BASE = 0.825  # sd-webui-controlnet's per-block decay of "soft injection"
LDM_PREFIX = "control_model."
MAX_WEIGHT = 10.0

# ---------------------------------------------------------------------------------------------
# loading


def _describe(cfg: UNetConfig) -> str:
    """E.g. "SDXL (context width 2048)": the family as far as the context width and label tell it."""
    family = "SDXL " if cfg.adm_in_channels is not None else {768: "SD1 ", 1024: "SD2 "}.get(cfg.context_dim, "")
    return f"{family}(context width {cfg.context_dim})"


def _ldm_unet_shapes(info: dict[str, TensorInfo], prefix: str) -> dict[str, TensorInfo]:
    """The UNet-encoder keys under ``prefix``, prefix removed (``detect_unet`` reads them)."""
    return {k[len(prefix):]: v for k, v in info.items() if k.startswith(prefix)}


def _hint_config(shapes: dict[str, TensorInfo], name: str) -> tuple[int, tuple[int, ...]]:
    """(hint channels, hint widths) from ``input_hint_block.{k}.weight`` shapes."""
    convs = sorted(int(m.group(1)) for k in shapes if (m := re.fullmatch(r"input_hint_block\.(\d+)\.weight", k)))
    n_widths = len(convs) // 2
    if n_widths < 1 or convs != hint_layer_indices(n_widths):
        raise CheckpointError(f"{name}: ControlNet input_hint_block has an unrecognised layout")
    first = shapes[f"input_hint_block.{convs[0]}.weight"].shape
    widths = [first[0]] + [shapes[f"input_hint_block.{k}.weight"].shape[0] for k in convs[2:-1:2]]
    return first[1], tuple(widths)


def detect_controlnet(info: dict[str, TensorInfo], prefix: str, base: UNetConfig, name: str) -> ControlNetConfig:
    """Rebuild an LDM-keyed ControlNet's config from shapes; heads are taken from ``base``."""

    shapes = _ldm_unet_shapes(info, prefix)
    unet = detect_unet(shapes, "", name)
    unet = replace(unet, out_channels=base.out_channels, num_heads=base.num_heads,
                   num_head_channels=base.num_head_channels)
    hint_channels, widths = _hint_config(shapes, name)
    return ControlNetConfig(unet=unet, hint_channels=hint_channels, hint_widths=widths)


def check_fits(cfg: ControlNetConfig, base: UNetConfig, name: str) -> None:
    """Raise CheckpointError when the ControlNet's residuals cannot feed the model's UNet."""
    cn = cfg.unet
    if cn.context_dim != base.context_dim or cn.adm_in_channels != base.adm_in_channels:
        raise CheckpointError(f"{name}: ControlNet for {_describe(cn)} does not fit this model {_describe(base)}")
    same_blocks = (cn.model_channels, cn.channel_mult, cn.num_res_blocks) == (
        base.model_channels, base.channel_mult, base.num_res_blocks)
    if not same_blocks or cn.in_channels > base.in_channels:
        raise CheckpointError(f"{name}: the ControlNet's blocks do not match this model's UNet")


def _open_controlnet(path: Path, base: UNetConfig) -> tuple[TensorSource, str, ControlNetConfig]:
    """(source, key prefix, config) for a ControlNet file or diffusers folder."""

    name = str(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path}: a folder, but not a diffusers ControlNet (no config.json)")
        cfg = controlnet_config_from_diffusers(read_json(path / "config.json"))
        return DictSource(name, diffusers_controlnet_to_ldm(read_weights(path), cfg)), "", cfg
    source = open_source(path)
    info = dict(source.info())
    for prefix in (LDM_PREFIX, ""):
        if f"{prefix}input_hint_block.0.weight" in info:
            return source, prefix, detect_controlnet(info, prefix, base, name)
    if "controlnet_cond_embedding.conv_in.weight" in info:
        cfg = controlnet_config_from_diffusers_keys(info, base, name)
        tensors = {k: source.get(k) for k in info}
        source.close()
        return DictSource(name, diffusers_controlnet_to_ldm(tensors, cfg)), "", cfg
    source.close()
    if any(k.startswith("model.diffusion_model.") for k in info):
        raise CheckpointError(f"{path}: this is a full model checkpoint, not a ControlNet")
    raise CheckpointError(f"{path}: not a ControlNet (no input_hint_block or controlnet_cond_embedding weights)")


def load_controlnet_file(
    path: str | Path,
    base: UNetConfig,
    *,
    dtype: torch.dtype,
    device: torch.device,
    base_unet: nn.Module | None = None,
) -> ControlNet:
    """Load a ControlNet for a model whose UNet is ``base``; "diff" ControlNets add ``base_unet``'s weights."""

    p = Path(path)
    source, prefix, cfg = _open_controlnet(p, base)
    try:
        check_fits(cfg, base, str(p))
        diff = "difference" in source.info()
        if diff and base_unet is None:
            raise CheckpointError(f"{p}: a 'diff' ControlNet needs the model's UNet to add its weights to")
        module, _ = materialize(lambda: ControlNet(cfg), source, prefix, dtype, device)
    finally:
        source.close()
    if diff:
        assert base_unet is not None
        base_params = dict(base_unet.named_parameters())
        with torch.no_grad():
            for pname, param in module.named_parameters():
                if pname in base_params and base_params[pname].shape == param.shape:
                    param.add_(base_params[pname].to(param.dtype))
    module.source_name = str(p)
    return module


def load_controlnet(engine: Model, path: str | Path) -> ControlNet:
    """``engine.load_controlnet(path)``: a ControlNet in the engine's dtype and device, checked against its UNet."""
    return load_controlnet_file(path, engine.spec.unet, dtype=engine.dtype, device=engine.device, base_unet=engine.unet)


# ---------------------------------------------------------------------------------------------
# units


def _choice(field: str, value: object, options: tuple[str, ...]) -> str:
    """An option by exact name, case-insensitive name, or A1111's API index."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(options):
        return options[value]
    if isinstance(value, str):
        for option in options:
            if value.strip().lower() == option.lower():
                return option
    raise ParameterError(f"{field}: {value!r} is not one of {', '.join(options)}")


@dataclass(frozen=True, eq=False)
class ControlNetUnit:
    """One ControlNet with its control image and A1111 unit settings."""

    model: ControlNet
    image: ImageLike
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: ControlMode = "Balanced"
    resize_mode: ResizeMode = "Crop and Resize"
    pixel_perfect: bool = False
    preprocessor: str = "none"
    preprocessor_params: PreprocessorParams = PreprocessorParams()
    mask: ImageLike | None = None  # for the inpaint preprocessors

    def __post_init__(self) -> None:
        object.__setattr__(self, "control_mode", _choice("control_mode", self.control_mode, CONTROL_MODES))
        object.__setattr__(self, "resize_mode", _choice("resize_mode", self.resize_mode, RESIZE_MODES))
        for field in ("weight", "guidance_start", "guidance_end"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ParameterError(f"{field}: must be a finite number, got {value!r}")
        if not 0.0 <= self.weight <= MAX_WEIGHT:
            raise ParameterError(f"weight: must be between 0 and {MAX_WEIGHT}, got {self.weight}")
        if not 0.0 <= self.guidance_start <= self.guidance_end <= 1.0:
            raise ParameterError(
                f"guidance_start/guidance_end: want 0 <= start <= end <= 1, "
                f"got {self.guidance_start}, {self.guidance_end}"
            )
        if not isinstance(self.model, ControlNet):
            raise ParameterError("model: expected a loaded ControlNet (engine.load_controlnet(path))")

    @property
    def soft_injection(self) -> bool:
        """Whether the residuals decay towards the input blocks (any mode but Balanced)."""
        return self.control_mode != "Balanced"

    @property
    def cond_only(self) -> bool:
        """Whether only the conditional half of the CFG batch is controlled ("ControlNet is more important")."""
        return self.control_mode == "ControlNet is more important"

    def active_at(self, step: int, total: int) -> bool:
        """Whether the unit runs at sampling step ``step`` (0-based) of ``total``."""
        fraction = step / max(total, 1)
        return self.guidance_start <= fraction <= self.guidance_end

    def infotext(self) -> str:
        """The unit as A1111 writes it after ``ControlNet N:`` in the infotext (quotes included)."""
        model = Path(self.model.source_name).stem if self.model.source_name else "None"
        fields = [
            ("Module", self.preprocessor), ("Model", model), ("Weight", f"{self.weight:g}"),
            ("Resize Mode", self.resize_mode), ("Guidance Start", f"{self.guidance_start:g}"),
            ("Guidance End", f"{self.guidance_end:g}"), ("Pixel Perfect", str(self.pixel_perfect)),
            ("Control Mode", self.control_mode),
        ]
        return '"' + ", ".join(f"{k}: {v}" for k, v in fields) + '"'


@dataclass(frozen=True)
class ControlNetArg:
    """A ``--controlnet PATH:IMAGE[:weight]`` command-line unit."""

    model_path: str
    image_path: str
    weight: float = 1.0


_ARG = re.compile(r"^(?P<model>(?:[A-Za-z]:[\\/])?[^:]+):(?P<image>(?:[A-Za-z]:[\\/])?[^:]+)(?::(?P<weight>[^:]+))?$")


def parse_controlnet_arg(text: str) -> ControlNetArg:
    """Parse ``PATH:IMAGE[:weight]`` (Windows drive letters allowed in both paths)."""
    m = _ARG.match(text.strip())
    if m is None:
        raise ParameterError(f"--controlnet: expected PATH:IMAGE[:weight], got {text!r}")
    weight = 1.0
    if m.group("weight") is not None:
        try:
            weight = float(m.group("weight"))
        except ValueError:
            raise ParameterError(f"--controlnet: weight {m.group('weight')!r} is not a number") from None
    return ControlNetArg(m.group("model"), m.group("image"), weight)


# ---------------------------------------------------------------------------------------------
# control maps


def pixel_perfect_resolution(image_hw: tuple[int, int], width: int, height: int, resize_mode: ResizeMode) -> int:
    """The preprocessor resolution that maps an image of ``image_hw`` onto ``width × height`` one to one."""
    raw_h, raw_w = image_hw
    k_h, k_w = height / raw_h, width / raw_w
    k = min(k_h, k_w) if resize_mode == "Resize and Fill" else max(k_h, k_w)
    return int(np.round(k * min(raw_h, raw_w)))


def _resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area filter to shrink, bicubic to enlarge (per axis pair, as A1111's high-quality resize)."""
    h, w = arr.shape[:2]
    if (w, h) == (width, height):
        return arr
    shrink = width * height < w * h
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(arr).resize((width, height), resample=resample))


def resize_control_map(arr: np.ndarray, width: int, height: int, resize_mode: ResizeMode) -> np.ndarray:
    """Fit a uint8 (H, W, C) control map to ``width × height`` by A1111's resize mode."""
    if resize_mode == "Just Resize":
        return _resize(arr, width, height)
    h, w = arr.shape[:2]
    k_h, k_w = height / h, width / w
    if resize_mode == "Resize and Fill":
        k = min(k_h, k_w)
        inner = _resize(arr, max(1, round(w * k)), max(1, round(h * k)))
        borders = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]], axis=0)
        fill = np.median(borders, axis=0).astype(arr.dtype)
        if arr.shape[2] == 4:
            fill[3] = 0  # outside the picture is not to be inpainted
        out = np.tile(fill[None, None], (height, width, 1))
        ih, iw = inner.shape[:2]
        top, left = max(0, (height - ih) // 2), max(0, (width - iw) // 2)
        out[top:top + ih, left:left + iw] = inner[: height - top, : width - left]
        return out
    k = max(k_h, k_w)  # Crop and Resize: cover, then cut the centre
    outer = _resize(arr, max(width, round(w * k)), max(height, round(h * k)))
    oh, ow = outer.shape[:2]
    top, left = (oh - height) // 2, (ow - width) // 2
    return np.ascontiguousarray(outer[top:top + height, left:left + width])


def control_map(unit: ControlNetUnit, width: int, height: int) -> np.ndarray:
    """Run the unit's preprocessor for a ``width × height`` generation: uint8 (H, W, 3), or RGBA for inpaint."""
    params = unit.preprocessor_params
    if unit.pixel_perfect:
        image_hw = to_rgb_array(unit.image).shape[:2]
        params = replace(params, resolution=pixel_perfect_resolution(image_hw, width, height, unit.resize_mode))
    out = preprocess(unit.preprocessor, unit.image, params, mask=unit.mask)
    return np.asarray(out)


def hint_tensor(arr: np.ndarray) -> Tensor:
    """uint8 (H, W, 3) -> (1, 3, H, W) in [0, 1]; an RGBA inpaint map gives -1 where its alpha is set."""
    if arr.shape[2] == 4:
        values = inpaint_control(Image.fromarray(arr, mode="RGBA"))
    else:
        values = arr[:, :, :3].astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(values)).permute(2, 0, 1)[None]


@dataclass(frozen=True, eq=False)
class PreparedUnit:
    """A unit with its control map computed once (reused at every size, e.g. by the hires-fix pass)."""

    unit: ControlNetUnit
    control_map: np.ndarray

    def hint(self, width: int, height: int) -> Tensor:
        """The hint (1, C, height, width) for one pass, fitted by the unit's resize mode."""
        return hint_tensor(resize_control_map(self.control_map, width, height, self.unit.resize_mode))


def prepare_units(units: Sequence[ControlNetUnit | PreparedUnit], width: int, height: int) -> tuple[PreparedUnit, ...]:
    """Preprocess each unit's image for a ``width × height`` generation (prepared units pass through)."""
    return tuple(u if isinstance(u, PreparedUnit) else PreparedUnit(u, control_map(u, width, height)) for u in units)


# ---------------------------------------------------------------------------------------------
# the controlled UNet


def control_scales(count: int, weight: float, soft: bool) -> list[float]:
    """Per-residual scales: ``weight`` each, or A1111's soft injection ``weight * 0.825 ** (12 - i)``."""
    if not soft:
        return [weight] * count
    return [weight * SOFT_INJECTION_BASE ** float(12 - i) for i in range(count)]


def _forced_soft(unit: ControlNetUnit, hires: bool) -> bool:
    """A1111 softens canny and mlsd units in the hires-fix pass to avoid artefacts."""
    return hires and ("canny" in unit.preprocessor or "mlsd" in unit.preprocessor)


class ControlledUNet:
    """The model's UNet with ControlNet units applied; call it as the UNet (plus ``cond_mask``).

    One instance serves one sampling pass: ``sigmas`` are that pass's sigmas (ending in 0), from
    which each call's step is found. Hints are fitted to each latent size once and kept.
    """

    def __init__(
        self,
        unet: nn.Module,
        units: Sequence[PreparedUnit],
        sigmas: Tensor,
        model_sampling: ModelSampling,
        *,
        hires: bool = False,
    ) -> None:
        self.unet = unet
        self.units = tuple(units)
        self.hires = hires
        self.total_steps = max(1, sigmas.numel() - 1)
        positive = sigmas[:-1].to(torch.float32).cpu()
        self._step_t = model_sampling.sigma_to_t(positive.clamp_min(1e-8))
        self._hints: dict[tuple[int, int, int, torch.device, torch.dtype], Tensor] = {}

    def step_of(self, timesteps: Tensor) -> int:
        """The sampling step an evaluation at ``timesteps`` belongs to (the step whose start it is at or after)."""
        t = float(timesteps.reshape(-1)[0])
        started = int((self._step_t >= t - 1e-3).sum()) - 1
        return min(max(started, 0), self.total_steps - 1)

    def _hint(self, index: int, x: Tensor) -> Tensor:
        unit = self.units[index]
        f = unit.unit.model.control_cfg.hint_downscale
        h, w = x.shape[-2] * f, x.shape[-1] * f
        key = (index, h, w, x.device, next(unit.unit.model.parameters()).dtype)
        if key not in self._hints:
            self._hints[key] = unit.hint(w, h).to(device=x.device, dtype=key[-1])
        return self._hints[key]

    def residuals(
        self, x: Tensor, timesteps: Tensor, context: Tensor, y: Tensor | None, cond_mask: Tensor | None
    ) -> list[Tensor] | None:
        """The summed, scaled residuals of the units active at this step, or None when none is."""
        step = self.step_of(timesteps)
        total: list[Tensor] | None = None
        for index, prepared in enumerate(self.units):
            unit = prepared.unit
            if unit.weight == 0 or not unit.active_at(step, self.total_steps):
                continue
            net = unit.model
            x_in = x[:, : net.in_channels] if x.shape[1] > net.in_channels else x
            outs = net(x_in, self._hint(index, x), timesteps, context, y)
            scales = control_scales(len(outs), unit.weight, unit.soft_injection or _forced_soft(unit, self.hires))
            mask = _row_mask(cond_mask, x) if unit.cond_only else None
            outs = [o * s if mask is None else o * (mask.to(o.dtype) * s) for o, s in zip(outs, scales, strict=True)]
            total = outs if total is None else [a + b for a, b in zip(total, outs, strict=True)]
        return total

    def __call__(
        self,
        x: Tensor,
        timesteps: Tensor,
        context: Tensor,
        y: Tensor | None = None,
        control: Sequence[Tensor] | None = None,
        *,
        cond_mask: Tensor | Sequence[bool] | None = None,
    ) -> Tensor:
        """``unet(x, timesteps, context, y)`` plus the units' residuals; ``cond_mask`` (B,) marks the
        conditional rows of a CFG batch (None: every row is conditional)."""
        mask = None if cond_mask is None else torch.as_tensor(cond_mask, dtype=torch.bool)
        total = self.residuals(x, timesteps, context, y, mask)
        if control is not None:
            total = list(control) if total is None else [a + b for a, b in zip(total, control, strict=True)]
        return self.unet(x, timesteps, context, y=y, control=total)


def _row_mask(cond_mask: Tensor | None, x: Tensor) -> Tensor:
    """(B, 1, 1, 1) ones on conditional rows, zeros on unconditional ones."""
    if cond_mask is None:
        return torch.ones(x.shape[0], 1, 1, 1, device=x.device)
    if cond_mask.shape != (x.shape[0],):
        raise ParameterError(f"cond_mask: want {x.shape[0]} entries (one per row), got {tuple(cond_mask.shape)}")
    return cond_mask.to(device=x.device, dtype=torch.float32).reshape(-1, 1, 1, 1)


def controlled_unet(
    engine: Model,
    units: Sequence[ControlNetUnit | PreparedUnit],
    sigmas: Tensor,
    width: int,
    height: int,
    *,
    hires: bool = False,
) -> ControlledUNet:
    """A drop-in for ``engine.unet`` in one sampling pass of a ``width × height`` generation."""
    return ControlledUNet(engine.unet, prepare_units(units, width, height), sigmas, engine.model_sampling, hires=hires)
