"""Width pruning: keep some heads and channels of each attention, MLP and projector (the CoMP method's units).

A *site* is one prunable module: ``text.{i}.attn`` and ``vision.{i}.attn`` (units: head groups, one key/value
head with its query heads, so grouped-query attention stays valid), ``text.{i}.mlp`` and ``vision.{i}.mlp``
(units: intermediate channels) and ``projector`` (its hidden channels). A site's units are the output rows of its
*producers* (q/k/v, gate/up, fc1, the projector's first linear) and the input columns of its *consumer* (o_proj,
down_proj, fc2, out_proj, proj, the projector's second linear).

:func:`slice_widths` cuts them out for real, in one of two layouts:

- ``per_layer``: each site its own width. The config cannot state it, so the caller stores
  :func:`widths_record` in the pruning record, and :func:`~lmms_topo_plugin.models.loading.load_model` rebuilds
  the shapes from it before loading the weights.
- ``uniform``: every site of a ``(tower, kind)`` keeps as many units, written into the config, so plain
  ``from_pretrained`` loads the checkpoint. Only the widths in :func:`uniform_units` can be stated so.

:func:`width_masks` is the same pruning without changing a shape: the consumers' dropped input columns are zeroed.
"""

from __future__ import annotations

import operator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping, NamedTuple, Sequence

import torch
from torch import nn

from lmms_topo_plugin.families import VLMAdapter

LAYOUTS = ("per_layer", "uniform")


class Producer(NamedTuple):
    """A linear whose output rows carry a site's units: ``blocks`` equal blocks (three in a fused q/k/v) of
    ``units × width`` rows, unit ``u`` owning the ``u``-th run of ``width`` rows in each."""

    linear: nn.Linear
    blocks: int
    width: int


@dataclass(frozen=True)
class WidthSite:
    """One prunable module and where its units sit."""

    name: str  # text.{i}.attn, text.{i}.mlp, vision.{i}.attn, vision.{i}.mlp, projector
    tower: str  # "text" | "vision" | "projector"
    kind: str  # "heads" | "channels"
    units: int  # current number of units
    unit_width: int  # consumer input columns per unit
    consumer: nn.Linear  # the linear whose input columns carry the units
    module: nn.Module  # the attention, MLP or projector module
    producers: tuple[Producer, ...]  # the linears whose output rows carry the units
    query_heads: int = 1  # query heads per unit (heads sites)

    def columns(self, units: Sequence[int]) -> torch.Tensor:
        """The consumer's input columns of ``units``, sorted."""
        return _unit_index(self.units, 1, self.unit_width, units)


def _unit_index(units: int, blocks: int, width: int, kept: Sequence[int]) -> torch.Tensor:
    """Indices of the rows (or columns) of the ``kept`` units in a ``blocks × units × width`` layout."""
    runs = (torch.tensor(sorted(kept))[:, None] * width + torch.arange(width)).flatten()
    return torch.cat([block * units * width + runs for block in range(blocks)])


# -- the sites --------------------------------------------------------------------------------------------------


def _attention_site(name: str, tower: str, attention: nn.Module) -> WidthSite:
    """Heads of an attention with separate q/k/v projections (o_proj or out_proj) or a fused ``qkv`` (``proj``)."""
    head_dim = attention.head_dim
    if hasattr(attention, "qkv"):
        units = attention.qkv.out_features // (3 * head_dim)
        return WidthSite(name, tower, "heads", units, head_dim, attention.proj, attention,
                         (Producer(attention.qkv, 3, head_dim),))
    units = attention.k_proj.out_features // head_dim
    group = attention.q_proj.out_features // attention.k_proj.out_features
    consumer = attention.o_proj if hasattr(attention, "o_proj") else attention.out_proj
    producers = (Producer(attention.q_proj, 1, group * head_dim), Producer(attention.k_proj, 1, head_dim),
                 Producer(attention.v_proj, 1, head_dim))
    return WidthSite(name, tower, "heads", units, group * head_dim, consumer, attention, producers, group)


def _channel_site(name: str, tower: str, module: nn.Module, producers: Sequence[nn.Linear],
                  consumer: nn.Linear) -> WidthSite:
    return WidthSite(name, tower, "channels", consumer.in_features, 1, consumer, module,
                     tuple(Producer(linear, 1, 1) for linear in producers))


def _mlp_site(name: str, tower: str, mlp: nn.Module) -> WidthSite:
    """Channels of a gated MLP (gate/up/down_proj) or a plain one (fc1/fc2)."""
    if hasattr(mlp, "down_proj"):
        return _channel_site(name, tower, mlp, (mlp.gate_proj, mlp.up_proj), mlp.down_proj)
    return _channel_site(name, tower, mlp, (mlp.fc1,), mlp.fc2)


