"""Decoder prefill FLOPs from the tokens each layer computes (dense: the prompt length at every layer)."""

from __future__ import annotations

from typing import Sequence

from transformers import PretrainedConfig


def layer_prefill_flops(text_config: PretrainedConfig, tokens: int, queries: int | None = None) -> int:
    """FLOPs (2 per multiply-accumulate) of one Llama/Qwen2-style decoder layer over ``tokens`` prompt tokens, of
    which ``queries`` (default: all) are computed (the others, frozen visual tokens, give keys and values only):
    the q/o projections and the gated MLP per query, the k/v projections per token, and attention: causal (token
    i scores and weights i keys) when every token is a query, else every query against every key (frozen visual
    tokens mostly precede the text queries)."""
    queries = tokens if queries is None else queries
    d, f = text_config.hidden_size, text_config.intermediate_size
    heads = text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    head_dim = getattr(text_config, "head_dim", None) or d // heads
    query_side = 2 * 2 * d * heads * head_dim + 2 * 3 * d * f
    key_side = 2 * 2 * d * kv_heads * head_dim
    pairs = tokens * (tokens + 1) // 2 if queries == tokens else queries * tokens
    return queries * query_side + tokens * key_side + 2 * 2 * heads * head_dim * pairs


def decoder_prefill_flops(text_config: PretrainedConfig, tokens_per_layer: Sequence[int | tuple[int, int]]) -> int:
    """The whole decoder's prefill FLOPs, layer by layer: per layer its token count, or ``(queries, tokens)``."""
    total = 0
    for entry in tokens_per_layer:
        queries, tokens = entry if isinstance(entry, tuple) else (entry, entry)
        total += layer_prefill_flops(text_config, tokens, queries)
    return total
