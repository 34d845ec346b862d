"""Prompt text to cross-attention context, with A1111's chunking, emphasis and schedules.

The flow for one text tower (SDXL runs it once per tower and concatenates along the width):

``tokenize_prompt``: attention pieces -> 75-token chunks (comma backtrack, BREAK, embeddings kept
whole), each framed as ``[bos] + 75 + [eos]`` and padded with the family's pad token;
``encode_chunks``: every chunk through the text encoder, hidden states scaled by the per-token
weights with the mean restored, chunks concatenated along the token axis (pooled: first chunk);
``build_cond_schedule`` / ``build_multicond``: prompt editing and AND as per-step lookups.

The text encoder is injected as a callable (``TokenEncoder``) so this module needs no network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch

from huihua.errors import ParameterError, PromptError
from huihua.prompts.parser import (
    get_learned_conditioning_prompt_schedules,
    parse_prompt_attention,
    split_and,
)

CHUNK_LENGTH = 75  # prompt tokens per window; the window adds bos and eos: 77
COMMA = ",</w>"

Emphasis = Literal["Original", "No norm", "Ignore", "None"]
_EMPHASES = ("Original", "No norm", "Ignore", "None")


class PromptTokenizer(Protocol):
    """What chunking needs from a CLIP tokenizer (``huihua.checkpoints.tokenizer.CLIPTokenizer``)."""

    bos_token_id: int
    eos_token_id: int

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without start/end tokens."""
        ...

    def token_id(self, word: str) -> int:
        """Id of one vocabulary entry, e.g. ``",</w>"``."""
        ...


@dataclass(frozen=True, eq=False)
class EmbeddingMatch:
    """A textual-inversion embedding found in the token stream.

    ``vectors`` (N, D) live in the token-embedding space of the tower being encoded; the name took
    ``token_length`` prompt tokens and the embedding takes N window slots.
    """

    name: str
    vectors: torch.Tensor
    token_length: int


class EmbeddingLookup(Protocol):
    """Finds a textual-inversion embedding whose name's tokens start at ``position``."""

    def find_at(self, tokens: Sequence[int], position: int) -> EmbeddingMatch | None:
        """The longest embedding whose token ids equal ``tokens[position:position+k]``, or None."""
        ...


@dataclass(frozen=True)
class EmbeddingFix:
    """Embedding vectors to place at window positions ``offset .. offset+N-1`` (bos is position 0)."""

    offset: int
    embedding: EmbeddingMatch


@dataclass(frozen=True)
class PromptChunk:
    """One 77-token window: ids, per-token weights (1.0 on bos/eos/pad) and embedding placements."""

    tokens: tuple[int, ...]
    weights: tuple[float, ...]
    fixes: tuple[EmbeddingFix, ...] = ()


@dataclass(frozen=True)
class ChunkedPrompt:
    """A prompt's windows and its token count (A1111's "75/150" counter)."""

    chunks: tuple[PromptChunk, ...]
    token_count: int


@dataclass(frozen=True)
class ChunkOptions:
    """How a prompt is cut into windows.

    ``pad_token``: 49407 (eos) for SD1's CLIP, 0 for OpenCLIP (SD2, SDXL's second tower);
    ``comma_padding_backtrack``: a full window is cut after its last comma when that comma is at
    most this many tokens back (0 disables); ``emphasis``: "None" reads brackets as plain text.
    """

    pad_token: int = 49407
    comma_padding_backtrack: int = 20
    emphasis: Emphasis = "Original"

    def __post_init__(self) -> None:
        if self.emphasis not in _EMPHASES:
            raise ParameterError(f"emphasis: {self.emphasis!r} is not one of {', '.join(_EMPHASES)}")
        if self.comma_padding_backtrack < 0:
            raise ParameterError("comma_padding_backtrack: must be >= 0")


@dataclass
class _Builder:
    """Mutable state while windows are filled (A1111's ``tokenize_line`` loop)."""

    bos: int
    eos: int
    pad: int
    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    fixes: list[EmbeddingFix] = field(default_factory=list)
    chunks: list[PromptChunk] = field(default_factory=list)
    last_comma: int = -1
    token_count: int = 0

    def close(self, is_last: bool = False) -> None:
        """Frame, pad and store the current window; start an empty one."""
        self.token_count += len(self.tokens) if is_last else CHUNK_LENGTH
        fill = CHUNK_LENGTH - len(self.tokens)
        tokens = [self.bos, *self.tokens, *([self.eos] * max(fill, 0)), self.eos]
        first_end = tokens.index(self.eos)  # everything after the first eos is padding
        tokens[first_end + 1 :] = [self.pad] * (len(tokens) - first_end - 1)
        weights = [1.0, *self.weights, *([1.0] * max(fill, 0)), 1.0]
        self.chunks.append(PromptChunk(tuple(tokens), tuple(weights), tuple(self.fixes)))
        self.tokens, self.weights, self.fixes, self.last_comma = [], [], [], -1

    def break_after_comma(self) -> None:
        """Move the tokens after the last comma of a full window into the next window."""
        cut = self.last_comma + 1
        moved_tokens, moved_weights = self.tokens[cut:], self.weights[cut:]
        moved_fixes = [EmbeddingFix(f.offset - cut, f.embedding) for f in self.fixes if f.offset - 1 >= cut]
        self.fixes = [f for f in self.fixes if f.offset - 1 < cut]
        self.tokens, self.weights = self.tokens[:cut], self.weights[:cut]
        self.close()
        self.tokens, self.weights, self.fixes = moved_tokens, moved_weights, moved_fixes


