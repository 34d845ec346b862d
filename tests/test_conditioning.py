"""Prompt -> conditioning: A1111's chunking (comma backtrack, BREAK, embeddings), emphasis, schedules.

A fake word-level tokenizer ("wN" -> 1000+N, "," -> 267) and a fake encoder (a fixed random
table) make every position predictable; the real CLIP tokenizer is used once for the wiring.
Tolerances: float32 arithmetic, 1e-6.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from huihua.errors import ParameterError, PromptError
from huihua.prompts import (
    ChunkOptions,
    CondSchedule,
    EmbeddingMatch,
    ScheduledCond,
    apply_emphasis,
    build_cond_schedule,
    build_multicond,
    encode_chunks,
    stack_conds,
    tokenize_prompt,
    used_embeddings,
)

BOS, EOS, COMMA = 49406, 49407, 267
D = 4


class FakeTokenizer:
    """Whitespace words: ``wN`` -> 1000+N, ``,`` -> 267, ``emb``/``big``/``pair`` -> fixed ids."""

    bos_token_id = BOS
    eos_token_id = EOS
    named = {"emb": 5000, "big": 5001, "pair": 5002, "tail": 5003, "(": 40, ")": 41, "BREAK": 6000}

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in text.replace(",", " , ").replace("(", " ( ").replace(")", " ) ").split():
            ids.append(COMMA if word == "," else self.named[word] if word in self.named else 1000 + int(word[1:]))
        return ids

    def token_id(self, word: str) -> int:
        assert word == ",</w>"
        return COMMA


class FakeEmbeddings:
    """``emb`` is 3 vectors; ``big`` is 10; ``pair tail`` (two tokens) is 2 vectors."""

    def __init__(self) -> None:
        self.table = {
            (5000,): EmbeddingMatch("emb", torch.full((3, D), 7.0), 1),
            (5001,): EmbeddingMatch("big", torch.full((10, D), 8.0), 1),
            (5002, 5003): EmbeddingMatch("pair", torch.full((2, D), 9.0), 2),
        }

    def find_at(self, tokens: Sequence[int], position: int) -> EmbeddingMatch | None:
        for ids, match in sorted(self.table.items(), key=lambda kv: -len(kv[0])):
            if tuple(tokens[position : position + len(ids)]) == ids:
                return match
        return None


def words(start: int, count: int) -> str:
    return " ".join(f"w{i}" for i in range(start, start + count))


def ids(start: int, count: int) -> list[int]:
    return [1000 + i for i in range(start, start + count)]


class FakeEncoder:
    """hidden[b, t] = table[token] + 0.01 * t, with embedding overrides; pooled = hidden[:, 0] * 2."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(50000, D, generator=g)
        self.calls: list[tuple[torch.Tensor, object]] = []

    def __call__(self, tokens: torch.Tensor, overrides=None):
        self.calls.append((tokens.clone(), overrides))
        emb = self.table[tokens]
        if overrides is not None:
            for row, fixes in enumerate(overrides):
                for fix in fixes:
                    n = fix.embedding.vectors.shape[0]
                    emb[row, fix.offset : fix.offset + n] = fix.embedding.vectors
        hidden = emb + 0.01 * torch.arange(tokens.shape[1], dtype=torch.float32)[None, :, None]
        return hidden, hidden[:, 0] * 2


TOK = FakeTokenizer()


def test_short_prompt_is_one_window_with_weights() -> None:
    chunked = tokenize_prompt("w1 (w2:1.5) w3", TOK)
    (chunk,) = chunked.chunks
    assert chunk.tokens == (BOS, 1001, 1002, 1003, *[EOS] * 73)
    assert chunk.weights == (1.0, 1.0, 1.5, 1.0, *[1.0] * 73)
    assert len(chunk.tokens) == len(chunk.weights) == 77
    assert chunked.token_count == 3


def test_openclip_pads_with_zero_after_the_first_eos() -> None:
    (chunk,) = tokenize_prompt("w1 w2", TOK, ChunkOptions(pad_token=0)).chunks
    assert chunk.tokens == (BOS, 1001, 1002, EOS, *[0] * 73)
    full = tokenize_prompt(words(0, 75), TOK, ChunkOptions(pad_token=0)).chunks[0]
    assert full.tokens == (BOS, *ids(0, 75), EOS)


