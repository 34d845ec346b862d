"""Reading model files: format by bytes, safe pickles only, clear one-line errors naming the file."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from huihua.checkpoints.io import load_pickle_state_dict, open_source, short_hash, sniff_format
from huihua.cli import main as cli_main
from huihua.errors import CheckpointError, UnsafePickleError


class _Evil:
    """Unpickling this would create a sentinel file (it must never run)."""

    def __init__(self, sentinel: str) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.sentinel}",))


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(3, 4, generator=g), "b.bias": torch.arange(5, dtype=torch.float16)}


def test_safetensors_round_trip_and_format_by_bytes(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"  # wrong extension on purpose: the bytes decide
    save_file(_tensors(), str(path), metadata={"k": "v"})
    assert sniff_format(path) == "safetensors"
    src = open_source(path)
    assert src.info()["a.weight"].shape == (3, 4)
    assert src.info()["b.bias"].dtype == torch.float16
    assert torch.equal(src.get("a.weight"), _tensors()["a.weight"])
    assert src.metadata() == {"k": "v"}


def test_pickle_checkpoint_with_state_dict_wrapper(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"  # a zip pickle, whatever its name says
    torch.save({"state_dict": _tensors(), "global_step": 7}, path)
    assert sniff_format(path) == "zip_pickle"
    sd = load_pickle_state_dict(path)
    assert set(sd) == {"a.weight", "b.bias"}
    assert torch.equal(sd["b.bias"], _tensors()["b.bias"])


def test_malicious_pickle_is_refused_and_code_does_not_run(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    for name, writer in {
        "evil_zip.ckpt": lambda p: torch.save({"state_dict": _Evil(str(sentinel))}, p),
        "evil_legacy.pt": lambda p: p.write_bytes(pickle.dumps({"x": _Evil(str(sentinel))}, protocol=2)),
    }.items():
        path = tmp_path / name
        writer(path)
        with pytest.raises(UnsafePickleError, match=name):
            load_pickle_state_dict(path)
    assert not sentinel.exists()


def test_truncated_safetensors(tmp_path: Path) -> None:
    good = tmp_path / "good.safetensors"
    save_file(_tensors(), str(good))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: truncated"):
        open_source(bad)


def test_not_a_checkpoint_and_missing(tmp_path: Path) -> None:
    txt = tmp_path / "notes.safetensors"
    txt.write_text("hello, I am not a model")
    with pytest.raises(CheckpointError, match="notes.safetensors: not a model file"):
        open_source(txt)
    with pytest.raises(CheckpointError, match="nothere.safetensors: no such file"):
        open_source(tmp_path / "nothere.safetensors")
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.ckpt"):
        open_source(empty)


def test_short_hash_is_a1111_sha256_prefix(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "m.safetensors"
    save_file(_tensors(), str(path))
    assert short_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()[:10]


@pytest.mark.parametrize("kind", ["missing", "text", "evil"])
def test_cli_errors_are_one_line_without_traceback(tmp_path: Path, kind: str, capsys) -> None:
    path = tmp_path / f"{kind}.ckpt"
    if kind == "text":
        path.write_text("nope")
    elif kind == "evil":
        torch.save(_Evil(str(tmp_path / "pwned")), path)
    code = cli_main(["inspect", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(path) in err
    assert not (tmp_path / "pwned").exists()
