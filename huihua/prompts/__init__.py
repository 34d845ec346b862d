"""Prompts: the AUTOMATIC1111 prompt language and prompt-to-conditioning (chunks, weights, schedules)."""

from huihua.prompts.conditioning import (
    ChunkedPrompt,
    ChunkOptions,
    CondSchedule,
    EmbeddingFix,
    EmbeddingLookup,
    EmbeddingMatch,
    MultiCond,
    PromptChunk,
    PromptTokenizer,
    ScheduledCond,
    TokenEncoder,
    apply_emphasis,
    build_cond_schedule,
    build_multicond,
    encode_chunks,
    stack_conds,
    tokenize_prompt,
    used_embeddings,
)
from huihua.prompts.extra_networks import (
    ExtraNetworkCall,
    LoraWeights,
    lora_weights,
    parse_extra_networks,
)
from huihua.prompts.parser import (
    get_learned_conditioning_prompt_schedules,
    get_multicond_prompt_list,
    parse_prompt_attention,
    split_and,
)

__all__ = [
    "ChunkOptions", "ChunkedPrompt", "CondSchedule", "EmbeddingFix", "EmbeddingLookup", "EmbeddingMatch",
    "ExtraNetworkCall", "LoraWeights", "MultiCond", "PromptChunk", "PromptTokenizer", "ScheduledCond",
    "TokenEncoder", "apply_emphasis", "build_cond_schedule", "build_multicond", "encode_chunks",
    "get_learned_conditioning_prompt_schedules", "get_multicond_prompt_list",
    "lora_weights", "parse_extra_networks", "parse_prompt_attention", "split_and", "stack_conds",
    "tokenize_prompt", "used_embeddings",
]
