#!/usr/bin/env python3
"""The TopoVLM ablations on the bundled model, defaults chosen on the dev split, then the test split once.

    .venv/bin/python bench/bench_topology_ablations.py          # what the results pages report (resumable)

Three sweeps (``lmms_topo_plugin.search.run_sweep``, so every configuration is a real lmms-eval evaluation) at
1/8, 1/4, 3/8 and 1/2 of the decoder, each into its own folder under ``--out``:

1. ``dev/``: every one-factor ablation on ``topo_synth_dev`` (the dev split: disjoint from calibration, test and
   the bundled model's training items), for each zigzag score (``depth_bars``, the first implementation, and
   ``multiscale``): ``topo_k`` 5 / 15 / 25, ``topo_alpha`` 0.5 / 1 / 2, EPI (lifetime) weighting or none,
   points ``last_token`` / ``visual_mean`` / ``prompt_mean``, the multi-scale ladder; zigzag against per-depth
   persistence (``topo_score=per_depth``, bottleneck and Wasserstein); and the baselines, random over 3 seeds.
2. The choice, by mean dev accuracy over the budgets only: per score, each factor's best value (ties keep the
   current default), the combination evaluated on dev too, and the best of all topology configurations wins.
   Calibration size 64 / 128 / 256 / 320 prompts (320 is the whole bundled calib split, so the paper's 512 is out
   of reach) of the chosen and the combined configurations runs as the sweep's ``--calib-limits`` on dev in
   ``dev_calibration/``; it is reported, not part of the choice (the default stays 256).
3. ``test/``: the chosen configuration, the first implementation's defaults and every baseline on the
   ``topo_synth`` test split, once.

Writes ``--summary`` (default ``bench/results/topology_ablations.json``): the dev table of every variant, the
choice and its reasons, the test rows, the command and the machine; ``bench/pages/topology.py`` renders the
results page's ablation tables from it, and the script draws ``--plot`` (default
``bench/results/topology_ablations.png``) from the same summary.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_quality import command_line  # noqa: E402  (bench/: shared helpers)

BUDGETS = [0.125, 0.25, 0.375, 0.5]
DEV_TASK, DEV_METRIC = "topo_synth_dev", "topo_synth_dev/exact_match"
TEST_TASK, TEST_METRIC = "topo_synth", "topo_synth/exact_match"
MODEL_ARGS = {"device": "cpu", "batch_size": "16"}
ZIGZAG_SCORES = ("depth_bars", "multiscale")
DEFAULTS = {"topo_k": "15", "topo_alpha": "1", "topo_weighting": "none", "topo_points": "last_token",
            "topo_scales": "0.1:0.25:0.5:1"}
FACTORS = {
    "topo_k": ["5", "15", "25"],
    "topo_alpha": ["0.5", "1", "2"],
    "topo_weighting": ["none", "lifetime"],
    "topo_points": ["last_token", "visual_mean", "prompt_mean"],
    "topo_scales": ["1", "0.25:1", "0.1:0.25:0.5:1", "0.05:0.1:0.25:0.5:1"],  # multiscale only
}
PER_DEPTH = ["topology[topo_score=per_depth,topo_distance=bottleneck,topo_k=15]",
             "topology[topo_score=per_depth,topo_distance=wasserstein,topo_k=15]"]
BASELINES = ["block_influence", "angular", "spacing", "domain_mixed", "random[seed=0]", "random[seed=1]",
             "random[seed=2]"]
CALIB_LIMITS = [64, 128, 256, 320]
DEFAULT_OUT = ROOT / "bench" / "results" / "topology_ablations"
DEFAULT_SUMMARY = ROOT / "bench" / "results" / "topology_ablations.json"
DEFAULT_PLOT = ROOT / "bench" / "results" / "topology_ablations.png"


def pinned() -> set[str]:
    """The factors whose ablation baseline (``DEFAULTS``) is no longer the plugin's default: always written out, so
    that a configuration means the same after the defaults change (``topo_k`` was 15 when these ran)."""
    from lmms_topo_plugin.scorers.topology import PARAMS

    return {key for key, value in DEFAULTS.items() if PARAMS[key].parse(key, value) != PARAMS[key].default}


def variant(score: str, params: dict[str, str]) -> str:
    """The ``--methods`` entry of topology with ``score`` and the non-default ``params`` (canonical order)."""
    changed = {key: value for key, value in params.items() if DEFAULTS.get(key) != value or key in pinned()}
    if score != "multiscale":
        changed.pop("topo_scales", None)
    items = [f"topo_score={score}"] + [f"{key}={changed[key]}" for key in sorted(changed)]
    return f"topology[{','.join(items)}]"


def ablation_variants(score: str) -> dict[str, dict[str, str]]:
    """``{factor: {value: variant}}``: one factor changed at a time from the defaults."""
    return {factor: {value: variant(score, {**DEFAULTS, factor: value}) for value in values}
            for factor, values in FACTORS.items() if factor != "topo_scales" or score == "multiscale"}


def run(out: Path, methods: list[str], task: str, metric: str, calib_limits=(None,)) -> list[dict]:
    from lmms_topo_plugin.search import SweepSpec, run_sweep

    result = run_sweep(SweepSpec(model_args=dict(MODEL_ARGS), methods=list(dict.fromkeys(methods)), budgets=BUDGETS,
                                 tasks=[task], out=out, rule="keep>=0.95", metric=metric, objective="layers",
                                 calib_limits=list(calib_limits)))
    return result["rows"]


def by_variant(rows: list[dict], metric: str) -> dict[str, dict]:
    """``{label: {"budgets": {budget: accuracy}, "removed": {budget: layers}, "mean": ...}}`` (dense: ``none``)."""
    from lmms_topo_plugin.search.variants import label_of

    table: dict[str, dict] = {}
    for row in rows:
        label = label_of(row) if row["calib_limit"] is None else f"{label_of(row)} (calibration {row['calib_limit']})"
        entry = table.setdefault(label, {"budgets": {}, "removed": {}})
        entry["budgets"][f"{row['budget']:g}"] = row["metrics"][metric]
        entry["removed"][f"{row['budget']:g}"] = row["removed_layers"]
    for entry in table.values():
        entry["mean"] = sum(entry["budgets"].values()) / len(entry["budgets"])
    return table


def choose(dev: dict[str, dict]) -> dict:
    """Per score, each factor's best value on dev (ties: the default), then the best topology configuration."""
    picks = {}
    for score in ZIGZAG_SCORES:
        best = {}
        for factor, options in ablation_variants(score).items():
            ranked = sorted(options.items(), key=lambda item: (-dev[item[1]]["mean"], item[0] != DEFAULTS[factor]))
            best[factor] = ranked[0][0]
        picks[score] = {"factors": best, "combined": variant(score, {**DEFAULTS, **best})}
    return picks


