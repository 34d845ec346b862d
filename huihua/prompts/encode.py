"""An engine's text towers as the prompt machinery's ``TokenEncoder``s, and a plain prompt to conditioning.

``text_encode_fn`` is the ``TextEncodeFn`` the pipelines hand to ``build_multicond`` (prompt
editing, alternation and AND are scheduled there; this module encodes one plain text).

SDXL runs the same windows through both towers and joins the hidden states along the width; the
pooled vector comes from the tower marked ``pooled`` in the model spec.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from huihua.checkpoints.specs import TextEncoderUse
from huihua.families import family_info
from huihua.model import Model
from huihua.prompts.conditioning import (
    ChunkOptions,
    EmbeddingFix,
    EmbeddingLookup,
    TextEncodeFn,
    encode_chunks,
    tokenize_prompt,
    used_embeddings,
)


@dataclass(frozen=True)
class PromptEmbedding:
    """Text conditioning: ``context`` (B, T, D) for cross-attention, ``pooled`` (B, P) or None."""

    context: torch.Tensor
    pooled: torch.Tensor | None

    def __iter__(self) -> Iterator[torch.Tensor | None]:  # allows ``context, pooled = engine.encode_prompt(...)``
        return iter((self.context, self.pooled))


def tower_layer(engine: Model, use: TextEncoderUse, clip_skip: int) -> tuple[int, bool]:
    """(layer, final_norm) a tower is read at; A1111 applies clip skip to SD1 only."""
    if family_info(engine.spec.family).clip_skip_applies and clip_skip > 1:
        return -min(clip_skip, use.config.layers), True
    return use.layer, use.final_norm


def token_encoder(engine: Model, index: int, clip_skip: int):
    """A ``TokenEncoder`` for text tower ``index`` of ``engine``."""
    use = engine.spec.text_encoders[index]
    module = engine.text_encoders[index]
    layer, norm = tower_layer(engine, use, clip_skip)

    def encode(tokens: torch.Tensor, overrides: Sequence[Sequence[EmbeddingFix]] | None = None):
        tokens = tokens.to(engine.device)
        kwargs = {}
        if overrides is not None:
            kwargs["embedding_overrides"] = [
                [(fix.offset, fix.embedding.vectors) for fix in row] for row in overrides
            ]
        out = module(tokens, layer=layer, final_norm=norm, want_pooled=use.pooled, **kwargs)
        return out.hidden, out.pooled

    return encode


def text_encode_fn(engine: Model, clip_skip: int = 1,
                   embeddings: Sequence[EmbeddingLookup | None] | None = None,
                   on_embeddings: Callable[[Sequence[str]], None] | None = None) -> TextEncodeFn:
    """``fn(text) -> (context, pooled)`` for ``build_multicond`` / ``build_cond_schedule``.

    ``on_embeddings`` (optional) receives the names of the embeddings placed in each text.
    """

    def encode(text: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        emb = encode_text(engine, text, clip_skip=clip_skip, embeddings=embeddings, on_embeddings=on_embeddings)
        return emb.context, emb.pooled

    return encode


@torch.inference_mode()
def encode_text(
    engine: Model,
    prompt: str,
    clip_skip: int = 1,
    embeddings: Sequence[EmbeddingLookup | None] | None = None,
    on_embeddings: Callable[[Sequence[str]], None] | None = None,
) -> PromptEmbedding:
    """One plain prompt (emphasis, BREAK, long prompts; no editing or AND) to context and pooled.

    ``on_embeddings`` (optional) receives the names of the embeddings placed, first use first.
    """

    contexts, pooled = [], None
    for i, use in enumerate(engine.spec.text_encoders):
        lookup = embeddings[i] if embeddings is not None else None
        chunked = tokenize_prompt(prompt, engine.tokenizer, ChunkOptions(pad_token=use.config.pad_token), lookup)
        if on_embeddings is not None and lookup is not None:
            on_embeddings(used_embeddings(chunked.chunks))
        context, tower_pooled = encode_chunks(chunked.chunks, token_encoder(engine, i, clip_skip))
        contexts.append(context)
        if use.pooled:
            pooled = tower_pooled
    return PromptEmbedding(torch.cat(contexts, dim=-1), pooled)
