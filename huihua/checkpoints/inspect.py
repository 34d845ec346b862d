"""A checkpoint's identity card, read from key names, shapes and metadata only (no weights loaded)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from huihua.checkpoints.detect import detect_spec
from huihua.checkpoints.diffusers.folder import (
    is_diffusers_folder,
    open_diffusers_folder,
)
from huihua.checkpoints.io import TensorSource, open_source, short_hash
from huihua.checkpoints.loader import resolve_prediction
from huihua.checkpoints.specs import ModelSpec
from huihua.errors import CheckpointError
from huihua.families import UNET_PREFIX, VAE_PREFIX


@dataclass(frozen=True)
class InspectReport:
    """What ``huihua inspect`` prints."""

    path: Path
    spec: ModelSpec
    dtype: str
    parameters: tuple[tuple[str, int], ...]
    short_hash: str | None

    @property
    def variant(self) -> str:
        parts = []
        if self.spec.inpainting:
            parts.append("inpainting")
        if self.spec.prediction == "v":
            parts.append("v-prediction")
        if self.spec.zero_terminal_snr:
            parts.append("zero terminal SNR")
        return ", ".join(parts) or "base"

    def rows(self) -> list[tuple[str, str]]:
        """Label/value rows for display."""
        s = self.spec
        rows = [
            ("file", str(self.path)),
            ("family", s.family),
            ("variant", self.variant),
            ("prediction", f"{s.prediction} (from {s.prediction_source})"),
            ("dtype", self.dtype),
            ("unet", f"{s.unet.model_channels} ch, mult {s.unet.channel_mult}, depth {s.unet.transformer_depth}, "
                     f"context {s.unet.context_dim}, in {s.unet.in_channels}"),
            ("vae", f"{s.vae.ch} ch, mult {s.vae.ch_mult}, z {s.vae.z_channels}, scale {s.vae.scale_factor}"),
        ]
        for i, use in enumerate(s.text_encoders):
            c = use.config
            rows.append((f"text encoder {i}", f"{c.layout}, {c.width} wide, {c.layers} layers, {c.heads} heads"))
        rows += [(f"params {name}", f"{count:,}") for name, count in self.parameters]
        if self.short_hash is not None:
            rows.append(("hash (A1111)", self.short_hash))
        return rows


def _count_params(source: TensorSource, spec: ModelSpec) -> tuple[tuple[str, int], ...]:
    info = source.info()
    prefixes = [("unet", UNET_PREFIX), ("vae", VAE_PREFIX)]
    prefixes += [(f"text_encoder_{i}", use.prefix) for i, use in enumerate(spec.text_encoders)]
    out = []
    for name, prefix in prefixes:
        total = 0
        for key, t in info.items():
            if key.startswith(prefix):
                n = 1
                for d in t.shape:
                    n *= d
                total += n
        out.append((name, total))
    return tuple(out)


def inspect_checkpoint(path: Path, with_hash: bool = True, prediction: str | None = None) -> InspectReport:
    """Detect a checkpoint's architecture and count its parameters without loading its weights."""

    scheduler_prediction = None
    if path.is_dir():

        if not is_diffusers_folder(path):
            raise CheckpointError(f"{path}: a folder, but not a diffusers model (no model_index.json)")
        source, scheduler_prediction = open_diffusers_folder(path)
    else:
        source = open_source(path)
    try:
        spec = detect_spec(source.info(), source.metadata(), str(path))
        pred, where = resolve_prediction(path, source.metadata(), prediction, scheduler_prediction)
        spec = replace(spec, prediction=pred, prediction_source=where)
        dtypes = Counter(str(t.dtype).replace("torch.", "") for t in source.info().values())
        params = _count_params(source, spec)
    finally:
        source.close()
    digest = short_hash(path) if with_hash and path.is_file() else None
    return InspectReport(path, spec, dtypes.most_common(1)[0][0], params, digest)
