"""LoRA-family weight formats: a file's tensors grouped per module, and the weight delta each adds.

Formats (tensor names after the module name):

* LoRA / LoCon (kohya-ss, A1111): ``lora_up.weight``, ``lora_down.weight``, optional ``lora_mid.weight``
  (Tucker-decomposed convolution) and ``alpha``; PEFT ``lora_B.weight`` / ``lora_A.weight`` and older
  diffusers ``lora.up.weight`` / ``lora_linear_layer.up.weight`` / ``to_q_lora.up.weight`` spellings.
* LyCORIS LoHa: ``hada_w1_a``, ``hada_w1_b``, ``hada_w2_a``, ``hada_w2_b`` (+ ``hada_t1``/``hada_t2``).
* LyCORIS LoKr: ``lokr_w1`` or ``lokr_w1_a``/``lokr_w1_b``; ``lokr_w2`` or ``lokr_w2_a``/``lokr_w2_b``
  (+ ``lokr_t2``).
* Full difference: ``diff`` (and ``diff_b`` for the bias).

Scale: ``scale`` when stored, else ``alpha / rank`` when both are known, else 1 (A1111's rule).
Deltas are computed in float32 and reshaped to the target weight's shape.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from huihua.errors import CheckpointError

# Tensor-name suffix -> field of the module group.
_SUFFIXES: dict[str, str] = {
    "lora_up.weight": "up",
    "lora_down.weight": "down",
    "lora_mid.weight": "mid",
    "lora_B.weight": "up",
    "lora_A.weight": "down",
    "lora.up.weight": "up",
    "lora.down.weight": "down",
    "lora_linear_layer.up.weight": "up",
    "lora_linear_layer.down.weight": "down",
    "alpha": "alpha",
    "scale": "scale",
    "hada_w1_a": "hada_w1_a",
    "hada_w1_b": "hada_w1_b",
    "hada_w2_a": "hada_w2_a",
    "hada_w2_b": "hada_w2_b",
    "hada_t1": "hada_t1",
    "hada_t2": "hada_t2",
    "lokr_w1": "lokr_w1",
    "lokr_w1_a": "lokr_w1_a",
    "lokr_w1_b": "lokr_w1_b",
    "lokr_w2": "lokr_w2",
    "lokr_w2_a": "lokr_w2_a",
    "lokr_w2_b": "lokr_w2_b",
    "lokr_t2": "lokr_t2",
    "diff": "diff",
    "diff_b": "diff_b",
    "dora_scale": "dora_scale",
    "lora_magnitude_vector": "dora_scale",
    "on_input": "ia3",
}
_SUFFIX_ORDER = sorted(_SUFFIXES, key=len, reverse=True)
# Old diffusers attention-processor LoRAs: ``attn1.processor.to_q_lora.up.weight`` (UNet) or
# ``self_attn.to_q_lora.up.weight`` (text encoder, after diffusers' own kohya conversion).
_PROCESSOR = re.compile(r"^(.*?)(?:\.processor)?\.(to_q|to_k|to_v|to_out)_lora\.(up|down)\.weight$")
_PROCESSOR_UNET = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}
_PROCESSOR_TEXT = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}


def split_key(key: str) -> tuple[str, str] | None:
    """(module name, group field) of one LoRA tensor name, or None when the suffix is unknown."""
    m = _PROCESSOR.match(key)
    if m is not None:
        module, proj, kind = m.groups()
        table = _PROCESSOR_TEXT if module.endswith("self_attn") else _PROCESSOR_UNET
        return f"{module}.{table[proj]}", kind
    for suffix in _SUFFIX_ORDER:
        if key.endswith("." + suffix) and len(key) > len(suffix) + 1:
            return key[: -len(suffix) - 1], _SUFFIXES[suffix]
    return None


@dataclass(frozen=True, eq=False)
class LoraFactors:
    """Low-rank pair ``up @ down`` (LoRA, LoCon); ``mid`` is LoCon's Tucker core (r, r, k, k)."""

    up: Tensor
    down: Tensor
    mid: Tensor | None = None
    alpha: float | None = None
    scale: float | None = None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


@dataclass(frozen=True, eq=False)
class LohaFactors:
    """LyCORIS LoHa: the Hadamard product of two low-rank products (optionally Tucker cores)."""

    w1a: Tensor
    w1b: Tensor
    w2a: Tensor
    w2b: Tensor
    t1: Tensor | None = None
    t2: Tensor | None = None
    alpha: float | None = None
    scale: float | None = None

    @property
    def rank(self) -> int:
        return int(self.w1b.shape[0])


