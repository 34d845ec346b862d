"""A checkpoint's spec: the network configs of one model file and how the pipelines read it.

A spec is what detection (``detect.py``) recovers from a state dict's key names and shapes; the
network configs themselves live beside the networks (``huihua.nn.configs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from huihua.families import Family
from huihua.nn.configs import CLIPTextConfig, UNetConfig, VAEConfig

Prediction = Literal["eps", "v"]


@dataclass(frozen=True)
class TextEncoderUse:
    """How a pipeline reads one text tower: which hidden layer, and whether the final norm follows.

    ``layer`` counts from the end: -1 is the last layer, -2 the penultimate one.
    """

    config: CLIPTextConfig
    prefix: str  # checkpoint key prefix of the module, e.g. "cond_stage_model."
    layer: int = -1
    final_norm: bool = True
    pooled: bool = False  # whether this tower provides the pooled (projected EOS) vector


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build, load and drive one Stable Diffusion checkpoint."""

    family: Family
    unet: UNetConfig
    vae: VAEConfig
    text_encoders: tuple[TextEncoderUse, ...]
    prediction: Prediction = "eps"
    inpainting: bool = False
    # Where ``prediction`` came from: "option", "yaml", "metadata", "scheduler_config", "default".
    prediction_source: str = "default"
    # The side in pixels the model was trained at (512 SD1/SD2, 1024 SDXL; metadata for others).
    native_resolution: int = 512
    # Trained on SD's schedule rescaled to zero terminal SNR (Lin et al. 2023): from ``huihua.arch``
    # metadata ``zero_terminal_snr`` or a diffusers scheduler's ``rescale_betas_zero_snr``.
    zero_terminal_snr: bool = False
    extra: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def latent_channels(self) -> int:
        return self.vae.z_channels

    @property
    def scale_factor(self) -> float:
        return self.vae.scale_factor

    @property
    def context_dim(self) -> int:
        return self.unet.context_dim
