"""AUTOMATIC1111's "parameters" infotext: format it and parse it (``imagefile.py`` keeps it inside image files).

The text is the prompt, an optional ``Negative prompt:`` line, and one ``Key: value, Key: value``
line; values containing ``,``, ``:`` or a newline are JSON-quoted. ``format_infotext`` writes it
byte for byte as A1111's ``create_infotext``; ``parse`` reads it as A1111's
``parse_generation_parameters`` (defaults included); PNG files carry it in a ``parameters`` text
chunk, JPEG and WebP in the EXIF UserComment (``UNICODE\\0`` + UTF-16-BE), as A1111 stores it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping

from huihua.diffusion.names import SCHEDULES
from huihua.errors import PromptError
from huihua.prompts.parser import parse_prompt_attention

# A1111's fixed order for the keys it always considers; any other key follows, in the caller's
# order (A1111's ``extra_generation_params``: Hires ..., Lora hashes, TI hashes, ...), then the tail.
INFOTEXT_KEY_ORDER: tuple[str, ...] = (
    "Steps", "Sampler", "Schedule type", "CFG scale", "Image CFG scale", "Seed", "Face restoration",
    "Size", "Model hash", "Model", "FP8 weight", "Cache FP16 weight for LoRA", "VAE hash", "VAE",
    "Variation seed", "Variation seed strength", "Seed resize from", "Denoising strength",
    "Conditional mask weight", "Clip skip", "ENSD", "Token merging ratio", "Token merging ratio hr",
    "Init image hash", "RNG", "Tiling",
)
INFOTEXT_TAIL_KEYS: tuple[str, ...] = ("Version", "User")

_NEGATIVE_PREFIX = "Negative prompt:"
# One "Key: value" pair: the key starts with a word character and holds word characters, blanks,
# "-" and "/"; the value is a JSON-style quoted string or runs to the next comma.
_PARAM = re.compile(r"""\s* (\w[\w \-/]+) : \s* ( "(?:\\.|[^\\"])+" | [^,]* ) (?:,|$)""", re.VERBOSE)
_IMAGE_SIZE = re.compile(r"(\d+)x(\d+)$")

# Defaults A1111 fills in for keys an infotext leaves out, in A1111's order.
_DEFAULTS: tuple[tuple[str, object], ...] = (
    ("Hires sampler", "Use same sampler"), ("Hires schedule type", "Use same scheduler"),
    ("Hires checkpoint", "Use same checkpoint"), ("Hires prompt", ""), ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"), ("Masked content", "original"), ("Inpaint area", "Whole picture"),
    ("Masked area padding", 32),
)
_LATE_DEFAULTS: tuple[tuple[str, object], ...] = (
    ("RNG", "GPU"), ("Schedule type", "Automatic"), ("Schedule max sigma", 0), ("Schedule min sigma", 0),
    ("Schedule rho", 0), ("VAE Encoder", "Full"), ("VAE Decoder", "Full"), ("FP8 weight", "Disable"),
)


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def quote(value: object) -> str:
    """A value as A1111 writes it: ``str(value)``, or JSON when it contains ``,``, ``:`` or a newline."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """The inverse of ``quote`` for strings: JSON-decode a ``"..."`` value, else return it as is."""
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def infotext_items(params: object) -> list[tuple[str, object]]:
    """``(key, value)`` pairs of a mapping, or of a dataclass's fields with ``metadata["infotext"]``."""
    if isinstance(params, Mapping):
        return [(str(k), v) for k, v in params.items()]
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return [(f.metadata["infotext"], getattr(params, f.name))
                for f in dataclasses.fields(params) if "infotext" in f.metadata]
    raise PromptError(f"infotext params: expected a mapping or a dataclass, got {type(params).__name__}")


def _clip_skip_shown(value: object) -> bool:
    try:
        return int(str(value)) > 1
    except ValueError:
        return True


def format_infotext(params: object, prompt: str | None = None, negative_prompt: str | None = None) -> str:
    """A1111's infotext for ``params`` (infotext key -> value; None values are left out).

    ``prompt``/``negative_prompt`` default to the "Prompt"/"Negative prompt" entries of ``params``.
    Keys of ``INFOTEXT_KEY_ORDER`` come first in that order, then other keys in the given order,
    then Version and User. "Clip skip" is written only above 1; a value equal to its key is
    written bare (A1111's flag style).
    """
    items = dict(infotext_items(params))
    stored_prompt, stored_negative = items.pop("Prompt", ""), items.pop("Negative prompt", "")
    prompt = str(stored_prompt if prompt is None else prompt)
    negative = str(stored_negative if negative_prompt is None else negative_prompt)
    order = [k for k in INFOTEXT_KEY_ORDER if k in items]
    order += [k for k in items if k not in INFOTEXT_KEY_ORDER and k not in INFOTEXT_TAIL_KEYS]
    order += [k for k in INFOTEXT_TAIL_KEYS if k in items]
    fields = []
    for key in order:
        value = items[key]
        if value is None or (key == "Clip skip" and not _clip_skip_shown(value)):
            continue
        fields.append(key if value == key else f"{key}: {quote(value)}")
    negative_text = f"\n{_NEGATIVE_PREFIX} {negative}" if negative else ""
    return f"{prompt}{negative_text}\n{', '.join(fields)}".strip()


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def split_sampler_name(sampler: str) -> tuple[str, str | None]:
    """``"DPM++ 2M Karras"`` -> ``("DPM++ 2M", "Karras")``; names without a schedule suffix stay whole."""
    found = None
    for info in SCHEDULES:  # the schedule table of huihua.diffusion.names, as A1111 scans its own
        for option in (info.display, info.key, *info.aliases):
            if sampler.lower().endswith(" " + option.lower()):
                found = info.display
                sampler = sampler[: -(len(option) + 1)]
                break
    return sampler, found