def plot(summary: dict, path: Path) -> None:
    """Dev accuracy against removed layers per factor (one panel per score and factor), and the test panel."""
    from lmms_topo_plugin.cache import atomic_write_bytes
    from lmms_topo_plugin.plotting import figure_png, subplots

    panels = [(score, factor, options) for score, factors in summary["ablations"].items()
              for factor, options in factors.items()]
    columns = 5
    rows = -(-(len(panels) + 1) // columns)
    figure, axes = subplots(rows, columns, figsize=(4 * columns, 3.4 * rows), sharey=True)
    budgets = [f"{b:g}" for b in summary["budgets"]]
    xs = [float(b) for b in budgets]

    def line(axis, entry: dict, label: str, **style) -> None:
        points = [(float(b), entry["budgets"][b]) for b in budgets if b in entry["budgets"]]
        axis.plot(*zip(*points), marker="o", label=label, **style)

    for axis, (score, factor, options) in zip(axes.flat, panels):
        for value, variant in options.items():
            line(axis, summary["dev"][variant], value, linewidth=2.5 if value == summary["defaults"][factor] else 1.2)
        axis.set_title(f"{score}: {factor.removeprefix('topo_')} (dev)", fontsize=10)
        axis.legend(fontsize=7)
    test_axis = axes.flat[len(panels)]
    for label, entry in summary["test"].items():
        if label != "none":
            line(test_axis, entry, label.replace("topology[", "[")[:40],
                 linewidth=2.5 if label == summary["chosen"] else 1.0)
    test_axis.set_title("test split, once: chosen vs baselines", fontsize=10)
    test_axis.legend(fontsize=6)
    for axis in axes.flat[len(panels) + 1:]:
        axis.set_visible(False)
    for axis in axes.flat:
        axis.set_xticks(xs)
        axis.grid(alpha=0.3)
        axis.axhline(summary["dev"]["none"]["mean"], color="gray", linestyle="--", linewidth=1)
    for axis in axes[:, 0]:
        axis.set_ylabel("exact match")
    for axis in axes[-1]:
        axis.set_xlabel("fraction of decoder layers removed")
    figure.suptitle("TopoVLM ablations on the bundled model (lmms-eval; dashed: dense on dev)")
    atomic_write_bytes(path, figure_png(figure))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="sweep folders (default: %(default)s)")
    parser.add_argument("--summary", type=Path, default=DEFAULT_SUMMARY, help="summary JSON (default: %(default)s)")
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="figure (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    args = parser.parse_args()

    import torch

    from lmms_topo_plugin.cache import atomic_write_json
    from lmms_topo_plugin.errors import PluginError

    torch.set_num_threads(args.threads)
    loadavg_at_start = list(os.getloadavg())
    ablations = {score: ablation_variants(score) for score in ZIGZAG_SCORES}
    topology = [v for per_score in ablations.values() for options in per_score.values() for v in options.values()]
    try:
        dev_rows = run(args.out / "dev", [*topology, *PER_DEPTH, *BASELINES], DEV_TASK, DEV_METRIC)
        picks = choose(by_variant(dev_rows, DEV_METRIC))
        combined = [pick["combined"] for pick in picks.values()]
        dev_rows = run(args.out / "dev", [*topology, *combined, *PER_DEPTH, *BASELINES], DEV_TASK, DEV_METRIC)
        dev = by_variant(dev_rows, DEV_METRIC)
        candidates = [v for v in dev if v.startswith("topology[")]
        chosen = max(candidates, key=lambda v: (dev[v]["mean"], v in combined))
        calibration = by_variant(run(args.out / "dev_calibration", [chosen, *combined], DEV_TASK, DEV_METRIC,
                                     CALIB_LIMITS), DEV_METRIC)
        first = variant("depth_bars", DEFAULTS)
        test = by_variant(run(args.out / "test", [chosen, first, *BASELINES], TEST_TASK, TEST_METRIC), TEST_METRIC)
    except PluginError as error:
        print(f"bench_topology_ablations: {error}", file=sys.stderr)
        return error.exit_code
    summary = {
        "command": command_line(), "budgets": BUDGETS, "dev_metric": DEV_METRIC, "test_metric": TEST_METRIC,
        "defaults": DEFAULTS, "baseline": {score: variant(score, DEFAULTS) for score in ZIGZAG_SCORES},
        "ablations": ablations, "per_depth": PER_DEPTH, "baselines": BASELINES,
        "dev": dev, "dev_calibration": calibration, "picks": picks, "chosen": chosen, "first": first, "test": test,
        "machine": {"cpus_available": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
                    "loadavg_at_start": loadavg_at_start, "loadavg_at_end": list(os.getloadavg())},
    }
    atomic_write_json(args.summary, summary)
    plot(summary, args.plot)
    print(f"chosen on dev: {chosen} (mean dev accuracy {dev[chosen]['mean']:.3f}); summary: {args.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
