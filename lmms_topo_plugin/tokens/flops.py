"""Decoder prefill FLOPs from the number of tokens each layer sees (dense: the prompt length at every layer)."""

from __future__ import annotations

from transformers import PretrainedConfig


def layer_prefill_flops(text_config: PretrainedConfig, tokens: int) -> int:
    """FLOPs (2 per multiply-accumulate) of one Llama/Qwen2-style decoder layer over ``tokens`` prompt tokens:
    the q/k/v/o projections and the gated MLP per token, and causal attention (token i scores and weights i keys)."""
    d, f = text_config.hidden_size, text_config.intermediate_size
    heads = text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    head_dim = getattr(text_config, "head_dim", None) or d // heads
    projections = 2 * (2 * d * heads * head_dim + 2 * d * kv_heads * head_dim)
    mlp = 2 * 3 * d * f
    attention = 2 * 2 * heads * head_dim * tokens * (tokens + 1) // 2
    return tokens * (projections + mlp) + attention


def decoder_prefill_flops(text_config: PretrainedConfig, tokens_per_layer: list[int]) -> int:
    """The whole decoder's prefill FLOPs, layer by layer."""
    return sum(layer_prefill_flops(text_config, tokens) for tokens in tokens_per_layer)