def test_empty_prompt_is_one_padded_window() -> None:
    chunked = tokenize_prompt("", TOK, ChunkOptions(pad_token=0))
    assert [c.tokens for c in chunked.chunks] == [(BOS, EOS, *[0] * 75)]
    assert chunked.token_count == 0


def test_long_prompts_take_two_and_three_windows() -> None:
    two = tokenize_prompt(words(0, 80), TOK)
    assert [c.tokens[1:-1] for c in two.chunks] == [tuple(ids(0, 75)), (*ids(75, 5), *[EOS] * 70)]
    assert two.token_count == 80
    three = tokenize_prompt(words(0, 160), TOK)
    assert len(three.chunks) == 3 and three.token_count == 160
    assert three.chunks[2].tokens[1:11] == tuple(ids(150, 10))
    exactly = tokenize_prompt(words(0, 75), TOK)
    assert len(exactly.chunks) == 1 and exactly.chunks[0].tokens[-1] == EOS


def test_comma_backtrack_moves_the_tail_after_the_last_comma() -> None:
    # 70 words, a comma (position 70), 10 words: when the window is full the comma is 5 back.
    chunks = tokenize_prompt(f"{words(0, 70)} , {words(70, 10)}", TOK).chunks
    assert chunks[0].tokens[1:72] == (*ids(0, 70), COMMA)
    assert chunks[0].tokens[72:] == (EOS,) * 5
    assert chunks[1].tokens[1:11] == tuple(ids(70, 10))
    # comma 25 tokens back (> 20): no backtrack
    far = tokenize_prompt(f"{words(0, 50)} , {words(50, 30)}", TOK).chunks
    assert far[0].tokens[1:76] == (*ids(0, 50), COMMA, *ids(50, 24))
    # backtrack disabled
    off = tokenize_prompt(f"{words(0, 70)} , {words(70, 10)}", TOK, ChunkOptions(comma_padding_backtrack=0)).chunks
    assert off[0].tokens[1:76] == (*ids(0, 70), COMMA, *ids(70, 4))


def test_comma_exactly_at_the_limit_and_as_the_76th_token() -> None:
    at_limit = tokenize_prompt(f"{words(0, 55)} , {words(55, 25)}", TOK).chunks  # comma 20 back
    assert at_limit[0].tokens[56] == COMMA and at_limit[0].tokens[57] == EOS
    comma_first = tokenize_prompt(f"{words(0, 75)} , w99", TOK).chunks
    assert comma_first[0].tokens[1:76] == tuple(ids(0, 75))
    assert comma_first[1].tokens[1:3] == (COMMA, 1099)


def test_weights_move_with_backtracked_tokens() -> None:
    chunks = tokenize_prompt(f"{words(0, 70)} , ({words(70, 10)}:1.3)", TOK).chunks
    assert chunks[0].weights[72:] == (1.0,) * 5
    assert chunks[1].weights[1:11] == (1.3,) * 10 and chunks[1].weights[11] == 1.0


def test_break_forces_a_new_window() -> None:
    chunks = tokenize_prompt("w1 BREAK w2", TOK).chunks
    assert [c.tokens[:3] for c in chunks] == [(BOS, 1001, EOS), (BOS, 1002, EOS)]
    leading = tokenize_prompt("BREAK w1", TOK).chunks
    assert len(leading) == 2 and leading[0].tokens[:2] == (BOS, EOS)
    assert len(tokenize_prompt("w1 BREAK", TOK).chunks) == 1
    # inside brackets BREAK's weight is no longer -1: A1111 then tokenizes it as a word
    (weighted,) = tokenize_prompt("(w1 BREAK w2)", TOK).chunks
    assert weighted.tokens[1:4] == (1001, 6000, 1002)
    literal = tokenize_prompt("(w1 w2)", TOK, ChunkOptions(emphasis="None")).chunks[0]
    assert literal.tokens[1:5] == (40, 1001, 1002, 41) and set(literal.weights) == {1.0}


