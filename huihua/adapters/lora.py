"""LoRA / LyCORIS files -> a neutral, model-bound :class:`LoraPatchSet` (what to add to which weight).

Reading a file resolves every module name against the model's :class:`LoraTargets` and checks every
shape, so a LoRA either fits entirely or is refused with a :class:`CheckpointError` that names the
file and the first modules that did not fit. Nothing is skipped: a key that matches no module
(another family's LoRA, a foreign format, a LoRA for a text encoder this model does not have) is an
error, never ignored. The only tensors that are not patches are A1111's bundled embeddings
(``bundle_emb.<name>.*``), which are kept as :class:`Embedding` objects on the patch set.

Name spaces: ``lora_unet_*`` / ``unet.*`` / ``model.diffusion_model.*`` address the UNet;
``lora_te_*`` the single text encoder of SD1/SD2; ``lora_te1_*`` / ``lora_te2_*`` SDXL's two;
``text_encoder.*`` the first text encoder and ``text_encoder_2.*`` the second.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from huihua.adapters.lora_formats import (
    FullDiff,
    PatchFactors,
    delta,
    factors_from_group,
    fits,
    natural_shape,
    split_key,
)
from huihua.adapters.lora_keys import LoraTarget, LoraTargets, ModuleTarget
from huihua.adapters.textual_inversion import Embedding, embedding_from_tensors
from huihua.checkpoints.io import open_source
from huihua.errors import CheckpointError

_BUNDLE = "bundle_emb."
_SHOWN = 3  # module names quoted in an error message


@dataclass(frozen=True, eq=False)
class LoraPatch:
    """One weight difference: the file's module name, where it goes, and its factors."""

    module: str
    target: LoraTarget
    factors: PatchFactors


@dataclass(frozen=True, eq=False)
class LoraPatchSet:
    """Every patch of one LoRA file, resolved against one model."""

    name: str
    path: str
    family: str
    patches: tuple[LoraPatch, ...]
    embeddings: tuple[Embedding, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)

    def components(self) -> frozenset[str]:
        """The components ("unet", "text_encoder_0", ...) this LoRA patches."""
        return frozenset(p.target.component for p in self.patches)


def patch_delta(patch: LoraPatch, device: torch.device | None = None, dyn: int | None = None) -> Tensor:
    """The float32 difference for the patched region, in our parameter's layout (before the user weight).

    ``dyn`` caps the rank of plain LoRA factors (A1111's ``<lora:name:te:unet:dyn>``).
    """
    out = delta(patch.factors, patch.target.shape, device, dyn)
    return out.t() if patch.target.transposed else out


# ---------------------------------------------------------------------------------------------
# module names -> targets

_PREFIXES: tuple[tuple[str, str], ...] = (
    ("lora_unet_", "unet"),
    ("lora_te1_", "te1"),
    ("lora_te2_", "te2"),
    ("lora_te_", "te"),
    ("unet.", "unet"),
    ("model.diffusion_model.", "unet"),
    ("diffusion_model.", "unet"),
    ("text_encoder_2.", "te2"),
    ("text_encoder.", "te_first"),
    ("base_model.model.", "any"),
)


def _namespace(module: str) -> tuple[str, str]:
    """(name space, rest) of a module name; "any" when the name carries no component prefix."""
    for prefix, space in _PREFIXES:
        if module.startswith(prefix):
            return space, module[len(prefix) :]
    return "any", module


def _resolve(module: str, targets: LoraTargets) -> tuple[ModuleTarget | None, str]:
    """The target of one module name, or (None, why) when it addresses nothing in this model."""
    space, rest = _namespace(module)
    first = "te" if "te" in targets.tables else "te1"
    if space == "te_first":
        space = first
    candidates = ("unet", first) if space == "any" else (space,)
    for ns in candidates:
        if ns not in targets.tables:
            continue
        found = targets.lookup(ns, rest)
        if found is not None:
            return found, ""
    if space in ("te1", "te2") and space not in targets.tables:
        return None, f"{module} (a key for SDXL's two text encoders; this {targets.family} model has one)"
    if space == "te" and "te" not in targets.tables:
        return None, f"{module} (a key for a single text encoder; this {targets.family} model has two)"
    return None, module


# ---------------------------------------------------------------------------------------------
# PEFT / diffusers alpha metadata


