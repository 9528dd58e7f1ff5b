"""The recovery page (``docs/results/recovery.md``): test accuracy with and without ``recover=kd`` for every layer
method and CoMP at each budget (``recovery.json``, written by ``bench/bench_recovery.py``, and its plot
``recovery.png``)."""

from __future__ import annotations

import statistics
from pathlib import Path

from .common import display_command, image, load, page, wrap

TITLE = "Recovery: pruning alone against pruning + recover=kd"
RECOVERY_FILE = "recovery.json"  # bench/bench_recovery.py


def seed_means(rows: list[dict]) -> list[dict]:
    """``rows`` with the runs of one configuration under several seeds (``random``'s) replaced by one row of their
    means (exact match, KL before and after, training seconds) and ``seeds``, their count."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["method"], row["budget"], row["recovered"], row.get("recover_hidden", 0.0))
        groups.setdefault(key, []).append(row)
    merged = []
    for runs in groups.values():
        mean = {name: statistics.mean(run[name] for run in runs) if runs[0][name] is not None else None
                for name in ("exact_match", "kl_before", "kl_after", "train_s")}
        merged.append(runs[0] | mean | {"seeds": len(runs)})
    return merged


def chosen_hidden(data: dict) -> float:
    """The ``recover_hidden`` of the recovered rows the page reports (dev's choice; 0 in JSON written before it)."""
    return data["dev"].get("chosen_hidden", 0.0)


def _cell(rows: list[dict], method: str, budget: float, recovered: bool, hidden: float = 0.0) -> dict | None:
    return next((row for row in rows if row["method"] == method and row["budget"] == budget
                 and row["recovered"] == recovered and (not recovered or row.get("recover_hidden", 0.0) == hidden)),
                None)


def recovery_table(data: dict) -> str:
    """Exact match per method and budget: pruning alone → with recovery (and the held-out KL to the dense model,
    before → after); ``unreachable`` where the method cannot take the budget."""
    rows, budgets, hidden = data["rows"], data["budgets"], chosen_hidden(data)
    methods = sorted({row["method"] for row in rows if row["method"] != "none"})
    lines = ["| method | " + " | ".join(f"{budget:g}" for budget in budgets) + " |", "|---|" + "---:|" * len(budgets)]
    for method in methods:
        cells = []
        for budget in budgets:
            plain, recovered = _cell(rows, method, budget, False), _cell(rows, method, budget, True, hidden)
            if plain is None or recovered is None:
                cells.append("unreachable")
                continue
            cells.append(f"{plain['exact_match']:.3f} → **{recovered['exact_match']:.3f}** "
                         f"(KL {recovered['kl_before']:.3g} → {recovered['kl_after']:.3g})")
        seeds = max(row.get("seeds", 1) for row in rows if row["method"] == method)
        label = method + (f" (mean of {seeds} seeds)" if seeds > 1 else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def winners_table(data: dict) -> str:
    """Per budget, the layer method a search would pick on test exact match: the best by pruning alone, and the best
    with recovery (ties: the first by name). ``comp`` is left out: its budget is a share of FLOPs, not of layers."""
    rows, hidden = data["rows"], chosen_hidden(data)
    lines = ["| budget | best pruning alone | best with recover=kd |", "|---:|---|---|"]
    for budget in data["budgets"]:
        cells = []
        for recovered in (False, True):
            layer_rows = [row for row in rows if row["budget"] == budget and row["method"] not in ("none", "comp")
                          and row is _cell(rows, row["method"], budget, recovered, hidden)]
            best = min(layer_rows, key=lambda row: (-row["exact_match"], row["method"]))
            cells.append(f"`{best['method']}` {best['exact_match']:.3f}")
        lines.append(f"| {budget:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dev_choice(dev: dict) -> str:
    """How the recovery parameters of the table were chosen on dev (the hidden-state weight: JSON written since)."""
    steps = ", ".join(f"{count}: {score:.3f}" for count, score in dev["by_steps"].items())
    text = (f"`recover_steps` was chosen on the dev split with `{dev['method']}` at {dev['budget']:g} (dev exact match "
            f"by steps: {steps}; chosen {dev['chosen_steps']}")
    if "by_hidden" not in dev:
        return text + ")."
    weights = ", ".join(f"{float(weight):g}: {entry['exact_match']:.3f}" for weight, entry in dev["by_hidden"].items())
    return (text + f"), then at that count the weight of the hidden-state term, `recover_hidden` (dev exact match by "
            f"weight: {weights}; chosen {dev['chosen_hidden']:g}).")


def gains(data: dict, hidden: float | None = None, baseline: float | None = None) -> list[float]:
    """Exact match gained by recovery with ``recover_hidden=hidden`` (default: the chosen one) over pruning alone
    (``baseline`` None) or over recovery with ``recover_hidden=baseline``, for every method and budget with both."""
    rows = data["rows"]
    hidden = chosen_hidden(data) if hidden is None else hidden
    pairs = [(_cell(rows, plain["method"], plain["budget"], baseline is not None, baseline or 0.0),
              _cell(rows, plain["method"], plain["budget"], True, hidden))
             for plain in rows if not plain["recovered"] and plain["method"] != "none"]
    return [recovered["exact_match"] - base["exact_match"] for base, recovered in pairs
            if base is not None and recovered is not None]


def hidden_ablation(data: dict) -> str:
    """Where the test split was also run with the KL alone: recovery with the chosen hidden-state weight against it
    (empty when the KL alone was chosen, or only one was run)."""
    hidden = chosen_hidden(data)
    change = gains(data, hidden, 0.0) if hidden else []
    if not change:
        return ""
    return wrap(f"Against recovery with the KL alone (`recover_hidden=0`, also run on the test split), the "
                f"hidden-state term (`recover_hidden={hidden:g}`) changes exact match by {min(change):+.3f} to "
                f"{max(change):+.3f} (median {statistics.median(change):+.3f}; {sum(c > 0 for c in change)} better, "
                f"{sum(c < 0 for c in change)} worse, {sum(c == 0 for c in change)} equal of {len(change)}).")


def random_seeds(data: dict) -> str:
    seeds = sorted({row.get("seed", 0) for row in data["rows"] if row["method"] == "random"})
    if len(seeds) < 2:
        return f"`random` is one seed (seed {seeds[0] if seeds else 0})"
    return (f"`random` is the mean of {len(seeds)} seeds ({', '.join(map(str, seeds))}; each seed also draws its own "
            "recovery prompts)")


def recovery_block(data: dict) -> str:
    seeds_text = random_seeds(data)
    data = data | {"rows": seed_means(data["rows"])}
    dev, machine = data["dev"], data["machine"]
    dense = next(row["exact_match"] for row in data["rows"] if row["method"] == "none")
    seconds = [row["train_s"] for row in data["rows"] if row["recovered"]
               and row.get("recover_hidden", 0.0) == chosen_hidden(data)]
    questions = "every question" if data["limit"] is None else f"the first {data['limit']} questions"
    intro = wrap(
        f"Measured with `{display_command(data['command'])}` on the bundled model ({machine['cpus_available']} CPU "
        f"cores, {machine['torch_threads']} torch thread): exact match on the `topo_synth` test split "
        f"({questions}), evaluated once; the dense model scores {dense:.3f}. Budgets "
        "are the share of decoder layers for a layer method and of the dense prefill FLOPs for `comp`. Each cell: "
        "pruning alone → pruning + `recover=kd` (LoRA, merged; the parameters chosen on dev below, the others at "
        "their defaults), "
        "and the KL of the next-token distribution to the dense model's on the held-out recovery prompts, before → "
        f"after; {seeds_text}. {dev_choice(dev)} Training took "
        f"{min(seconds):.0f}–{max(seconds):.0f} s per configuration (median {statistics.median(seconds):.0f} s) on top of "
        "the teacher's pass over the recovery prompts, one per seed, shared by that seed's configurations.")
    change = gains(data)
    summary = wrap(f"Recovery changes exact match by {min(change):+.3f} to {max(change):+.3f} "
                   f"(median {statistics.median(change):+.3f}) over the {len(change)} configurations with both rows.")
    winners = wrap("The layer method a search picks at each budget (best test exact match; `comp` apart, its budget "
                   "being a share of FLOPs), pruning alone and with recovery:")
    return "\n\n".join([part for part in (intro, recovery_table(data), summary, hidden_ablation(data)) if part]
                       + [winners, winners_table(data),
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
    change = gains(data | {"rows": seed_means(data["rows"])})
    methods = sorted({row["method"] for row in data["rows"] if row["method"] != "none"})
    return (f"recover=kd changes exact match by {min(change):+.3f} to {max(change):+.3f} (median "
            f"{statistics.median(change):+.3f}) across {', '.join(methods)} at budgets "
            f"{min(data['budgets']):g} to {max(data['budgets']):g}.")
