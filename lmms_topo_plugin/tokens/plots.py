"""A run's visual-token pruning drawn per decoder layer: the share of the prompt's visual tokens each layer of
the pruned model computes during prefill, the layers where tokens are selected (and, for HalfV, frozen) marked.

:func:`token_figure` builds the matplotlib :class:`~matplotlib.figure.Figure` (no pyplot), :func:`token_png`
renders it. The shares come from the pruning record alone (``PruneConfig.token_pruning`` or a checkpoint's
``token_pruning``), through the pruner it describes: the number of visual tokens depends on the image, so the
plot is in percent of the prompt's visual tokens (each selection keeps ``floor(count × keep)`` of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lmms_topo_plugin.tokens import from_record, token_pruner
from lmms_topo_plugin.tokens.configs import HalfVConfig

KEPT_COLOUR, FROZEN_COLOUR, STAGE_COLOUR = "#1f77b4", "#9ecae1", "#d62728"


@dataclass(frozen=True)
class LayerTokens:
    """One decoder layer of the pruned model: the share of the prompt's visual tokens it holds, and whether they
    are frozen there (they give keys and values only; queries, attention output and MLP skip them)."""

    share: float
    frozen: bool = False


@dataclass(frozen=True)
class Stage:
    """A selection at the input of decoder ``layer``: ``name`` (the legend's, with the layer) and the share of
    the prompt's visual tokens kept after it."""

    layer: int
    name: str
    share: float


def token_stages(record: dict) -> list[Stage]:
    """The selections the record's pruner makes, in layer order. HalfV's step 2 in ``top5`` mode keeps its
    ``ssr_keep`` share of the original visual tokens, or what step 1 left when that is fewer."""
    pruner = token_pruner(record)
    layers = pruner.selection_layers()
    if pruner.name != "halfv":
        return [Stage(layers[0], f"{pruner.name} selection at layer {layers[0]}", pruner.keep)]
    stages = [Stage(layers[0], f"IVR layer {layers[0]} (halfv step 1)", pruner.keep)]
    if len(layers) > 1:
        stages.append(Stage(layers[1], f"SSR layer {layers[1]} (halfv step 2: top5)",
                            min(pruner.keep, pruner.ssr_keep)))
    return stages


def token_schedule(record: dict, num_layers: int) -> list[LayerTokens]:
    """Per decoder layer of the pruned model (``num_layers`` of them), the visual tokens it computes."""
    stages = token_stages(record)
    frozen_from = token_pruner(record).frozen_from()
    schedule = []
    for layer in range(num_layers):
        share = min([1.0, *(stage.share for stage in stages if stage.layer <= layer)])
        schedule.append(LayerTokens(share, frozen_from is not None and layer >= frozen_from))
    return schedule


def token_summary(record: dict) -> str:
    """One line naming the token pruning: method, keep and the layers it acts at, as ``model_args`` spell them."""
    config = from_record(record)
    keep = f"token_keep={config.token_keep:g}"
    if not isinstance(config, HalfVConfig):
        seed = f", seed={record.get('seed', 0)}" if config.token_method == "random" else ""
        return (f"visual-token pruning token_method={config.token_method} ({keep}{seed}, from decoder layer "
                f"{config.token_layer})")
    mode = config.token_ssr_mode
    step_2 = "no step 2" if mode == "off" else f"SSR layer {config.token_ssr_layer}: {mode}"
    return (f"visual-token pruning token_method=halfv ({keep}, anchor {config.token_anchor:g}, IVR layer "
            f"{config.token_layer}, {step_2})")


def _percent(share: float) -> str:
    return f"{100 * share:.3g}%"


def token_figure(record: dict, num_layers: int, *, kept_layers: Sequence[int] | None = None,
                 original_num_layers: int | None = None, layer_method: str | None = None) -> Figure:
    """One bar per decoder layer of the pruned model (``num_layers``): the share of the prompt's visual tokens
    it computes (a hatched light bar where they are frozen), a dashed line at each selection layer and the
    share written where it changes. ``kept_layers`` (the original index of each layer) adds that index under
    the layer number when layers were removed; ``layer_method`` and ``original_num_layers`` name the layer
    pruning in the title."""
    from lmms_topo_plugin.plotting import subplots

    schedule = token_schedule(record, num_layers)
    stages = token_stages(record)
    figure, axis = subplots(figsize=(max(7, 0.45 * num_layers + 2.5), 4.2))
    layers = list(range(num_layers))
    shares = [100 * entry.share for entry in schedule]
    colours = [FROZEN_COLOUR if entry.frozen else KEPT_COLOUR for entry in schedule]
    hatches = ["//" if entry.frozen else None for entry in schedule]
    bars = axis.bar(layers, shares, color=colours, edgecolor=KEPT_COLOUR, linewidth=0.6, width=0.8)
    for bar, hatch in zip(bars, hatches):
        bar.set_hatch(hatch)
    handles = [Patch(facecolor=KEPT_COLOUR, edgecolor=KEPT_COLOUR, label="visual tokens the layer computes")]
    if any(entry.frozen for entry in schedule):
        handles.append(Patch(facecolor=FROZEN_COLOUR, edgecolor=KEPT_COLOUR, hatch="//",
                             label="frozen (halfv step 2: keys and values only)"))
    for index, stage in enumerate(stages):
        if stage.layer >= num_layers:
            continue
        line = axis.axvline(stage.layer - 0.5, color=STAGE_COLOUR, linestyle="--", linewidth=1.2 + 0.4 * index)
        line.set_label(f"{stage.name}: keeps {_percent(stage.share)}")
        handles.append(line)
    frozen_from = token_pruner(record).frozen_from()
    if frozen_from is not None and frozen_from < num_layers:
        line = axis.axvline(frozen_from - 0.5, color="0.3", linestyle=":", linewidth=1.6,
                            label=f"SSR layer {frozen_from} (halfv step 2: freeze): visual tokens frozen")
        handles.append(line)
    previous = None
    for layer, entry in enumerate(schedule):  # the share written once per run of equal bars, at its start
        if entry != previous:
            axis.text(layer, 100 * entry.share + 2, _percent(entry.share) + (" frozen" if entry.frozen else ""),
                      ha="left" if layer < num_layers - 1 else "center", va="bottom", fontsize=8)
        previous = entry
    axis.set_xlim(-0.6, num_layers - 0.4)
    axis.set_ylim(0, 118)
    axis.set_yticks([0, 25, 50, 75, 100])
    axis.set_ylabel("visual tokens computed\n(% of the prompt's)")
    axis.set_xticks(layers)
    if kept_layers is not None and list(kept_layers) != layers:
        axis.set_xticklabels([f"{layer}\n({original})" for layer, original in zip(layers, kept_layers)], fontsize=8)
        axis.set_xlabel("decoder layer of the pruned model (its index in the original model below)")
    else:
        axis.set_xlabel("decoder layer")
    axis.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    removed = ""
    if layer_method not in (None, "none") and original_num_layers is not None:
        removed = (f"\non the {num_layers} layers left after method={layer_method} removed "
                   f"{original_num_layers - num_layers} of {original_num_layers}")
    axis.set_title(f"{token_summary(record)}\nper decoder layer during prefill: text tokens are never dropped"
                   f"{removed}", fontsize=10)
    return figure


def token_png(record: dict, num_layers: int, **kwargs) -> bytes:
    """:func:`token_figure` as PNG bytes."""
    from lmms_topo_plugin.plotting import figure_png

    return figure_png(token_figure(record, num_layers, **kwargs))
