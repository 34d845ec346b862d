"""Choosing the device and dtype (asked for explicitly, never probed at import)."""

from __future__ import annotations

import torch

from huihua.errors import ParameterError

_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The requested device, or CUDA when available, else MPS, else CPU."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise ParameterError(f"device: unknown device {device!r}") from None
    missing = _unavailable(chosen)
    if missing:
        raise ParameterError(f"device: {device!r} is not available here ({missing}; available: "
                             f"{', '.join(available_devices())})")
    return chosen


def available_devices() -> list[str]:
    """The devices this machine can run on, e.g. ``["cpu", "cuda:0"]``."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def _unavailable(device: torch.device) -> str:
    """Why ``device`` cannot be used ("" when it can)."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "this PyTorch sees no CUDA GPU" + ("" if torch.version.cuda else ": it is a CPU-only build")
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"only {torch.cuda.device_count()} CUDA device(s)"
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                     and torch.backends.mps.is_available()):
        return "Apple's MPS backend is not available"
    if device.type not in ("cpu", "cuda", "mps"):
        return f"huihua does not run on {device.type!r}"
    return ""


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The requested dtype, or fp16 on accelerators and fp32 on the CPU."""
    if dtype is None or dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ParameterError(f"dtype: unknown dtype {dtype!r} (use one of fp32, fp16, bf16)") from None