def _version_key(text: object) -> tuple[int, ...] | None:
    """A1111 version text (``v1.7.0-225-gabc``) as a sortable tuple; None when unreadable."""
    m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?(?:-(RC\d*|\d+))?(?:-.*)?", str(text), re.IGNORECASE)
    if m is None:
        return None
    major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    extra = m.group(4)
    if extra is None:
        return (major, minor, patch, 0, 0)
    if extra.isdigit():
        return (major, minor, patch, 1, int(extra))  # "-225": commits after the tag
    return (major, minor, patch, -1, int(extra[2:] or 0))  # release candidate


def _backcompat(res: dict[str, object]) -> None:
    """A1111's compatibility flags for infotexts written by older versions."""
    version = _version_key(res.get("Version")) if res.get("Version") is not None else None
    if version is None:
        return
    if version < (1, 6, 0, 0, 0) and "[" in str(res.get("Prompt", "")):
        res["Old prompt editing timelines"] = True
    if version < (1, 6, 0, 0, 0) and res.get("Sampler", "") in ("DDIM", "PLMS"):
        res["Pad conds v0"] = True
    if version < (1, 7, 0, 1, 225):
        res["Downcast alphas_cumprod"] = True
    if version < (1, 8, 0, 0, 0) and res.get("Refiner"):
        res["Refiner switch by sampling steps"] = True


def _old_hires_first_pass(width: int, height: int) -> tuple[int, int]:
    """A1111's old automatic first-pass size: about 512x512 pixels, multiples of 64."""
    scale = math.sqrt(512 * 512 / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def _restore_old_hires_fix(res: dict[str, object]) -> None:
    """Infotexts with "First pass size" describe the old hires fix: Size was the final size."""
    first_w, first_h = res.get("First pass size-1"), res.get("First pass size-2")
    if first_w is None or first_h is None:
        return
    first_w, first_h = int(str(first_w)), int(str(first_h))
    width, height = int(str(res.get("Size-1", 512))), int(str(res.get("Size-2", 512)))
    if first_w == 0 or first_h == 0:
        first_w, first_h = _old_hires_first_pass(width, height)
    res["Size-1"], res["Size-2"] = first_w, first_h
    res["Hires resize-1"], res["Hires resize-2"] = width, height


def _uses_emphasis(prompt: str, negative: str) -> bool:
    try:
        pieces = parse_prompt_attention(prompt) + parse_prompt_attention(negative)
    except PromptError:
        return False
    return any(weight != 1.0 and text != "BREAK" for text, weight in pieces)


def _split_prompts(lines: list[str]) -> tuple[str, str]:
    """Prompt and negative prompt from the lines before the parameters (each line stripped)."""
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith(_NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(_NEGATIVE_PREFIX):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    return "\n".join(prompt_lines), "\n".join(negative_lines)


def _split_samplers(res: dict[str, object]) -> None:
    """Old combined names ("DPM++ 2M Karras") become a sampler plus a schedule type."""
    for sampler_key, schedule_key in (("Sampler", "Schedule type"), ("Hires sampler", "Hires schedule type")):
        value = res.get(sampler_key)
        if not isinstance(value, str):
            continue
        sampler, schedule = split_sampler_name(value)
        if schedule is not None:
            res[sampler_key], res[schedule_key] = sampler, schedule


def parse(text: str) -> dict[str, object]:
    """A1111's ``parse_generation_parameters``: "Prompt", "Negative prompt", every key, and defaults.

    Values stay strings as in A1111 (``Size: 512x768`` gives "Size-1" and "Size-2"); defaults keep
    A1111's types. Styles are not extracted (they live in A1111's styles file).
    """
    text = text.replace("\r\n", "\n")
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:  # not a parameter line: part of the prompt
        lines.append(last)
        last = ""
    prompt, negative = _split_prompts(lines)
    res: dict[str, object] = {}
    for key, value in _PARAM.findall(last):
        if not value:
            continue  # A1111 skips an empty value (it fails on value[0])
        if value[0] == '"' and value[-1] == '"':
            value = unquote(value)
        size = _IMAGE_SIZE.match(value)
        if size is not None:
            res[f"{key}-1"], res[f"{key}-2"] = size.group(1), size.group(2)
        else:
            res[key] = value
    res["Prompt"], res["Negative prompt"] = prompt, negative
    res.setdefault("Clip skip", "1")
    if res.get("Hypernet") is not None:
        res["Prompt"] = f"{res['Prompt']}<hypernet:{res['Hypernet']}:{res.get('Hypernet strength', '1.0')}>"
    if "Hires resize-1" not in res:
        res["Hires resize-1"], res["Hires resize-2"] = 0, 0
    for key, default in _DEFAULTS:
        res.setdefault(key, default)
    _restore_old_hires_fix(res)
    for key, default in _LATE_DEFAULTS:
        res.setdefault(key, default)
    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False
    if "Emphasis" not in res and _uses_emphasis(prompt, negative):
        res["Emphasis"] = "Original"
    res.setdefault("Refiner switch by sampling steps", False)
    _backcompat(res)
    _split_samplers(res)
    return res
