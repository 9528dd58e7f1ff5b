"""CoMP's importance of every kept unit, from a calibration pass over the (masked) model.

Per prompt (batch 1, so no padding), hooks keep each site's consumer input ``X`` and, where the attention module
returns its probabilities (eager attention), the collaborative token importance of that layer (CIT: the maximum
over the kept heads of the attention each token receives, summed over queries). After the forward, each site's
token-weighted squares ``Σ_n ω_n X[n, j]²`` are accumulated with ω from CIT: attention sites take their own
layer's, MLP sites the next layer's (the last layer its own), the projector none (its rows are image features, not
tokens of one attention map: plain norms, ours). A site whose tokens have no attention map (Qwen's vision tower
does not return one) falls back to plain norms too. The score of a unit is the token-weighted Wanda score of its
consumer columns, averaged over them (CIP), so head groups and channels rank on one scale.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Any, Iterator, Mapping, Sequence

import torch

from lmms_topo_plugin.scorers.comp.importance import (
    WeightedSquares, column_importance, token_importance, token_weights, unit_importance,
)


def _site_position(name: str) -> tuple[str, int | None, str]:
    """``vision.3.mlp`` → ``("vision", 3, "mlp")``; ``projector`` → ``("projector", None, "")``."""
    parts = name.split(".")
    return (parts[0], int(parts[1]), parts[2]) if len(parts) == 3 else (parts[0], None, "")


def query_head_mask(site, kept: Sequence[int], num_heads: int) -> torch.Tensor:
    """``[num_heads]`` 0/1: the query heads of the kept head groups of an attention ``site``."""
    per_group = num_heads // site.units
    mask = torch.zeros(num_heads)
    for group in kept:
        mask[group * per_group:(group + 1) * per_group] = 1.0
    return mask


@contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Run ``model`` with eager attention (the one that returns attention probabilities), then restore it."""
    before = model.config._attn_implementation
    if before == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def unit_scores(model: Any, sites: Sequence, kept: Mapping[str, Sequence[int]], batches: Sequence[Mapping],
                *, collaborative: bool) -> dict[str, torch.Tensor]:
    """``{site: [units]}`` CIP scores of every unit (pruned ones included; callers rank the kept) over the
    calibration ``batches`` (model inputs of one prompt each), on the model as it runs now (masks and token
    pruning attached by the caller)."""
    squares = {site.name: WeightedSquares() for site in sites}
    by_name = {site.name: site for site in sites}
    with ExitStack() as stack:
        if collaborative:
            stack.enter_context(eager_attention(model))
        for batch in batches:
            inputs: dict[str, torch.Tensor] = {}
            attention: dict[tuple[str, int], torch.Tensor] = {}

            def keep_input(name):
                def hook(module, args):
                    inputs[name] = args[0].detach().float()
                return hook

            def keep_attention(site):
                tower, layer, _ = _site_position(site.name)

                def hook(module, args, output):
                    probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
                    if isinstance(probs, torch.Tensor) and probs.dim() == 4:
                        mask = query_head_mask(site, kept.get(site.name, range(site.units)), probs.shape[1])
                        attention[(tower, layer)] = token_importance(probs.float(), mask.to(probs.device))
                return hook

            with ExitStack() as hooks:
                for site in sites:
                    hooks.callback(site.consumer.register_forward_pre_hook(keep_input(site.name)).remove)
                    if collaborative and site.kind == "heads":
                        hooks.callback(site.module.register_forward_hook(keep_attention(site)).remove)
                with torch.inference_mode():
                    model(**batch, use_cache=False)
            for name, x in inputs.items():
                weights = _weights_for(name, x, attention) if collaborative else None
                squares[name].add(x, weights)
    return {name: unit_importance(column_importance(by_name[name].consumer.weight.detach().float(), acc.total),
                                  by_name[name].unit_width) / by_name[name].unit_width
            for name, acc in squares.items()}


def _weights_for(name: str, x: torch.Tensor, attention: Mapping[tuple[str, int], torch.Tensor]) -> torch.Tensor | None:
    """The token weights of a site's input ``x``: its layer's CIT (attention sites) or the next layer's (MLP
    sites), when that map exists and covers the same tokens; else None (plain norms)."""
    tower, layer, part = _site_position(name)
    if layer is None:
        return None
    source = attention.get((tower, layer + 1)) if part == "mlp" else None
    if source is None or source.shape != x.shape[:-1]:
        source = attention.get((tower, layer))
    if source is None or source.shape != x.shape[:-1]:
        return None
    return token_weights(source)
