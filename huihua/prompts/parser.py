"""The AUTOMATIC1111 prompt language: attention weights, prompt editing, alternation and AND.

Three independent readings of one prompt text, each matching A1111 exactly (its doctests, its
quirks on unbalanced brackets, escapes and odd numbers):

* ``get_multicond_prompt_list`` splits composable-diffusion prompts on ``AND`` (``a AND b:0.5``);
* ``get_learned_conditioning_prompt_schedules`` expands ``[from:to:when]``, ``[to:when]``,
  ``[from::when]`` and ``[a|b|c]`` into one plain prompt per range of sampling steps;
* ``parse_prompt_attention`` turns ``(word)``, ``[word]``, ``(word:1.5)`` and ``BREAK`` into
  ``(text, weight)`` pieces for the tokenizer.

A1111 parses editing with a lark grammar; here a small recursive-descent parser accepts the same
language and resolves it the same way (a bracket group wins over stray bracket characters, and a
``|`` outside an alternation makes the whole prompt plain text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from huihua.errors import PromptError

# --------------------------------------------------------------------------------------------
# Attention: (word) x1.1, [word] /1.1, (word:1.5), escapes, BREAK
# --------------------------------------------------------------------------------------------

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1  # A1111 multiplies by 1/1.1 (not divides by 1.1): floats differ
BREAK_WEIGHT = -1.0

_ESCAPABLE = "()[]\\"
_ATTENTION_SPECIALS = frozenset("\\()[]:")
# ":" + explicit weight + ")" is one token in A1111; \d is Unicode-aware, as in A1111.
_WEIGHT_CLOSE = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*")


def _weight_value(text: str) -> float:
    """The float of an explicit ``(text:weight)`` weight; A1111 fails on e.g. ``1..2`` too."""
    try:
        return float(text)
    except ValueError:
        raise PromptError(f"prompt weight {text!r} is not a number") from None


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into ``(text, weight)`` pieces as A1111 does; ``BREAK`` is ``("BREAK", -1.0)``.

    Pieces are tuples. Unclosed ``(``/``[`` apply to the end of the prompt; unmatched closers are
    literal text; a lone backslash is dropped; runs with equal weights are merged; an empty prompt
    gives ``[("", 1.0)]``.
    """
    res: list[list] = []  # [text, weight] pairs, mutated in place while brackets close
    round_open: list[int] = []
    square_open: list[int] = []

    def scale_from(start: int, multiplier: float) -> None:
        for p in range(start, len(res)):
            res[p][1] *= multiplier

    def add_text(piece: str) -> None:
        for i, part in enumerate(_BREAK_SPLIT.split(piece)):
            if i > 0:
                res.append(["BREAK", BREAK_WEIGHT])
            res.append([part, 1.0])

    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            nxt = text[i + 1] if i + 1 < n else ""
            if nxt and nxt in _ESCAPABLE:
                res.append([nxt, 1.0])
                i += 2
            else:  # a lone backslash escapes nothing and disappears
                res.append(["", 1.0])
                i += 1
        elif c == "(":
            round_open.append(len(res))
            i += 1
        elif c == "[":
            square_open.append(len(res))
            i += 1
        elif c == ":":
            m = _WEIGHT_CLOSE.match(text, i)
            if m is not None and round_open:
                scale_from(round_open.pop(), _weight_value(m.group(1)))
                i = m.end()
            elif m is not None:
                add_text(m.group(0))
                i = m.end()
            else:
                add_text(":")
                i += 1
        elif c == ")" and round_open:
            scale_from(round_open.pop(), ROUND_MULTIPLIER)
            i += 1
        elif c == "]" and square_open:
            scale_from(square_open.pop(), SQUARE_MULTIPLIER)
            i += 1
        elif c in ")]":
            add_text(c)
            i += 1
        else:
            j = i + 1
            while j < n and text[j] not in _ATTENTION_SPECIALS:
                j += 1
            add_text(text[i:j])
            i = j

    for start in round_open:
        scale_from(start, ROUND_MULTIPLIER)
    for start in square_open:
        scale_from(start, SQUARE_MULTIPLIER)
    if not res:
        res = [["", 1.0]]

    merged: list[list] = [res[0]]
    for piece in res[1:]:
        if piece[1] == merged[-1][1]:
            merged[-1][0] += piece[0]
        else:
            merged.append(piece)
    return [(t, float(w)) for t, w in merged]


# --------------------------------------------------------------------------------------------
# Prompt editing and alternation: [from:to:when], [to:when], [from::when], [a|b|c]
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scheduled:
    """``[before:after:number]``; ``before`` is None for the ``[after:number]`` form."""

    before: tuple[_Node, ...] | None
    after: tuple[_Node, ...]
    number: str


@dataclass(frozen=True)
class _Alternate:
    """``[a|b|c]``; an empty option renders as nothing."""

    options: tuple[tuple[_Node, ...], ...]


