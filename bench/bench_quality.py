#!/usr/bin/env python3
"""Accuracy versus removed decoder layers, for every layer method in the registry, on the bundled model.

    .venv/bin/python bench/bench_quality.py                      # all methods, 0, 1/8, 1/4, 3/8, 1/2 of the decoder
    .venv/bin/python bench/bench_quality.py --methods topology block_influence --limit 40

Each method calibrates and scores once (scores are cached like any run; calibration defaults are the method's own),
then each budget prunes a fresh copy of the model and answers the `topo_synth` test split with the plugin's
generation path (greedy, chat template, the tasks' exact match). `random` is averaged over `--random-seeds` seeds
and its spread (min..max) is printed. Budgets are `sparsity=` values, rounded to whole layers as a run would.
Writes `quality.json` (every per-kind number) and `quality.png` (overall and per-kind curves) to `--out`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

DEFAULT_FRACTIONS = (0.0, 0.125, 0.25, 0.375, 0.5)


def evaluate_budget(pretrained: str | None, method: str, fraction: float, seed: int, limit: int | None,
                    cache_dir: str | None) -> tuple[dict[str, float], list[int]]:
    """Prune with `method` at `fraction` (dense when 0) and return (per-kind exact match, removed layers)."""
    from lmms_topo_plugin.api import load_pruned
    from lmms_topo_plugin.training.evaluate import evaluate

    args = {"pretrained": pretrained, "device": "cpu", "dtype": "float32", "cache_dir": cache_dir}
    if fraction > 0:
        args.update(method=method, sparsity=fraction, seed=seed)
    loaded, report = load_pruned({k: v for k, v in args.items() if v is not None})
    return evaluate(loaded, "test", limit=limit), report.plan["removed_layers"]


def run(args: argparse.Namespace) -> dict:
    from lmms_topo_plugin.errors import ModelArgsError
    from lmms_topo_plugin.registry import DENSE_METHOD, available_methods

    methods = args.methods or [m for m in available_methods() if m != DENSE_METHOD]
    dense, _ = evaluate_budget(args.pretrained, DENSE_METHOD, 0.0, 0, args.limit, args.cache_dir)
    print(f"dense: overall {dense['overall']:.3f}", flush=True)
    results: dict = {"dense": dense, "methods": {}}
    for method in methods:
        seeds = range(args.random_seeds) if method == "random" else [0]
        rows = []
        for fraction in args.fractions:
            if fraction == 0:
                rows.append({"fraction": 0.0, "removed": [[]], "runs": [dense]})
                continue
            runs, removed = [], []
            for seed in seeds:
                start = time.perf_counter()
                try:
                    table, layers = evaluate_budget(args.pretrained, method, fraction, seed, args.limit,
                                                    args.cache_dir)
                except ModelArgsError as error:  # a budget this method cannot reach (e.g. spacing at 1/2)
                    print(f"{method} sparsity={fraction:g}: n/a ({error})", flush=True)
                    break
                runs.append(table)
                removed.append(layers)
                print(f"{method} sparsity={fraction:g} seed={seed}: removed {layers} -> overall "
                      f"{table['overall']:.3f} ({time.perf_counter() - start:.1f} s)", flush=True)
            if runs:
                rows.append({"fraction": fraction, "removed": removed, "runs": runs})  # one per seed
        results["methods"][method] = rows
    return results


def mean_table(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.fmean(run[key] for run in runs) for key in runs[0]}


def n_removed(row: dict) -> int:
    return len(row["removed"][0])


def markdown(results: dict, key: str = "overall") -> str:
    """Methods x budgets table of `key` (mean over seeds; random shows min..max)."""
    first = max(results["methods"].values(), key=len)
    header = "| method | " + " | ".join(f"{row['fraction']:g} ({n_removed(row)} layers)" for row in first) + " |"
    lines = [header, "|---" * (len(first) + 1) + "|"]
    for method, rows in results["methods"].items():
        by_fraction = {row["fraction"]: row for row in rows}
        cells = []
        for budget in first:
            row = by_fraction.get(budget["fraction"])
            values = [run[key] for run in row["runs"]] if row else []
            cell = f"{statistics.fmean(values):.3f}" if values else "n/a"  # n/a: a budget it cannot reach
            if len(values) > 1:
                cell += f" ({min(values):.2f}..{max(values):.2f})"
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def versus_baselines(results: dict, method: str = "topology") -> list[str]:
    """Per budget: `method`'s overall accuracy minus the best other method's (mean over seeds)."""
    rows = results["methods"].get(method)
    if not rows:
        return []
    lines = []
    for row in rows:
        if row["fraction"] == 0:
            continue
        others = {name: mean_table(other_row["runs"])["overall"] for name, other in results["methods"].items()
                  for other_row in other if name != method and other_row["fraction"] == row["fraction"]}
        if not others:
            return []
        best = max(others, key=others.get)
        ours = mean_table(row["runs"])["overall"]
        lines.append(f"{row['fraction']:g} ({n_removed(row)} layers): {method} {ours:.3f} vs best other "
                     f"{best} {others[best]:.3f} ({ours - others[best]:+.3f})")
    return lines


def plot(results: dict, path: Path) -> None:
    from lmms_topo_plugin.cache import atomic_write_bytes
    from lmms_topo_plugin.plotting import figure_png, subplots

    keys = list(results["dense"])
    keys = ["overall", *[k for k in keys if k != "overall"]]
    figure, axes = subplots(2, 3, figsize=(13, 7.5), sharex=True, sharey=True)
    for ax, key in zip(axes.flat, keys):
        ax.axhline(results["dense"][key], color="gray", linestyle="--", linewidth=1, label="dense")
        for method, rows in results["methods"].items():
            xs = [n_removed(row) for row in rows]
            ys = [mean_table(row["runs"])[key] for row in rows]
            ax.plot(xs, ys, marker="o", linewidth=2.5 if method == "topology" else 1.5, label=method)
            ax.set_xticks(xs)
        ax.set_title(key)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("decoder layers removed")
    for ax in axes[:, 0]:
        ax.set_ylabel("exact match (test)")
    axes.flat[0].legend(fontsize=8)
    figure.suptitle(f"topo_synth test accuracy vs removed decoder layers ({results['model']})")
    atomic_write_bytes(path, figure_png(figure))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", default=None, help="model directory (default: the bundled model)")
    parser.add_argument("--methods", nargs="+", help="layer methods (default: every one in the registry)")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(DEFAULT_FRACTIONS))
    parser.add_argument("--random-seeds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="test docs per kind (default: all 100)")
    parser.add_argument("--cache-dir", default=None, help="score cache (default: the plugin's)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()

    import torch

    from lmms_topo_plugin.cache import atomic_write_json
    from lmms_topo_plugin.errors import ModelArgsError

    torch.set_num_threads(2)
    try:
        results = run(args)
    except ModelArgsError as error:
        print(f"bench_quality: {error}", file=sys.stderr)
        return 2
    results["fractions"] = args.fractions
    results["model"] = Path(args.pretrained).name if args.pretrained else "bundled default model"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "quality.json", results)
    plot(results, args.out / "quality.png")
    print("\noverall exact match (test split) by removed fraction of the decoder:")
    print(markdown(results))
    for line in versus_baselines(results):
        print(line)
    for kind in [k for k in results["dense"] if k != "overall"]:
        print(f"\n{kind}:")
        print(markdown(results, kind))
    print(f"\nwrote {args.out / 'quality.json'} and {args.out / 'quality.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