def test_embedding_occupies_its_vectors_and_is_never_split() -> None:
    emb = FakeEmbeddings()
    (chunk,) = tokenize_prompt("w1 emb w2", TOK, embeddings=emb).chunks
    assert chunk.tokens[:7] == (BOS, 1001, 0, 0, 0, 1002, EOS)
    assert [(f.offset, f.embedding.name) for f in chunk.fixes] == [(2, "emb")]
    # 73 words then a 3-vector embedding: 73 + 3 > 75, so it opens the next window
    chunks = tokenize_prompt(f"{words(0, 73)} emb w99", TOK, embeddings=emb).chunks
    assert chunks[0].tokens[74:] == (EOS,) * 3 and chunks[0].fixes == ()
    assert chunks[1].tokens[1:6] == (0, 0, 0, 1099, EOS)
    assert [(f.offset, f.embedding.name) for f in chunks[1].fixes] == [(1, "emb")]
    # a two-token name is consumed whole; weights cover every vector
    (pair,) = tokenize_prompt("(pair tail:1.2) w5", TOK, embeddings=emb).chunks
    assert pair.tokens[:5] == (BOS, 0, 0, 1005, EOS) and pair.weights[1:4] == (1.2, 1.2, 1.0)
    assert used_embeddings([*chunks, pair]) == ["emb", "pair"]


def test_embedding_moved_by_comma_backtrack_keeps_its_vectors() -> None:
    emb = FakeEmbeddings()
    chunks = tokenize_prompt(f"{words(0, 70)} , emb w1 w2 w3", TOK, embeddings=emb).chunks
    assert chunks[0].fixes == () and chunks[0].tokens[72:] == (EOS,) * 5
    assert chunks[1].tokens[1:4] == (0, 0, 0)
    assert [(f.offset, f.embedding.name) for f in chunks[1].fixes] == [(1, "emb")]


def test_embedding_longer_than_a_window_is_refused() -> None:
    class Huge(FakeEmbeddings):
        def find_at(self, tokens, position):
            return EmbeddingMatch("huge", torch.zeros(76, D), 1) if tokens[position] == 5000 else None

    with pytest.raises(PromptError, match="huge"):
        tokenize_prompt("emb", TOK, embeddings=Huge())


def test_emphasis_restores_the_mean_with_explicit_numbers() -> None:
    hidden = torch.ones(1, 77, D)
    weights = torch.ones(1, 77)
    weights[0, 1] = 2.0
    out = apply_emphasis(hidden, weights, "Original")
    # mean after weighting = 78/77; restored by 77/78
    assert out[0, 1, 0].item() == pytest.approx(2 * 77 / 78, abs=1e-6)
    assert out[0, 5, 0].item() == pytest.approx(77 / 78, abs=1e-6)
    assert out.mean().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(apply_emphasis(hidden, weights, "No norm")[0, 1], torch.full((D,), 2.0))
    assert torch.equal(apply_emphasis(hidden, weights, "Ignore"), hidden)