_Node = str | _Scheduled | _Alternate

# lark's SIGNED_NUMBER (ASCII digits, optional exponent), with the optional blanks around it.
_SCHEDULE_NUMBER = re.compile(
    r"\s*([+-]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+(?:[eE][+-]?[0-9]+)?))\s*\]"
)
_GROUP_DELIMITERS = frozenset(":|])")
_PLAIN_STOP = frozenset("\\[]():|")
_MAX_NESTING = 200


class _NoParse(Exception):
    """The prompt is outside the editing grammar; A1111 then uses it verbatim for every step."""


class _ScheduleParser:
    """Recursive descent over A1111's editing grammar; bracket groups are memoised by position."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.groups: dict[int, tuple[list[_Node], int] | None] = {}

    def plain_end(self, i: int) -> int:
        """End of the plain run at ``i``: anything but ``\\[]():|``, or a backslash and any char but newline."""
        text, n = self.text, len(self.text)
        while i < n:
            c = text[i]
            if c == "\\":
                if i + 1 >= n or text[i + 1] == "\n":
                    raise _NoParse
                i += 2
            elif c in _PLAIN_STOP:
                break
            else:
                i += 1
        return i

    def top(self) -> tuple[_Node, ...]:
        """The whole prompt: nodes, with stray ``[]():`` allowed only at this level."""
        out: list[_Node] = []
        i, n = 0, len(self.text)
        while i < n:
            c = self.text[i]
            if c in "[(":
                found = self.group(i, 0)
                if found is not None:
                    out.extend(found[0])
                    i = found[1]
                    continue
                out.append(c)
                i += 1
            elif c in "]):":
                out.append(c)
                i += 1
            elif c == "|":
                raise _NoParse
            else:
                j = self.plain_end(i)
                out.append(self.text[i:j])
                i = j
        return tuple(out)

    def inner(self, i: int, depth: int) -> tuple[tuple[_Node, ...], int] | None:
        """A prompt inside brackets, up to the next ``:|])`` (or None when a nested group is broken)."""
        out: list[_Node] = []
        n = len(self.text)
        while i < n:
            c = self.text[i]
            if c in _GROUP_DELIMITERS:
                break
            if c in "[(":
                found = self.group(i, depth + 1)
                if found is None:
                    return None
                out.extend(found[0])
                i = found[1]
            else:
                j = self.plain_end(i)
                out.append(self.text[i:j])
                i = j
        return tuple(out), i

    def group(self, i: int, depth: int) -> tuple[list[_Node], int] | None:
        """The bracket group opening at ``i`` (memoised: its reading does not depend on context)."""
        if i not in self.groups:
            if depth > _MAX_NESTING:
                raise _NoParse
            self.groups[i] = self.square(i, depth) if self.text[i] == "[" else self.round(i, depth)
        return self.groups[i]

    def delimiter(self, i: int) -> str:
        return self.text[i] if i < len(self.text) else ""

    def round(self, i: int, depth: int) -> tuple[list[_Node], int] | None:
        """``(prompt)`` or ``(prompt:prompt)``: kept verbatim, only its contents can be edited."""
        first = self.inner(i + 1, depth)
        if first is None:
            return None
        body, j = first
        if self.delimiter(j) == ")":
            return ["(", *body, ")"], j + 1
        if self.delimiter(j) != ":":
            return None
        second = self.inner(j + 1, depth)
        if second is None or self.delimiter(second[1]) != ")":
            return None
        return ["(", *body, ":", *second[0], ")"], second[1] + 1

    def square(self, i: int, depth: int) -> tuple[list[_Node], int] | None:
        """``[prompt]``, ``[a|b|...]``, ``[to:when]`` or ``[from:to:when]``."""
        first = self.inner(i + 1, depth)
        if first is None:
            return None
        body, j = first
        d = self.delimiter(j)
        if d == "]":
            return ["[", *body, "]"], j + 1
        if d == "|":
            options = [body]
            while self.delimiter(j) == "|":
                nxt = self.inner(j + 1, depth)
                if nxt is None:
                    return None
                options.append(nxt[0])
                j = nxt[1]
            if self.delimiter(j) != "]":
                return None
            return [_Alternate(tuple(options))], j + 1
        if d != ":":
            return None
        m = _SCHEDULE_NUMBER.match(self.text, j + 1)
        if m is not None:
            return [_Scheduled(None, body, m.group(1))], m.end()
        second = self.inner(j + 1, depth)
        if second is None or self.delimiter(second[1]) != ":":
            return None
        m = _SCHEDULE_NUMBER.match(self.text, second[1] + 1)
        if m is None:
            return None
        return [_Scheduled(body, second[0], m.group(1))], m.end()


@dataclass(frozen=True)
class _StepRule:
    """How a ``when`` number becomes a step: A1111's current rule, its hires variant, or the old one."""

    steps: int
    int_offset: int = 0
    float_offset: float = 0.0
    old: bool = False

    def when(self, number: str) -> int:
        """The last step of the ``before`` side (A1111: ``min(steps, int(v))``)."""
        v = float(number)
        if self.old:
            v = v * self.steps if v < 1 else v
        elif "." in number:
            v = (v - self.float_offset) * self.steps
        else:
            v = v - self.int_offset
        return int(max(-1.0, min(float(self.steps), v)))  # clamped: same result, no overflow on 1e999


