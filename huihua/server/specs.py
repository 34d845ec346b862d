"""Requests → job specs: checked before anything is queued, so a bad request queues nothing.

A spec is plain JSON (it is stored in the queue database): ``{"params": GenerationParams fields,
"images": {"init_images": [upload names], "mask": name | None}, "controlnet": [units],
"checkpoint": name | None, "upscaler": name, "scale": x}``. Images arrive as base64 (raw or data
URLs), are decoded with a pixel limit before Pillow reads the pixels, and are stored re-encoded as
PNG under a name the server makes up.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import uuid
from pathlib import Path
from typing import Literal, get_type_hints

from PIL import Image, UnidentifiedImageError

from huihua.atomic import save_atomic
from huihua.errors import HuihuaError, ParameterError
from huihua.pipelines.params import GenerationParams, validate
from huihua.server.config import Limits
from huihua.server.store import JsonDict, JsonValue

KINDS = ("txt2img", "img2img", "inpaint", "upscale")
Kind = Literal["txt2img", "img2img", "inpaint", "upscale"]
UPLOAD_NAME = re.compile(r"^[0-9a-f]{32}\.png$")
_DATA_URL = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)


class RequestError(HuihuaError):
    """A request the server refuses: ``status`` is the HTTP code (422 bad field, 413 over a limit)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def decode_image(data: str, field: str, limits: Limits) -> Image.Image:
    """A base64 picture (raw or data URL) → an RGB/RGBA/L image, refusing bombs and oversized pictures."""
    if not isinstance(data, str) or not data:
        raise RequestError(f"{field}: expected a base64 picture")
    raw_text = _DATA_URL.sub("", data.strip(), count=1)
    try:
        raw = base64.b64decode(raw_text, validate=False)
    except (binascii.Error, ValueError):
        raise RequestError(f"{field}: not valid base64") from None
    if len(raw) > limits.max_body_bytes:
        raise RequestError(f"{field}: the picture is over {limits.max_body_bytes} bytes", 413)
    try:
        with Image.open(io.BytesIO(raw)) as im:
            w, h = im.size  # read from the header, before any pixel is decoded
            if w * h > limits.max_image_pixels:
                raise RequestError(f"{field}: {w}x{h} is over the limit of {limits.max_image_pixels} pixels", 413)
            im.load()
            mode = im.mode if im.mode in ("RGB", "RGBA", "L") else "RGBA" if "A" in im.getbands() else "RGB"
            return im.convert(mode)
    except Image.DecompressionBombError:
        raise RequestError(f"{field}: refused as a decompression bomb", 413) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise RequestError(f"{field}: not a picture Pillow can read") from None


def store_upload(image: Image.Image, uploads: Path) -> str:
    """Save a decoded picture as PNG under a fresh server-made name; returns the name."""
    uploads.mkdir(parents=True, exist_ok=True)
    name = f"{uuid.uuid4().hex}.png"
    save_atomic(uploads / name, False, lambda f: image.save(f, format="PNG"))
    return name


def upload_path(name: str, uploads: Path) -> Path:
    """The file of an upload name the server made (never a client's path)."""
    if not isinstance(name, str) or not UPLOAD_NAME.match(name):
        raise RequestError(f"upload {str(name)[:80]!r}: not an upload name this server gave out", 404)
    path = uploads / name
    if path.is_symlink() or not path.is_file():
        raise RequestError(f"upload {name}: no such upload", 404)
    return path


