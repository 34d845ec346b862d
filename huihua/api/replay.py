"""Painting a picture again from what it carries: its JSON replay record, else its A1111 infotext.

``read_replay(path)`` gives the parameters of the one batch that painted the image, the image's
index in that batch and the typed record (None for pictures that carry only A1111's text).
``model_mismatch`` says, in one line, when the record names another checkpoint than the one loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from huihua.errors import HuihuaError
from huihua.imagefile import read_infotext, read_json_params
from huihua.model import Model
from huihua.pipelines.infotext import params_from_infotext, replay_params
from huihua.pipelines.params import GenerationParams
from huihua.pipelines.types import Mode, ReplayRecord


@dataclass(frozen=True)
class Replay:
    """What a picture says about how it was painted."""

    params: GenerationParams  # the one batch that painted it
    index: int  # the image's index in that batch
    record: ReplayRecord | None  # None: the picture carries only A1111's text


def replay_from_record(record: ReplayRecord) -> Replay:
    """The batch parameters and index of a record's image."""
    params, index = replay_params(record)
    return Replay(params, index, record)


def read_replay(path: Path) -> Replay:
    """How the picture at ``path`` was painted (huihua's JSON chunk first, else A1111's text)."""
    if not path.is_file():
        raise HuihuaError(f"{path}: no such file")
    raw = read_json_params(path)
    if raw is not None and "params" in raw:
        return replay_from_record(ReplayRecord.from_json(raw))
    text = read_infotext(path)
    if not text:
        raise HuihuaError(f"{path}: carries no generation parameters")
    return Replay(params_from_infotext(text), 0, None)


def replay_missing(record: ReplayRecord | None, init_images: int, mask: bool, controlnet_units: int) -> str | None:
    """What a replay lacks to paint the picture again (None when nothing): a repainted picture needs its init
    picture (and mask), a ControlNet picture its units. Checked before the model is loaded."""
    if record is None:
        return None
    if record.mode is Mode.INPAINT and (not init_images or not mask):
        return ("it was inpainted: give its init picture and mask "
                "('huihua inpaint --from-png PICTURE -i INIT --mask MASK')")
    if record.mode is Mode.IMG2IMG and not init_images:
        return "it was painted by img2img: give its init picture ('huihua img2img --from-png PICTURE -i INIT')"
    if record.mode is Mode.TXT2IMG and (init_images or mask):
        return "it was painted from the prompt alone (txt2img): leave out -i/--mask"
    wanted = len(record.controlnets)
    if wanted != controlnet_units:
        names = ", ".join(f"{c.name} [{c.hash}]" for c in record.controlnets) or "none"
        return (f"it was painted with {wanted} ControlNet unit(s) ({names}), {controlnet_units} given: pass each "
                "again with --controlnet MODEL:HINT")
    return None


def model_mismatch(record: ReplayRecord | None, model: Model) -> str | None:
    """One line when the picture was painted by another checkpoint (None when it matches or is unknown)."""
    if record is None or not record.checkpoint.hash or record.checkpoint.hash == model.file_hash():
        return None
    want = record.checkpoint
    return (f"the picture was painted by {want.name} [{want.hash}], not {model.name} [{model.file_hash()}]; "
            "pixels will differ")