@dataclass(frozen=True, eq=False)
class LokrFactors:
    """LyCORIS LoKr: the Kronecker product of w1 and w2, each stored whole or as a low-rank pair."""

    w1: Tensor | None = None
    w1a: Tensor | None = None
    w1b: Tensor | None = None
    w2: Tensor | None = None
    w2a: Tensor | None = None
    w2b: Tensor | None = None
    t2: Tensor | None = None
    alpha: float | None = None
    scale: float | None = None

    @property
    def rank(self) -> int | None:
        if self.w1b is not None:
            return int(self.w1b.shape[0])
        if self.w2b is not None:
            return int(self.w2b.shape[0])
        return None


@dataclass(frozen=True, eq=False)
class FullDiff:
    """A whole-tensor difference (LyCORIS "full", ``diff`` / ``diff_b``); never scaled by alpha."""

    diff: Tensor


PatchFactors = LoraFactors | LohaFactors | LokrFactors | FullDiff


def _scalar(group: Mapping[str, Tensor], name: str) -> float | None:
    value = group.get(name)
    return None if value is None else float(value.float().reshape(-1)[0])


def factors_from_group(module: str, group: Mapping[str, Tensor], where: str) -> PatchFactors:
    """Recognise the format of one module's tensors (without ``diff_b``); error if incomplete."""
    if "dora_scale" in group:
        raise CheckpointError(f"{where}: {module}: DoRA (dora_scale) LoRAs are not supported")
    if "ia3" in group:
        raise CheckpointError(f"{where}: {module}: (IA)^3 networks are not supported")
    alpha, scale = _scalar(group, "alpha"), _scalar(group, "scale")
    g = group.get
    if "up" in group or "down" in group:
        if g("up") is None or g("down") is None:
            raise CheckpointError(f"{where}: {module}: LoRA has only one of its up/down weights")
        return LoraFactors(g("up"), g("down"), g("mid"), alpha, scale)  # type: ignore[arg-type]
    if any(k.startswith("hada_") for k in group):
        parts = [g(k) for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")]
        if any(p is None for p in parts):
            raise CheckpointError(f"{where}: {module}: LoHa lacks some of hada_w1_a/w1_b/w2_a/w2_b")
        w1a, w1b, w2a, w2b = (p for p in parts if p is not None)
        return LohaFactors(w1a, w1b, w2a, w2b, g("hada_t1"), g("hada_t2"), alpha, scale)
    if any(k.startswith("lokr_") for k in group):
        w = LokrFactors(g("lokr_w1"), g("lokr_w1_a"), g("lokr_w1_b"), g("lokr_w2"), g("lokr_w2_a"),
                        g("lokr_w2_b"), g("lokr_t2"), alpha, scale)
        has1 = w.w1 is not None or (w.w1a is not None and w.w1b is not None)
        has2 = w.w2 is not None or (w.w2a is not None and w.w2b is not None)
        if not (has1 and has2):
            raise CheckpointError(f"{where}: {module}: LoKr lacks lokr_w1 (or w1_a/w1_b) or lokr_w2 (or w2_a/w2_b)")
        return w
    if "diff" in group:
        return FullDiff(group["diff"])
    raise CheckpointError(f"{where}: {module}: no weights (only {', '.join(sorted(group))})")


def natural_shape(w: PatchFactors) -> tuple[int, ...]:
    """Shape of the delta before it is reshaped to the target (for fit checks; no math done)."""
    if isinstance(w, FullDiff):
        return tuple(w.diff.shape)
    if isinstance(w, LoraFactors):
        inner = math.prod(w.down.shape[1:])
        if w.mid is not None:
            return (int(w.up.shape[0]), inner, *w.mid.shape[2:])
        return (int(w.up.shape[0]), inner)
    if isinstance(w, LohaFactors):
        if w.t1 is not None:
            return (int(w.w1a.shape[1]), int(w.w1b.shape[1]), *w.t1.shape[2:])
        return (int(w.w1a.shape[0]), math.prod(w.w1b.shape[1:]))
    rows1, cols1 = _lokr_w1_shape(w)
    rows2, cols2 = _lokr_w2_shape(w)
    return (rows1 * rows2, cols1 * cols2)


def _lokr_w1_shape(w: LokrFactors) -> tuple[int, int]:
    if w.w1 is not None:
        return int(w.w1.shape[0]), math.prod(w.w1.shape[1:])
    assert w.w1a is not None and w.w1b is not None
    return int(w.w1a.shape[0]), math.prod(w.w1b.shape[1:])


def _lokr_w2_shape(w: LokrFactors) -> tuple[int, int]:
    if w.w2 is not None:
        return int(w.w2.shape[0]), math.prod(w.w2.shape[1:])
    assert w.w2a is not None and w.w2b is not None
    if w.t2 is not None:
        return int(w.w2a.shape[1]), int(w.w2b.shape[1]) * math.prod(w.t2.shape[2:])
    return int(w.w2a.shape[0]), math.prod(w.w2b.shape[1:])


def fits(w: PatchFactors, shape: tuple[int, ...]) -> bool:
    """Whether the delta of ``w`` can be laid onto a weight of ``shape`` (same rows, same size)."""
    nat = natural_shape(w)
    if not shape:
        return math.prod(nat) == 1
    return nat[0] == shape[0] and math.prod(nat) == math.prod(shape)


def scale_of(w: PatchFactors) -> float:
    """The factor the stored product is multiplied by: ``scale``, else ``alpha / rank``, else 1."""
    if isinstance(w, FullDiff):
        return 1.0
    if w.scale is not None:
        return w.scale
    rank = w.rank
    if w.alpha is not None and rank:
        return w.alpha / rank
    return 1.0


def _f32(t: Tensor, device: torch.device | None) -> Tensor:
    return t.to(device=device, dtype=torch.float32)


def _tucker(core: Tensor, wa: Tensor, wb: Tensor) -> Tensor:
    """LyCORIS CP/Tucker rebuild: core (R1, R2, k, k), wa (R1, out), wb (R2, in) -> (out, in, k, k)."""
    return torch.einsum("abhw,ao,bi->oihw", core, wa.flatten(1), wb.flatten(1))


def _lora(w: LoraFactors, dev: torch.device | None, dyn: int | None) -> Tensor:
    up, down = _f32(w.up, dev).flatten(1), _f32(w.down, dev).flatten(1)
    if dyn is not None and w.mid is None:
        up, down = up[:, :dyn], down[:dyn]
    if w.mid is not None:
        return torch.einsum("abhw,oa,bi->oihw", _f32(w.mid, dev), up, down)
    return up @ down


def _loha(w: LohaFactors, dev: torch.device | None) -> Tensor:
    if w.t1 is not None:
        first = _tucker(_f32(w.t1, dev), _f32(w.w1a, dev), _f32(w.w1b, dev))
    else:
        first = _f32(w.w1a, dev).flatten(1) @ _f32(w.w1b, dev).flatten(1)
    if w.t2 is not None:
        second = _tucker(_f32(w.t2, dev), _f32(w.w2a, dev), _f32(w.w2b, dev))
    else:
        second = _f32(w.w2a, dev).flatten(1) @ _f32(w.w2b, dev).flatten(1)
    return first * second.reshape(first.shape)


def _lokr(w: LokrFactors, dev: torch.device | None) -> Tensor:
    if w.w1 is not None:
        w1 = _f32(w.w1, dev).flatten(1)
    else:
        assert w.w1a is not None and w.w1b is not None
        w1 = _f32(w.w1a, dev) @ _f32(w.w1b, dev).flatten(1)
    if w.w2 is not None:
        w2 = _f32(w.w2, dev).flatten(1)
    else:
        assert w.w2a is not None and w.w2b is not None
        if w.t2 is not None:
            w2 = _tucker(_f32(w.t2, dev), _f32(w.w2a, dev), _f32(w.w2b, dev)).flatten(1)
        else:
            w2 = _f32(w.w2a, dev).flatten(1) @ _f32(w.w2b, dev).flatten(1)
    return torch.kron(w1, w2)


def delta(
    w: PatchFactors, shape: tuple[int, ...], device: torch.device | None = None, dyn: int | None = None
) -> Tensor:
    """The float32 weight difference (already scaled by alpha/rank, not by the user's weight).

    ``dyn`` keeps only the first ``dyn`` ranks of a plain LoRA (the scale still uses the full rank).
    """
    if isinstance(w, FullDiff):
        out = _f32(w.diff, device)
    elif isinstance(w, LoraFactors):
        out = _lora(w, device, dyn)
    elif isinstance(w, LohaFactors):
        out = _loha(w, device)
    else:
        out = _lokr(w, device)
    factor = scale_of(w)
    if factor != 1.0:
        out = out * factor
    return out.reshape(shape)
