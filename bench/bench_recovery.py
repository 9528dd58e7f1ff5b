#!/usr/bin/env python3
"""Accuracy with and without recovery (``recover=kd``) on the bundled model, for every layer method and CoMP.

    .venv/bin/python bench/bench_recovery.py                     # what the results pages report (resumable)
    .venv/bin/python bench/bench_recovery.py --methods block_influence --budgets 0.5 --limit 50 --out /tmp/r  # a look

Everything is evaluated by :func:`lmms_topo_plugin.search.run_sweep` (lmms-eval in-process, one loaded model; a
recovered row is recovered after its plan is applied and its weights restored after it), so there is no second
evaluation code path. Two steps, into ``--out`` (default ``bench/results/recovery/``):

1. **Steps chosen on dev** (``dev/``): ``block_influence`` at ``DEV_BUDGET`` of the decoder with
   ``recover_steps`` in ``DEV_STEPS``, on ``topo_synth_dev`` (500 questions); the count with the highest dev exact
   match is used below (ties: fewer steps). Then, at that count, the hidden-state term's weight ``recover_hidden``
   in ``DEV_HIDDEN`` (0: the KL alone), chosen the same way (ties: the smaller weight). Every other recovery
   parameter keeps its default.
2. **Test, once** (``test/``): every method ``m`` and ``m[recover=kd,recover_steps=S]`` at ``--budgets`` (the
   fraction of decoder layers for a layer method, of the dense prefill FLOPs for ``comp``), on ``topo_synth`` (the
   500-question test split). ``random`` also with ``seed=1`` and ``seed=2`` (``EXTRA_RANDOM_SEEDS``: sweeps of
   ``random`` alone into ``test/seed1`` and ``test/seed2``; the seed also draws its own recovery prompts), so that the
   page shows its mean over 3 seeds.

Writes ``recovery.json`` next to the folder (every row: method, budget, recovered or not, exact match, FLOPs removed
on the sweep's cost prompt, the held-out KL to the dense model before and after recovery, training seconds; the
dev choice; the command; the machine) and ``recovery.png`` (exact match against budget per method, with recovery
solid, without dashed). One torch thread by default (``--threads``), as the other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

# the command as run (paths inside the checkout relative to it) and the options the accuracy benchmarks share
from bench_comp import add_run_arguments, command_line, set_torch_threads  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "recovery"
BUDGETS = [0.125, 0.25, 0.375, 0.5]
DEV_STEPS = (100, 200, 400, 800)
DEV_HIDDEN = (0.0, 0.1, 1.0)
DEV_METHOD, DEV_BUDGET = "block_influence", 0.375
TEST_TASKS, DEV_TASKS = ["topo_synth"], ["topo_synth_dev"]
METRIC, DEV_METRIC = "topo_synth/exact_match", "topo_synth_dev/exact_match"
MODEL_ARGS = {"device": "cpu", "batch_size": "16"}
EXTRA_RANDOM_SEEDS = (1, 2)


def recovered(method: str, steps: int, hidden: float = 0.0) -> str:
    return f"{method}[recover=kd,recover_steps={steps}{f',recover_hidden={hidden:g}' if hidden else ''}]"


def sweep(out: Path, methods: list[str], budgets: list[float], tasks: list[str], metric: str,
          limit: int | None, seed: int = 0) -> dict:
    """``bench_comp.sweep``, but seed 0 left out of the model_args (the key of every row measured so far)."""
    from lmms_topo_plugin.search import SweepSpec, run_sweep

    model_args = MODEL_ARGS | ({"seed": str(seed)} if seed else {})
    return run_sweep(SweepSpec(model_args=model_args, methods=methods, budgets=budgets, tasks=tasks, out=out,
                               rule="metric>=0", metric=metric, objective="flops", limit=limit, cost_repeats=1))


def rows_of(folder: Path, metric: str, seed: int = 0) -> list[dict]:
    """Every row of a sweep folder run with ``seed``: its method, budget, exact match, FLOPs removed and recovery."""
    from lmms_topo_plugin.search.rules import dense_row, flops_removed

    rows = [json.loads(path.read_text()) for path in sorted((folder / "configs").glob("*.json"))]
    dense = dense_row(rows)
    result = []
    for row in rows:
        recovery = row.get("recovery") or {}
        result.append({
            "method": row["method"], "variant": row["variant"], "budget": row["budget"], "seed": seed,
            "recovered": bool(recovery), "exact_match": row["metrics"][metric],
            "flops_removed": flops_removed(row, dense) if row["method"] != "none" else 0.0,
            "removed_layers": row["removed_layers"],
            "kl_before": recovery.get("kl_before"), "kl_after": recovery.get("kl_after"),
            "recover_steps": recovery.get("steps"), "recover_hidden": recovery.get("hidden_weight", 0.0),
            "hidden_before": recovery.get("hidden_before"), "hidden_after": recovery.get("hidden_after"),
            "train_s": recovery.get("train_seconds")})
    return result


def plot(rows: list[dict], hidden: float, path: Path) -> None:
    """Exact match against budget per method: pruning alone dashed, recovered with the chosen ``recover_hidden``
    solid."""
    from lmms_topo_plugin.cache import atomic_write_bytes
    from lmms_topo_plugin.plotting import figure_png, subplots

    from pages.recovery import seed_means

    rows = seed_means(rows)  # random: the mean of its seeds
    figure, axis = subplots(figsize=(7.5, 5))
    methods = sorted({row["method"] for row in rows if row["method"] != "none"})
    colours = {method: f"C{index % 10}" for index, method in enumerate(methods)}
    for method in methods:
        for was_recovered, style in ((False, "--"), (True, "-")):
            points = sorted((row["budget"], row["exact_match"]) for row in rows
                            if row["method"] == method and row["recovered"] == was_recovered
                            and (not was_recovered or row["recover_hidden"] == hidden))
            if points:
                axis.plot(*zip(*points), linestyle=style, marker="o", color=colours[method],
                          label=f"{method}{' + recover=kd' if was_recovered else ''}")
    dense = next(row["exact_match"] for row in rows if row["method"] == "none")
    axis.axhline(dense, color="#7f7f7f", linewidth=1, label="dense")
    axis.set_xlabel("budget (layer methods: share of decoder layers; comp: share of prefill FLOPs)")
    axis.set_ylabel("exact match, topo_synth test (500)")
    solid = f"recover=kd, recover_hidden={hidden:g}" if hidden else "recover=kd"
    axis.set_title(f"bundled model: pruning alone (dashed) and with {solid} (solid)", fontsize=9)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), handlelength=3.5)  # outside: the lines fill the axes
    atomic_write_bytes(path, figure_png(figure))


def main() -> int:
    from lmms_topo_plugin.scorers.registry import DENSE_METHOD, available_methods, get_method

    default_methods = [name for name in available_methods()
                       if name != DENSE_METHOD and (get_method(name).unit == "layers" or name == "comp")]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(default_methods), help="methods (default: %(default)s)")
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="budgets (default: %(default)s)")
    add_run_arguments(parser, DEFAULT_OUT)
    args = parser.parse_args()
    from lmms_topo_plugin.cache import atomic_write_json

    threads = set_torch_threads(args.threads)
    methods, budgets = args.methods.split(","), [float(budget) for budget in args.budgets.split(",")]
    loadavg = list(os.getloadavg())
    sweep(args.out / "dev", [recovered(DEV_METHOD, steps) for steps in DEV_STEPS], [DEV_BUDGET], DEV_TASKS,
          DEV_METRIC, args.limit)
    dev_rows = [row for row in rows_of(args.out / "dev", DEV_METRIC) if row["recovered"]]
    by_steps = {row["recover_steps"]: row["exact_match"] for row in dev_rows if not row["recover_hidden"]}
    steps = max(DEV_STEPS, key=lambda count: (by_steps[count], -count))
    print(f"dev: exact match by recover_steps {by_steps}; using recover_steps={steps}", flush=True)
    sweep(args.out / "dev", [recovered(DEV_METHOD, steps, hidden) for hidden in DEV_HIDDEN], [DEV_BUDGET], DEV_TASKS,
          DEV_METRIC, args.limit)
    dev_rows = [row for row in rows_of(args.out / "dev", DEV_METRIC) if row["recovered"]]
    by_hidden = {row["recover_hidden"]: {"exact_match": row["exact_match"], "kl_after": row["kl_after"],
                                         "hidden_after": row["hidden_after"]}
                 for row in dev_rows if row["recover_steps"] == steps}
    hidden = max(DEV_HIDDEN, key=lambda weight: (by_hidden[weight]["exact_match"], -weight))
    print(f"dev: at {steps} steps, by recover_hidden {by_hidden}; using recover_hidden={hidden:g}", flush=True)
    sweep(args.out / "test", [entry for method in methods for entry in (method, recovered(method, steps, hidden))],
          budgets, TEST_TASKS, METRIC, args.limit)
    rows = rows_of(args.out / "test", METRIC)
    if "random" in methods:
        for seed in EXTRA_RANDOM_SEEDS:
            folder = args.out / "test" / f"seed{seed}"
            sweep(folder, ["random", recovered("random", steps, hidden)], budgets, TEST_TASKS, METRIC, args.limit, seed)
            rows += [row for row in rows_of(folder, METRIC, seed) if row["method"] == "random"]
    atomic_write_json(args.out.parent / "recovery.json", {
        "command": command_line(), "metric": METRIC, "budgets": budgets, "limit": args.limit,
        "dev": {"metric": DEV_METRIC, "method": DEV_METHOD, "budget": DEV_BUDGET, "by_steps": by_steps,
                "chosen_steps": steps, "by_hidden": by_hidden, "chosen_hidden": hidden},
        "rows": rows,
        "machine": {"cpus_available": len(os.sched_getaffinity(0)), "torch_threads": threads,
                    "loadavg_at_start": loadavg, "loadavg_at_end": list(os.getloadavg())},
    })
    plot(rows, hidden, args.out.parent / "recovery.png")
    for row in sorted(rows, key=lambda row: (row["method"], row["budget"], row["recovered"], row["recover_hidden"],
                                             row["seed"])):
        print(f"{row['variant']:45s} seed {row['seed']} {row['budget']:.3f} {row['exact_match']:.3f}"
              + (f"  KL {row['kl_before']:.4f} -> {row['kl_after']:.4f}, {row['train_s']:.0f} s"
                 if row["recovered"] else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
