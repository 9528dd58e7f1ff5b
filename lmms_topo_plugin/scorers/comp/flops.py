"""Prefill FLOPs of a width- and token-pruned model, counted from one dense forward per prompt.

A forward of the dense model over each held-out prompt (batch 1, no cache) records what passes through every
width site (:func:`lmms_topo_plugin.surgery.widths.width_sites`): the rows its consumer sees and, for attention,
the query-key pairs (causal in the decoder, full per image in the vision tower). Every other linear and
convolution (patch embedding, the LM head on the last position, as generation's prefill computes it) is counted
once as fixed. A site's FLOPs are then linear in its kept units:
``units × (2 × weights per unit × rows + 4 × unit width × pairs)`` (2 per multiply-accumulate; QKᵀ and AV). Visual
tokens dropped from decoder layer ``token_layer`` on shrink the rows and pairs of every later decoder site; the
fixed part (the LM head included) is not credited with them, so token savings are, if anything, under-counted.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from lmms_topo_plugin.surgery.widths import width_sites
from lmms_topo_plugin.tokens.base import kept_count


@dataclass
class PromptLoad:
    """One prompt: its length and visual tokens, rows and pairs per site, and the FLOPs outside every site."""

    tokens: int
    visual: int
    rows: dict[str, int] = field(default_factory=dict)
    pairs: dict[str, int] = field(default_factory=dict)
    fixed: int = 0


@dataclass(frozen=True)
class SiteCost:
    """A site's FLOPs per unit: per row through it and per attention pair, and its decoder layer (or None)."""

    per_row: float
    per_pair: float
    text_layer: int | None


def site_text_layer(name: str) -> int | None:
    """``text.{i}.attn`` / ``text.{i}.mlp`` → ``i``; other sites are not in the decoder."""
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "text" else None


def _linear_weights(module: nn.Module) -> int:
    return sum(child.weight.numel() for child in module.modules() if isinstance(child, nn.Linear))


