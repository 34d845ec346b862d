"""CLIP's byte-level BPE tokenizer, reading the vendored ``bpe_simple_vocab_16e6.txt.gz``.

Text handling equals transformers' ``CLIPTokenizer``: special tokens are split out of the raw
text first, each remaining piece is NFC-normalised, its whitespace runs become one space and each
character is lower-cased on its own; then CLIP's pre-tokenizer regex, the byte-to-unicode map, a
``</w>`` end-of-word marker on the last character and lowest-rank-first BPE merges.
"""

from __future__ import annotations

import gzip
import itertools
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources

import regex

from huihua.errors import CheckpointError, ParameterError, PromptError

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
END_OF_WORD = "</w>"
# CLIP uses the first 49152 - 256 - 2 merges of the file (line 0 is a version header).
NUM_MERGES = 49152 - 256 - 2

_SPECIALS = regex.compile(r"(<\|startoftext\|>|<\|endoftext\|>)")
_WHITESPACE = regex.compile(r"\s+")
_PIECES = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+"""
)
_GPT2_PIECES = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from each byte to a printable unicode character, in vocab order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table  # insertion order (printable bytes first) is CLIP's vocabulary order


def normalize_text(text: str) -> str:
    """NFC, whitespace runs to one space, per-character lower case (as transformers' CLIPTokenizer)."""
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text))
    # Per character on purpose: str.lower() would turn a word-final capital sigma into "ς".
    return "".join(ch.lower() for ch in text)


def read_merges(lines: Sequence[str]) -> list[tuple[str, str]]:
    """The merge pairs CLIP uses, from the lines of the vocabulary file."""
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(lines[1 : NUM_MERGES + 1], start=2):
        parts = line.split()
        if len(parts) != 2:
            raise CheckpointError(f"{VOCAB_FILE}: line {number} is not a merge pair")
        merges.append((parts[0], parts[1]))
    if len(merges) != NUM_MERGES:
        raise CheckpointError(f"{VOCAB_FILE}: expected {NUM_MERGES} merges, found {len(merges)}")
    return merges


def build_vocab(merges: Sequence[tuple[str, str]]) -> list[str]:
    """CLIP's token list: bytes, bytes + ``</w>``, merged pairs, then the two special tokens."""
    byte_chars = list(bytes_to_unicode().values())
    return [*byte_chars, *(c + END_OF_WORD for c in byte_chars), *("".join(m) for m in merges), BOS, EOS]


class CLIPTokenizer:
    """CLIP BPE tokenizer: text to token ids and back."""

    bos_token_id: int = 49406
    eos_token_id: int = 49407

    def __init__(self, merges: Sequence[tuple[str, str]], cache_size: int = 65536) -> None:
        self.tokens: list[str] = build_vocab(merges)
        self.encoder: dict[str, int] = {tok: i for i, tok in enumerate(self.tokens)}
        self.ranks: dict[tuple[str, str], int] = {pair: i for i, pair in enumerate(merges)}
        self.byte_encoder: dict[int, str] = bytes_to_unicode()
        self.byte_decoder: dict[str, int] = {c: b for b, c in self.byte_encoder.items()}
        self.bos_token_id = self.encoder[BOS]
        self.eos_token_id = self.encoder[EOS]
        # Instance-level cache: each tokenizer owns its memo of word -> BPE tokens.
        self._bpe_cached = lru_cache(maxsize=cache_size)(self._bpe)

    @classmethod
    def default(cls) -> CLIPTokenizer:
        """The tokenizer of every Stable Diffusion text encoder (the vendored CLIP vocabulary)."""
        source = resources.files("huihua.checkpoints").joinpath(VOCAB_FILE)
        try:
            text = gzip.decompress(source.read_bytes()).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{VOCAB_FILE}: cannot read the vendored vocabulary ({exc})") from exc
        return cls(read_merges(text.split("\n")))

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def _bpe(self, word: str) -> tuple[str, ...]:
        """Split one pre-tokenized, byte-mapped word into BPE tokens (last one ends in ``</w>``)."""
        parts = [*word[:-1], word[-1] + END_OF_WORD]
        while len(parts) > 1:
            best_rank, best = None, None
            for pair in itertools.pairwise(parts):
                rank = self.ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best = rank, pair
            if best is None:
                break
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return tuple(parts)

    def _encode_plain(self, text: str) -> list[int]:
        """Token ids of text that holds no special tokens."""
        ids: list[int] = []
        for piece in _PIECES.findall(normalize_text(text)):
            # transformers' byte-level step splits again with GPT-2's regex; that only changes
            # special-token spellings the first split kept whole, e.g. "<|STARTOFTEXT|>".
            for word in _GPT2_PIECES.findall(piece):
                mapped = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
                ids.extend(self.encoder[tok] for tok in self._bpe_cached(mapped))
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without the start and end tokens."""
        ids: list[int] = []
        for i, part in enumerate(_SPECIALS.split(text)):
            if i % 2:
                ids.append(self.encoder[part])
            elif part:
                ids.extend(self._encode_plain(part))
        return ids

    def __call__(self, text: str, pad_token: int, length: int = 77) -> list[int]:
        """One window: ``[bos] + ids[:length-2] + [eos]``, padded with ``pad_token`` to ``length``."""
        if length < 2:
            raise ParameterError(f"length: a token window needs at least 2 positions, got {length}")
        ids = [self.bos_token_id, *self.encode(text)[: length - 2], self.eos_token_id]
        return ids + [pad_token] * (length - len(ids))

    def token_id(self, word: str) -> int:
        """Id of one vocabulary entry, e.g. ``token_id(",</w>") == 267``."""
        try:
            return self.encoder[word]
        except KeyError:
            raise PromptError(f"token_id: {word!r} is not a CLIP vocabulary entry") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids: ``</w>`` becomes a space; bytes that are not UTF-8 become U+FFFD."""
        tokens = []
        for i in ids:
            if not 0 <= int(i) < len(self.tokens):
                raise ParameterError(f"ids: token id {int(i)} is outside the vocabulary")
            tokens.append(self.tokens[int(i)])
        data = bytes(self.byte_decoder[c] for c in "".join(tokens))
        return data.decode("utf-8", errors="replace").replace(END_OF_WORD, " ").strip()
