"""The token pruners: FastV (last-token attention at one layer) and a seeded random drop, on one machinery."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..adapters.layers import DecoderLayerAdapter
from .base import TokenPruner


def last_token_attention(layer: DecoderLayerAdapter, hidden: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
    """``[B, T]``: the last token's attention to each visual token at ``layer``'s input, from its q/k projections
    (no rotary embedding, softmax over the visual keys only, mean over heads; 0 elsewhere). Needs no attention
    weights from the model, so it works under SDPA and flash attention."""
    normed = layer.attention_input(hidden)
    queries, keys = layer.queries(normed[:, -1]), layer.keys(normed)
    logits = torch.einsum("bhd,bthd->bht", queries.float(), keys.float()) / math.sqrt(layer.head_dim)
    weights = logits.masked_fill(~visual[:, None, :], float("-inf")).softmax(dim=-1)
    return weights.nan_to_num(0.0).mean(dim=1)


@dataclass
class FastV(TokenPruner):
    """FastV: at layer K (default 2) keep the visual tokens the last prompt token attends to most."""

    name = "fastv"

    def relevance(self, layer: DecoderLayerAdapter, hidden: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return last_token_attention(layer, hidden, visual)


@dataclass
class RandomTokens(TokenPruner):
    """The baseline: a uniformly random subset of the visual tokens, reproducible with ``seed``."""

    seed: int = 0
    name = "random"

    def relevance(self, layer: DecoderLayerAdapter, hidden: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """The same draw for every row, in the order of its visual tokens: a prompt's choice does not depend on
        the batch it is in or on its padding."""
        scores = torch.zeros(visual.shape, dtype=torch.float64)
        for row, mask in enumerate(visual.cpu()):
            scores[row, mask] = torch.rand(int(mask.sum()), generator=torch.Generator().manual_seed(self.seed),
                                           dtype=torch.float64)
        return scores.to(hidden.device)
