"""Reading TAESD files (one combined file, or separate encoder and decoder files) into the network."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from huihua.checkpoints.io import open_source
from huihua.nn.taesd import TAESD, split_roles, taesd_from_state_dict


def load_taesd(*paths: str | Path) -> TAESD:
    """Load TAESD from one combined file or separate encoder/decoder files (.safetensors or .pth)."""
    merged: dict[str, Tensor] = {}
    for path in paths:
        source = open_source(path)
        try:
            sd = {k: source.get(k).float() for k in source.info()}
        finally:
            source.close()
        for role, part in split_roles(sd, str(path)).items():
            merged.update({f"{role}.{k}": v for k, v in part.items()})
    return taesd_from_state_dict(merged, name=", ".join(str(p) for p in paths))