def _walk(nodes: tuple[_Node, ...]):
    """Every edit node in a tree, inactive branches included."""
    for node in nodes:
        if isinstance(node, _Scheduled):
            yield node
            yield from _walk(node.before or ())
            yield from _walk(node.after)
        elif isinstance(node, _Alternate):
            yield node
            for option in node.options:
                yield from _walk(option)


def _render(nodes: tuple[_Node, ...], step: int, rule: _StepRule) -> str:
    """The plain prompt in effect at ``step`` (1-based, as in A1111)."""
    parts: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, _Scheduled):
            chosen = (node.before or ()) if step <= rule.when(node.number) else node.after
            parts.append(_render(chosen, step, rule))
        else:
            parts.append(_render(node.options[(step - 1) % len(node.options)], step, rule))
    return "".join(parts)


def _schedule_one(prompt: str, rule: _StepRule) -> list[tuple[int, str]]:
    try:
        tree = _ScheduleParser(prompt).top()
    except _NoParse:
        return [(rule.steps, prompt)]
    ends = {rule.steps}
    for node in _walk(tree):
        if isinstance(node, _Alternate):
            ends.update(range(1, rule.steps + 1))
        else:
            when = rule.when(node.number)
            if when >= 1:
                ends.add(when)
    return [(end, _render(tree, end, rule)) for end in sorted(ends)]


def get_learned_conditioning_prompt_schedules(
    prompts: list[str],
    base_steps: int,
    hires_steps: int | None = None,
    use_old_scheduling: bool = False,
) -> list[list[tuple[int, str]]]:
    """For each prompt, ``(end_at_step, plain prompt)`` pairs covering steps ``1..steps`` (A1111 rules).

    A ``when`` written with a decimal point is a fraction of the steps, an integer is a step
    number; with ``hires_steps`` the numbers address the hires pass (``1.5`` = half-way through it,
    an integer counts from ``base_steps``). ``use_old_scheduling``: below 1 is a fraction.
    A prompt outside the grammar (e.g. a ``|`` outside ``[...]``, a trailing backslash, brackets
    nested deeper than 200) is used verbatim for every step, as A1111 does on a parse error.
    """
    if hires_steps is None or use_old_scheduling:
        rule = _StepRule(steps=base_steps, old=use_old_scheduling)
    else:
        rule = _StepRule(steps=hires_steps, int_offset=base_steps, float_offset=1.0)
    cache: dict[str, list[tuple[int, str]]] = {}
    out: list[list[tuple[int, str]]] = []
    for prompt in prompts:
        if prompt not in cache:
            cache[prompt] = _schedule_one(prompt, rule)
        out.append(list(cache[prompt]))
    return out


# --------------------------------------------------------------------------------------------
# Composable diffusion: "a cat AND a dog:0.5"
# --------------------------------------------------------------------------------------------

_AND = re.compile(r"\bAND\b")
# Lazy text, then an optional ":number" and trailing blanks; "$" may stop before a final newline.
_SUBPROMPT_WEIGHT = re.compile(r"(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$", re.DOTALL)


def split_and(prompt: str) -> list[tuple[str, float]]:
    """One prompt's ``AND`` parts as ``(text, weight)``; a trailing ``:number`` is the weight (default 1)."""
    parts: list[tuple[str, float]] = []
    for sub in _AND.split(prompt):
        m = _SUBPROMPT_WEIGHT.match(sub)
        if m is None:  # unreachable (the pattern matches any text), kept for safety
            parts.append((sub, 1.0))
            continue
        text, weight = m.groups()
        parts.append((text, 1.0 if weight is None else float(weight)))
    return parts


def get_multicond_prompt_list(prompts: list[str]) -> tuple[list[list[tuple[int, float]]], list[str]]:
    """``(indexes, flat_prompts)``: per prompt, ``(index into flat_prompts, weight)`` for each AND part.

    Identical part texts share one entry of ``flat_prompts`` (A1111 encodes each text once).
    """
    flat: list[str] = []
    index_of: dict[str, int] = {}
    indexes: list[list[tuple[int, float]]] = []
    for prompt in prompts:
        row: list[tuple[int, float]] = []
        for text, weight in split_and(prompt):
            if text not in index_of:
                index_of[text] = len(flat)
                flat.append(text)
            row.append((index_of[text], weight))
        indexes.append(row)
    return indexes, flat
