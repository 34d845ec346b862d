"""Extra-network calls in prompts: ``<lora:name:0.8>``, ``<lora:name:te:unet>``, ``<hypernet:x>``.

A1111's rule: every ``<word:anything but '>'>`` is cut out of the prompt and becomes a call whose
arguments are the ``:``-separated items. The calls are parsed before prompt editing and AND, so
they apply to the whole generation; A1111 strips them from positive prompts only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from huihua.errors import PromptError

_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class ExtraNetworkCall:
    """One ``<kind:name:arg:...>`` tag; ``args`` are the raw items after the name."""

    kind: str
    name: str
    args: tuple[str, ...] = ()

    @property
    def positional(self) -> tuple[str, ...]:
        """Arguments that are not ``key=value`` (A1111: an item with exactly one ``=`` is named)."""
        return tuple(a for a in self.args if len(a.split("=", 2)) != 2)

    @property
    def named(self) -> dict[str, str]:
        """``key=value`` arguments, e.g. ``te=0.5``, ``unet=1``, ``dyn=16``."""
        pairs = (a.split("=", 2) for a in self.args)
        return {p[0]: p[1] for p in pairs if len(p) == 2}


@dataclass(frozen=True)
class LoraWeights:
    """Multipliers of one LoRA call: text encoder, UNet, and an optional dynamic rank cap."""

    te: float = 1.0
    unet: float = 1.0
    dyn: int | None = None


def parse_extra_networks(prompt: str) -> tuple[str, list[ExtraNetworkCall]]:
    """The prompt with every ``<kind:...>`` tag removed, and the tags in order of appearance."""
    calls: list[ExtraNetworkCall] = []

    def take(match: re.Match[str]) -> str:
        items = match.group(2).split(":")
        calls.append(ExtraNetworkCall(kind=match.group(1), name=items[0], args=tuple(items[1:])))
        return ""

    return _EXTRA_NETWORK.sub(take, prompt), calls


def _number(call: ExtraNetworkCall, field: str, text: str, kind: type) -> float | int:
    try:
        return kind(text)
    except ValueError:
        raise PromptError(f"<{call.kind}:{call.name}>: {field} {text!r} is not a number") from None


def lora_weights(call: ExtraNetworkCall) -> LoraWeights:
    """A1111's reading of ``<lora:name:te[:unet[:dyn]]>`` with ``te=``/``unet=``/``dyn=`` overrides.

    ``te`` defaults to 1, ``unet`` defaults to ``te``; named values win over positional ones.
    """
    positional, named = call.positional, call.named
    te = _number(call, "te", positional[0], float) if len(positional) > 0 else 1.0
    te = _number(call, "te", named["te"], float) if "te" in named else te
    unet = _number(call, "unet", positional[1], float) if len(positional) > 1 else te
    unet = _number(call, "unet", named["unet"], float) if "unet" in named else unet
    dyn = _number(call, "dyn", positional[2], int) if len(positional) > 2 else None
    dyn = _number(call, "dyn", named["dyn"], int) if "dyn" in named else dyn
    return LoraWeights(te=float(te), unet=float(unet), dyn=None if dyn is None else int(dyn))