def width_sites(adapter: VLMAdapter) -> list[WidthSite]:
    """Every site, in model order: the vision layers, the projector, the decoder layers."""
    sites = []
    for index, layer in enumerate(adapter.vision_layers):
        sites += [_attention_site(f"vision.{index}.attn", "vision", getattr(layer, adapter.vision_attention_attr)),
                  _mlp_site(f"vision.{index}.mlp", "vision", layer.mlp)]
    if adapter.projector is not None:
        module, first, second = adapter.projector
        sites.append(_channel_site("projector", "projector", module, (first,), second))
    for index, layer in enumerate(adapter.layers):
        sites += [_attention_site(f"text.{index}.attn", "text", layer.self_attn),
                  _mlp_site(f"text.{index}.mlp", "text", layer.mlp)]
    return sites


def uniform_units(adapter: VLMAdapter) -> set[tuple[str, str]]:
    """The ``(tower, kind)`` widths that the ``uniform`` layout can state in the config."""
    return {(site.tower, site.kind) for site in width_sites(adapter)} - set(adapter.fixed_widths)


# -- checks -----------------------------------------------------------------------------------------------------


def _checked(adapter: VLMAdapter, kept: Mapping[str, Sequence[int]]) -> list[tuple[WidthSite, list[int]]]:
    """``kept`` as (site, sorted unit indices) pairs; a one-line ValueError naming the first bad site."""
    sites = {site.name: site for site in width_sites(adapter)}
    checked = []
    for name, units in kept.items():
        if name not in sites:
            raise ValueError(f"widths: unknown site {name!r}; this model's sites are {_site_names(adapter)}")
        site = sites[name]
        try:
            units = [operator.index(unit) for unit in units]
        except TypeError:
            raise ValueError(f"widths: site {name!r} keeps {units!r}: unit indices must be integers") from None
        if not units:
            raise ValueError(f"widths: site {name!r} keeps no units; keep at least one of its {site.units} "
                             f"{site.kind}")
        if len(set(units)) != len(units) or not all(0 <= unit < site.units for unit in units):
            raise ValueError(f"widths: site {name!r} keeps {units}: unit indices must be distinct, in "
                             f"[0, {site.units - 1}]")
        checked.append((site, sorted(units)))
    return checked


def _site_names(adapter: VLMAdapter) -> str:
    vision, text = len(adapter.vision_layers), adapter.num_layers
    projector = "projector, " if adapter.projector is not None else ""
    return f"vision.{{0..{vision - 1}}}.{{attn,mlp}}, {projector}text.{{0..{text - 1}}}.{{attn,mlp}}"


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"widths: unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def _uniform_counts(adapter: VLMAdapter, checked: list[tuple[WidthSite, list[int]]]
                    ) -> dict[tuple[str, str], tuple[WidthSite, int]]:
    """Per pruned ``(tower, kind)``: one of its sites and the unit count every site of it keeps; a ValueError
    naming the site the config cannot describe, or two sites that keep different counts."""
    fixed = adapter.fixed_widths
    for site, _ in checked:
        if (site.tower, site.kind) in fixed:
            raise ValueError(f"widths: the uniform layout cannot describe site {site.name!r}: "
                             f"{fixed[site.tower, site.kind]}; prune it with layout per_layer or leave it out")
    counts = {site.name: len(units) for site, units in checked}
    counts_by_key: dict[tuple[str, str], dict[str, int]] = {}
    for site in width_sites(adapter):
        counts_by_key.setdefault((site.tower, site.kind), {})[site.name] = counts.get(site.name, site.units)
    pruned = {}
    for site, _ in checked:
        by_site = counts_by_key[site.tower, site.kind]
        if len(set(by_site.values())) > 1:
            (first, low), (last, high) = (pick(by_site.items(), key=operator.itemgetter(1)) for pick in (min, max))
            raise ValueError(f"widths: the uniform layout needs every {site.tower} {site.kind} site to keep as many "
                             f"units, but {first!r} keeps {low} and {last!r} keeps {high}")
        pruned[site.tower, site.kind] = (site, by_site[site.name])
    return pruned


# -- surgery ----------------------------------------------------------------------------------------------------


def slice_widths(adapter: VLMAdapter, kept: Mapping[str, Sequence[int]], layout: str = "per_layer") -> None:
    """Keep only the ``kept`` units (indices per site name) of the named sites, in place: every weight, bias,
    ``in/out_features``, the modules' head and channel counts, and (``uniform``) the config. Nothing is changed
    when ``kept`` or ``layout`` is refused."""
    _check_layout(layout)
    checked = _checked(adapter, kept)
    counts = _uniform_counts(adapter, checked) if layout == "uniform" else {}
    for site, units in checked:
        _slice_site(site, units)
    for (tower, kind), (site, count) in counts.items():
        _describe(adapter, tower, kind, site, count)