def clean_params(raw: object, limits: Limits, field: str = "params") -> JsonDict:
    """GenerationParams fields from a request: known names only (unknown keys and nulls are ignored, as A1111
    clients send their own), types and ranges checked, limits enforced."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RequestError(f"{field}: expected an object")
    hints = get_type_hints(GenerationParams)
    aliases = {"sampler": "sampler_name", "schedule": "scheduler"}
    chosen: dict[str, object] = {}
    for key, value in raw.items():
        key = aliases.get(key, key)
        if key in hints and value is not None:
            chosen[key] = value
    if "sampler_name" not in chosen and isinstance(raw.get("sampler_index"), str):  # A1111's old name
        chosen["sampler_name"] = raw["sampler_index"]
    for key, value in list(chosen.items()):  # 5 and 5.0 are one CFG scale: keep the field's own type
        if hints[key] in (float, float | None) and isinstance(value, int) and not isinstance(value, bool):
            chosen[key] = float(value)
    scheduler = chosen.get("scheduler")
    if isinstance(scheduler, str) and scheduler.lower() == "automatic":
        chosen["scheduler"] = "Automatic"
    for key in ("width", "height", "steps", "batch_size", "n_iter", "seed", "subseed"):  # clients send 512.0
        value = chosen.get(key)
        if isinstance(value, float) and value.is_integer():
            chosen[key] = int(value)
    try:
        params = GenerationParams.from_kwargs(**chosen)
        validate(params)
    except (ParameterError, TypeError) as e:
        raise RequestError(f"{field}.{e}" if isinstance(e, ParameterError) else f"{field}: {e}") from None
    for name in ("prompt", "negative_prompt"):
        if len(getattr(params, name)) > limits.max_prompt_chars:
            raise RequestError(f"{field}.{name}: longer than {limits.max_prompt_chars} characters", 413)
    work = params.batch_size * params.n_iter * params.steps
    if work > limits.max_work:
        raise RequestError(f"{field}: batch_size × n_iter × steps = {work} is over the limit of {limits.max_work}",
                           413)
    out: JsonDict = {}
    for k, v in params.to_dict().items():
        if k in chosen:
            out[k] = v
    return out


def image_list(raw: object, field: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise RequestError(f"{field}: expected a list of base64 pictures or upload names")
    return list(raw)


def resolve_images(values: list[str], field: str, limits: Limits, uploads: Path) -> list[str]:
    """Upload names as given, or base64 pictures stored as new uploads."""
    names: list[JsonValue] = []
    for i, value in enumerate(values):
        if UPLOAD_NAME.match(value):
            upload_path(value, uploads)
            names.append(value)
        else:
            names.append(store_upload(decode_image(value, f"{field}[{i}]", limits), uploads))
    return [str(n) for n in names]


def native_spec(body: object, limits: Limits, uploads: Path) -> tuple[Kind, JsonDict, int, str, str | None]:
    """(kind, spec, priority, client_id, idempotency_key) of a ``POST /api/v1/jobs`` body."""
    if not isinstance(body, dict):
        raise RequestError("body: expected a JSON object")
    kind = body.get("kind", "txt2img")
    if kind not in KINDS:
        raise RequestError(f"kind: one of {', '.join(KINDS)}, got {str(kind)[:40]!r}")
    priority = body.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or not -100 <= priority <= 100:
        raise RequestError("priority: an integer from -100 to 100")
    client_id = body.get("client_id") or ""
    key = body.get("idempotency_key")
    if not isinstance(client_id, str) or len(client_id) > 200:
        raise RequestError("client_id: a string of at most 200 characters")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 200):
        raise RequestError("idempotency_key: a string of 1 to 200 characters")
    images = body.get("images") or {}
    if not isinstance(images, dict):
        raise RequestError("images: expected an object with init_images and mask")
    init = resolve_images(image_list(images.get("init_images"), "images.init_images"), "images.init_images",
                          limits, uploads)
    mask_value = images.get("mask")
    mask = resolve_images([mask_value], "images.mask", limits, uploads)[0] if isinstance(mask_value, str) else None
    spec: JsonDict = {"images": {"init_images": list[JsonValue](init), "mask": mask}}
    if kind == "upscale":
        if len(init) != 1:
            raise RequestError("images.init_images: upscale takes exactly one picture")
        spec["upscaler"] = str(body.get("upscaler") or "Lanczos")
        scale = body.get("scale", 2)
        if not isinstance(scale, (int, float)) or not 1 <= scale <= 8:
            raise RequestError("scale: a number from 1 to 8")
        spec["scale"] = float(scale)
        spec["params"] = {}
    else:
        spec["params"] = clean_params(body.get("params"), limits)
        if kind in ("img2img", "inpaint") and not init:
            raise RequestError(f"images.init_images: {kind} needs a picture")
        if kind == "inpaint" and mask is None:
            raise RequestError("images.mask: inpaint needs a mask (white = repaint)")
        if kind == "txt2img" and (init or mask):
            raise RequestError("images: txt2img takes no pictures (use kind img2img or inpaint)")
    checkpoint = body.get("checkpoint")
    if checkpoint is not None:
        if not isinstance(checkpoint, str):
            raise RequestError("checkpoint: a model name")
        spec["checkpoint"] = checkpoint
    return kind, spec, priority, client_id, key
