"""Where the pruning report goes, and the files it is written to (JSON, and a PNG of the scores)."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

from .cache import atomic_write_bytes, atomic_write_json
from .pipeline import PruneReport
from .registry import get_method
from .scorers import LayerScores


def lmms_eval_output_path(argv: list[str] | None = None) -> str | None:
    """The ``--output_path`` of the running ``lmms-eval`` command, if any."""
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "--output_path" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--output_path="):
            return arg.split("=", 1)[1]
    return None


def report_directory(report_dir: str | None, pretrained_arg: str | None) -> Path:
    """``report_dir`` if given; else lmms-eval's results folder for this model; else ./topo_prune_reports."""
    if report_dir:
        return Path(report_dir)
    output_path = lmms_eval_output_path()
    if output_path is None:
        return Path("topo_prune_reports")
    from lmms_eval.utils import sanitize_model_name

    return Path(output_path) / sanitize_model_name(pretrained_arg or "")


LATEST_POINTER = "topo_pruned_latest.json"


def write_report(report: PruneReport, directory: Path) -> list[Path]:
    """Write ``<time>_topo_pruned_<method>.json``, a PNG of the scores (and the method's own plots) when there
    are scores, and ``topo_pruned_latest.json`` naming them, so the results folder says where the report is."""
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S")
    stem = f"{stamp}_topo_pruned_{report.plan['method']}"
    scores = report.plan.get("scores")
    figures = {}
    if scores:
        figures = score_figures(report.plan["method"], LayerScores.from_json(scores), report.plan["removed_layers"])
    plots = {name: directory / f"{stem}_{name}.png" for name in figures}
    for name, png in figures.items():
        atomic_write_bytes(plots[name], png)
    json_path = directory / f"{stem}.json"
    atomic_write_json(json_path, {**asdict(report), "plots": {name: path.name for name, path in plots.items()}})
    atomic_write_json(directory / LATEST_POINTER, {"report": json_path.name, "plots": [p.name for p in plots.values()],
                                                   "method": report.plan["method"],
                                                   "removed_layers": report.plan["removed_layers"]})
    return [json_path, *plots.values()]


def score_figures(method: str, scores: LayerScores, removed: list[int]) -> dict[str, bytes]:
    """PNGs of a method's scores: ``scores`` (per-layer importance, the removed layers marked; none for a
    method without importance, e.g. ``spacing``) and the method's own plots (e.g. topology's barcode)."""
    figures = {"scores": plot_layer_scores(method, scores.importance, removed)} if scores.importance else {}
    figures.update(get_method(method).scorer_class.report_plots(scores, removed))
    return figures


def plot_layer_scores(method: str, importance: list[float], removed: list[int]) -> bytes:
    """A bar chart of per-layer importance with the removed layers marked, as PNG bytes."""
    from .plotting import figure_png, subplots

    removed = set(removed)
    colours = ["#d62728" if layer in removed else "#1f77b4" for layer in range(len(importance))]
    figure, axes = subplots(figsize=(max(6, 0.3 * len(importance)), 3.2))
    axes.bar(range(len(importance)), importance, color=colours)
    axes.set_xlabel("decoder layer")
    axes.set_ylabel("importance (higher = keep)")
    axes.set_title(f"{method}: removed {sorted(removed)} of {len(importance)} layers (red)")
    return figure_png(figure)
