"""Tiny complete Stable Diffusion checkpoints for tests: reference networks (diffusers/transformers)
with seeded random weights, written as real files (LDM single-file safetensors, diffusers folders).

``tiny_engine(tmp_path, family)`` is the quickest way for any test to get a working Engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from huihua.checkpoints.detect import ARCH_METADATA_KEY
from huihua.checkpoints.diffusers.clip import hf_clip_to_ldm
from huihua.families import UNET_PREFIX, VAE_PREFIX
from huihua.nn.configs import UNetConfig
from tests.tiny_models import (
    perturb_,
    tiny_diffusers_unet,
    tiny_diffusers_vae,
    tiny_unet_config,
    tiny_vae_config,
)

Family = Literal["sd1", "sd2", "sdxl", "inpaint"]
TINY_RESOLUTION = 32

# (prefix, layout, transformers config kwargs) per family; widths add up to the UNet's context (24).
_TEXT = {
    "sd1": [("cond_stage_model.", "hf", dict(hidden_size=24, num_attention_heads=4, intermediate_size=48,
                                                num_hidden_layers=2, hidden_act="quick_gelu"))],
    "sd2": [("cond_stage_model.", "openclip", dict(hidden_size=24, num_attention_heads=4, intermediate_size=48,
                                                      num_hidden_layers=3, hidden_act="gelu"))],
    "sdxl": [("conditioner.embedders.0.", "hf", dict(hidden_size=8, num_attention_heads=2, intermediate_size=16,
                                                        num_hidden_layers=2, hidden_act="quick_gelu")),
             ("conditioner.embedders.1.", "openclip", dict(hidden_size=16, num_attention_heads=2,
                                                              intermediate_size=32, num_hidden_layers=3,
                                                              hidden_act="gelu", projection_dim=16))],
}
_TEXT["inpaint"] = _TEXT["sd1"]


@dataclass
class TinyReference:
    """Reference networks of one tiny checkpoint and how their weights map to LDM keys."""

    family: Family
    unet_cfg: UNetConfig
    unet: Any
    vae: Any
    texts: list[tuple[str, str, Any]] = field(default_factory=list)  # (prefix, layout, transformers model)

    def arch(self) -> dict:
        """The ``huihua.arch`` metadata the single file needs (head counts shapes cannot tell)."""
        heads = {"num_heads": self.unet_cfg.num_heads} if self.unet_cfg.num_heads else {
            "num_head_channels": self.unet_cfg.num_head_channels}
        return {**heads, "text_heads": [m.config.num_attention_heads for _, _, m in self.texts],
                "vae_norm_groups": 32, "resolution": TINY_RESOLUTION}

    def ldm_state_dict(self) -> dict[str, torch.Tensor]:
        """All weights under their LDM single-file names."""
        from huihua.checkpoints.diffusers.unet import diffusers_unet_to_ldm
        from huihua.checkpoints.diffusers.vae import diffusers_vae_to_ldm

        sd = {UNET_PREFIX + k: v for k, v in diffusers_unet_to_ldm(self.unet.state_dict(), self.unet_cfg).items()}
        sd |= {VAE_PREFIX + k: v for k, v in diffusers_vae_to_ldm(self.vae.state_dict(), tiny_vae_config()).items()}
        for prefix, layout, model in self.texts:
            sd |= {prefix + k: v for k, v in hf_clip_to_ldm(model.state_dict(), layout).items()}
        return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def tiny_reference(family: Family = "sd1", seed: int = 0) -> TinyReference:
    """Seeded tiny reference networks shaped like ``family``."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = tiny_unet_config(family)
    ref = TinyReference(family, cfg, tiny_diffusers_unet(cfg, seed), tiny_diffusers_vae(tiny_vae_config(), seed))
    for i, (prefix, layout, kw) in enumerate(_TEXT[family]):
        torch.manual_seed(seed + 10 + i)
        tcfg = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406,
                              eos_token_id=49407, pad_token_id=49407, **kw)
        cls = CLIPTextModelWithProjection if "projection_dim" in kw else CLIPTextModel
        ref.texts.append((prefix, layout, perturb_(cls(tcfg), seed + i).eval()))
    return ref


def write_single_file(ref: TinyReference, path: Path, dtype: torch.dtype = torch.float32,
                      extra: dict[str, torch.Tensor] | None = None, metadata: dict[str, str] | None = None) -> Path:
    """Write ``ref`` as an LDM-layout single-file ``.safetensors`` (optionally cast, with extra keys)."""
    sd = {k: v.to(dtype) for k, v in ref.ldm_state_dict().items()}
    sd |= extra or {}
    meta = {ARCH_METADATA_KEY: json.dumps(ref.arch())} | (metadata or {})
    save_file(sd, str(path), metadata=meta)
    return path


def write_diffusers_folder(ref: TinyReference, root: Path, prediction_type: str = "epsilon",
                           scheduler_extra: dict[str, Any] | None = None) -> Path:
    """Write ``ref`` as a diffusers folder (model_index.json, unet/, vae/, text_encoder(_2)/, scheduler/)."""
    root.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0"}
    ref.unet.save_pretrained(root / "unet")
    ref.vae.save_pretrained(root / "vae")
    index["unet"] = ["diffusers", "UNet2DConditionModel"]
    index["vae"] = ["diffusers", "AutoencoderKL"]
    names = ["text_encoder", "text_encoder_2"] if len(ref.texts) == 2 else ["text_encoder"]
    for name, (_, _, model) in zip(names, ref.texts):
        model.save_pretrained(root / name)
        index[name] = ["transformers", type(model).__name__]
    (root / "scheduler").mkdir(exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "EulerDiscreteScheduler", "prediction_type": prediction_type,
         "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"} | (scheduler_extra or {})))
    index["scheduler"] = ["diffusers", "EulerDiscreteScheduler"]
    (root / "model_index.json").write_text(json.dumps(index))
    return root


def tiny_engine(tmp_path: Path, family: Family = "sd1", seed: int = 0, **load_kwargs: Any):
    """A working Engine on a tiny random checkpoint written to ``tmp_path``."""
    import huihua

    path = write_single_file(tiny_reference(family, seed), tmp_path / f"tiny-{family}-{seed}.safetensors")
    return huihua.load(path, device="cpu", dtype="fp32", **load_kwargs)