def _fill_piece(b: _Builder, ids: list[int], weight: float, comma: int, backtrack: int,
                embeddings: EmbeddingLookup | None) -> None:
    """Append one attention piece's tokens to the windows, A1111's rules in A1111's order."""
    position = 0
    while position < len(ids):
        token = ids[position]
        if token == comma:
            b.last_comma = len(b.tokens)
        elif (backtrack and len(b.tokens) == CHUNK_LENGTH and b.last_comma != -1
              and len(b.tokens) - b.last_comma <= backtrack):
            b.break_after_comma()
        if len(b.tokens) == CHUNK_LENGTH:
            b.close()
        match = embeddings.find_at(ids, position) if embeddings is not None else None
        if match is None:
            b.tokens.append(token)
            b.weights.append(weight)
            position += 1
            continue
        count = int(match.vectors.shape[0])
        if count > CHUNK_LENGTH:
            raise PromptError(f"embedding {match.name!r}: {count} vectors do not fit a {CHUNK_LENGTH}-token window")
        if len(b.tokens) + count > CHUNK_LENGTH:
            b.close()  # an embedding is never split across windows
        b.fixes.append(EmbeddingFix(len(b.tokens) + 1, match))
        b.tokens.extend([0] * count)
        b.weights.extend([weight] * count)
        position += max(1, match.token_length)


def tokenize_prompt(text: str, tokenizer: PromptTokenizer, options: ChunkOptions = ChunkOptions(),
                    embeddings: EmbeddingLookup | None = None) -> ChunkedPrompt:
    """Cut one (already edited, AND-free) prompt into 77-token windows with per-token weights."""
    pieces = parse_prompt_attention(text) if options.emphasis != "None" else [(text, 1.0)]
    b = _Builder(tokenizer.bos_token_id, tokenizer.eos_token_id, options.pad_token)
    comma = tokenizer.token_id(COMMA)
    for piece, weight in pieces:
        if piece == "BREAK" and weight == -1:
            b.close()
            continue
        _fill_piece(b, tokenizer.encode(piece), weight, comma, options.comma_padding_backtrack, embeddings)
    if b.tokens or not b.chunks:
        b.close(is_last=True)
    return ChunkedPrompt(tuple(b.chunks), b.token_count)


