"""Textual-inversion embeddings: reading the files and finding their names in prompt tokens.

Files (read with ``weights_only`` pickles or safetensors only):

* A1111 ``.pt``: ``{"string_to_param": {"*": (N, D)}, ...}``;
* ``.safetensors``: ``emb_params`` (N, D), or SDXL's ``clip_l`` (N, 768) and ``clip_g`` (N, 1280);
* diffusers ``.bin``: ``{"<token>": (D,) or (N, D)}``.

An embedding is used by writing its file name (without extension) in a prompt. Vectors are stored
per text tower: ``"clip_l"``/``"clip_g"`` for two-tower (SDXL) files, ``"*"`` for single-tower ones.
A tower takes the vectors whose width equals its own; an embedding that fits not every tower of the
model is skipped (A1111 does the same) and its name stays plain text: :class:`TowerEmbeddings`
reports it in ``skipped``. The vectors are placed into the token embeddings by the text encoder
itself (``CLIPTextEncoder.forward(embedding_overrides=...)``, driven by ``huihua.prompts``).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from huihua.checkpoints.io import open_source, sniff_format
from huihua.errors import CheckpointError, UnsafePickleError
from huihua.prompts.conditioning import EmbeddingMatch

SINGLE = "*"  # key of a single-tower embedding's vectors
SDXL_KEYS = ("clip_l", "clip_g")  # tower 0 and tower 1 of SDXL


@dataclass(frozen=True, eq=False)
class Embedding:
    """A textual-inversion embedding: its prompt name and vectors (N, D) per text tower."""

    name: str
    vectors: Mapping[str, Tensor]
    path: str = ""

    @property
    def vector_count(self) -> int:
        """N: how many token slots the embedding fills."""
        return int(next(iter(self.vectors.values())).shape[0])

    def for_tower(self, tower: int, towers: int, width: int) -> Tensor | None:
        """Vectors (N, width) for text tower ``tower`` of ``towers``, or None when none fit."""
        if towers == 2 and all(k in self.vectors for k in SDXL_KEYS):
            found = self.vectors[SDXL_KEYS[tower]]
            return found if found.shape[-1] == width else None
        candidates = [v for v in self.vectors.values() if v.shape[-1] == width]
        if towers == 1 and len(candidates) == 1:
            return candidates[0]
        return None


def _as_vectors(value: object, where: str) -> Tensor:
    if not isinstance(value, Tensor) or value.ndim not in (1, 2) or not value.is_floating_point():
        raise CheckpointError(f"{where}: embedding vectors must be a float tensor (N, D)")
    return (value if value.ndim == 2 else value.unsqueeze(0)).detach().to(torch.float32)


def embedding_from_tensors(name: str, tensors: Mapping[str, object], where: str, path: str = "") -> Embedding:
    """Recognise an embedding among a file's top-level entries (see the module docstring)."""
    params = tensors.get("string_to_param")
    if isinstance(params, Mapping):
        if len(params) != 1:
            raise CheckpointError(f"{where}: string_to_param holds {len(params)} entries, expected 1")
        return Embedding(name, {SINGLE: _as_vectors(next(iter(params.values())), where)}, path)
    flat = {k[len("string_to_param."):]: v for k, v in tensors.items() if k.startswith("string_to_param.")}
    if len(flat) == 1:
        return Embedding(name, {SINGLE: _as_vectors(next(iter(flat.values())), where)}, path)
    if "emb_params" in tensors:
        return Embedding(name, {SINGLE: _as_vectors(tensors["emb_params"], where)}, path)
    if any(k in tensors for k in SDXL_KEYS):
        vectors = {k: _as_vectors(tensors[k], where) for k in SDXL_KEYS if k in tensors}
        counts = {v.shape[0] for v in vectors.values()}
        if len(counts) != 1:
            raise CheckpointError(f"{where}: clip_l and clip_g hold different vector counts {sorted(counts)}")
        return Embedding(name, vectors, path)
    found = [v for v in tensors.values() if isinstance(v, Tensor)]
    if len(found) == 1:  # diffusers' learned_embeds.bin: {"<token>": vector}
        return Embedding(name, {SINGLE: _as_vectors(found[0], where)}, path)
    raise CheckpointError(
        f"{where}: not a textual-inversion embedding (no string_to_param, emb_params or clip_l/clip_g)"
    )


