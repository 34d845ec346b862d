"""The caption grammar of the procedural world: `CaptionSpec` -> English text, and back.

Text is produced by `caption_text` with variation (determiners, size words, position phrases,
relation words, conjunctions, background phrases, an optional "a picture of" prefix) when given a
random generator, or in its canonical form without one. `parse_caption` reads every caption the
grammar can produce (and the canonical GenEval-like phrasings) back into the same spec.
"""

from __future__ import annotations

import re

import numpy as np

from huihua.errors import PromptError
from huihua.synth.scene import COLOURS, PLURALS, SHAPES, CaptionSpec, ObjectClaim

_NUMBER_WORDS: dict[int, tuple[str, ...]] = {
    1: ("one", "a single", "exactly one"),
    2: ("two", "exactly two"),
    3: ("three", "exactly three"),
}
_SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}
_POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "at the left", "on the left side"),
    "right": ("on the right", "at the right", "on the right side"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
    "center": ("in the center", "in the middle", "at the center"),
}
_RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
}
_CONJUNCTIONS: tuple[str, ...] = ("and", "as well as", "together with")
_BACKGROUND_PHRASES: tuple[str, ...] = ("on {a} {c} background", "against {a} {c} background",
                                        "against {c}", "on {c}")
_PREFIXES: tuple[str, ...] = ("a picture of", "an image of", "a drawing of")
_PREFIX_PROBABILITY = 0.15


def _pick(options: tuple[str, ...], rng: np.random.Generator | None) -> str:
    """The first option (canonical form) without a generator, else a uniformly random one."""
    return options[0] if rng is None else options[int(rng.integers(len(options)))]


def _article(next_word: str) -> str:
    """ "an" before a vowel sound, else "a"."""
    return "an" if next_word[0] in "aeiou" else "a"


def _object_phrase(claim: ObjectClaim, counted: bool, rng: np.random.Generator | None) -> str:
    """Noun phrase of one claim, e.g. "two small red circles at the top"."""
    words: list[str] = []
    if claim.size is not None:
        words.append(_pick(_SIZE_WORDS[claim.size], rng))
    if claim.colour is not None:
        words.append(claim.colour)
    words.append(PLURALS[claim.shape] if claim.count > 1 else claim.shape)
    if counted:
        words.insert(0, _pick(_NUMBER_WORDS[claim.count], rng))
    else:
        words.insert(0, _article(words[0]))
    if claim.position is not None:
        words.append(_pick(_POSITION_PHRASES[claim.position], rng))
    return " ".join(words)


def caption_text(spec: CaptionSpec, rng: np.random.Generator | None = None) -> str:
    """English caption of ``spec``: canonical without ``rng``, varied (seeded) with one."""
    counted = spec.category == "counting"
    phrases = [_object_phrase(claim, counted, rng) for claim in spec.objects]
    if spec.relation is not None:
        if len(phrases) != 2:
            raise PromptError("caption spec: a relation needs exactly two objects")
        text = f"{phrases[0]} {_pick(_RELATION_PHRASES[spec.relation], rng)} {phrases[1]}"
    elif len(phrases) == 2:
        text = f"{phrases[0]} {_pick(_CONJUNCTIONS, rng)} {phrases[1]}"
    elif len(phrases) == 1:
        text = phrases[0]
    else:
        raise PromptError(f"caption spec: expected one or two objects, got {len(phrases)}")
    if spec.background is not None:
        template = _pick(_BACKGROUND_PHRASES, rng)
        text += " " + template.format(a=_article(spec.background), c=spec.background)
    if rng is not None and rng.random() < _PREFIX_PROBABILITY:
        text = f"{_pick(_PREFIXES, rng)} {text}"
    return text


def _alternation(options: list[str]) -> str:
    """Regex alternation of literal phrases, longest first so that a prefix never wins early."""
    return "|".join(re.escape(o) for o in sorted(options, key=len, reverse=True))


_COLOUR_RE = _alternation(list(COLOURS))
_SHAPE_WORDS = {word: shape for shape in SHAPES for word in (shape, PLURALS[shape])}
_NUMBER_LOOKUP = {w: n for n, words in _NUMBER_WORDS.items() for w in words} | {
    "1": 1, "2": 2, "3": 3}
