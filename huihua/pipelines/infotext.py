"""GenerationParams -> A1111 infotext mapping (the keys and values A1111's ``create_infotext`` writes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import huihua
from huihua.infotext import format_infotext

if TYPE_CHECKING:
    from huihua.engine import Engine
    from huihua.pipelines.params import GenerationParams


def infotext_fields(engine: Engine, p: GenerationParams, seed: int, index: int = 0,
                    extra: dict[str, object] | None = None) -> dict[str, object]:
    """Ordered infotext key -> value for image ``index`` of a generation (None values are omitted)."""
    from huihua.diffusion.names import resolve, sampler_info, schedule_display

    sampler_key, schedule_key = resolve(p.sampler_name, p.scheduler)
    fields: dict[str, object] = {
        "Steps": p.steps,
        "Sampler": sampler_info(sampler_key).display,
        "Schedule type": schedule_display(schedule_key),
        "CFG scale": p.cfg_scale,
        "Seed": seed,
        "Size": f"{p.width}x{p.height}",
        "Model hash": engine.file_hash() or None,
        "Model": engine.name,
    }
    if engine.vae_path is not None:
        fields["VAE hash"] = engine.file_hash(engine.vae_path) or None
        fields["VAE"] = engine.vae_path.name
    if p.subseed_strength > 0:
        fields["Variation seed"] = p.subseed + index if p.subseed != -1 else None
        fields["Variation seed strength"] = p.subseed_strength
    if p.seed_resize_from_w > 0 and p.seed_resize_from_h > 0:
        fields["Seed resize from"] = f"{p.seed_resize_from_w}x{p.seed_resize_from_h}"
    fields["Clip skip"] = p.clip_skip
    if p.cfg_rescale > 0:
        fields["CFG rescale"] = p.cfg_rescale
    if p.eta is not None:
        fields["Eta"] = p.eta
    fields.update(extra or {})
    fields["Version"] = f"huihua {huihua.__version__}"
    return fields


def format_infotext_for(engine: Engine, p: GenerationParams, seed: int, index: int = 0,
                        extra: dict[str, object] | None = None) -> str:
    """The A1111 ``parameters`` text of image ``index``."""
    return format_infotext(infotext_fields(engine, p, seed, index, extra), p.prompt, p.negative_prompt)