def _peft_alphas(metadata: Mapping[str, str]) -> dict[str, dict]:
    """diffusers' ``lora_adapter_metadata`` (PEFT LoraConfig per component prefix), or {}."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    out: dict[str, dict] = {}
    for key, value in data.items() if isinstance(data, dict) else ():
        prefix, _, name = key.rpartition(".")
        out.setdefault(prefix, {})[name] = value
    return out


def _apply_peft_config(module: str, group: dict[str, Tensor], peft: Mapping[str, dict]) -> None:
    """Give a PEFT module without a stored alpha the alpha (and rsLoRA scale) of its LoraConfig."""
    if "alpha" in group or "up" not in group or "down" not in group:
        return
    prefix, _, path = module.partition(".")
    cfg = peft.get(prefix)
    if not cfg:
        return
    alpha = cfg.get("lora_alpha")
    for pattern, value in (cfg.get("alpha_pattern") or {}).items():
        if re.fullmatch(rf"(.*\.)?{pattern}", path):
            alpha = value
    if alpha is None:
        return
    rank = group["down"].shape[0]
    if cfg.get("use_rslora"):
        group["scale"] = torch.tensor(float(alpha) / math.sqrt(rank))
    else:
        group["alpha"] = torch.tensor(float(alpha))


# ---------------------------------------------------------------------------------------------
# loading


def _group(tensors: Mapping[str, Tensor], where: str) -> dict[str, dict[str, Tensor]]:
    """Tensors per module name; an unknown tensor name is an error."""
    groups: dict[str, dict[str, Tensor]] = {}
    unknown = []
    for key, tensor in tensors.items():
        split = split_key(key)
        if split is None:
            unknown.append(key)
            continue
        module, part = split
        groups.setdefault(module, {})[part] = tensor
    if unknown:
        raise CheckpointError(
            f"{where}: {len(unknown)} tensors of no known LoRA/LyCORIS format, e.g. {', '.join(unknown[:_SHOWN])}"
        )
    return groups


def _family_hint(metadata: Mapping[str, str]) -> str:
    base = metadata.get("ss_base_model_version") or metadata.get("modelspec.architecture")
    return f"; its metadata says it was trained for {base}" if base else ""


def _patches_of(
    module: str, group: dict[str, Tensor], target: ModuleTarget, where: str
) -> tuple[list[LoraPatch], list[str]]:
    """The weight (and ``diff_b`` bias) patches of one module, and shape misfits as messages."""
    patches, misfits = [], []
    bias = group.pop("diff_b", None)
    if group:
        factors = factors_from_group(module, group, where)
        if fits(factors, target.weight.shape):
            patches.append(LoraPatch(module, target.weight, factors))
        else:
            misfits.append(f"{module} (LoRA {natural_shape(factors)} vs model {target.weight.shape})")
    if bias is not None:
        if target.bias is None:
            misfits.append(f"{module}.diff_b (the model's module has no bias)")
        elif tuple(bias.shape) != target.bias.shape:
            misfits.append(f"{module}.diff_b (LoRA {tuple(bias.shape)} vs model {target.bias.shape})")
        else:
            patches.append(LoraPatch(module, target.bias, FullDiff(bias)))
    return patches, misfits


def lora_from_tensors(
    tensors: Mapping[str, Tensor],
    targets: LoraTargets,
    name: str,
    path: str = "",
    metadata: Mapping[str, str] | None = None,
) -> LoraPatchSet:
    """Resolve a LoRA state dict against a model; CheckpointError if any part does not fit."""
    meta = dict(metadata or {})
    where = f"LoRA {name!r}" + (f" ({path})" if path else "")
    bundled = {k: v for k, v in tensors.items() if k.startswith(_BUNDLE)}
    groups = _group({k: v for k, v in tensors.items() if not k.startswith(_BUNDLE)}, where)
    peft = _peft_alphas(meta)
    patches: list[LoraPatch] = []
    unmatched: list[str] = []
    misfits: list[str] = []
    for module, group in groups.items():
        target, why = _resolve(module, targets)
        if target is None:
            unmatched.append(why)
            continue
        _apply_peft_config(module, group, peft)
        got, bad = _patches_of(module, dict(group), target, where)
        patches += got
        misfits += bad
    if unmatched or misfits:
        parts = []
        if unmatched:
            shown = "; ".join(unmatched[:_SHOWN])
            parts.append(f"{len(unmatched)} of {len(groups)} modules match nothing, e.g. {shown}")
        if misfits:
            parts.append(f"{len(misfits)} modules have the wrong shape, e.g. {'; '.join(misfits[:_SHOWN])}")
        what = "; ".join(parts)
        raise CheckpointError(f"{where} does not fit this {targets.family} model: {what}{_family_hint(meta)}")
    if not patches and not bundled:
        raise CheckpointError(f"{where}: contains no LoRA weights")
    return LoraPatchSet(name, path, targets.family, tuple(patches), _bundled_embeddings(bundled, where), meta)


def _bundled_embeddings(tensors: Mapping[str, Tensor], where: str) -> tuple[Embedding, ...]:
    """A1111's ``bundle_emb.<name>.<key>`` tensors as embeddings."""
    by_name: dict[str, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        name, _, rest = key[len(_BUNDLE) :].partition(".")
        by_name.setdefault(name, {})[rest] = value
    return tuple(embedding_from_tensors(n, t, f"{where} bundled embedding {n!r}") for n, t in by_name.items())


def load_lora(path: str | Path, targets: LoraTargets, name: str | None = None) -> LoraPatchSet:
    """Read a LoRA/LyCORIS file (safetensors, or a pickle read with weights_only) for one model."""
    p = Path(path)
    source = open_source(p)
    try:
        tensors = {k: source.get(k) for k in list(source.info())}
        metadata = dict(source.metadata())
    finally:
        source.close()
    return lora_from_tensors(tensors, targets, name or p.stem, str(p), metadata)
