"""Where the pruning report goes, and the files it is written to (JSON, PNGs of the scores and of the visual
tokens per layer)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from lmms_topo_plugin.cache import atomic_write_bytes, atomic_write_json
from lmms_topo_plugin.config.prune import LayerConfig, tokens_of
from lmms_topo_plugin.plan import removable_candidates
from lmms_topo_plugin.pipeline import PruneReport
from lmms_topo_plugin.scorers.registry import DENSE_METHOD, get_method
from lmms_topo_plugin.scorers import LayerScores


def report_directory(report_dir: str | None, results_dir: str | Path | None = None) -> Path:
    """``report_dir`` if given; else ``results_dir`` (lmms-eval's results folder for this model, which the lmms-eval
    model passes in: :func:`lmms_topo_plugin.integrations.lmms_eval.output.results_directory`); else
    ./topo_prune_reports."""
    if report_dir:
        return Path(report_dir)
    return Path(results_dir) if results_dir is not None else Path("topo_prune_reports")


LATEST_POINTER = "topo_pruned_latest.json"


def write_report(report: PruneReport, directory: Path) -> list[Path]:
    """Write ``<time>_topo_pruned_<method>.json``, its PNGs (:func:`report_figures`: the scores and the method's
    own plots when there are scores, the visual tokens per layer when the run prunes them) and
    ``topo_pruned_latest.json`` naming them, so the results folder says where the report is."""
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S")
    stem = f"{stamp}_topo_pruned_{report.plan['method']}"
    figures = report_figures(report)
    plots = {name: directory / f"{stem}_{name}.png" for name in figures}
    for name, png in figures.items():
        atomic_write_bytes(plots[name], png)
    json_path = directory / f"{stem}.json"
    atomic_write_json(json_path, {**asdict(report), "plots": {name: path.name for name, path in plots.items()}})
    atomic_write_json(directory / LATEST_POINTER, {"report": json_path.name, "plots": [p.name for p in plots.values()],
                                                   "method": report.plan["method"],
                                                   "removed_layers": report.plan["removed_layers"]})
    return [json_path, *plots.values()]


def protected_layers(report: PruneReport) -> list[int]:
    """The decoder layers no method could remove in this run (``keep_first_last``: the first and the last)."""
    candidates = report.plan.get("candidates")
    if candidates is None:  # a plan without its candidates: what keep_first_last implies
        num_layers = report.plan["num_layers"]
        keep_first_last = report.config.get("keep_first_last", True)
        candidates = removable_candidates(LayerConfig(keep_first_last=keep_first_last), num_layers)
    return sorted(set(range(report.plan["num_layers"])) - set(candidates))


def token_record(report: PruneReport) -> dict | None:
    """The visual-token pruning of the run, as the pruning record states it (None without): what token_method=
    asked for, halfv's stages as detected when the run left them open (the report's config holds the resolved
    values), or else the plan's (a width method chooses its own)."""
    tokens = tokens_of(report.config)
    if tokens is not None:
        return tokens.to_record(report.config.get("seed", 0))
    planned = [action for action in report.plan.get("actions", []) if action["kind"] == "prune_visual_tokens"]
    return {key: value for key, value in planned[-1].items() if key != "kind"} if planned else None


def report_figures(report: PruneReport) -> dict[str, bytes]:
    """``{name: PNG bytes}`` of a run: :func:`score_figures` when the plan has scores, ``tokens`` (the visual
    tokens each layer of the pruned model computes) when the run prunes visual tokens, and ``recovery`` (the
    training loss) when it recovered (``recover=kd``)."""
    plan = report.plan
    tokens = token_record(report)
    figures = {}
    if plan["method"] != DENSE_METHOD and get_method(plan["method"]).unit == "widths":
        figures = get_method(plan["method"]).scorer_class.plan_figures(plan)
    elif plan.get("scores"):
        figures = score_figures(plan["method"], LayerScores.from_json(plan["scores"]), plan["removed_layers"],
                                protected=protected_layers(report), token_pruning=tokens)
    if tokens:
        from lmms_topo_plugin.tokens.plots import token_png

        figures["tokens"] = token_png(tokens, len(report.kept_layers), kept_layers=report.kept_layers,
                                      original_num_layers=plan["num_layers"], layer_method=plan["method"])
    if report.recovery and report.recovery.get("loss_curve"):
        from lmms_topo_plugin.recovery.plots import loss_curve_png

        figures["recovery"] = loss_curve_png(report.recovery)
    return figures


