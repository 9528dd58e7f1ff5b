"""Per-layer adapters: what calibration and token pruners need from one decoder layer.

The default fits the decoders of every supported family in transformers 5 (Llama, Mistral, Qwen2): the layer is
called as ``layer(hidden_states, attention_mask=, position_embeddings=, position_ids=, cache=, ...)`` and returns
the hidden states; its attention has ``q_proj``/``k_proj`` and a ``layer_idx`` into the KV cache. Along the token
axis run the hidden states (``[B, T, d]``), the attention mask (``[B, 1, Q, K]`` or ``None``), the rotary
``position_embeddings`` (``cos``/``sin``, ``[B, T, dh]``, or ``[3, B, T, dh]`` for M-RoPE) and ``position_ids``
(``[B, T]`` or ``None``).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig


def gather_tokens(tensor: torch.Tensor, index: torch.Tensor, dim: int, batch_dim: int) -> torch.Tensor:
    """``tensor`` at ``index`` (``[B, T']``, per batch row) along ``dim``; ``tensor``'s ``batch_dim`` has size B
    or 1 (broadcast)."""
    dim, batch_dim = dim % tensor.ndim, batch_dim % tensor.ndim
    size = list(tensor.shape)
    size[batch_dim] = index.shape[0]
    tensor = tensor.expand(size)
    shape = [1] * tensor.ndim
    shape[batch_dim], shape[dim] = index.shape
    size[dim] = index.shape[1]
    return tensor.gather(dim, index.view(shape).expand(size))


class DecoderLayerAdapter:
    """One decoder layer: its attention projections, head layout, and how its call follows the token axis."""

    def __init__(self, layer: nn.Module, text_config: PretrainedConfig) -> None:
        self.layer = layer
        self.attention = layer.self_attn
        heads = text_config.num_attention_heads
        self.head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
        # counted from the projections: a width-pruned layer may have fewer heads than the config states
        self.num_heads = self.attention.q_proj.out_features // self.head_dim
        self.num_kv_heads = self.attention.k_proj.out_features // self.head_dim

    @property
    def cache_index(self) -> int:
        """The layer's index in the KV cache."""
        return self.attention.layer_idx

    def attention_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """What the attention projections see: the layer's input norm of ``hidden``."""
        return self.layer.input_layernorm(hidden)

    def queries(self, normed: torch.Tensor) -> torch.Tensor:
        """``[..., H, dh]`` queries (no rotary embedding)."""
        return self.attention.q_proj(normed).unflatten(-1, (self.num_heads, self.head_dim))

    def keys(self, normed: torch.Tensor) -> torch.Tensor:
        """``[..., H, dh]`` keys (no rotary embedding), KV heads repeated to the query heads (GQA)."""
        return self.kv_keys(normed).repeat_interleave(self.num_heads // self.num_kv_heads, dim=-2)

    def kv_keys(self, normed: torch.Tensor) -> torch.Tensor:
        """``[..., H_kv, dh]`` keys (no rotary embedding), as many heads as the cache holds."""
        return self.attention.k_proj(normed).unflatten(-1, (self.num_kv_heads, self.head_dim))

    def values(self, normed: torch.Tensor) -> torch.Tensor:
        """``[..., H_kv, dh]`` values (KV heads, as the cache holds them)."""
        return self.attention.v_proj(normed).unflatten(-1, (self.num_kv_heads, self.head_dim))

    def cache_keys(self, normed: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``[B, H_kv, T, dh]`` keys as the layer writes them into the KV cache: projected, rotary-embedded with
        ``rotary`` (``cos``/``sin`` ``[B, T, dh]``, the layer's own ``position_embeddings`` at those tokens)."""
        return self.rotate(self.kv_keys(normed).transpose(1, 2), rotary)

    def rotate(self, states: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``[B, heads, T, dh]`` states rotary-embedded by the attention's own modeling function."""
        apply = sys.modules[type(self.attention).__module__].apply_rotary_pos_emb
        return apply(states, states, *rotary)[1]

    @staticmethod
    def hidden_states(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
        return args[0] if args else kwargs["hidden_states"]

    @staticmethod
    def output_states(output: Any) -> torch.Tensor:
        return output[0] if isinstance(output, tuple) else output

    @staticmethod
    def with_hidden_states(args: tuple, kwargs: dict[str, Any], hidden: torch.Tensor) -> tuple[tuple, dict]:
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    @staticmethod
    def keep_tokens(kwargs: dict[str, Any], query_index: torch.Tensor | None, key_index: torch.Tensor) -> dict:
        """The call's token-axis kwargs restricted to ``query_index`` (the positions this call computes; ``None``
        when they are all new tokens, as in a decoding step) and ``key_index`` (the positions it attends to)."""
        out = dict(kwargs)
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor):
            if query_index is not None:
                mask = gather_tokens(mask, query_index, dim=-2, batch_dim=0)
            out["attention_mask"] = gather_tokens(mask, key_index, dim=-1, batch_dim=0)
        if query_index is not None:
            if kwargs.get("position_embeddings") is not None:
                out["position_embeddings"] = tuple(gather_tokens(part, query_index, dim=-2, batch_dim=-3)
                                                   for part in kwargs["position_embeddings"])
            if isinstance(kwargs.get("position_ids"), torch.Tensor):
                out["position_ids"] = gather_tokens(kwargs["position_ids"], query_index, dim=-1, batch_dim=-2)
        return out