def _slice_site(site: WidthSite, units: list[int]) -> None:
    for producer in site.producers:
        _keep(producer.linear, 0, _unit_index(site.units, producer.blocks, producer.width, units))
    _keep(site.consumer, 1, site.columns(units))
    if site.kind == "heads":
        for attribute, value in (("num_heads", len(units) * site.query_heads), ("num_key_value_heads", len(units))):
            if hasattr(site.module, attribute):
                setattr(site.module, attribute, value)
    elif hasattr(site.module, "intermediate_size"):
        site.module.intermediate_size = len(units)


def _keep(linear: nn.Linear, dim: int, index: torch.Tensor) -> None:
    """Keep the output rows (``dim`` 0, with the bias) or input columns (``dim`` 1) ``index`` of ``linear``."""
    index = index.to(linear.weight.device)
    linear.weight = _parameter(linear.weight, linear.weight.index_select(dim, index))
    if dim == 0:
        if linear.bias is not None:
            linear.bias = _parameter(linear.bias, linear.bias.index_select(0, index))
        linear.out_features = len(index)
    else:
        linear.in_features = len(index)


def _parameter(old: nn.Parameter, data: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(data.detach(), requires_grad=old.requires_grad)


def _describe(adapter: VLMAdapter, tower: str, kind: str, site: WidthSite, count: int) -> None:
    """Write a uniform width into the config(s) of ``tower``."""
    if tower == "vision":  # channels: vision heads are never describable (VLMAdapter.fixed_widths)
        for config in adapter.vision_configs:
            config.intermediate_size = count
        return
    for config in adapter.text_configs:
        if kind == "channels":
            config.intermediate_size = count
        else:
            config.head_dim = site.unit_width // site.query_heads  # stated, so it no longer follows the head count
            config.num_key_value_heads = count
            config.num_attention_heads = count * site.query_heads


@contextmanager
def widths_sliced(adapter: VLMAdapter, kept: Mapping[str, Sequence[int]], layout: str = "per_layer") -> Iterator[None]:
    """:func:`slice_widths` for the body of a ``with`` block, then every weight, count and config entry restored:
    the sweep evaluates many width plans on one loaded model (inside the block the model *is* the pruned model,
    with its real shapes and speed)."""
    sites = [site for site, _ in _checked(adapter, kept)]
    linears = [linear for site in sites for linear in (*(p.linear for p in site.producers), site.consumer)]
    saved = [(linear, linear.weight, linear.bias, linear.in_features, linear.out_features) for linear in linears]
    counts = [(site.module, name, getattr(site.module, name)) for site in sites
              for name in ("num_heads", "num_key_value_heads", "intermediate_size") if hasattr(site.module, name)]
    configs = [(config, dict(vars(config))) for config in (*adapter.text_configs, *adapter.vision_configs)]
    try:
        slice_widths(adapter, kept, layout)
        yield
    finally:
        for linear, weight, bias, in_features, out_features in saved:
            linear.weight, linear.in_features, linear.out_features = weight, in_features, out_features
            if bias is not None:
                linear.bias = bias
        for module, name, value in counts:
            setattr(module, name, value)
        for config, values in configs:
            vars(config).clear()
            vars(config).update(values)


@contextmanager
def width_masks(adapter: VLMAdapter, kept: Mapping[str, Sequence[int]]) -> Iterator[None]:
    """:func:`slice_widths` without changing a shape, for the body of a ``with`` block: a forward pre-hook on each
    named site's consumer zeroes the input columns of its dropped units (the same outputs as slicing)."""
    handles = []
    try:
        for site, units in _checked(adapter, kept):
            dropped = torch.ones(site.consumer.in_features, dtype=torch.bool)
            dropped[site.columns(units)] = False
            handles.append(site.consumer.register_forward_pre_hook(_zeroing(dropped)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _zeroing(dropped: torch.Tensor):
    def hook(_module: nn.Module, args: tuple) -> tuple:
        hidden = args[0]
        return (hidden.masked_fill(dropped.to(hidden.device), 0), *args[1:])
    return hook


def widths_record(kept: Mapping[str, Sequence[int]], layout: str) -> dict:
    """The pruning record's ``widths`` entry: the layout and each pruned site's kept original unit indices."""
    _check_layout(layout)
    return {"layout": layout, "kept": {name: sorted(int(unit) for unit in units) for name, units in kept.items()}}
