#!/usr/bin/env python3
"""Accuracy versus removed decoder layers on the bundled model: a thin call of the sweep (``topo-prune sweep``).

    .venv/bin/python bench/bench_quality.py                      # what the results pages report (resumable)
    .venv/bin/python bench/bench_quality.py --methods topology --model-args topo_k=10 --out /tmp/q  # a look

One :func:`lmms_topo_plugin.search.run_sweep` over every layer method of the registry at 1/8, 1/4, 3/8 and 1/2
of the decoder, evaluated by lmms-eval on the whole ``topo_synth`` test split (500 questions), rule
``keep>=0.95`` on ``topo_synth/exact_match``, objective ``layers``, into ``--out`` (default
``bench/results/quality_sweep/``). ``random`` gets two more seeds as two more sweeps of ``random`` alone
(``seed=1`` and ``seed=2`` in ``model_args``, into ``<out>/seed1`` and ``<out>/seed2``), so that the quality page shows
its mean (min..max) over 3 seeds. Re-running the command reuses every finished configuration.

Every sweep runs with ``recompute=true``: each method really calibrates and scores once (no score cache from
earlier runs), so that its ``score_s`` can be compared with what reloading per configuration pays. That cost is
measured in the same run, after the sweeps: per method, one ``lmms_topo_plugin.api.load_pruned`` at
``sparsity=0.25`` with ``recompute=true`` and a fresh ``cache_dir`` (weights load + calibration + scoring +
surgery), then the same call again with its scores cached; the dense model one plain load. Written to
``<out>/reload_overhead.json``, with the command and the machine; ``bench/pages/quality.py`` turns it and the
sweep's ``sweep.json`` into the results page's time-saved figure. It is re-measured only when a sweep evaluated
something (or the file is missing), so it always sits next to the sweep timings of the same run.

One torch thread by default (``--threads``), as in ``bench/bench_speed.py``: on a machine shared with other work a
multi-threaded run waits at every parallel region for a core another process holds, which makes the tiny model's
latencies (milliseconds) and the calibration timings incomparable between configurations.

The per-kind plot (``bench/results/quality.png``) and the quality page's tables come from the sweep rows alone
(``configs/*.json``), read by ``bench/pages/``; there is no second evaluation code path. The main
sweep's regimes (``topo-prune regimes``: ``regimes.json``, ``regimes.md``, ``regimes.png``) are written into it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pages import common, quality as quality_page  # noqa: E402  (bench/pages: standard library only)

BUDGETS = [0.125, 0.25, 0.375, 0.5]
TASKS = ["topo_synth"]
METRIC = common.OVERALL_METRIC
RULE = "keep>=0.95"
OBJECTIVE = "layers"
MODEL_ARGS = {"device": "cpu", "batch_size": "16", "recompute": "true"}
EXTRA_RANDOM_SEEDS = (1, 2)
RELOAD_SPARSITY = 0.25
DEFAULT_OUT = ROOT / "bench" / "results" / common.SWEEP_DIR
PLOT = ROOT / "bench" / "results" / "quality.png"


def parse_pairs(text: str) -> dict[str, str]:
    """``"key=value,key=value"`` (extra ``model_args``, e.g. ``topo_k=10``)."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"--model-args: {text!r} is not key=value,key=value")
    return {key.strip(): value.strip() for key, value in pairs}


def sweep(out: Path, methods: list[str], model_args: dict[str, str], limit: int | None) -> dict:
    from lmms_topo_plugin.search import SweepSpec, run_sweep

    return run_sweep(SweepSpec(model_args=model_args, methods=methods, budgets=BUDGETS, tasks=TASKS, out=out,
                               rule=RULE, metric=METRIC, objective=OBJECTIVE, limit=limit))


def reload_overhead(methods: list[str], model_args: dict[str, str]) -> dict:
    """Seconds of one fresh ``load_pruned`` per method (recomputed, then cached scores) and of the dense load."""
    from lmms_topo_plugin.api import load_pruned
    from lmms_topo_plugin.scorers.registry import DENSE_METHOD

    base = {key: value for key, value in model_args.items() if key != "recompute"}
    fresh, cached, timings = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="bench_quality_cache_") as cache_dir:
        for method in [DENSE_METHOD, *methods]:
            args = {**base, "cache_dir": cache_dir}
            if method != DENSE_METHOD:
                args |= {"method": method, "sparsity": RELOAD_SPARSITY}
            for store, recompute in ((fresh, True), (cached, False)):
                if method == DENSE_METHOD and not recompute:
                    continue  # the dense load has nothing to cache
                start = time.perf_counter()
                loaded, report = load_pruned({**args, "recompute": str(recompute).lower()})
                store[method] = time.perf_counter() - start
                timings.setdefault(method, {})["recompute" if recompute else "cached"] = report.timings_s
                del loaded
            print(f"reload {method}: {fresh[method]:.2f} s"
                  + (f", {cached[method]:.2f} s with cached scores" if method in cached else ""), flush=True)
    return {"reload_s": fresh, "reload_cached_s": cached, "timings_s": timings}


