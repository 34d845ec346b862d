"""What a generation can be given from outside: extra networks (LoRA, embeddings), pixel upscalers, refiners.

The pipelines never search folders or load adapter files themselves; they call these hooks:

- ``networks.activate(engine, calls)``: a context manager that applies the prompt's
  ``<lora:...>`` calls for the duration of one generation and yields a :class:`NetworkActivation`
  (embedding lookups per text tower, infotext fields such as "Lora hashes"). Without a hook,
  any extra-network call is a :class:`PromptError` naming it: nothing is silently dropped.
- ``upscalers[name](image, (width, height)) -> image``: neural hires upscalers by A1111 name
  ("Lanczos" and the "Latent ..." modes are built in).
- ``load_refiner(checkpoint) -> Engine``: how ``refiner_checkpoint`` is turned into an engine
  (default: ``huihua.load`` on the same device and dtype).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from PIL import Image

from huihua.errors import PromptError

if TYPE_CHECKING:
    from huihua.engine import Engine
    from huihua.prompts.conditioning import EmbeddingLookup
    from huihua.prompts.extra_networks import ExtraNetworkCall

PixelUpscaler = Callable[[Image.Image, tuple[int, int]], Image.Image]


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

    def activate(self, engine: Engine, calls: Sequence[ExtraNetworkCall]) -> AbstractContextManager[NetworkActivation]:
        """Patch the engine for ``calls`` inside the ``with`` block; restore it afterwards."""
        ...


class NoNetworks:
    """The default hook: no adapters are available, so any extra-network call is an error."""

    @contextmanager
    def activate(self, engine: Engine, calls: Sequence[ExtraNetworkCall]) -> Iterator[NetworkActivation]:
        """Refuse the first call with a PromptError naming it; yield an empty activation otherwise."""
        for call in calls:
            raise PromptError(f"<{call.kind}:{call.name}>: unknown {call.kind} {call.name!r} (no {call.kind} folder given)")
        yield NetworkActivation()


def _load_same_device(engine: Engine) -> Callable[[str], Engine]:
    def load(checkpoint: str) -> Engine:
        import huihua

        return huihua.load(checkpoint, device=engine.device, dtype=engine.dtype)

    return load


@dataclass(frozen=True)
class PipelineHooks:
    """Everything a generation may call outside the pipelines; the defaults need no files."""

    networks: ExtraNetworks = field(default_factory=NoNetworks)
    upscalers: Mapping[str, PixelUpscaler] = field(default_factory=dict)
    load_refiner: Callable[[str], Engine] | None = None

    def refiner_loader(self, engine: Engine) -> Callable[[str], Engine]:
        """The refiner loader, defaulting to ``huihua.load`` on ``engine``'s device and dtype."""
        return self.load_refiner or _load_same_device(engine)
