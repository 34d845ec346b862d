"""LoRAs and embeddings from folders as the pipelines' extra-network hook (``pipelines.hooks.ExtraNetworks``).

``FolderNetworks(lora_dirs, embedding_dirs).activate(engine, calls)`` finds each ``<lora:name:...>``
file by name, reads it once per engine (cached by path, mtime and size), patches the engine's
weights for the ``with`` block and restores them bit-identically afterwards, and yields the
embedding lookups of the engine's text towers and the ``Lora hashes`` infotext field. Switching
LoRAs between generations only swaps patches: the checkpoint is never reloaded.
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from huihua.adapters.lora import LoraPatchSet, load_lora
from huihua.adapters.lora_keys import LoraTargets, build_targets
from huihua.adapters.networks import NetworkActivation
from huihua.adapters.patcher import LoraUse, WeightPatcher
from huihua.adapters.registry import (
    EMBEDDING_EXTENSIONS,
    LORA_EXTENSIONS,
    FileHashes,
    FileKinds,
    find_file,
    hashes_field,
    list_files,
)
from huihua.adapters.textual_inversion import (
    Embedding,
    TowerEmbeddings,
    load_embeddings,
    tower_lookups,
)
from huihua.assets import bundled_adapter_dir
from huihua.errors import PromptError
from huihua.model import Model
from huihua.prompts.extra_networks import ExtraNetworkCall, lora_weights

_LOG = logging.getLogger(__name__)
LORA_KINDS = ("lora", "lyco")  # A1111 reads <lyco:...> (the old LyCORIS extension's tag) as <lora:...>
_CACHED_LORAS = 16  # patch sets kept per engine


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


@dataclass(eq=False)
class _ModelState:
    """What one engine needs across generations: its LoRA name tables, patcher and loaded LoRAs."""

    targets: LoraTargets
    patcher: WeightPatcher
    loras: OrderedDict[tuple[str, int, int], LoraPatchSet] = field(default_factory=OrderedDict)


class FolderNetworks:
    """The extra-network hook over LoRA and embedding folders (Python ``lora_dirs`` / ``embedding_dirs``).

    The adapters bundled with huihua (``huihua-red``, ...) are searched after the user's folders unless
    ``bundled=False``. Only files of the right kind count: a ControlNet in a LoRA folder is not a LoRA.
    """

    def __init__(
        self,
        lora_dirs: Sequence[str | Path] = (),
        embedding_dirs: Sequence[str | Path] = (),
        backup_device: str | None = None,
        bundled: bool = True,
    ) -> None:
        extra = (bundled_adapter_dir(),) if bundled and bundled_adapter_dir().is_dir() else ()
        self.user_lora_dirs = tuple(Path(d) for d in lora_dirs)
        self.user_embedding_dirs = tuple(Path(d) for d in embedding_dirs)
        self.lora_dirs = (*self.user_lora_dirs, *extra)
        self.embedding_dirs = (*self.user_embedding_dirs, *extra)
        self.kinds = FileKinds()
        self.hashes = FileHashes()
        self._backup_device = backup_device
        # Keyed by the UNet module: bundles that differ only in their VAE share one patcher.
        self._models: weakref.WeakKeyDictionary[object, _ModelState] = weakref.WeakKeyDictionary()
        self._embeddings: tuple[tuple, tuple[Embedding, ...]] = ((), ())

    def list_loras(self) -> list[Path]:
        """LoRA files in the LoRA folders (``huihua list loras``)."""
        return list_files(self.lora_dirs, LORA_EXTENSIONS, "lora", self.kinds)

    def list_embeddings(self) -> list[Path]:
        """Embedding files in the embedding folders (``huihua list embeddings``)."""
        return list_files(self.embedding_dirs, EMBEDDING_EXTENSIONS, "embedding", self.kinds)

    def _state(self, engine: Model) -> _ModelState:
        state = self._models.get(engine.unet)
        if state is None:
            targets = build_targets(engine.spec, engine.unet, engine.text_encoders)
            state = _ModelState(targets, WeightPatcher.for_model(engine, self._backup_device))
            self._models[engine.unet] = state
        return state

    def lora(self, engine: Model, name: str) -> LoraPatchSet:
        """The LoRA called ``name``, read for ``engine``: PromptError if absent, CheckpointError if it does not fit."""
        if not self.lora_dirs:
            raise PromptError(f"<lora:{name}>: LoRA {name!r} not found (no LoRA folder given)")
        path = find_file(name, self.lora_dirs, LORA_EXTENSIONS, "LoRA",
                         accept=lambda p: self.kinds(p) in ("lora", "unknown"))
        state, key = self._state(engine), _file_key(path)
        if key in state.loras:
            state.loras.move_to_end(key)
        else:
            state.loras[key] = load_lora(path, state.targets, path.stem)
            while len(state.loras) > _CACHED_LORAS:
                state.loras.popitem(last=False)
        return state.loras[key]

    def embeddings(self) -> tuple[Embedding, ...]:
        """Every readable embedding in the embedding folders (re-read when the files change)."""
        paths = self.list_embeddings() if self.embedding_dirs else []
        key = tuple(_file_key(p) for p in paths)
        if key != self._embeddings[0]:
            loaded, errors = load_embeddings(paths)
            for error in errors:
                _LOG.warning("embedding skipped: %s", error)
            self._embeddings = (key, loaded)
        return self._embeddings[1]

    def lookups(self, engine: Model, extra: Sequence[Embedding] = ()) -> tuple[TowerEmbeddings, ...]:
        """One embedding lookup per text tower of ``engine`` (folder embeddings, then ``extra``)."""
        widths = [use.config.width for use in engine.spec.text_encoders]
        lookups, skipped = tower_lookups([*self.embeddings(), *extra], engine.tokenizer.encode, widths)
        if skipped:
            _LOG.info("embeddings that do not fit this %s model: %s", engine.spec.family, ", ".join(skipped))
        return lookups

    def embedding_hashes(self, names: Sequence[str]) -> str:
        """The ``TI hashes`` infotext field for the embeddings a prompt used (by name)."""
        by_name = {e.name: e for e in self.embeddings()}
        return hashes_field([(n, self.hashes.embedding_short_hash(by_name[n].path)) for n in names if n in by_name])

    @contextmanager
    def activate(self, engine: Model, calls: Sequence[ExtraNetworkCall]) -> Iterator[NetworkActivation]:
        """Apply the prompt's ``<lora:...>`` calls for one generation; restore the weights afterwards."""

        uses, hashes = [], []
        for call in calls:
            if call.kind not in LORA_KINDS:
                raise PromptError(f"<{call.kind}:{call.name}>: unknown extra network kind {call.kind!r}")
            weights = lora_weights(call)
            patches = self.lora(engine, call.name)
            uses.append(LoraUse(patches, weights.te, weights.unet, weights.dyn))
            hashes.append((call.name, self.hashes.lora_short_hash(patches.path, patches.metadata)))
        bundled = [e for use in uses for e in use.patches.embeddings]
        lookups = self.lookups(engine, bundled) if (self.embedding_dirs or bundled) else None
        activation = NetworkActivation(lookups, {"Lora hashes": hashes_field(hashes)} if hashes else {}, dict(hashes),
                                       embedding_hashes=self.embedding_hashes)
        if not uses:
            yield activation
            return
        patcher = self._state(engine).patcher
        patcher.apply(uses)
        try:
            yield activation
        finally:
            patcher.restore()
