"""The token pruners: FastV (last-token attention at one layer), CoMP's collaborative token importance (the
attention every query gives, the maximum over heads), HalfV (step 1: relevance anchors and a diversity
fill at the IVR layer; step 2 from the SSR layer: freezing, or the top 5% by attention) and a seeded random drop,
on one machinery."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from lmms_topo_plugin.tokens.configs import HalfVConfig
from lmms_topo_plugin.families.layers import DecoderLayerAdapter
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.tokens.base import TokenPruner, drop_lowest

SSR_MODES = ("freeze", "top5", "off")
SSR_KEEP = 0.05  # HalfV's top5: the share of the original visual tokens kept from the SSR layer on


def last_token_attention(layer: DecoderLayerAdapter, hidden: torch.Tensor, visual: torch.Tensor,
                         rotary: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``[B, T]``: the last token's attention to each visual token at ``layer``'s input, from its q/k projections
    (softmax over the visual keys only, mean over heads; 0 elsewhere), without rotary embedding or, given the
    layer's ``rotary`` ``cos``/``sin`` at these tokens, with it. Needs no attention weights from the model, so it
    works under SDPA and flash attention."""
    normed = layer.attention_input(hidden)
    queries, keys = layer.queries(normed[:, -1:]), layer.keys(normed)  # [B, 1, H, dh], [B, T, H, dh]
    if rotary is not None:
        queries = layer.rotate(queries.transpose(1, 2), tuple(part[..., -1:, :] for part in rotary)).transpose(1, 2)
        keys = layer.rotate(keys.transpose(1, 2), rotary).transpose(1, 2)
    logits = torch.einsum("bhd,bthd->bht", queries[:, 0].float(), keys.float()) / math.sqrt(layer.head_dim)
    weights = logits.masked_fill(~visual[:, None, :], float("-inf")).softmax(dim=-1)
    return weights.nan_to_num(0.0).mean(dim=1)


