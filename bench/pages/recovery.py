"""The recovery page (``docs/results/recovery.md``): test accuracy with and without ``recover=kd`` for every layer
method and CoMP at each budget (``recovery.json``, written by ``bench/bench_recovery.py``, and its plot
``recovery.png``)."""

from __future__ import annotations

import statistics
from pathlib import Path

from .common import display_command, image, load, page, wrap

TITLE = "Recovery: pruning alone against pruning + recover=kd"
RECOVERY_FILE = "recovery.json"  # bench/bench_recovery.py


def _cell(rows: list[dict], method: str, budget: float, recovered: bool) -> dict | None:
    return next((row for row in rows if row["method"] == method and row["budget"] == budget
                 and row["recovered"] == recovered), None)


def recovery_table(data: dict) -> str:
    """Exact match per method and budget: pruning alone → with recovery (and the held-out KL to the dense model,
    before → after); ``unreachable`` where the method cannot take the budget."""
    rows, budgets = data["rows"], data["budgets"]
    methods = sorted({row["method"] for row in rows if row["method"] != "none"})
    lines = ["| method | " + " | ".join(f"{budget:g}" for budget in budgets) + " |", "|---|" + "---:|" * len(budgets)]
    for method in methods:
        cells = []
        for budget in budgets:
            plain, recovered = _cell(rows, method, budget, False), _cell(rows, method, budget, True)
            if plain is None or recovered is None:
                cells.append("unreachable")
                continue
            cells.append(f"{plain['exact_match']:.3f} → **{recovered['exact_match']:.3f}** "
                         f"(KL {recovered['kl_before']:.3g} → {recovered['kl_after']:.3g})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gains(data: dict) -> list[float]:
    """Exact match gained by recovery, for every method and budget that has both rows."""
    rows = data["rows"]
    return [recovered["exact_match"] - plain["exact_match"]
            for plain in rows if not plain["recovered"] and plain["method"] != "none"
            for recovered in [_cell(rows, plain["method"], plain["budget"], True)] if recovered is not None]


def recovery_block(data: dict) -> str:
    dev, machine = data["dev"], data["machine"]
    dense = next(row["exact_match"] for row in data["rows"] if row["method"] == "none")
    chosen = ", ".join(f"{steps}: {score:.3f}" for steps, score in dev["by_steps"].items())
    seconds = [row["train_s"] for row in data["rows"] if row["recovered"]]
    questions = "every question" if data["limit"] is None else f"the first {data['limit']} questions"
    intro = wrap(
        f"Measured with `{display_command(data['command'])}` on the bundled model ({machine['cpus_available']} CPU "
        f"cores, {machine['torch_threads']} torch thread): exact match on the `topo_synth` test split "
        f"({questions}), evaluated once; the dense model scores {dense:.3f}. Budgets "
        "are the share of decoder layers for a layer method and of the dense prefill FLOPs for `comp`. Each cell: "
        "pruning alone → pruning + `recover=kd` (LoRA, merged; the other recovery parameters at their defaults), "
        "and the KL of the next-token distribution to the dense model's on the held-out recovery prompts, before → "
        f"after; `random` is one seed (seed 0). `recover_steps` was chosen on the dev split with `{dev['method']}` at {dev['budget']:g} "
        f"(dev exact match by steps: {chosen}; chosen {dev['chosen_steps']}). Training took "
        f"{min(seconds):.0f}–{max(seconds):.0f} s per configuration (median {statistics.median(seconds):.0f} s) on top of "
        "one teacher pass shared by every configuration.")
    change = gains(data)
    summary = wrap(f"Recovery changes exact match by {min(change):+.3f} to {max(change):+.3f} "
                   f"(median {statistics.median(change):+.3f}) over the {len(change)} configurations with both rows.")
    return "\n\n".join([intro, recovery_table(data), summary,
                        image("recovery.png", "exact match against budget, with and without recovery")])


NOT_MEASURED = ("Not measured yet: `.venv/bin/python bench/bench_recovery.py` (resumable; about an hour on two CPU "
                "cores) writes `bench/results/recovery.json`, which this page is generated from.")


def render(results_dir: Path) -> str:
    if not (results_dir / RECOVERY_FILE).is_file():
        return page(TITLE, RECOVERY_FILE, wrap(NOT_MEASURED))
    return page(TITLE, RECOVERY_FILE, recovery_block(load(RECOVERY_FILE, results_dir)))


def headline(results_dir: Path) -> str:
    if not (results_dir / RECOVERY_FILE).is_file():
        return "not measured yet."
    data = load(RECOVERY_FILE, results_dir)
    change = gains(data)
    methods = sorted({row["method"] for row in data["rows"] if row["method"] != "none"})
    return (f"recover=kd changes exact match by {min(change):+.3f} to {max(change):+.3f} (median "
            f"{statistics.median(change):+.3f}) across {', '.join(methods)} at budgets "
            f"{min(data['budgets']):g} to {max(data['budgets']):g}.")
