"""Non-destructive weight patching: add LoRA deltas in place, put the exact originals back after.

Each parameter a LoRA touches is copied once before it is changed (only those: no model copy), the
deltas of every LoRA on it are summed in float32 onto a float32 copy of the original, and the sum is
written back in the parameter's dtype (one rounding). :meth:`WeightPatcher.restore` copies the saved
originals back, so the weights are bit-identical to before. Applying a different list first
restores; applying the same list again does nothing, so switching LoRAs never reloads anything.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType

import torch
from torch import Tensor, nn

from huihua.adapters.lora import LoraPatch, LoraPatchSet, patch_delta
from huihua.errors import CheckpointError
from huihua.model import Model


@dataclass(frozen=True, eq=False)
class LoraUse:
    """One LoRA in a generation: its patches and multipliers (``<lora:name:te:unet:dyn>``)."""

    patches: LoraPatchSet
    te_weight: float = 1.0
    unet_weight: float = 1.0
    dyn: int | None = None

    def weight_for(self, component: str) -> float:
        """The multiplier of ``component``: ``unet_weight`` for the UNet, ``te_weight`` otherwise."""
        return self.unet_weight if component == "unet" else self.te_weight

    def same_as(self, other: LoraUse) -> bool:
        """Same patch set object with the same multipliers."""
        return (self.patches is other.patches and self.te_weight == other.te_weight
                and self.unet_weight == other.unet_weight and self.dyn == other.dyn)


ParamKey = tuple[str, str]  # (component, parameter name)


class WeightPatcher:
    """Applies LoRA patch sets to a model's components in place and restores them exactly."""

    def __init__(self, components: Mapping[str, nn.Module | None], backup_device: torch.device | str | None = None):
        self._components = {k: v for k, v in components.items() if v is not None}
        self._backup_device = None if backup_device is None else torch.device(backup_device)
        self._backup: dict[ParamKey, Tensor] = {}
        self._applied: tuple[LoraUse, ...] = ()

    @classmethod
    def for_model(cls, engine: Model, backup_device: torch.device | str | None = None) -> WeightPatcher:
        """A patcher over an engine's UNet and text encoders (named as in ``LoraTarget.component``)."""
        components: dict[str, nn.Module | None] = {"unet": engine.unet}
        for i, encoder in enumerate(engine.text_encoders):
            components[f"text_encoder_{i}"] = encoder
        return cls(components, backup_device)

    @property
    def applied(self) -> tuple[LoraUse, ...]:
        """The LoRAs currently added to the weights (empty when the weights are the originals)."""
        return self._applied

    @property
    def patched_parameters(self) -> int:
        """How many parameters are currently changed (and backed up)."""
        return len(self._backup)

    def _param(self, key: ParamKey, owner: str) -> nn.Parameter:
        component, name = key
        module = self._components.get(component)
        if module is None:
            raise CheckpointError(f"LoRA {owner!r} patches {component}, which this model does not have")
        try:
            return module.get_parameter(name)
        except AttributeError:
            raise CheckpointError(f"LoRA {owner!r}: {component} has no parameter {name!r}") from None

    def _plan(self, uses: Sequence[LoraUse]) -> dict[ParamKey, list[tuple[LoraPatch, float, LoraUse]]]:
        """Every patch with a non-zero multiplier, grouped by the parameter it changes."""
        plan: dict[ParamKey, list[tuple[LoraPatch, float, LoraUse]]] = {}
        for use in uses:
            for patch in use.patches.patches:
                weight = use.weight_for(patch.target.component)
                if weight != 0.0:
                    plan.setdefault((patch.target.component, patch.target.param), []).append((patch, weight, use))
        return plan

    def _patch_param(self, key: ParamKey, items: list[tuple[LoraPatch, float, LoraUse]]) -> None:
        param = self._param(key, items[0][2].patches.name)
        original = param.detach()
        self._backup[key] = original.to(device=self._backup_device or original.device, copy=True)
        work = original.to(torch.float32, copy=True)
        for patch, weight, use in items:
            rows = patch.target.rows
            region = work if rows is None else work[rows[0] : rows[1]]
            change = patch_delta(patch, work.device, use.dyn)
            if region.shape != change.shape:
                raise CheckpointError(
                    f"LoRA {use.patches.name!r}: {patch.module} gives {tuple(change.shape)}, "
                    f"{key[0]}.{key[1]} needs {tuple(region.shape)}"
                )
            region.add_(change, alpha=weight)
        original.copy_(work)

    def apply(self, uses: Sequence[LoraUse]) -> None:
        """Make the weights equal the originals plus ``uses``; a no-op when that is already so."""
        uses = tuple(uses)
        if len(uses) == len(self._applied) and all(a.same_as(b) for a, b in zip(uses, self._applied, strict=True)):
            return
        self.restore()
        try:
            with torch.no_grad():
                for key, items in self._plan(uses).items():
                    self._patch_param(key, items)
        except BaseException:
            self.restore()
            raise
        self._applied = uses

    def restore(self) -> None:
        """Copy every saved original back (bit-identical) and forget the backups."""
        with torch.no_grad():
            for key, saved in self._backup.items():
                component, name = key
                self._components[component].get_parameter(name).detach().copy_(saved)
        self._backup.clear()
        self._applied = ()

    @contextmanager
    def patched(self, uses: Sequence[LoraUse]) -> Iterator[WeightPatcher]:
        """``with patcher.patched(uses):`` the weights carry ``uses`` inside, the originals after."""
        self.apply(uses)
        try:
            yield self
        finally:
            self.restore()

    def __enter__(self) -> WeightPatcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.restore()
