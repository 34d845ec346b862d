"""Where LoRA module names land in our networks: one table per loaded model, built from its modules.

LoRA files name modules the way their trainer saw the model: kohya-ss uses diffusers UNet paths for
SD1/SD2 (``lora_unet_down_blocks_0_attentions_0_..._to_q``), LDM paths for SDXL
(``lora_unet_input_blocks_4_1_..._to_q``) and transformers CLIP paths for every text encoder
(``lora_te_text_model_encoder_layers_0_self_attn_q_proj``); diffusers/PEFT files use the same paths
with dots (``unet.down_blocks...``, ``text_encoder.text_model...``). No name table is written here:
the diffusers and transformers names of each of our parameters come from the checkpoint converters
(``ldm_unet_to_diffusers`` and ``ldm_clip_to_hf``), run over our own parameter names. For OpenCLIP
towers the converter splits the fused ``in_proj`` into q/k/v; the rows each part came from are read
back from row-numbered stand-in tensors, so a ``q_proj`` LoRA patches rows ``0:W`` of ``in_proj``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from huihua.checkpoints.diffusers.clip import ldm_clip_to_hf
from huihua.checkpoints.diffusers.unet import ldm_unet_to_diffusers
from huihua.checkpoints.specs import ModelSpec
from huihua.nn.configs import TextLayout, UNetConfig

Component = Literal["unet", "text_encoder_0", "text_encoder_1"]
# Name spaces of LoRA module names: the UNet, the only text encoder ("te"), or one of two ("te1"/"te2").
Namespace = Literal["unet", "te", "te1", "te2"]


@dataclass(frozen=True)
class LoraTarget:
    """One patched tensor: a parameter of a component, or a row range of it (fused in_proj q/k/v).

    ``shape`` is the shape of the patched region in the layout the LoRA was trained on; when
    ``transposed`` the region is stored transposed in our module (OpenCLIP ``text_projection``).
    """

    component: Component
    param: str
    shape: tuple[int, ...]
    rows: tuple[int, int] | None = None
    transposed: bool = False


@dataclass(frozen=True)
class ModuleTarget:
    """The weight (and bias, when the module has one) a LoRA module name refers to."""

    weight: LoraTarget
    bias: LoraTarget | None = None


@dataclass(frozen=True)
class LoraTargets:
    """Every LoRA-addressable module of one model: name space -> underscore alias -> target."""

    family: str
    tables: Mapping[str, Mapping[str, ModuleTarget]]

    def lookup(self, namespace: str, alias: str) -> ModuleTarget | None:
        """The target of ``alias`` (dots or underscores) in ``namespace``, or None."""
        return self.tables.get(namespace, {}).get(underscore(alias))


def underscore(name: str) -> str:
    """kohya's spelling of a module path: dots become underscores."""
    return name.replace(".", "_")


def _module_of(name: str) -> tuple[str, str]:
    """("module path", "weight"|"bias") of a parameter name; other parameters keep their full name."""
    for kind in ("weight", "bias"):
        if name.endswith("." + kind):
            return name[: -len(kind) - 1], kind
    return name, "weight"


def _add(table: dict[str, dict[str, LoraTarget]], alias: str, kind: str, target: LoraTarget) -> None:
    """Register one alias; two different parameters behind one alias would be a naming bug."""
    entry = table.setdefault(underscore(alias), {})
    if entry.get(kind, target) != target:
        raise ValueError(f"LoRA alias {underscore(alias)!r} names both {entry[kind].param} and {target.param}")
    entry[kind] = target


def _finish(raw: Mapping[str, Mapping[str, LoraTarget]]) -> dict[str, ModuleTarget]:
    return {a: ModuleTarget(t["weight"], t.get("bias")) for a, t in raw.items() if "weight" in t}


def unet_table(unet: nn.Module, cfg: UNetConfig) -> dict[str, ModuleTarget]:
    """UNet aliases: diffusers paths (kohya SD1/SD2, PEFT) and LDM paths (kohya SDXL), both underscored."""

    params = dict(unet.named_parameters())
    names = list(params)
    # Index-valued stand-ins: the converter only renames, so each value says which parameter it was.
    renamed = ldm_unet_to_diffusers({n: torch.tensor([float(i)]) for i, n in enumerate(names)}, cfg)
    raw: dict[str, dict[str, LoraTarget]] = {}
    for name in names:
        module, kind = _module_of(name)
        _add(raw, module, kind, LoraTarget("unet", name, tuple(params[name].shape)))
    for d_name, marker in renamed.items():
        name = names[int(marker.item())]
        module, kind = _module_of(d_name)
        _add(raw, module, kind, LoraTarget("unet", name, tuple(params[name].shape)))
    return _finish(raw)


def _row_numbers(shape: torch.Size) -> Tensor:
    """A stand-in whose every element holds its row index (a broadcast view: no memory)."""
    rows = torch.arange(shape[0], dtype=torch.float32)
    return rows.view(-1, *([1] * (len(shape) - 1))).expand(shape)


_Part = tuple[str, tuple[int, int] | None, bool, tuple[int, ...]]  # (hf name, rows, transposed, shape)


def _hf_parts(name: str, param: Tensor, layout: TextLayout) -> list[_Part]:
    """transformers names of one of our text-encoder parameters, with row range and transposition."""

    out = ldm_clip_to_hf({name: _row_numbers(param.shape)}, layout)
    parts: list[_Part] = []
    for hf_name, value in out.items():
        shape = tuple(value.shape)
        if len(out) > 1:
            start = int(value.reshape(-1)[0].item())
            parts.append((hf_name, (start, start + shape[0]), False, shape))
        else:
            transposed = value.ndim == 2 and value.shape[1] > 1 and value[0, 0] != value[0, -1]
            parts.append((hf_name, None, bool(transposed), shape))
    return parts


def text_table(encoder: nn.Module, layout: TextLayout, component: Component) -> dict[str, ModuleTarget]:
    """Text-encoder aliases: transformers CLIP paths with and without the ``text_model.`` root."""
    raw: dict[str, dict[str, LoraTarget]] = {}
    for name, param in encoder.named_parameters():
        for hf_name, rows, transposed, shape in _hf_parts(name, param, layout):
            module, kind = _module_of(hf_name)
            target = LoraTarget(component, name, shape, rows, transposed)
            _add(raw, module, kind, target)
            if module.startswith("text_model."):
                _add(raw, module[len("text_model.") :], kind, target)
    return _finish(raw)


def build_targets(spec: ModelSpec, unet: nn.Module, text_encoders: Sequence[nn.Module]) -> LoraTargets:
    """The LoRA name tables of a loaded model (cheap: names and shapes only, no weights copied)."""
    tables: dict[str, Mapping[str, ModuleTarget]] = {"unet": unet_table(unet, spec.unet)}
    uses = spec.text_encoders
    if len(text_encoders) != len(uses):
        raise ValueError(f"{len(text_encoders)} text encoders given for a spec with {len(uses)}")
    spaces: tuple[Namespace, ...] = ("te",) if len(uses) == 1 else ("te1", "te2")
    for i, (space, use, encoder) in enumerate(zip(spaces, uses, text_encoders, strict=True)):
        component: Component = "text_encoder_0" if i == 0 else "text_encoder_1"
        tables[space] = text_table(encoder, use.config.layout, component)
    return LoraTargets(spec.family, tables)