_SIZE_LOOKUP = {w: s for s, words in _SIZE_WORDS.items() for w in words}
_POSITION_LOOKUP = {w: p for p, words in _POSITION_PHRASES.items() for w in words}
_RELATION_LOOKUP = {w: r for r, words in _RELATION_PHRASES.items() for w in words} | {
    "on top of": "above", "underneath": "below", "on the left of": "left of",
    "on the right of": "right of"}

_PREFIX_RE = re.compile(r"^(?:(?:a|an|the) )?(?:picture|image|drawing|photo|rendering|illustration)"
                        r" of ")
_BACKGROUND_RE = re.compile(rf" (?:on|against|with) (?:(?:a|an|the) )?({_COLOUR_RE})"
                            r"(?: background)?$")
_RELATION_RE = re.compile(rf" ({_alternation(list(_RELATION_LOOKUP))}) ")
_CONJUNCTION_RE = re.compile(rf" (?:{_alternation(list(_CONJUNCTIONS) + ['and also', 'plus'])}) ")
_OBJECT_RE = re.compile(
    rf"^(?:({_alternation(list(_NUMBER_LOOKUP) + ['a', 'an', 'the'])}) )?"
    rf"(?:({_alternation(list(_SIZE_LOOKUP))}) )?"
    rf"(?:({_COLOUR_RE}) )?"
    rf"({_alternation(list(_SHAPE_WORDS))})"
    rf"(?: ({_alternation(list(_POSITION_LOOKUP))}))?$")


def _normalise(text: str) -> str:
    """Lower case, commas and full stops dropped, single spaces."""
    return " ".join(text.lower().replace(",", " ").replace(".", " ").split())


def _parse_object(phrase: str, source: str) -> tuple[ObjectClaim, bool]:
    """One noun phrase -> (claim, whether it used a number word)."""
    match = _OBJECT_RE.match(phrase)
    if match is None:
        raise PromptError(f"caption: cannot read object phrase {phrase!r} in {source!r}")
    det, size_word, colour, shape_word, position_word = match.groups()
    shape = _SHAPE_WORDS[shape_word]
    plural = shape_word != shape
    counted = det in _NUMBER_LOOKUP
    count = _NUMBER_LOOKUP[det] if counted else (2 if plural else 1)
    if plural and not counted:
        raise PromptError(f"caption: plural {shape_word!r} needs a number word in {source!r}")
    if plural != (count > 1):
        raise PromptError(f"caption: number and noun disagree in {phrase!r} of {source!r}")
    claim = ObjectClaim(shape=shape, colour=colour, count=count,
                        size=_SIZE_LOOKUP.get(size_word) if size_word else None,
                        position=_POSITION_LOOKUP.get(position_word) if position_word else None)
    return claim, counted


def _category(claims: tuple[ObjectClaim, ...], counted: bool, relation: str | None) -> str:
    """GenEval category of a parsed caption."""
    if relation is not None:
        return "position"
    if counted:
        return "counting"
    coloured = any(c.colour is not None for c in claims)
    if len(claims) == 1:
        return "colors" if coloured else "single_object"
    return "color_attr" if coloured else "two_objects"


def parse_caption(text: str) -> CaptionSpec:
    """Read a caption of the world's grammar into its `CaptionSpec`; raise PromptError otherwise."""
    normal = _normalise(text)
    normal = _PREFIX_RE.sub("", normal, count=1)
    background = None
    bg_match = _BACKGROUND_RE.search(normal)
    if bg_match is not None:
        background = bg_match.group(1)
        normal = normal[:bg_match.start()]
    relation = None
    rel_match = _RELATION_RE.search(normal)
    if rel_match is not None:
        relation = _RELATION_LOOKUP[rel_match.group(1)]
        parts = [normal[:rel_match.start()], normal[rel_match.end():]]
    else:
        parts = _CONJUNCTION_RE.split(normal, maxsplit=1)
    parsed = [_parse_object(part, text) for part in parts]
    claims = tuple(claim for claim, _ in parsed)
    counted = any(c for _, c in parsed)
    if relation is not None and any(c.count != 1 for c in claims):
        raise PromptError(f"caption: a relation needs single objects on both sides in {text!r}")
    if counted and len(claims) > 1:
        raise PromptError(f"caption: counting is supported for one kind of object, in {text!r}")
    return CaptionSpec(category=_category(claims, counted, relation), objects=claims,
                       relation=relation, background=background)
