"""Reading model files safely: the format is decided by the bytes, pickles never run code.

A file becomes a :class:`TensorSource`: key names, shapes and dtypes are available without reading
tensor data (so detection costs no memory), and tensors are read one at a time on request (so
loading streams into modules instead of materialising a second copy of the model).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch
from safetensors import SafetensorError, safe_open

from huihua.errors import CheckpointError, UnsafePickleError

FileFormat = Literal["safetensors", "zip_pickle", "legacy_pickle"]

_ZIP_MAGIC = b"PK\x03\x04"
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """Shape and dtype of one stored tensor."""

    shape: tuple[int, ...]
    dtype: torch.dtype


class TensorSource(Protocol):
    """A read-only, lazily read collection of named tensors."""

    name: str

    def info(self) -> Mapping[str, TensorInfo]:
        """Every key with its shape and dtype, read without touching tensor data."""
        ...

    def get(self, key: str) -> torch.Tensor:
        """Read one tensor (on the CPU, in its stored dtype)."""
        ...

    def metadata(self) -> Mapping[str, str]:
        """String metadata stored with the tensors (safetensors header ``__metadata__``)."""
        ...

    def close(self) -> None:
        """Release file handles and any tensors still held."""
        ...


_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


def sniff_format(path: Path) -> FileFormat:
    """Decide a model file's format from its first bytes; raise CheckpointError if it is none we read."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a model file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    if head.startswith(_ZIP_MAGIC):
        return "zip_pickle"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= min(_SAFETENSORS_MAX_HEADER, size - 8) and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80" and len(head) >= 2 and 2 <= head[1] <= 5:
        return "legacy_pickle"
    raise CheckpointError(f"{path}: not a model file (neither safetensors nor a PyTorch checkpoint)")


class SafetensorsSource:
    """A ``.safetensors`` file: header parsed up front, tensors read one by one through safetensors."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self._path = path
        header = _read_safetensors_header(path)
        self._meta = {k: str(v) for k, v in header.pop("__metadata__", {}).items()}
        self._info: dict[str, TensorInfo] = {}
        for key, entry in header.items():
            dtype = _ST_DTYPES.get(entry.get("dtype", ""))
            if dtype is None:
                raise CheckpointError(f"{path}: tensor {key!r} has unsupported dtype {entry.get('dtype')!r}")
            self._info[key] = TensorInfo(tuple(int(s) for s in entry["shape"]), dtype)
        try:
            self._handle = safe_open(str(path), framework="pt", device="cpu")
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors file ({e})") from None

    def info(self) -> Mapping[str, TensorInfo]:
        return self._info

    def get(self, key: str) -> torch.Tensor:
        if key not in self._info:
            raise CheckpointError(f"{self.name}: missing tensor {key!r}")
        return self._handle.get_tensor(key)

    def metadata(self) -> Mapping[str, str]:
        return self._meta

    def close(self) -> None:
        self._handle = None  # type: ignore[assignment]


def _read_safetensors_header(path: Path) -> dict:
    """Parse and validate a safetensors header: offsets must tile the data section of this file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        raw = f.read(n)
    if len(raw) != n:
        raise CheckpointError(f"{path}: truncated safetensors file (header cut short)")
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: corrupt safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors file (header is not a table)")
    data_size = size - 8 - n
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            start, stop = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: corrupt safetensors file (bad entry for {key!r})") from None
        end = max(end, stop)
        if not 0 <= start <= stop:
            raise CheckpointError(f"{path}: corrupt safetensors file (bad offsets for {key!r})")
    if end > data_size:
        raise CheckpointError(
            f"{path}: truncated safetensors file ({data_size} data bytes, header needs {end})"
        )
    return header


class DictSource:
    """Tensors already in memory (a pickle checkpoint or a converted diffusers folder).

    ``get`` hands each tensor over and forgets it, so memory is released as modules fill up.
    """

    def __init__(self, name: str, tensors: dict[str, torch.Tensor], metadata: Mapping[str, str] | None = None):
        self.name = name
        self._tensors = tensors
        self._info = {k: TensorInfo(tuple(v.shape), v.dtype) for k, v in tensors.items()}
        self._meta = dict(metadata or {})

    def info(self) -> Mapping[str, TensorInfo]:
        return self._info

    def get(self, key: str) -> torch.Tensor:
        if key not in self._tensors:
            raise CheckpointError(f"{self.name}: missing tensor {key!r}")
        return self._tensors.pop(key)

    def metadata(self) -> Mapping[str, str]:
        return self._meta

    def close(self) -> None:
        self._tensors.clear()


def load_pickle_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``.ckpt``/``.pt``/``.bin`` with ``torch.load(weights_only=True)`` only; refuse anything else."""
    fmt = sniff_format(path)
    try:
        if path.suffix.lower() == ".safetensors":
            # torch.load dispatches on this extension; the bytes said pickle, so hand it a file object.
            with path.open("rb") as f:
                obj = torch.load(f, map_location="cpu", weights_only=True)
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=fmt == "zip_pickle")
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise UnsafePickleError(
            f"{path}: refused to unpickle: it contains objects beyond plain tensors ({first[:160]}); "
            "convert it to .safetensors with a tool you trust"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated PyTorch checkpoint ({str(e)[:160]})") from None
    return _flatten_state_dict(obj, path)


def _flatten_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}`` (Lightning) and ``{"params_ema"/"params": ...}`` (BasicSR) containers."""
    for key in ("state_dict", "params_ema", "params"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: not a state dict (found {type(obj).__name__})")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: contains no tensors")
    return tensors


def open_source(path: str | Path) -> TensorSource:
    """Open any single model file as a lazily read tensor source."""
    p = Path(path)
    fmt = sniff_format(p)
    if fmt == "safetensors":
        return SafetensorsSource(p)
    return DictSource(str(p), load_pickle_state_dict(p))


def iter_prefixed(keys: Mapping[str, object] | Iterator[str], prefix: str) -> Iterator[str]:
    """Keys that start with ``prefix``, with the prefix removed."""
    for k in keys:
        if k.startswith(prefix):
            yield k[len(prefix):]


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Full sha256 hex digest of a file (A1111's "Model hash" is its first 10 characters)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def short_hash(path: str | Path) -> str:
    """AUTOMATIC1111's short model hash: the first 10 hex digits of the file's sha256."""
    return sha256_file(path)[:10]
