"""Finding LoRA and embedding files by name in folders, and the hashes A1111 writes into infotexts.

A name is a file's stem (``<lora:detail_v2:0.8>`` finds ``loras/detail_v2.safetensors``), or its
path below a folder without extension (``style/ink``); case-sensitive matches win over
case-insensitive ones, then the order of the folders given, then the sorted path.

Hashes, as AUTOMATIC1111 computes them (``extensions-builtin/Lora/network.py``,
``modules/hashes.py``, ``modules/textual_inversion/textual_inversion.py``):

* ``Lora hashes``: the first 12 hex digits of the LoRA's hash, which is the ``sshs_model_hash``
  metadata field when the file has one, else for ``.safetensors`` the "addnet" hash of kohya-ss
  (sha256 of the bytes after the 8-byte length and the JSON header: the tensor data only, so
  editing metadata does not change it), and for other files the sha256 of the whole file.
* ``TI hashes``: the first 12 hex digits of the sha256 of the whole embedding file.

Both fields read ``name: hash, name: hash`` (A1111 drops ``:`` and ``,`` from names there).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from huihua.checkpoints.detect import FileKind, file_kind
from huihua.checkpoints.io import open_source, sniff_format
from huihua.errors import CheckpointError, ParameterError, PromptError

LORA_EXTENSIONS = (".safetensors", ".pt", ".ckpt", ".bin")
EMBEDDING_EXTENSIONS = (".safetensors", ".pt", ".bin")
SHORT_HASH_LENGTH = 12
_CHUNK = 1 << 22


def _folders(dirs: Sequence[str | Path]) -> list[Path]:
    out = []
    for d in dirs:
        p = Path(d).expanduser()
        if not p.is_dir():
            raise ParameterError(f"{p}: not a folder")
        out.append(p)
    return out


def _listed(folder: Path, exts: Sequence[str]) -> list[Path]:
    wanted = {e.lower() for e in exts}
    found = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in wanted and p.is_file():
            found.append(p)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


class FileKinds:
    """What each weights file holds (LoRA, embedding, ControlNet, ...), read from its tensor names once.

    Re-read when a file's size or modification time changes; a file that cannot be read is "unknown".
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int, int], FileKind] = {}

    def __call__(self, path: Path) -> FileKind:
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        if key not in self._seen:
            try:
                source = open_source(path)
                try:
                    kind = file_kind(source.info())
                finally:
                    source.close()
            except (CheckpointError, OSError, ValueError):
                kind = "unknown"
            self._seen[key] = kind
        return self._seen[key]


def list_files(dirs: Sequence[str | Path], exts: Sequence[str], kind: FileKind | None = None,
               kinds: FileKinds | None = None) -> list[Path]:
    """Every file with one of ``exts`` under ``dirs`` (subfolders included, hidden ones skipped).

    ``kind``: only files that hold that kind of weights (a LoRA folder may also hold a ControlNet).
    """
    found = [p for folder in _folders(dirs) for p in _listed(folder, exts)]
    if kind is None:
        return found
    judge = kinds or FileKinds()
    return [p for p in found if judge(p) in (kind, "unknown")]


def _names(path: Path, folder: Path) -> tuple[str, str]:
    """(stem, relative path without extension) of a listed file."""
    return path.stem, path.relative_to(folder).with_suffix("").as_posix()


def find_file(name: str, dirs: Sequence[str | Path], exts: Sequence[str], kind: str = "LoRA",
              accept: Callable[[Path], bool] | None = None) -> Path:
    """The file called ``name`` in ``dirs`` (``accept``: only files it approves of); PromptError when absent."""
    wanted = name.replace("\\", "/")
    if Path(wanted).suffix.lower() in {e.lower() for e in exts}:
        wanted = str(Path(wanted).with_suffix("").as_posix())
    listed = [(p, _names(p, folder)) for folder in _folders(dirs) for p in _listed(folder, exts)
              if accept is None or accept(p)]
    for p, names in listed:
        if wanted in names:
            return p
    lowered = wanted.lower()
    for p, names in listed:
        if lowered in (n.lower() for n in names):
            return p
    where = ", ".join(str(d) for d in dirs) or "no folders"
    raise PromptError(f"{kind} {name!r} not found (looked in {where})")


# ---------------------------------------------------------------------------------------------
# hashes


def _sha256(path: Path, offset: int = 0) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(offset)
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _safetensors_data_offset(path: Path) -> int:
    with path.open("rb") as f:
        head = f.read(8)
    if len(head) != 8:
        raise CheckpointError(f"{path}: truncated safetensors file")
    return 8 + struct.unpack("<Q", head)[0]


def _is_safetensors(path: Path) -> bool:
    return sniff_format(path) == "safetensors"


class FileHashes:
    """sha256 digests of files, each computed once per (path, mtime, size) within this object."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, int, int], str] = {}

    def _cached(self, kind: str, path: Path) -> str:
        try:
            st = path.stat()
        except OSError:
            raise CheckpointError(f"{path}: cannot be read") from None
        key = (kind, str(path.resolve()), st.st_mtime_ns, st.st_size)
        if key not in self._cache:
            offset = _safetensors_data_offset(path) if kind == "addnet" else 0
            self._cache[key] = _sha256(path, offset)
        return self._cache[key]

    def sha256(self, path: str | Path) -> str:
        """sha256 of the whole file."""
        return self._cached("file", Path(path))

    def addnet_sha256(self, path: str | Path) -> str:
        """kohya-ss "addnet" hash of a safetensors file: sha256 of its tensor data (after the header)."""
        return self._cached("addnet", Path(path))

    def lora_hash(self, path: str | Path, metadata: Mapping[str, str] | None = None) -> str:
        """A1111's full LoRA hash: ``sshs_model_hash`` metadata, else addnet (safetensors) or file sha256."""
        p = Path(path)
        if metadata and metadata.get("sshs_model_hash"):
            return metadata["sshs_model_hash"]
        return self.addnet_sha256(p) if _is_safetensors(p) else self.sha256(p)

    def lora_short_hash(self, path: str | Path, metadata: Mapping[str, str] | None = None) -> str:
        """What ``Lora hashes`` shows: the first 12 hex digits of :meth:`lora_hash`."""
        return self.lora_hash(path, metadata)[:SHORT_HASH_LENGTH]

    def embedding_short_hash(self, path: str | Path) -> str:
        """What ``TI hashes`` shows: the first 12 hex digits of the file's sha256."""
        return self.sha256(path)[:SHORT_HASH_LENGTH]


def hashes_field(items: Sequence[tuple[str, str]]) -> str:
    """``name: hash, name: hash`` as A1111 writes ``Lora hashes`` / ``TI hashes`` (first of each name)."""
    seen: dict[str, str] = {}
    for name, digest in items:
        clean = name.replace(":", "").replace(",", "")
        if digest and clean not in seen:
            seen[clean] = digest
    return ", ".join(f"{n}: {h}" for n, h in seen.items())