def _load_pickle(path: Path) -> Mapping[str, object]:
    """A ``.pt``/``.bin`` read with ``torch.load(weights_only=True)``; anything else is refused."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = (str(e).strip().splitlines() or ["unsupported content"])[0]
        raise UnsafePickleError(f"{path}: refused to unpickle objects beyond plain tensors ({first[:160]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated embedding file ({str(e)[:160]})") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: not an embedding (found {type(obj).__name__})")
    return obj


def load_embedding(path: str | Path, name: str | None = None) -> Embedding:
    """Read one embedding file; its prompt name is the file name without extension."""
    p = Path(path)
    name = name or p.stem
    if sniff_format(p) == "safetensors":
        source = open_source(p)
        try:
            tensors: Mapping[str, object] = {k: source.get(k) for k in list(source.info())}
        finally:
            source.close()
    else:
        tensors = _load_pickle(p)
    return embedding_from_tensors(name, tensors, str(p), str(p))


def load_embeddings(paths: Sequence[Path]) -> tuple[tuple[Embedding, ...], tuple[str, ...]]:
    """Read many embedding files: the ones that loaded, and one error line per file that did not.

    A name seen twice keeps its first file (folders are searched in the order given).
    """
    loaded: dict[str, Embedding] = {}
    errors: list[str] = []
    for path in paths:
        try:
            emb = load_embedding(path)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        loaded.setdefault(emb.name, emb)
    return tuple(loaded.values()), tuple(errors)


# ---------------------------------------------------------------------------------------------
# finding names in token streams (the ``EmbeddingLookup`` of ``huihua.prompts.conditioning``)


class TowerEmbeddings:
    """The embeddings usable on one text tower, found by the token ids of their names."""

    def __init__(
        self,
        embeddings: Sequence[Embedding],
        encode: Callable[[str], list[int]],
        tower: int,
        towers: int,
        width: int,
    ) -> None:
        self._by_first: dict[int, list[tuple[tuple[int, ...], EmbeddingMatch]]] = {}
        skipped = []
        for emb in embeddings:
            vectors = emb.for_tower(tower, towers, width)
            ids = tuple(encode(emb.name))
            if vectors is None or not ids:
                skipped.append(emb.name)
                continue
            match = EmbeddingMatch(emb.name, vectors, len(ids))
            self._by_first.setdefault(ids[0], []).append((ids, match))
        for entries in self._by_first.values():
            entries.sort(key=lambda e: len(e[0]), reverse=True)
        self.skipped: tuple[str, ...] = tuple(skipped)

    def find_at(self, tokens: Sequence[int], position: int) -> EmbeddingMatch | None:
        """The longest embedding whose name's token ids start at ``tokens[position]``, or None."""
        for ids, match in self._by_first.get(tokens[position], ()):
            if tuple(tokens[position : position + len(ids)]) == ids:
                return match
        return None


def tower_lookups(
    embeddings: Sequence[Embedding], encode: Callable[[str], list[int]], widths: Sequence[int]
) -> tuple[tuple[TowerEmbeddings, ...], tuple[str, ...]]:
    """One lookup per text tower (``widths``: each tower's token width), and the names skipped.

    An embedding that does not fit every tower of the model is left out of all of them (so every
    tower cuts a prompt into the same windows); its name then stays plain prompt text.
    """
    towers = len(widths)
    usable = [e for e in embeddings if all(e.for_tower(i, towers, w) is not None for i, w in enumerate(widths))]
    skipped = tuple(e.name for e in embeddings if not any(e is u for u in usable))
    return tuple(TowerEmbeddings(usable, encode, i, towers, w) for i, w in enumerate(widths)), skipped
