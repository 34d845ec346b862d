"""What differs between model families (SD1, SD2, SDXL base and refiner): one declarative table.

In the style of ComfyUI's ``supported_models``: each family is a frozen record, and code asks the
table instead of branching on family names. Detection (``checkpoints/detect.py``) decides which
family a file is from its key layout; everything after that reads the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from huihua.errors import ParameterError

Family = Literal["sd1", "sd2", "sdxl", "sdxl_refiner"]
SizeConditioning = Literal["none", "sdxl", "refiner"]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model."
SDXL_TEXT_PREFIXES = ("conditioner.embedders.0.", "conditioner.embedders.1.")

# CLIP's special tokens: SD1's tokenizer pads with the end token, OpenCLIP towers pad with 0.
BOS_TOKEN = 49406
EOS_TOKEN = 49407
OPENCLIP_PAD_TOKEN = 0

# Align Your Steps (NVIDIA, 2024): the published 10-step sigmas.
AYS_SD1 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)

# Linear latent -> RGB approximations (ComfyUI's latent_formats, A1111's "Approx cheap").
# Rows: latent channels 0..3; columns: R, G, B.
SD1_LATENT_RGB = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
SD1_LATENT_RGB_BIAS = (0.0, 0.0, 0.0)
SDXL_LATENT_RGB = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_LATENT_RGB_BIAS = (0.1084, -0.0175, -0.0011)


@dataclass(frozen=True)
class TextTowerPlan:
    """How a family reads one text tower: key prefix, hidden layer from the end, final norm, pooled output."""

    prefix: str
    layer: int
    final_norm: bool
    pooled: bool


@dataclass(frozen=True)
class FamilyInfo:
    """One model family's constants."""

    name: Family
    scale_factor: float  # the VAE latent scale when the file does not say
    native_resolution: int  # side in pixels it was trained at, when the file does not say
    text_towers: tuple[TextTowerPlan, ...]
    clip_skip_applies: bool  # A1111 applies clip skip to SD1 only (SD2/SDXL fix their layer)
    size_conditioning: SizeConditioning  # what SDXL's ``y`` embeds besides the pooled text
    ays_sigmas: tuple[float, ...]
    taesd_name: str  # file stem of the matching TAESD decoder
    latent_rgb: tuple[tuple[float, float, float], ...]
    latent_rgb_bias: tuple[float, float, float]
    head_channels: int | None  # attention head width when the file does not say (None: 8 heads)

    @property
    def is_sdxl(self) -> bool:
        return self.size_conditioning != "none"


_SD_TEXT = TextTowerPlan(SD1_TEXT_PREFIX, -1, True, False)
_SD2_TEXT = TextTowerPlan(SD1_TEXT_PREFIX, -2, True, True)  # OpenCLIP, read at the penultimate layer
_SDXL_CLIP_L = TextTowerPlan(SDXL_TEXT_PREFIXES[0], -2, False, False)
_SDXL_CLIP_G = TextTowerPlan(SDXL_TEXT_PREFIXES[1], -2, False, True)
_REFINER_CLIP_G = TextTowerPlan(SDXL_TEXT_PREFIXES[0], -2, False, True)

FAMILIES: dict[Family, FamilyInfo] = {
    "sd1": FamilyInfo(
        name="sd1", scale_factor=0.18215, native_resolution=512, text_towers=(_SD_TEXT,), clip_skip_applies=True,
        size_conditioning="none", ays_sigmas=AYS_SD1, taesd_name="taesd_decoder", latent_rgb=SD1_LATENT_RGB,
        latent_rgb_bias=SD1_LATENT_RGB_BIAS, head_channels=None),
    # SD2 shares SD1's VAE, latent space and AYS list.
    "sd2": FamilyInfo(
        name="sd2", scale_factor=0.18215, native_resolution=512, text_towers=(_SD2_TEXT,), clip_skip_applies=False,
        size_conditioning="none", ays_sigmas=AYS_SD1, taesd_name="taesd_decoder", latent_rgb=SD1_LATENT_RGB,
        latent_rgb_bias=SD1_LATENT_RGB_BIAS, head_channels=64),
    "sdxl": FamilyInfo(
        name="sdxl", scale_factor=0.13025, native_resolution=1024, text_towers=(_SDXL_CLIP_L, _SDXL_CLIP_G),
        clip_skip_applies=False, size_conditioning="sdxl", ays_sigmas=AYS_SDXL, taesd_name="taesdxl_decoder",
        latent_rgb=SDXL_LATENT_RGB, latent_rgb_bias=SDXL_LATENT_RGB_BIAS, head_channels=64),
    "sdxl_refiner": FamilyInfo(
        name="sdxl_refiner", scale_factor=0.13025, native_resolution=1024, text_towers=(_REFINER_CLIP_G,),
        clip_skip_applies=False, size_conditioning="refiner", ays_sigmas=AYS_SDXL, taesd_name="taesdxl_decoder",
        latent_rgb=SDXL_LATENT_RGB, latent_rgb_bias=SDXL_LATENT_RGB_BIAS, head_channels=64),
}


def family_info(family: str) -> FamilyInfo:
    """The table row of ``family``; a ParameterError naming the known ones otherwise."""
    try:
        return FAMILIES[family]  # type: ignore[index]
    except KeyError:
        raise ParameterError(f"family: {family!r} is not one of {', '.join(FAMILIES)}") from None