class TokenEncoder(Protocol):
    """A text tower as ``encode_chunks`` calls it.

    ``tokens``: LongTensor (B, 77). ``overrides``: None, or per batch row the ``EmbeddingFix``es
    whose vectors (N, D_embed) replace the token embeddings (the token-embedding lookup output,
    before position embeddings are added) at positions ``fix.offset .. fix.offset+N-1`` of that
    row. Returns the hidden states (B, 77, D) of the layer the pipeline uses (clip skip and final
    norm applied) and the pooled output (B, P), or None when the tower has none.
    """

    def __call__(self, tokens: torch.Tensor,
                 overrides: Sequence[Sequence[EmbeddingFix]] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        ...


def apply_emphasis(hidden: torch.Tensor, weights: torch.Tensor, emphasis: Emphasis = "Original") -> torch.Tensor:
    """Scale hidden states (B, T, D) by token weights (B, T); "Original" restores each row's mean.

    A1111: ``z *= w; z *= original_mean / new_mean`` (its mean spans the whole batch of one call;
    here each window is its own call, which is what A1111 does for a single prompt).
    """
    if emphasis in ("Ignore", "None"):
        return hidden
    w = weights.to(device=hidden.device, dtype=hidden.dtype).unsqueeze(-1)
    if emphasis == "No norm":
        return hidden * w
    original_mean = hidden.float().mean(dim=(1, 2), keepdim=True)
    scaled = hidden * w
    new_mean = scaled.float().mean(dim=(1, 2), keepdim=True)
    # A zero mean (a final LayerNorm without bias gives exactly that) would make 0/0 = NaN: such a
    # row keeps its weighted values, every other row gets A1111's ratio (m / m is exactly 1).
    ratio = torch.where(new_mean != 0, original_mean / new_mean, torch.ones_like(new_mean))
    return (scaled.float() * ratio).to(hidden.dtype)


def encode_chunks(chunks: Sequence[PromptChunk], encode_tokens: TokenEncoder,
                  emphasis: Emphasis = "Original") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Context (1, 77*n_chunks, D) and pooled (1, P) of the first window (None if the tower has none)."""
    if not chunks:
        raise PromptError("encode_chunks: no chunks to encode")
    tokens = torch.tensor([c.tokens for c in chunks], dtype=torch.long)
    overrides = [c.fixes for c in chunks] if any(c.fixes for c in chunks) else None
    hidden, pooled = encode_tokens(tokens, overrides)
    if hidden.shape[:2] != tokens.shape:
        raise PromptError(f"encode_chunks: encoder returned {tuple(hidden.shape)} for tokens {tuple(tokens.shape)}")
    weights = torch.tensor([c.weights for c in chunks], dtype=torch.float32)
    hidden = apply_emphasis(hidden, weights, emphasis)
    context = hidden.reshape(1, -1, hidden.shape[-1])
    return context, (pooled[:1] if pooled is not None else None)


def used_embeddings(chunks: Sequence[PromptChunk]) -> list[str]:
    """Names of the embeddings placed in ``chunks``, first use first (for the "TI hashes" infotext)."""
    names: dict[str, None] = {}
    for chunk in chunks:
        for fix in chunk.fixes:
            names.setdefault(fix.embedding.name)
    return list(names)


# --------------------------------------------------------------------------------------------
# Schedules: prompt editing and AND as per-step lookups
# --------------------------------------------------------------------------------------------

TextEncodeFn = Callable[[str], tuple[torch.Tensor, torch.Tensor | None]]  # text -> (context, pooled)


@dataclass(frozen=True, eq=False)
class ScheduledCond:
    """Conditioning used up to and including sampling step ``end_at_step``."""

    end_at_step: int
    context: torch.Tensor  # (1, T, D)
    pooled: torch.Tensor | None  # (1, P)


@dataclass(frozen=True, eq=False)
class CondSchedule:
    """One prompt's conditionings over the sampling steps (A1111's list of ScheduledPromptConditioning)."""

    entries: tuple[ScheduledCond, ...]

    def __post_init__(self) -> None:
        if not self.entries:
            raise ParameterError("CondSchedule.entries: at least one entry is required")

    def at(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(context, pooled) for ``step``: the first entry with ``step <= end_at_step``, else the first.

        A1111 passes the 0-based index of the sampler step here (``reconstruct_cond_batch``).
        """
        for entry in self.entries:
            if step <= entry.end_at_step:
                return entry.context, entry.pooled
        return self.entries[0].context, self.entries[0].pooled


@dataclass(frozen=True, eq=False)
class MultiCond:
    """Composable diffusion: the ``AND`` parts of one prompt, each a schedule with its weight."""

    parts: tuple[tuple[CondSchedule, float], ...]

    def at(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor | None, float]]:
        """(context, pooled, weight) of every part at ``step``."""
        return [(*schedule.at(step), weight) for schedule, weight in self.parts]


def build_cond_schedule(schedule: Sequence[tuple[int, str]], encode_text: TextEncodeFn,
                        cache: dict[str, tuple[torch.Tensor, torch.Tensor | None]] | None = None) -> CondSchedule:
    """Encode each text of a prompt schedule once (identical texts share their tensors)."""
    cache = {} if cache is None else cache
    entries = []
    for end_at_step, text in schedule:
        if text not in cache:
            cache[text] = encode_text(text)
        context, pooled = cache[text]
        entries.append(ScheduledCond(int(end_at_step), context, pooled))
    return CondSchedule(tuple(entries))


def build_multicond(prompt: str, encode_text: TextEncodeFn, steps: int, hires_steps: int | None = None,
                    use_old_scheduling: bool = False) -> MultiCond:
    """Split on AND, schedule each part's editing, encode every distinct text once."""
    parts = split_and(prompt)
    texts = [text for text, _ in parts]
    schedules = get_learned_conditioning_prompt_schedules(texts, steps, hires_steps, use_old_scheduling)
    cache: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    built = [(build_cond_schedule(s, encode_text, cache), w) for s, (_, w) in zip(schedules, parts, strict=True)]
    return MultiCond(tuple(built))


def stack_conds(contexts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack (1, T_i, D) contexts into (B, T_max, D), padding short ones by repeating their last vector."""
    if not contexts:
        raise ParameterError("stack_conds: no contexts")
    rows = [c.reshape(-1, c.shape[-1]) for c in contexts]
    length = max(r.shape[0] for r in rows)
    padded = [torch.cat([r, r[-1:].expand(length - r.shape[0], -1)]) if r.shape[0] < length else r for r in rows]
    return torch.stack(padded)
