"""Image files that carry their parameters: A1111's infotext in PNG text chunks or EXIF, and huihua's JSON chunk.

PNG files carry the infotext in a ``parameters`` text chunk and the replay record in a ``huihua``
chunk; JPEG and WebP carry the infotext in the EXIF UserComment (``UNICODE\\0`` + UTF-16-BE), as
A1111 stores it. Writing is atomic and never overwrites a file unless asked (``atomic.py``).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

from PIL import Image, PngImagePlugin

from huihua.atomic import save_atomic
from huihua.errors import HuihuaError

PNG_PARAMETERS_KEY = "parameters"
PNG_JSON_KEY = "huihua"

_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_UNICODE_PREFIX = b"UNICODE\x00"
_ASCII_PREFIX = b"ASCII\x00\x00\x00"


def exif_user_comment(text: str) -> bytes:
    """EXIF bytes (``Exif\\0\\0`` + big-endian TIFF) holding only UserComment = ``text`` (UNDEFINED type)."""
    payload = _UNICODE_PREFIX + text.encode("utf-16-be")
    ifd0 = struct.pack(">H", 1) + struct.pack(">HHII", _EXIF_IFD, 4, 1, 26) + struct.pack(">I", 0)
    exif_ifd = struct.pack(">H", 1) + struct.pack(">HHII", _USER_COMMENT, 7, len(payload), 44) + struct.pack(">I", 0)
    return b"Exif\x00\x00" + b"MM\x00\x2a" + struct.pack(">I", 8) + ifd0 + exif_ifd + payload


def decode_user_comment(data: bytes) -> str:
    """Text of an EXIF UserComment: UNICODE (UTF-16-BE) or ASCII prefix, else UTF-8 (errors ignored)."""
    if data.startswith(_UNICODE_PREFIX):
        body = data[len(_UNICODE_PREFIX):]
        try:
            return body.decode("utf-16-be")
        except UnicodeDecodeError:
            return body.decode("utf-16-le", errors="ignore")
    if data.startswith(_ASCII_PREFIX):
        return data[len(_ASCII_PREFIX):].decode("ascii", errors="ignore")
    return data.decode("utf-8", errors="ignore")


def write_png(path: str | os.PathLike[str], image: Image.Image, infotext: str,
              json_params: Mapping[str, object] | None = None, *, overwrite: bool = False) -> Path:
    """Save a PNG with the ``parameters`` chunk (tEXt, or iTXt for non-Latin-1) and a ``huihua`` JSON chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_PARAMETERS_KEY, infotext)
    if json_params is not None:
        info.add_text(PNG_JSON_KEY, json.dumps(dict(json_params), ensure_ascii=False))
    return save_atomic(path, overwrite, lambda f: image.save(f, format="PNG", pnginfo=info))


def write_image(path: str | os.PathLike[str], image: Image.Image, infotext: str,
                json_params: Mapping[str, object] | None = None, *, overwrite: bool = False,
                quality: int = 90) -> Path:
    """Save by extension: PNG via ``write_png``; JPEG/WebP with the infotext in EXIF UserComment."""
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        return write_png(path, image, infotext, json_params, overwrite=overwrite)
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
    if suffix not in formats:
        raise HuihuaError(f"{path}: unsupported image extension {suffix!r} (use .png, .jpg, .jpeg or .webp)")
    exif = exif_user_comment(infotext)
    if formats[suffix] == "JPEG" and len(exif) > 65533:
        raise HuihuaError(f"{path}: infotext too long for JPEG EXIF ({len(exif)} bytes); save as PNG")
    if formats[suffix] == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return save_atomic(path, overwrite,
                        lambda f: image.save(f, format=formats[suffix], quality=quality, exif=exif))


def _exif_comment(image: Image.Image) -> str | None:
    raw = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    elif isinstance(raw, tuple):
        raw = bytes(raw)
    text = decode_user_comment(raw)
    return text or None


def read_infotext(path: str | os.PathLike[str]) -> str | None:
    """The infotext of an image: PNG ``parameters`` text, else EXIF UserComment, else None."""
    with Image.open(path) as image:
        image.load()
        text = image.info.get(PNG_PARAMETERS_KEY)
        comment = _exif_comment(image) if "exif" in image.info else None
        if comment:
            return comment
        if isinstance(text, str):
            return text
        legacy = image.info.get("comment")  # GIF comments, as A1111 reads them
        if isinstance(legacy, bytes):
            legacy = legacy.decode("utf-8", errors="replace")
        return legacy or None


def read_json_params(path: str | os.PathLike[str]) -> dict[str, object] | None:
    """The ``huihua`` JSON chunk of a PNG written by ``write_png``, or None."""
    with Image.open(path) as image:
        image.load()
        raw = image.info.get(PNG_JSON_KEY)
    if not isinstance(raw, str):
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise HuihuaError(f"{path}: the {PNG_JSON_KEY!r} chunk is not valid JSON") from None
    return value if isinstance(value, dict) else None