def score_figures(method: str, scores: LayerScores, removed: list[int], *, protected: Sequence[int] = (),
                  token_pruning: dict | None = None) -> dict[str, bytes]:
    """PNGs of a method's scores: ``scores`` (per-layer importance, the removed and the ``protected`` layers
    marked, the run's visual-token pruning named in the title; none for a method without importance, e.g.
    ``spacing``) and the method's own plots (e.g. topology's barcode, angular's block distances)."""
    from lmms_topo_plugin.plotting import figure_png

    figures = {}
    if scores.importance:
        figures["scores"] = figure_png(layer_scores_figure(method, scores.importance, removed, protected,
                                                           token_pruning))
    figures.update(get_method(method).scorer_class.report_plots(scores, removed, protected=protected))
    return figures


PROTECTED_LABEL = "protected (keep_first_last)"
KEPT_COLOUR, REMOVED_COLOUR, PROTECTED_COLOUR = "#1f77b4", "#d62728", "#bdbdbd"


def layer_scores_figure(method: str, importance: list[float], removed: list[int], protected: Sequence[int] = (),
                        token_pruning: dict | None = None):
    """A bar chart of per-layer importance: removed layers red, kept ones blue, and the layers no method may
    remove (``protected``, by ``keep_first_last``) grey, hatched and labelled, since their score played no part
    in the choice (a protected layer may well score lowest). ``token_pruning`` (a pruning record's) is named in
    the title."""
    from matplotlib.patches import Patch

    from lmms_topo_plugin.plotting import integer_ticks, subplots

    removed, protected = set(removed), set(protected)
    layers = range(len(importance))
    colours = [REMOVED_COLOUR if layer in removed else PROTECTED_COLOUR if layer in protected else KEPT_COLOUR
               for layer in layers]
    figure, axes = subplots(figsize=(max(6, 0.3 * len(importance)), 3.4))
    bars = axes.bar(layers, importance, color=colours, edgecolor=[
        "0.35" if layer in protected else colour for layer, colour in zip(layers, colours)])
    for layer, bar in zip(layers, bars):
        if layer in protected:
            bar.set_hatch("//")
            height = bar.get_height()
            axes.annotate("protected", (layer, height), xytext=(0, 2 if height >= 0 else -2),
                          textcoords="offset points", ha="center", va="bottom" if height >= 0 else "top",
                          fontsize=7, rotation=90, color="0.3")
    handles = [Patch(facecolor=KEPT_COLOUR, label="kept"), Patch(facecolor=REMOVED_COLOUR, label="removed")]
    if protected:
        handles.append(Patch(facecolor=PROTECTED_COLOUR, edgecolor="0.35", hatch="//", label=PROTECTED_LABEL))
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    axes.margins(y=0.35 if protected else 0.1)  # room for the vertical "protected" above the highest bar
    integer_ticks(axes)
    axes.set_xlabel("decoder layer")
    axes.set_ylabel("importance (higher = keep)")
    title = f"{method}: removed {sorted(removed)} of {len(importance)} layers (red)"
    if protected:
        title += f"; layers {_listed(sorted(protected))} {PROTECTED_LABEL}"
    if token_pruning:
        from lmms_topo_plugin.tokens.plots import token_summary

        title += f"\n+ {token_summary(token_pruning)}"
    axes.set_title(title, fontsize=10)
    return figure


def _listed(values: list[int]) -> str:
    return " and ".join(map(str, values)) if len(values) <= 2 else ", ".join(map(str, values))


def plot_layer_scores(method: str, importance: list[float], removed: list[int], protected: Sequence[int] = (),
                      token_pruning: dict | None = None) -> bytes:
    """:func:`layer_scores_figure` as PNG bytes."""
    from lmms_topo_plugin.plotting import figure_png

    return figure_png(layer_scores_figure(method, importance, removed, protected, token_pruning))