def test_encode_chunks_weights_each_window_and_concatenates() -> None:
    enc = FakeEncoder()
    chunked = tokenize_prompt(f"({words(0, 3)}:1.4) {words(3, 80)}", TOK)
    context, pooled = encode_chunks(chunked.chunks, enc)
    assert context.shape == (1, 154, D) and pooled.shape == (1, D)
    tokens, overrides = enc.calls[0]
    assert tokens.shape == (2, 77) and overrides is None
    raw, raw_pooled = FakeEncoder()(tokens)
    for i in range(2):
        z, w = raw[i], torch.tensor(chunked.chunks[i].weights)[:, None]
        expected = z * w * (z.mean() / (z * w).mean())
        torch.testing.assert_close(context[0, 77 * i : 77 * (i + 1)], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(pooled, raw_pooled[:1])  # pooled from the first window only
    assert context[0, 1:4].mean() / raw[0, 1:4].mean() > 1.3  # the weighted words got louder


def test_encode_passes_embedding_overrides() -> None:
    enc = FakeEncoder()
    options = ChunkOptions(emphasis="Ignore")
    chunked = tokenize_prompt("w1 emb", TOK, options, FakeEmbeddings())
    context, _ = encode_chunks(chunked.chunks, enc, options.emphasis)
    _, overrides = enc.calls[0]
    assert [[(f.offset, f.embedding.name) for f in row] for row in overrides] == [[(2, "emb")]]
    expected = 7.0 + 0.01 * torch.arange(2, 5, dtype=torch.float32)[:, None].expand(3, D)
    torch.testing.assert_close(context[0, 2:5], expected)


def test_encode_checks_the_encoder_output_shape() -> None:
    with pytest.raises(PromptError, match="encoder returned"):
        encode_chunks(tokenize_prompt("w1", TOK).chunks, lambda t, o=None: (torch.zeros(1, 10, D), None))
    with pytest.raises(ParameterError, match="emphasis"):
        ChunkOptions(emphasis="Loud")  # type: ignore[arg-type]


def const(value: float) -> tuple[torch.Tensor, None]:
    return torch.full((1, 77, D), value), None


def test_cond_schedule_lookup_follows_a1111() -> None:
    sched = CondSchedule((ScheduledCond(3, *const(1.0)), ScheduledCond(10, *const(2.0))))
    assert [sched.at(s)[0][0, 0, 0].item() for s in (0, 3, 4, 10)] == [1.0, 1.0, 2.0, 2.0]
    assert sched.at(11)[0][0, 0, 0].item() == 1.0  # past the end: A1111 falls back to the first
    with pytest.raises(ParameterError):
        CondSchedule(())


def test_build_multicond_encodes_each_text_once() -> None:
    seen: list[str] = []

    def encode_text(text: str):
        seen.append(text)
        return const(float(len(seen)))

    multi = build_multicond("a [b:c:5] AND a b:0.5 AND a [b:c:5]", encode_text, steps=10)
    assert seen == ["a b", "a c", " a b", " a c"]  # the third part's " a b" reuses the second's
    at2, at7 = multi.at(2), multi.at(7)
    assert [(c[0, 0, 0].item(), w) for c, _, w in at2] == [(1.0, 1.0), (3.0, 0.5), (3.0, 1.0)]
    assert [(c[0, 0, 0].item(), w) for c, _, w in at7] == [(2.0, 1.0), (3.0, 0.5), (4.0, 1.0)]
    direct = build_cond_schedule([(4, "x"), (10, "x")], lambda t: const(5.0))
    assert direct.entries[0].context is direct.entries[1].context


def test_stack_conds_repeats_the_last_vector() -> None:
    short = torch.arange(2 * 77 * D, dtype=torch.float32).reshape(1, 154, D)[:, :77]
    long = torch.zeros(1, 154, D)
    stacked = stack_conds([short, long])
    assert stacked.shape == (2, 154, D)
    assert torch.equal(stacked[0, 77:], short[0, -1:].expand(77, D))
    assert torch.equal(stacked[1], long[0])


def test_real_clip_tokenizer_wiring() -> None:
    from huihua.checkpoints.tokenizer import CLIPTokenizer

    tok = CLIPTokenizer.default()
    prompt = ", ".join(["masterpiece", "best quality", "(a red car:1.2)", "[blurry]"] * 12)
    chunks = tokenize_prompt(prompt, tok).chunks
    assert len(chunks) == 2
    first = chunks[0].tokens
    assert first[0] == BOS and EOS in first
    content = first[1 : first.index(EOS)]
    assert content[-1] == COMMA and 55 <= len(content) <= 75  # cut after a comma (backtrack)
    assert 1.2 in chunks[0].weights and (1 / 1.1) in chunks[0].weights


def test_emphasis_of_zero_mean_states_is_finite() -> None:
    # A final LayerNorm with zero bias gives rows whose mean is exactly 0: A1111's ratio would be 0/0.
    hidden = torch.tensor([[[1.0, -1.0], [2.0, -2.0]]])
    plain = apply_emphasis(hidden, torch.ones(1, 2))
    assert torch.equal(plain, hidden)
    weighted = apply_emphasis(hidden, torch.tensor([[1.0, 1.5]]))
    assert torch.isfinite(weighted).all()
    assert torch.equal(weighted, torch.tensor([[[1.0, -1.0], [3.0, -3.0]]]))
