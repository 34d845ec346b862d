"""The files the server may load, found by name in the configured folders (never a path from a request).

Checkpoints: the embedded model and the ``.safetensors``/``.ckpt`` files and diffusers folders under
``--models-dir``; upscalers: ESRGAN-family files there; LoRAs, embeddings and ControlNets in their
folders and the bundled adapters. Names are a file's stem; A1111 titles ("name [hash]") and file
names are accepted too.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from huihua import api
from huihua.adapters.lora_networks import FolderNetworks
from huihua.adapters.registry import FileKinds, list_files
from huihua.assets import DEFAULT_MODEL_ALIAS, default_model_path
from huihua.checkpoints.io import short_hash
from huihua.server.config import ServerConfig
from huihua.server.specs import RequestError

CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt")
UPSCALER_EXTENSIONS = (".pth", ".pt", ".safetensors")
_TITLE_HASH = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]\s*$")


@dataclass(frozen=True)
class ModelEntry:
    """One file the server can load."""

    name: str
    path: Path
    short_hash: str
    sha256: str

    @property
    def title(self) -> str:
        return f"{self.name} [{self.short_hash}]" if self.short_hash else self.name


class Catalog:
    """What is in the model folders, with hashes cached by (path, size, mtime)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.kinds = FileKinds()
        self._hashes: dict[tuple[str, int, int], tuple[str, str]] = {}

    def _entry(self, name: str, path: Path) -> ModelEntry:
        if path.is_dir():
            return ModelEntry(name, path, "", "")
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._hashes:
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    digest.update(chunk)
            self._hashes[key] = (short_hash(path), digest.hexdigest())
        short, full = self._hashes[key]
        return ModelEntry(name, path, short, full)

    def checkpoints(self) -> list[ModelEntry]:
        entries = [self._entry(DEFAULT_MODEL_ALIAS, default_model_path())]
        for folder in self.config.models_dirs:
            if not folder.is_dir():
                continue
            for path in list_files([folder], CHECKPOINT_EXTENSIONS, "checkpoint", self.kinds):
                entries.append(self._entry(path.stem, path))
            for index in sorted(folder.glob("*/model_index.json")):
                entries.append(self._entry(index.parent.name, index.parent))
        return entries

    def upscalers(self) -> list[ModelEntry]:
        found = []
        for folder in self.config.models_dirs:
            if folder.is_dir():
                found += [self._entry(p.stem, p) for p in list_files([folder], UPSCALER_EXTENSIONS, "unknown",
                                                                       self.kinds)]
        return found

    def networks(self) -> FolderNetworks:
        return FolderNetworks(self.config.lora_dirs, self.config.embedding_dirs)

    def controlnets(self) -> list[Path]:
        return api.list_controlnets(self.config.controlnet_dirs, self.kinds)

    def find_checkpoint(self, name: str) -> ModelEntry:
        """The checkpoint a request names; RequestError (404) listing none of the paths when unknown."""
        return _find(name, self.checkpoints(), "checkpoint")

    def find_upscaler(self, name: str) -> ModelEntry:
        return _find(name, self.upscalers(), "upscaler")


def _find(name: str, entries: list[ModelEntry], what: str) -> ModelEntry:
    wanted = _TITLE_HASH.sub("", str(name)).strip()
    for entry in entries:
        if wanted in (entry.name, entry.path.name) or name == entry.title:
            return entry
    lowered = wanted.lower()
    for entry in entries:
        if lowered in (entry.name.lower(), entry.path.name.lower()):
            return entry
    known = ", ".join(e.name for e in entries) or "none"
    raise RequestError(f"{what} {str(name)[:100]!r}: not found (known: {known})", 404)