def _module_flops(module: nn.Module, inputs: torch.Tensor, output: torch.Tensor, priced: nn.Module) -> int:
    """2 × multiply-accumulates of a linear or convolution call of ``module``, at the shape of ``priced`` (the
    same module, or its full-width twin: the rows or output positions are what the call passes)."""
    if isinstance(module, nn.Linear):
        return 2 * priced.in_features * priced.out_features * (inputs.numel() // module.in_features)
    kernel = math.prod(priced.kernel_size) * priced.in_channels // priced.groups
    return 2 * output.numel() // module.out_channels * priced.out_channels * kernel


class FlopsModel:
    """Mean prefill FLOPs per held-out prompt for given kept units per site and visual-token keep fraction."""

    def __init__(self, sites: Sequence, loads: list[PromptLoad], token_layer: int) -> None:
        self.loads = loads
        self.token_layer = token_layer
        self.dense_units = {site.name: site.units for site in sites}
        self.costs = {site.name: SiteCost(2 * _linear_weights(site.module) / site.units,
                                          4 * site.unit_width if site.kind == "heads" else 0.0,
                                          site_text_layer(site.name)) for site in sites}
        self.fixed = sum(load.fixed for load in loads) / len(loads)
        self._unit_flops: dict[float | None, dict[str, float]] = {}

    def unit_flops(self, keep: float | None = None) -> dict[str, float]:
        """Each site's FLOPs per kept unit (a site's FLOPs are linear in its units), with ``keep`` of the visual
        tokens from the token layer on (None: all); computed once per ``keep`` (the search asks often)."""
        if keep not in self._unit_flops:
            totals = dict.fromkeys(self.costs, 0.0)
            for load in self.loads:
                drop = load.visual - kept_count(load.visual, keep) if keep is not None else 0
                for name, cost in self.costs.items():
                    rows, pairs = load.rows[name], load.pairs.get(name, 0)
                    if drop and cost.text_layer is not None and cost.text_layer >= self.token_layer:
                        rows = load.tokens - drop
                        pairs = rows * (rows + 1) // 2
                    totals[name] += cost.per_row * rows + cost.per_pair * pairs
            self._unit_flops[keep] = {name: total / len(self.loads) for name, total in totals.items()}
        return self._unit_flops[keep]

    def site_flops(self, units: Mapping[str, int] | None = None, keep: float | None = None) -> dict[str, float]:
        """Each site's FLOPs with ``units`` kept per site (default: dense) and ``keep`` of the visual tokens."""
        units = {**self.dense_units, **(units or {})}
        return {name: units[name] * per_unit for name, per_unit in self.unit_flops(keep).items()}

    def flops(self, units: Mapping[str, int] | None = None, keep: float | None = None) -> float:
        """Mean FLOPs per prompt: the fixed part and every site's (:meth:`site_flops`)."""
        return self.fixed + sum(self.site_flops(units, keep).values())

    @property
    def dense(self) -> float:
        return self.flops()


def _pairs(site, args: tuple, kwargs: dict) -> int:
    """Query-key pairs of one attention call: causal in the decoder, full within each image in the vision tower
    (packed images carry ``cu_seqlens``)."""
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    if site.tower == "text":
        batch, length = hidden.shape[0], hidden.shape[1]
        return batch * length * (length + 1) // 2
    if kwargs.get("cu_seqlens") is not None:
        lengths = kwargs["cu_seqlens"].diff()
        return int((lengths * lengths).sum())
    return hidden.shape[0] * hidden.shape[1] ** 2


def measure_load(model: nn.Module, sites: Sequence, inputs: Mapping[str, torch.Tensor],
                 visual_mask: torch.Tensor, priced_by: nn.Module | None = None) -> PromptLoad:
    """What one prompt (``inputs`` of batch 1) passes through every site of the dense ``model``.

    Rows and pairs depend on the prompt and the model's depths only, not on its widths; the fixed FLOPs are priced
    at the shapes of ``priced_by`` (a model of the same architecture at other widths, e.g. on the meta device),
    by default ``model``'s own."""
    load = PromptLoad(tokens=int(inputs["input_ids"].shape[1]), visual=int(visual_mask.sum()))
    inside = {id(child) for site in sites for child in site.module.modules()}
    priced = dict((priced_by or model).named_modules())

    def count_rows(site):
        def hook(module, args):
            load.rows[site.name] = load.rows.get(site.name, 0) + args[0].numel() // args[0].shape[-1]
        return hook

    def count_pairs(site):
        def hook(module, args, kwargs):
            load.pairs[site.name] = load.pairs.get(site.name, 0) + _pairs(site, args, kwargs)
        return hook

    def count_fixed(name):
        def hook(module, args, output):
            load.fixed += _module_flops(module, args[0], output, priced[name])
        return hook

    with ExitStack() as stack:
        for site in sites:
            stack.callback(site.consumer.register_forward_pre_hook(count_rows(site)).remove)
            if site.kind == "heads":
                stack.callback(site.module.register_forward_pre_hook(count_pairs(site), with_kwargs=True).remove)
        for name, module in model.named_modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d)) and id(module) not in inside:
                stack.callback(module.register_forward_hook(count_fixed(name)).remove)
        with torch.inference_mode():
            model(**inputs, use_cache=False, logits_to_keep=1)
    return load


def model_prefill_flops(adapter, inputs: Mapping[str, torch.Tensor]) -> float:
    """The prefill FLOPs of ``adapter``'s model as it runs now (its widths and layers, any token pruner attached)
    on ``inputs`` (one prompt): what every pruned configuration is compared by, whatever it prunes."""
    sites = width_sites(adapter)
    load = measure_load(adapter.model, sites, inputs, adapter.image_token_mask(inputs["input_ids"]))
    return FlopsModel(sites, [load], token_layer=0).flops()
