"""Our CLIP BPE tokenizer against transformers' CLIPTokenizer built from the same vocabulary file.

Parity is exact (token ids equal) on the shipped corpus, seeded generated prompts and a sweep of
code points. Only characters unassigned in Python's Unicode database can differ (see the README
note in the report): the sweep skips category "Cn".
"""

from __future__ import annotations

import gzip
import random
import unicodedata
from importlib import resources
from pathlib import Path

import pytest

from huihua.checkpoints.tokenizer import CLIPTokenizer, build_vocab, bytes_to_unicode, read_merges
from huihua.errors import ParameterError, PromptError

transformers = pytest.importorskip("transformers")

CORPUS = Path(__file__).with_name("prompts_corpus.txt")


@pytest.fixture(scope="module")
def ours() -> CLIPTokenizer:
    return CLIPTokenizer.default()


@pytest.fixture(scope="module")
def reference():
    """transformers' CLIPTokenizer with vocab/merges derived from the vendored gz, as CLIP does."""
    raw = resources.files("huihua.checkpoints").joinpath("bpe_simple_vocab_16e6.txt.gz").read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return transformers.CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)


def _corpus() -> list[str]:
    return [line for line in CORPUS.read_text(encoding="utf-8").split("\n") if line]


def _generated(n: int, seed: int = 1234) -> list[str]:
    """Seeded prompts mixing corpus words, A1111 syntax, unicode, whitespace and long runs."""
    rng = random.Random(seed)
    words = [w for line in _corpus() for w in line.split()]
    syntax = [
        lambda a, b, w: f"({a}:{w:.2f})",
        lambda a, b, w: f"[{a}:{b}:{int(w * 10)}]",
        lambda a, b, w: f"<lora:{a}:{w:.1f}>",
        lambda a, b, w: f"(({a}))",
        lambda a, b, w: f"[{a}|{b}]",
        lambda a, b, w: f"{a} AND {b}",
        lambda a, b, w: f"{a} BREAK {b}",
    ]
    seps = [" ", ", ", "\n", "\t", "  ", "\r\n", "\u00a0", "\u3000", ",", " . ", "\u2028"]
    extras = ["&amp;", "&lt;", "&#39;", "😀", "é", "e\u0301", "ß", "İ", "Σ", "中", "\u200b", "\x00", "\x1c", "\ufeff"]
    prompts = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 40)):
            roll = rng.random()
            if roll < 0.15:
                parts.append(rng.choice(syntax)(rng.choice(words), rng.choice(words), rng.uniform(0, 2)))
            elif roll < 0.25:
                parts.append(rng.choice(extras))
            elif roll < 0.3:
                parts.append(chr(rng.choice([rng.randint(0x20, 0x2FF), rng.randint(0x370, 0x9FFF), rng.randint(0x1F300, 0x1FAFF)])))
            else:
                word = rng.choice(words)
                parts.append(word.upper() if rng.random() < 0.1 else word)
            parts.append(rng.choice(seps))
        prompts.append("".join(parts))
    prompts.append(", ".join(words))  # one very long prompt, far past 77 tokens
    return prompts


def _ref_ids(reference, texts: list[str]) -> list[list[int]]:
    return reference(texts, add_special_tokens=False)["input_ids"]


def test_vocabulary_shape_and_known_ids(ours: CLIPTokenizer) -> None:
    assert ours.vocab_size == 49408
    assert (ours.bos_token_id, ours.eos_token_id) == (49406, 49407)
    assert ours.token_id(",</w>") == 267
    assert ours.token_id("a</w>") == 320
    assert ours.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]


def test_corpus_parity(ours: CLIPTokenizer, reference) -> None:
    texts = _corpus()
    assert len(texts) >= 100
    for text, ref in zip(texts, _ref_ids(reference, texts)):
        assert ours.encode(text) == ref, text


def test_generated_prompts_parity(ours: CLIPTokenizer, reference) -> None:
    texts = _generated(300)
    assert len(texts) + len(_corpus()) >= 200
    assert max(len(ours.encode(t)) for t in texts) > 300  # long prompts are covered
    for text, ref in zip(texts, _ref_ids(reference, texts)):
        assert ours.encode(text) == ref, repr(text)


def test_code_point_sweep_parity(ours: CLIPTokenizer, reference) -> None:
    """Every 7th assigned code point below U+30000, alone, between letters, digits and spaces."""
    points = [c for c in range(0x20, 0x30000, 7) if not 0xD800 <= c <= 0xDFFF]
    chars = [chr(c) for c in points if unicodedata.category(chr(c)) != "Cn"]
    texts = ["".join(f"a{ch}B{ch}1{ch} {ch}{ch}" for ch in chars[i : i + 16]) for i in range(0, len(chars), 16)]
    for text, ref in zip(texts, _ref_ids(reference, texts)):
        assert ours.encode(text) == ref, repr(text)


def test_special_tokens_and_casing(ours: CLIPTokenizer, reference) -> None:
    texts = ["<|startoftext|>x", "a <|endoftext|> b", "<|STARTOFTEXT|>", "ΟΔΟΣ", "Σ", "İstanbul"]
    for text, ref in zip(texts, _ref_ids(reference, texts)):
        assert ours.encode(text) == ref, text
    assert ours.encode("a <|endoftext|> b") == [320, 49407, 321]


def test_window_truncates_and_pads(ours: CLIPTokenizer, reference) -> None:
    ids = ours.encode("one two three four five six")
    window = ours("one two three four five six", pad_token=0, length=10)
    assert window == [49406, *ids, 49407, 0, 0]
    short = ours("one two three four five six", pad_token=49407, length=5)
    assert short == [49406, *ids[:3], 49407]
    long_text = _generated(1)[-1]
    ref = reference(long_text, max_length=77, truncation=True, padding="max_length")["input_ids"]
    assert ours(long_text, pad_token=49407) == ref
    assert len(ours("", pad_token=0)) == 77 and ours("", pad_token=0)[:3] == [49406, 49407, 0]
    with pytest.raises(ParameterError):
        ours("x", pad_token=0, length=1)


def test_decode_matches_reference(ours: CLIPTokenizer, reference) -> None:
    texts = _corpus()[:60]
    for text in texts:
        ids = [49406, *ours.encode(text), 49407]
        assert ours.decode(ids) == reference.decode(ids), text
    split_bytes = [ours.token_id("ð"), 320]  # first byte of an emoji, then "a</w>"
    assert ours.decode(split_bytes) == reference.decode(split_bytes)
    assert ours.decode(ours.encode("Hello,  World!")) == "hello , world !"


def test_errors_and_helpers(ours: CLIPTokenizer) -> None:
    with pytest.raises(PromptError):
        ours.token_id("notaword-in-the-vocab</w>")
    with pytest.raises(ParameterError):
        ours.decode([49408])
    merges = read_merges(["#version", "a b", *[f"x{i} y" for i in range(48893)]])
    assert len(build_vocab(merges)) == 49408 and build_vocab(merges)[512] == "ab"
