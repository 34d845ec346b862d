"""The extra-network hook: how ``<lora:...>`` calls in a prompt reach the model for one generation.

``networks.activate(model, calls)`` is a context manager that applies the prompt's ``<lora:...>``
calls for the duration of one generation and yields a :class:`NetworkActivation` (embedding lookups
per text tower, infotext fields such as "Lora hashes"). Without a hook (``NoNetworks``), any
extra-network call is a :class:`PromptError` naming it: nothing is silently dropped.
``FolderNetworks`` (``lora_networks.py``) is the hook over LoRA and embedding folders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from huihua.errors import PromptError
from huihua.model import Model
from huihua.prompts.conditioning import EmbeddingLookup
from huihua.prompts.extra_networks import ExtraNetworkCall


@dataclass(frozen=True)
class NetworkActivation:
    """What active extra networks give the prompt encoder and the infotext."""

    embeddings: tuple[EmbeddingLookup | None, ...] | None = None
    infotext: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)  # name -> hash, for the JSON chunk
    # The "TI hashes" field for the embedding names the prompt encoder placed ("" when none is known).
    embedding_hashes: Callable[[Sequence[str]], str] | None = None


class ExtraNetworks(Protocol):
    """Applies ``<lora:...>`` (and other) calls to an engine for one generation."""

    def activate(self, engine: Model, calls: Sequence[ExtraNetworkCall]) -> AbstractContextManager[NetworkActivation]:
        """Patch the engine for ``calls`` inside the ``with`` block; restore it afterwards."""
        ...


class NoNetworks:
    """The default hook: no adapters are available, so any extra-network call is an error."""

    @contextmanager
    def activate(self, engine: Model, calls: Sequence[ExtraNetworkCall]) -> Iterator[NetworkActivation]:
        """Refuse the first call with a PromptError naming it; yield an empty activation otherwise."""
        for call in calls:
            raise PromptError(
                f"<{call.kind}:{call.name}>: unknown {call.kind} {call.name!r} (no {call.kind} folder given)"
            )
        yield NetworkActivation()
