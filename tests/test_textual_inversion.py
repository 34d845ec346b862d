"""Textual inversion: embedding files, finding names in prompts, and the vectors in the conditioning.

The conditioning check uses an independent route: the same text encoder with the embedding's
vectors written into spare rows of its token-embedding table, and those row ids in the prompt's
token window. Both must give the same hidden states (tolerance 1e-6 absolute, fp32).
"""

from __future__ import annotations

import copy
from functools import cache
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from huihua.adapters.textual_inversion import Embedding, TowerEmbeddings, load_embedding, load_embeddings, tower_lookups
from huihua.checkpoints.tokenizer import CLIPTokenizer
from huihua.errors import CheckpointError, UnsafePickleError
from huihua.prompts.conditioning import CHUNK_LENGTH, ChunkOptions, tokenize_prompt
from huihua.prompts.encode import encode_text
from tests.test_lora import TinyModel, tiny_model

SPARE_IDS = (49000, 49001, 49002, 49003)  # rows the oracle overwrites (below the end token 49407)


@cache
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.default()


def vectors(n: int, width: int, seed: int) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


class _Opaque:
    pass


def test_embedding_file_formats(tmp_path):
    a1111 = vectors(2, 24, 1)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": a1111}, "name": "x", "step": 500,
                "sd_checkpoint": "abcdef", "sd_checkpoint_name": "model"}, tmp_path / "a1111.pt")
    emb = load_embedding(tmp_path / "a1111.pt")
    assert emb.name == "a1111" and emb.vector_count == 2 and torch.equal(emb.vectors["*"], a1111)

    st = vectors(3, 24, 2)
    save_file({"emb_params": st}, str(tmp_path / "st.safetensors"))
    assert torch.equal(load_embedding(tmp_path / "st.safetensors").vectors["*"], st)

    clip_l, clip_g = vectors(2, 8, 3), vectors(2, 16, 4)
    save_file({"clip_l": clip_l, "clip_g": clip_g}, str(tmp_path / "xl.safetensors"))
    xl = load_embedding(tmp_path / "xl.safetensors")
    assert torch.equal(xl.vectors["clip_l"], clip_l) and torch.equal(xl.vectors["clip_g"], clip_g)

    token = vectors(1, 24, 5)[0]
    torch.save({"<cat-toy>": token}, tmp_path / "learned_embeds.bin")
    assert torch.equal(load_embedding(tmp_path / "learned_embeds.bin").vectors["*"], token[None])

    save_file({"a": st, "b": st.clone()}, str(tmp_path / "other.safetensors"))
    save_file({"clip_l": clip_l, "clip_g": vectors(3, 16, 6)}, str(tmp_path / "uneven.safetensors"))
    torch.save({"string_to_param": {"*": a1111}, "extra": _Opaque()}, tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError, match="not a textual-inversion embedding"):
        load_embedding(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="different vector counts"):
        load_embedding(tmp_path / "uneven.safetensors")
    with pytest.raises(UnsafePickleError):
        load_embedding(tmp_path / "unsafe.pt")

    paths = sorted(tmp_path.iterdir())
    loaded, errors = load_embeddings(paths)
    assert sorted(e.name for e in loaded) == ["a1111", "learned_embeds", "st", "xl"]
    assert len(errors) == 3 and any("unsafe.pt" in e for e in errors)


def test_towers_take_vectors_of_their_width():
    single = Embedding("one", {"*": vectors(2, 8, 1)})
    pair = Embedding("two", {"clip_l": vectors(1, 8, 2), "clip_g": vectors(1, 16, 3)})
    assert torch.equal(single.for_tower(0, 1, 8), single.vectors["*"])
    assert single.for_tower(0, 1, 24) is None and single.for_tower(0, 2, 8) is None  # SD1 file on SDXL: skipped
    assert torch.equal(pair.for_tower(0, 2, 8), pair.vectors["clip_l"])
    assert torch.equal(pair.for_tower(1, 2, 16), pair.vectors["clip_g"])
    assert torch.equal(pair.for_tower(0, 1, 8), pair.vectors["clip_l"]) and pair.for_tower(0, 1, 24) is None
    lookups, skipped = tower_lookups([single, pair], tokenizer().encode, (8, 16))
    assert skipped == ("one",)
    ids = tokenizer().encode("two")
    assert lookups[1].find_at(ids, 0).vectors.shape == (1, 16) and lookups[0].find_at(ids, 0).vectors.shape == (1, 8)