@dataclass
class FastV(TokenPruner):
    """FastV: at layer K (default 2) keep the visual tokens the last prompt token attends to most."""

    name = "fastv"
    summary = "FastV: at token_layer keep the visual tokens the last prompt token attends to most"

    def relevance(self, layer: DecoderLayerAdapter, hidden: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return last_token_attention(layer, hidden, visual)


QUERY_CHUNK = 256  # queries per attention block in received_attention (bounds its memory to B x H x 256 x T)


def received_attention(layer: DecoderLayerAdapter, hidden: torch.Tensor,
                       rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
                       heads: Sequence[int] | None = None) -> torch.Tensor:
    """``[B, T]``: ``Σ_n max_h A[h, n, i]``, the attention each position ``i`` receives from every query ``n`` at
    ``layer``'s input (causal softmax over all keys, from its q/k projections, with the rotary embedding when
    ``rotary`` is given), the maximum over the query heads ``heads`` (default: all; pruned heads do not vote).
    CoMP's collaborative token importance, up to its normalisation (which does not change a ranking)."""
    normed = layer.attention_input(hidden)
    queries, keys = layer.queries(normed).transpose(1, 2), layer.keys(normed).transpose(1, 2)  # [B, H, T, dh]
    if rotary is not None:
        queries, keys = layer.rotate(queries, rotary), layer.rotate(keys, rotary)
    if heads is not None:
        queries, keys = queries[:, list(heads)], keys[:, list(heads)]
    length = hidden.shape[1]
    positions = torch.arange(length, device=hidden.device)
    received = torch.zeros(hidden.shape[0], length, dtype=torch.float32, device=hidden.device)
    for start in range(0, length, QUERY_CHUNK):
        block = slice(start, min(start + QUERY_CHUNK, length))
        logits = queries[:, :, block].float() @ keys.float().transpose(-1, -2) / math.sqrt(layer.head_dim)
        logits = logits.masked_fill(positions[None, :] > positions[block, None], float("-inf"))
        received += logits.softmax(dim=-1).amax(dim=1).sum(dim=1)
    return received


@dataclass
class CollaborativeTokens(TokenPruner):
    """CoMP's token pruning: at layer K keep the visual tokens that receive the most attention from all queries
    (the maximum over heads, with rotary embedding). ``heads``: the query heads that vote (CoMP's search passes
    the kept heads of a masked model; a sliced model has only those); not part of the record."""

    heads: tuple[int, ...] | None = field(default=None, compare=False, repr=False)
    name = "cit"
    summary = ("CoMP's token importance: at token_layer keep the visual tokens that receive the most attention from "
               "all queries (the maximum over heads)")

    def relevance(self, layer: DecoderLayerAdapter, hidden: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return received_attention(layer, hidden, heads=self.heads)

    def select(self, stage, adapter, layer, hidden, visual, original_visual, rotary) -> torch.Tensor:
        return drop_lowest(received_attention(layer, hidden, rotary, self.heads), visual, self.drop_count(visual))


def farthest_point_fill(features: torch.Tensor, selected: list[int], total: int) -> list[int]:
    """Grow ``selected`` (indices into ``features`` ``[n, d]``, unit rows) to ``total`` by repeatedly adding the
    row farthest in cosine distance from everything selected so far (ties: the lowest index)."""
    selected = list(selected) or [0]
    distance = (1 - features @ features[selected].T).min(dim=1).values
    distance[selected] = -1.0
    while len(selected) < total:
        pick = int(distance.argmax())
        selected.append(pick)
        distance = torch.minimum(distance, 1 - features @ features[pick])
        distance[selected] = -1.0
    return selected[:total]


@dataclass
class HalfV(TokenPruner):
    """HalfV. Step 1 (intrinsic visual redundancy) at the IVR layer ``layer``: of the ``K = max(1, floor(|V| * keep))``
    visual tokens kept, ``floor(K * anchor)`` are the most relevant (last-token attention, as FastV) and the rest a
    greedy farthest-point fill on the L2-normalised final-normed features (cosine distance). Step 2 (secondary
    saturation redundancy) from the SSR layer ``ssr_layer``, by ``ssr_mode``: ``freeze`` (the visual tokens give
    keys and values only from there on), ``top5`` (keep the ``ssr_keep`` fraction of the original visual tokens,
    at least one, with the highest last-token attention, with rotary embedding) or ``off`` (step 1 alone)."""

    anchor: float
    ssr_layer: int | None = None
    ssr_mode: str = "off"
    ssr_keep: float = SSR_KEEP
    name = "halfv"
    summary = ("HalfV: at its IVR layer keep relevance anchors and a diversity fill; from its SSR layer freeze the "
               "visual tokens or keep the top 5% by attention")
    config_class = HalfVConfig

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ssr_mode not in SSR_MODES:
            raise ModelArgsError(f"model_args: token_ssr_mode={self.ssr_mode!r} is not valid; expected one of "
                                 f"{', '.join(SSR_MODES)}")
        if self.ssr_mode != "off" and self.ssr_layer is None:
            raise ModelArgsError(f"model_args: token_ssr_mode={self.ssr_mode} needs token_ssr_layer=")
        first = self.layer + 1 if self.ssr_mode == "top5" else self.layer
        if self.ssr_mode != "off" and self.ssr_layer < first:
            raise ModelArgsError(f"model_args: token_ssr_layer={self.ssr_layer} is out of range; with "
                                 f"token_ssr_mode={self.ssr_mode} it must be >= {first} (token_layer={self.layer}"
                                 f"{' + 1' if self.ssr_mode == 'top5' else ''})")

    def selection_layers(self) -> tuple[int, ...]:
        return (self.layer, self.ssr_layer) if self.ssr_mode == "top5" else (self.layer,)

    def frozen_from(self) -> int | None:
        return self.ssr_layer if self.ssr_mode == "freeze" else None

    def named_layers(self) -> dict[str, int]:
        return super().named_layers() | ({"token_ssr_layer": self.ssr_layer} if self.ssr_mode != "off" else {})

    def select(self, stage, adapter, layer, hidden, visual, original_visual, rotary) -> torch.Tensor:
        if stage == 0:
            return self.keep_index(adapter, layer, hidden, visual)
        drop = self.floored_drop(visual.sum(dim=1).tolist(), original_visual.sum(dim=1).tolist(), self.ssr_keep,
                                 f"token_ssr_mode={self.ssr_mode}", self.ssr_layer)
        return drop_lowest(last_token_attention(layer, hidden, visual, rotary), visual, drop)

    def keep_index(self, adapter, layer: DecoderLayerAdapter, hidden: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        drop = self.drop_count(visual)
        relevance = last_token_attention(layer, hidden, visual)
        features = torch.nn.functional.normalize(adapter.final_norm(hidden).float(), dim=-1)
        kept = ~visual.clone()
        for row in range(visual.shape[0]):
            positions = visual[row].nonzero()[:, 0]
            total = len(positions) - drop
            if total <= 0:
                continue
            anchors = relevance[row, positions].topk(math.floor(total * self.anchor)).indices.tolist()
            if not anchors:  # no anchor: start the fill from the most relevant token
                anchors = [int(relevance[row, positions].argmax())]
            chosen = farthest_point_fill(features[row, positions], anchors, total)
            kept[row, positions[chosen]] = True
        return kept.nonzero()[:, 1].view(visual.shape[0], -1)


@dataclass
class RandomTokens(TokenPruner):
    """The baseline: a uniformly random subset of the visual tokens, reproducible with ``seed``."""

    seed: int = 0
    name = "random"
    summary = "the baseline: a uniformly random subset of the visual tokens, reproducible with seed="

    def relevance(self, layer: DecoderLayerAdapter, hidden: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """The same draw for every row, in the order of its visual tokens: a prompt's choice does not depend on
        the batch it is in or on its padding."""
        scores = torch.zeros(visual.shape, dtype=torch.float64)
        for row, mask in enumerate(visual.cpu()):
            scores[row, mask] = torch.rand(int(mask.sum()), generator=torch.Generator().manual_seed(self.seed),
                                           dtype=torch.float64)
        return scores.to(hidden.device)