def plot(quality: dict, path: Path) -> None:
    """Overall and per-kind exact match against removed layers, one line per method (random: mean of seeds)."""
    from lmms_topo_plugin.cache import atomic_write_bytes
    from lmms_topo_plugin.plotting import figure_png, subplots

    keys = ["overall", *[key for key in quality["dense"] if key != "overall"]]
    figure, axes = subplots(2, 3, figsize=(13, 7.5), sharex=True, sharey=True)
    for ax, key in zip(axes.flat, keys):
        ax.axhline(quality["dense"][key], color="gray", linestyle="--", linewidth=1, label="dense")
        for method, rows in quality["methods"].items():
            xs = [common.n_removed(row) for row in rows]
            ys = [common.mean_score(row, key) for row in rows]
            seeds = max(len(row["runs"]) for row in rows)
            label = method + (f" (mean of {seeds} seeds)" if seeds > 1 else "")
            ax.plot(xs, ys, marker="o", linewidth=2.5 if method == "topology" else 1.5, label=label)
            ax.set_xticks(xs)
        ax.set_title(key)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("decoder layers removed")
    for ax in axes[:, 0]:
        ax.set_ylabel("exact match (test)")
    axes.flat[0].legend(fontsize=8)
    figure.suptitle("topo_synth test accuracy vs removed decoder layers (bundled default model, lmms-eval)")
    atomic_write_bytes(path, figure_png(figure))


def command_line() -> str:
    python = Path(sys.executable)
    try:
        python = python.relative_to(ROOT)
    except ValueError:
        pass
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    return shlex.join([str(python), str(script), *sys.argv[1:]])


def main() -> int:
    from lmms_topo_plugin.scorers.registry import DENSE_METHOD, available_methods

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", help="layer methods (default: every one in the registry)")
    parser.add_argument("--model-args", default="", help="extra model_args for every sweep (e.g. topo_k=10)")
    parser.add_argument("--limit", type=int, default=None, help="documents per task (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="sweep folder (default: %(default)s)")
    parser.add_argument("--plot", type=Path, default=PLOT, help="per-kind plot (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default: %(default)s; 0 keeps torch's default, one per core)")
    args = parser.parse_args()

    import torch

    from lmms_topo_plugin.cache import atomic_write_json
    from lmms_topo_plugin.errors import PluginError

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    methods = args.methods or [method for method in available_methods() if method != DENSE_METHOD]
    model_args = {**MODEL_ARGS, **parse_pairs(args.model_args)}
    loadavg_at_start = list(os.getloadavg())
    seed_dirs = [args.out / f"seed{seed}" for seed in EXTRA_RANDOM_SEEDS] if "random" in methods else []
    before = [(folder / "sweep.json").read_bytes() if (folder / "sweep.json").exists() else None
              for folder in [args.out, *seed_dirs]]
    try:
        result = sweep(args.out, methods, model_args, args.limit)
        for seed, folder in zip(EXTRA_RANDOM_SEEDS, seed_dirs):
            sweep(folder, ["random"], {**model_args, "seed": str(seed)}, args.limit)
        after = [(folder / "sweep.json").read_bytes() if (folder / "sweep.json").exists() else None
                 for folder in [args.out, *seed_dirs]]
        reload_path = args.out / quality_page.RELOAD_FILE
        if after != before or not reload_path.exists():
            overhead = reload_overhead(methods, model_args)
            atomic_write_json(reload_path, {
                "command": command_line(), "sparsity": RELOAD_SPARSITY,
                "what": "seconds of one lmms_topo_plugin.api.load_pruned per method: fresh weights load + "
                        "calibration + scoring + surgery (reload_s: recompute=true, fresh cache_dir; "
                        "reload_cached_s: the same call with its scores cached); 'none' is the dense load",
                **overhead,
                "spec": {"methods": methods, "budgets": BUDGETS, "tasks": TASKS, "limit": args.limit,
                         "metric": METRIC, "rule": RULE, "objective": OBJECTIVE, "model_args": model_args,
                         "extra_random_seeds": list(EXTRA_RANDOM_SEEDS) if seed_dirs else []},
                "machine": {"cpus_available": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
                            "loadavg_at_start": loadavg_at_start, "loadavg_at_end": list(os.getloadavg())},
            })
        else:
            print(f"every configuration was reused; {reload_path} is from the run that evaluated them", flush=True)
    except PluginError as error:
        print(f"bench_quality: {error}", file=sys.stderr)
        return error.exit_code
    from lmms_topo_plugin.search.regimes import write_regimes

    write_regimes(args.out, METRIC)  # regimes.{json,md,png} of the main sweep (random: its seed-0 run)
    quality = common.load_quality(args.out.parent, args.out.name)
    plot(quality, args.plot)
    print("\noverall exact match (test split):")
    print(quality_page.quality_block(quality))
    winner = result["winner"]
    print("\nwinner: " + ("none passes " + RULE if winner is None else
                          f"{winner['method']} at {winner['budget']:g} (removes {winner['removed_layers']}), "
                          f"{METRIC} {winner['metrics'][METRIC]:.3f}"))
    print(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