def test_names_found_longest_first_and_counted_in_chunks():
    tok = tokenizer()
    long = Embedding("neg_style_v2", {"*": vectors(3, 24, 1)})
    short = Embedding("neg", {"*": vectors(1, 24, 2)})
    lookup = TowerEmbeddings([short, long], tok.encode, 0, 1, 24)
    ids = tok.encode("a neg_style_v2 cat neg")
    found = [(i, m.name) for i in range(len(ids)) if (m := lookup.find_at(ids, i)) is not None]
    assert found == [(1, "neg_style_v2"), (len(ids) - len(tok.encode("neg")), "neg")]

    chunked = tokenize_prompt("a neg_style_v2 cat", tok, ChunkOptions(), lookup)
    assert chunked.token_count == 1 + 3 + 1  # the name's 6 tokens count as its 3 vectors
    (chunk,) = chunked.chunks
    assert [(f.offset, f.embedding.name) for f in chunk.fixes] == [(2, "neg_style_v2")]
    # An embedding that would cross the 75-token boundary moves whole into the next window.
    filler = " ".join(["cat"] * (CHUNK_LENGTH - 1))
    chunked = tokenize_prompt(f"{filler} neg_style_v2", tok, ChunkOptions(comma_padding_backtrack=0), lookup)
    assert len(chunked.chunks) == 2 and not chunked.chunks[0].fixes
    assert [f.offset for f in chunked.chunks[1].fixes] == [1]


def fake_engine(model: TinyModel) -> SimpleNamespace:
    return SimpleNamespace(spec=model.spec, text_encoders=model.text_encoders, device=torch.device("cpu"),
                           tokenizer=tokenizer())


def oracle_context(model: TinyModel, prompt: str, lookups) -> list[torch.Tensor]:
    """Per tower: hidden states with the vectors written into spare token rows instead."""
    out = []
    for i, (use, encoder) in enumerate(zip(model.spec.text_encoders, model.text_encoders)):
        chunked = tokenize_prompt(prompt, tokenizer(), ChunkOptions(pad_token=use.config.pad_token), lookups[i])
        (chunk,) = chunked.chunks
        tokens = list(chunk.tokens)
        clone = copy.deepcopy(encoder)
        table = clone.token_embedding().weight
        spare = iter(SPARE_IDS)
        with torch.no_grad():
            for fix in chunk.fixes:
                for j, vector in enumerate(fix.embedding.vectors):
                    token = next(spare)
                    table[token] = vector
                    tokens[fix.offset + j] = token
            hidden = clone(torch.tensor([tokens]), layer=use.layer, final_norm=use.final_norm).hidden
        out.append(hidden)
    return out


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_vectors_land_at_the_name_positions_of_the_conditioning(family):
    model = tiny_model(family)
    widths = [u.config.width for u in model.spec.text_encoders]
    if family == "sd1":
        emb = Embedding("shiny_style", {"*": vectors(3, 24, 7)})
    else:
        emb = Embedding("shiny_style", {"clip_l": vectors(3, 8, 7), "clip_g": vectors(3, 16, 8)})
    lookups, skipped = tower_lookups([emb], tokenizer().encode, widths)
    assert skipped == ()
    prompt = "a photo of shiny_style, red"
    engine = fake_engine(model)
    with_name = encode_text(engine, prompt, embeddings=lookups).context
    expected = torch.cat(oracle_context(model, prompt, lookups), dim=-1)
    assert with_name.shape == expected.shape == (1, 77, sum(widths))
    assert (with_name - expected).abs().max().item() <= 1e-6
    # the embedding changes the conditioning, compared with the same text read as plain words
    plain = encode_text(engine, prompt).context
    assert (with_name - plain).abs().max().item() > 1e-3
    without = encode_text(engine, "a photo of, red", embeddings=lookups).context
    assert (with_name - without).abs().max().item() > 1e-3
