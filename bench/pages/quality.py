"""The quality page (``docs/results/quality.md``): accuracy of the bundled model against removed decoder layers,
from the sweep ``bench/bench_quality.py`` runs (``quality_sweep/``: its rows in ``configs/*.json``, the row keys of
``results.csv``, ``sweep.json``, ``winner.json``, ``reload_overhead.json``, ``regimes.json`` and the extra
``random`` seeds in ``seed*/``). Three parts: the sweep itself (time, winner, time saved against reloading), the
overall and per-kind tables, and the math / non-math tables with the regimes."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from .common import (
    DENSE, SWEEP_DIR, TIE, best, budget_rows, dense_row, display_command, domain_scores, image, join, layers_word,
    load, load_quality, mean_score, n_removed, page, read_sweep, sec, wrap,
)

TITLE = "Quality: accuracy against removed layers"
RELOAD_FILE = "reload_overhead.json"  # its measured reload-per-configuration cost, in SWEEP_DIR
REGIMES_FILE = "regimes.json"  # topo-prune regimes of the quality sweep, in SWEEP_DIR
DOMAIN_AWARE = "domain_"  # prefix of the domain-aware methods

# Why a method cannot reach some budgets (shown under the table when it has an n/a cell).
UNREACHABLE = {
    "spacing": "it never removes two adjacent layers and keeps the first and the last",
}


def quality_table(results: dict, key: str = "overall") -> str:
    """Methods × budgets table of ``key`` (mean over seeds; several seeds add min..max; n/a: unreachable)."""
    budgets = budget_rows(results)
    header = "| method | " + " | ".join(f"{row['fraction']:g} ({layers_word(n_removed(row))})" for row in budgets) + " |"
    lines = [header, "|---" * (len(budgets) + 1) + "|"]
    for method, rows in results["methods"].items():
        by_fraction = {row["fraction"]: row for row in rows}
        cells = []
        for budget in budgets:
            row = by_fraction.get(budget["fraction"])
            values = [run[key] for run in row["runs"]] if row else []
            cell = f"{statistics.fmean(values):.3f}" if values else "n/a"
            if len(values) > 1:
                cell += f" ({min(values):.2f}..{max(values):.2f})"
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _unreachable_note(results: dict) -> str | None:
    fractions = [row["fraction"] for row in budget_rows(results)]
    missing = []
    for method, rows in results["methods"].items():
        have = {row["fraction"] for row in rows}
        lost = [f"{fraction:g}" for fraction in fractions if fraction not in have]
        if lost:
            reason = UNREACHABLE.get(method)
            missing.append(f"`{method}` at {join(lost)}" + (f" ({reason})" if reason else ""))
    if not missing:
        return None
    return wrap(f"n/a: a budget the method cannot reach, so the run refused it: {'; '.join(missing)}.")


def _others_at(results: dict, method: str, fraction: float, key: str) -> dict[str, float]:
    return {name: mean_score(row, key) for name, rows in results["methods"].items() if name != method
            for row in rows if row["fraction"] == fraction}


def versus_best_other(results: dict, method: str = "topology") -> str | None:
    """Per pruned budget: ``method``'s overall score, the best other method's, and the difference."""
    rows = [row for row in results["methods"].get(method, []) if row["fraction"] > 0]
    if not rows:
        return None
    lines = [f"| removed | {method} | best other method | difference |", "|---|---|---|---|"]
    verdicts: dict[str, list[str]] = {}
    for row in rows:
        others = _others_at(results, method, row["fraction"], "overall")
        if not others:
            continue
        names, top = best(others)
        ours = mean_score(row, "overall")
        difference = 0.0 if abs(ours - top) < TIE else ours - top
        lines.append(f"| {layers_word(n_removed(row))} ({row['fraction']:g}) | {ours:.3f} | {', '.join(names)} "
                     f"{top:.3f} | {difference:+.3f} |")
        rival = join(names)
        verdict = f"ties {rival}" if difference == 0 else (
            f"is ahead of {rival}" if difference > 0 else f"is behind {rival}")
        verdicts.setdefault(verdict, []).append(str(n_removed(row)))
    if len(lines) == 2:
        return None
    phrases = [f"{verdict} at {join(counts)} layer{'' if counts == ['1'] else 's'}"
               for verdict, counts in verdicts.items()]
    summary = wrap(f"Overall, {method} {join(phrases)} (the best other layer method at each budget; "
                    "`random` counts with its mean over seeds):")
    return summary + "\n\n" + "\n".join(lines)


def best_per_kind(results: dict, method: str = "topology") -> str | None:
    """Kinds × pruned budgets: the best method(s) and score, and ``method``'s own score when it is not best."""
    kinds = [key for key in results["dense"] if key != "overall"]
    budgets = [row for row in budget_rows(results) if row["fraction"] > 0]
    if not kinds or not budgets:
        return None
    lines = ["| kind | " + " | ".join(layers_word(n_removed(row)) for row in budgets) + " |",
             "|---" * (len(budgets) + 1) + "|"]
    for kind in kinds:
        cells = []
        for budget in budgets:
            scores = {name: mean_score(row, kind) for name, rows in results["methods"].items()
                      for row in rows if row["fraction"] == budget["fraction"]}
            names, top = best(scores)
            cell = f"{', '.join(names)} {top:.2f}"
            if method in scores and method not in names:
                cell += f" ({method} {scores[method]:.2f})"
            cells.append(cell)
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    intro = wrap(f"Per kind, the best method at each budget (exact match, mean over seeds; {method}'s own score "
                  f"in brackets where it is not the best):")
    return intro + "\n\n" + "\n".join(lines)


def quality_block(results: dict) -> str:
    parts = [quality_table(results), _unreachable_note(results), versus_best_other(results), best_per_kind(results)]
    return "\n\n".join(part for part in parts if part)


def load_domains(results_dir: Path) -> dict:
    """The quality sweep's math / non-math scores (:func:`load_quality`) and its ``regimes.json``."""
    return {"scores": load_quality(results_dir, SWEEP_DIR, domain_scores),
            "regimes": load(f"{SWEEP_DIR}/{REGIMES_FILE}", results_dir)}


def _rank(values: dict[str, float], method: str) -> int:
    """1 + how many methods score more than ``method`` (ties share a rank)."""
    return 1 + sum(value - values[method] >= TIE for value in values.values())


def regimes_table(regimes: dict) -> str:
    lines = ["| budget | layers removed | spread (max − min) | layer overlap | best | regime |", "|---|---|---|---|---|---|"]
    for entry in regimes["budgets"]:
        lines.append(f"| {entry['budget']:g} | {'/'.join(map(str, entry['n_remove']))} | {entry['spread']:.3f} | "
                     f"{entry['layer_overlap']:.2f} | {', '.join(entry['best'])} | {entry['regime']} |")
    return "\n".join(lines)


def claims(regimes: dict) -> str:
    """The paper's three claims, each checked against the regimes' per-budget values."""
    budgets = regimes["budgets"]
    low = budgets[:2]
    stable = []
    for entry in low:
        domain = {name: value for name, value in entry["values"].items() if name.startswith(DOMAIN_AWARE)}
        best = max(domain, key=domain.get)
        stable.append(f"{best} {entry['values'][best]:.3f} at {entry['budget']:g} (rank {_rank(entry['values'], best)} "
                      f"of {len(entry['values'])})")
    spreads = [entry["spread"] for entry in budgets]
    trend = "grows" if spreads[-1] > spreads[0] else "shrinks"
    spacing = [f"{_rank(entry['values'], 'spacing')} of {len(entry['values'])} at {entry['budget']:g}"
               for entry in budgets if "spacing" in entry["values"]]
    regimes_seen = Counter(entry["regime"] for entry in budgets)
    return wrap(
        f"The paper's regimes, checked on this run: (1) at the two lowest budgets the best domain-aware method is "
        f"{join(stable)}; (2) the spread between methods {trend} with the budget ({', '.join(f'{v:.3f}' for v in spreads)}), "
        f"so the methods {'do not converge' if trend == 'grows' else 'converge'} at moderate budgets; (3) spacing ranks "
        f"{join(spacing)}. Regimes by the rule: "
        + join([f"{count} {name}" for name, count in sorted(regimes_seen.items())]) + ".")


def domains_block(data: dict) -> str:
    rule = data["regimes"]["rule"]
    scores = data["scores"]
    parts = [
        "Math questions (`topo_synth_mathdomain`), exact match per method and budget:", quality_table(scores, "math"),
        "Non-math questions (`topo_synth_nonmath`: presence, attribute, count, spatial):", quality_table(scores, "non-math"),
        wrap(f"Regimes (`topo-prune regimes`, on `{data['regimes']['metric']}`, dense {data['regimes']['dense']:.3f}, "
              "random's seed-0 run; "
              f"ranking-sensitive from a spread of {rule['sensitive_spread']:g}, continuity-dominated when spacing "
              f"leads by more than {rule['spacing_margin']:g}; layer overlap is the mean pairwise Jaccard overlap of "
              "the methods' removed layers):"),
        regimes_table(data["regimes"]), claims(data["regimes"])]
    return "\n\n".join(parts)


def load_sweep(results_dir: Path) -> dict:
    """The main sweep's rows, ``sweep.json``, ``winner.json`` (None when absent), ``reload_overhead.json``, and
    per extra-seed sweep its name, ``sweep.json`` and row count."""
    folder = results_dir / SWEEP_DIR
    for path in [folder, *sorted(folder.glob("seed*"))]:
        if load("sweep.json", path).get("reused"):
            raise ValueError(f"{path / 'sweep.json'}: that run reused finished configurations, so its wall time is "
                             "not the whole sweep's; remove the folder and re-run bench/bench_quality.py")
    winner = folder / "winner.json"
    seeds = [{"name": path.name, "sweep": load("sweep.json", path), "configurations": len(read_sweep(path))}
             for path in sorted(folder.glob("seed*")) if (path / "results.csv").is_file()]
    return {"rows": read_sweep(folder), "sweep": load("sweep.json", folder),
            "winner": json.loads(winner.read_text(encoding="utf-8")) if winner.is_file() else None,
            "reload": load(RELOAD_FILE, folder), "seeds": seeds}


def reload_comparison(rows: list[dict], sweep: dict, reload: dict) -> dict:
    """The measured time saved against reloading per configuration.

    Reloading pays, per configuration, one fresh ``load_pruned`` of its method (``reload_s``; ``none``: the
    dense load); with the score cache, each method's first configuration pays that and the others
    ``reload_cached_s``. The sweep pays one weights load (``load_s``) and each method's one scoring (the
    ``score_s`` of its rows). Evaluation and cost measurement are the same either way and are not counted.
    """
    counts = Counter(row["method"] for row in rows)
    scoring = Counter()
    for row in rows:
        scoring[row["method"]] += row["score_s"]
    fresh, cached = reload["reload_s"], reload["reload_cached_s"]
    per_method = {method: {"configurations": n, "reload_s": fresh[method], "reloads_s": n * fresh[method],
                           "reloads_cached_s": fresh[method] + (n - 1) * cached.get(method, fresh[method]),
                           "score_s": scoring[method]}
                  for method, n in sorted(counts.items(), key=lambda item: (item[0] != DENSE, item[0]))}
    reloads = sum(item["reloads_s"] for item in per_method.values())
    reloads_cached = sum(item["reloads_cached_s"] for item in per_method.values())
    sweep_cost = sweep["load_s"] + sum(scoring.values())
    return {"per_method": per_method, "reloads_s": reloads, "reloads_cached_s": reloads_cached,
            "sweep_s": sweep_cost, "saved_s": reloads - sweep_cost, "saved_cached_s": reloads_cached - sweep_cost}


def _winner_row(data: dict) -> dict | None:
    """The row ``winner.json`` names, when it is one that passes in ``results.csv`` (a winner.json left by an
    earlier sweep into the same folder, whose rule nothing passes now, does not count)."""
    winner = (data["winner"] or {}).get("winner")
    passed = [row for row in data["rows"] if row["passes"] and winner is not None and row["key"] == winner["key"]]
    return passed[0] if passed else None


def _winner_text(data: dict, rule: str, objective: str, metric: str) -> str:
    rows = data["rows"]
    dense = dense_row(rows)["metrics"][metric]
    head = f"Winner under `{rule}` on `{metric}`, objective `{objective}`: "
    row = _winner_row(data)
    if row is None:
        names, top = best({f"{row['method']} at {row['budget']:g} ({row['n_remove']} of {row['num_layers']} "
                            "layers)": row["metrics"][metric] for row in rows if row["method"] != DENSE})
        return wrap(head + f"none; no configuration passes. The best pruned one{'s' if len(names) > 1 else ''}, "
                     f"{join(names)}, score{'' if len(names) > 1 else 's'} {top:.3f} = {top / dense:.1%} of dense "
                     f"{dense:.3f}.")
    value, error = row["metrics"][metric], row["stderr"].get(metric)
    layers = join([str(layer) for layer in row["removed_layers"]])
    cost, dense_cost = row["cost"], dense_row(rows)["cost"]
    plural = "" if row["n_remove"] == 1 else "s"
    return wrap(head + f"**{row['method']} at {row['budget']:g}**, removing layer{plural} "
                 f"{layers} ({row['n_remove']} of {row['num_layers']}): {value:.3f}"
                 + (f" ± {error:.3f}" if error is not None else "")
                 + f" = {value / dense:.1%} of dense {dense:.3f}. Measured against dense: prefill speedup "
                 f"{dense_cost['prefill_s'] / cost['prefill_s']:.2f}×, decode speedup "
                 f"{dense_cost['decode_s_per_token'] / cost['decode_s_per_token']:.2f}× (ideal L/L' "
                 f"{row['num_layers'] / cost['num_layers']:.2f}×); the dense prefill of this "
                 f"{dense_cost['parameters'] / 1e6:.1f}M-parameter model takes {dense_cost['prefill_s'] * 1e3:.1f} ms, "
                 "and the [layer speed page](speed.md) measures layer removal on a model whose decoder dominates the cost.")


def sweep_block(data: dict) -> str:
    """The bundled-model sweep: command, wall time, configurations, winner, and the time saved against reloading."""
    rows, sweep, reload = data["rows"], data["sweep"], data["reload"]
    spec = reload["spec"]
    methods = sorted({row["method"] for row in rows if row["method"] != DENSE})
    have = {(row["method"], row["budget"]) for row in rows}
    skipped = [f"{method} at {budget:g}" for method in spec["methods"] for budget in spec["budgets"]
               if (method, budget) not in have]
    machine = reload["machine"]
    cores, threads = machine["cpus_available"], machine["torch_threads"]
    limit = "the whole test split" if sweep["limit"] is None else f"`--limit {sweep['limit']:g}`"
    tasks = ", ".join(f"`{task}`" for task in sweep["tasks"])
    intro = (
        f"`{reload['command']}` ran one sweep (`lmms_topo_plugin.search.run_sweep`, what `topo-prune sweep` runs) "
        f"of the bundled model: {len(methods)} layer methods ({join(methods)}) × {len(spec['budgets'])} budgets "
        f"({', '.join(f'{budget:g}' for budget in spec['budgets'])}) and the dense reference, each evaluated by "
        f"lmms-eval on {tasks} ({limit}) with its cost measured: {len(rows)} configurations, dense included"
        + (f" ({len(skipped)} not reachable: {join(skipped)})" if skipped else "")
        + f", in {sec(sweep['wall_s'])} of wall time with {threads} torch thread{'' if threads == 1 else 's'} on "
        f"{cores} CPU core{'' if cores == 1 else 's'} (1-minute load average {machine['loadavg_at_start'][0]:.1f} at "
        f"the start and {machine['loadavg_at_end'][0]:.1f} at the end), loading the weights once "
        f"({sweep['load_s']:.2f} s). Each configuration's evaluation and cost measurement took a "
        f"median {sec(statistics.median(row['eval_s'] for row in rows))} (`eval_s`).")
    if data["seeds"]:
        seeds = data["seeds"]
        intro += (f" `random`'s other seeds are {len(seeds)} more sweeps of `random` alone ("
                  + join([f"`{seed['name']}/`" for seed in seeds]) + ": "
                  + join([f"{seed['configurations']} configurations in {sec(seed['sweep']['wall_s'])}"
                           for seed in seeds]) + "; each has its own dense row).")
    files = ["results.md", "results.csv", "pareto.png", *(["winner.json"] if _winner_row(data) else []),
             "sweep.json", RELOAD_FILE]
    intro += (f" Everything is in `bench/results/{SWEEP_DIR}/` ({', '.join(f'`{name}`' for name in files)}, one JSON "
              "per configuration in `configs/`).")
    parts = [wrap(intro)]
    parts.append(_winner_text(data, spec["rule"], spec["objective"], spec["metric"]))
    saved = reload_comparison(rows, sweep, reload)
    parts.append(wrap(
        "Time saved against reloading per configuration, computed from these measured numbers: reloading would "
        f"pay, for each configuration, one fresh `load_pruned` of its method (weights load + calibration + "
        f"scoring + surgery, `recompute=true`), measured in the same run once per method at sparsity "
        f"{reload['sparsity']:g} (`{RELOAD_FILE}`); the sweep paid one weights load (`load_s` in `sweep.json`) and "
        "one calibration + scoring per method (its rows' `score_s`; the sweep ran with `recompute=true` too). "
        "Evaluation and cost measurement are the same either way and are not counted."))
    lines = ["| method | configurations | one reload | reloads | reloads, scores cached | sweep: scoring once |",
             "|---|---|---|---|---|---|"]
    for method, item in saved["per_method"].items():
        score = "–" if method == DENSE else sec(item["score_s"])
        lines.append(f"| {'dense' if method == DENSE else method} | {item['configurations']} | "
                     f"{sec(item['reload_s'])} | {sec(item['reloads_s'])} | {sec(item['reloads_cached_s'])} | {score} |")
    lines.append(f"| all | {len(rows)} | | {sec(saved['reloads_s'])} | {sec(saved['reloads_cached_s'])} | "
                 f"{sec(saved['sweep_s'])} (with the {sweep['load_s']:.2f} s load) |")
    parts.append("\n".join(lines))
    parts.append(wrap(
        f"Saved: {sec(saved['reloads_s'])} − {sec(saved['sweep_s'])} = **{sec(saved['saved_s'])}** "
        f"({saved['saved_s'] / sweep['wall_s']:.0%} of the sweep's wall time). Against reloads that reuse cached "
        f"scores (each method's first budget calibrates, its other budgets hit the cache), "
        f"{sec(saved['reloads_cached_s'])} − {sec(saved['sweep_s'])} = {sec(saved['saved_cached_s'])}"
        + ("." if saved["saved_cached_s"] >= 0 else
           ": no saving; the sweep's scoring once took longer than those reloads in this run.")))
    return "\n\n".join(parts)



def intro(sweep: dict, quality: dict) -> str:
    """What the command does, from the sweep's own spec and rows."""
    spec, rows = sweep["reload"]["spec"], sweep["rows"]
    layers = {row["budget"]: row["n_remove"] for row in rows if row["method"] != DENSE}
    total = dense_row(rows)["num_layers"]
    seeds = max(len(entry["runs"]) for entry in quality["methods"].get("random", [{"runs": [0]}]))
    return wrap(
        f"`{display_command(sweep['reload']['command'])}` is a thin call of the sweep (`topo-prune sweep`): it prunes "
        f"the bundled model with every layer method of the registry at "
        f"{join(['0', *(f'{budget:g}' for budget in spec['budgets'])])} of the decoder (`sparsity=`, rounded to whole "
        f"layers: {join(['0', *(str(layers[budget]) for budget in spec['budgets'] if budget in layers)])} of {total}), "
        "and lmms-eval answers the test questions after each"
        + (f"; `random` is the mean of {seeds} seeds (min..max in brackets)" if seeds > 1 else "")
        + f". It writes `bench/results/{SWEEP_DIR}/` (the sweep's tables, plot and one JSON per configuration) and "
        "`bench/results/quality.png` (overall and per kind). Width methods are not in this sweep: see "
        "[CoMP](comp.md).")


READING = wrap(
    "Reading it: the comparison and the per-kind table are generated from the same JSON as the main table, so they "
    "say where topology wins and loses in the run that is checked in. `angular` removes one contiguous block, which "
    "spares some kinds and costs others early (compare the per-kind rows). Topology runs with its defaults: its "
    "`topo_k` was chosen on the dev split, never on this test split (see [the topology ablations]"
    "(topology.md#ablations-and-defaults-chosen-on-the-dev-split)), and `bench/bench_quality.py --methods topology "
    "--model-args topo_...=` is the place to look further.")


def render(results_dir: Path) -> str:
    """The whole quality page from ``results_dir``."""
    sweep, quality = load_sweep(results_dir), load_quality(results_dir)
    return page(
        TITLE, f"{SWEEP_DIR}/: configs/*.json, results.csv, sweep.json, winner.json, {RELOAD_FILE}, "
               f"{REGIMES_FILE}, seed*/",
        intro(sweep, quality), image("quality.png", "exact match against removed layers, overall and per kind"),
        "## The sweep", "The sweep behind these numbers, as that command ran it:", sweep_block(sweep),
        "## Overall and per kind", "Overall exact match (test split), measured with that command:",
        quality_block(quality),
        "## Math and non-math questions, and the regimes",
        wrap("Per domain, and the three regimes of the domain-aware layer-pruning paper marked by `topo-prune "
             f"regimes` on the same sweep (`bench/results/{SWEEP_DIR}/regimes.md`):"),
        image(f"{SWEEP_DIR}/regimes.png", "metric against budget with the regimes shaded"),
        domains_block(load_domains(results_dir)), READING)


def headline(results_dir: Path) -> str:
    """One line for the results index: the sweep's winner under its rule."""
    data = load_sweep(results_dir)
    spec, row = data["reload"]["spec"], _winner_row(data)
    metric = spec["metric"]
    dense = dense_row(data["rows"])["metrics"][metric]
    if row is None:
        names, top = best({f"{row['method']} at {row['budget']:g} ({row['n_remove']} of {row['num_layers']} layers)":
                           row["metrics"][metric] for row in data["rows"] if row["method"] != DENSE})
        return (f"no layer configuration passes `{spec['rule']}` on the bundled model; the best pruned, "
                f"{join(names)}, keeps {top:.3f} = {top / dense:.1%} of dense.")
    value = row["metrics"][metric]
    return (f"under `{spec['rule']}`, the winner is {row['method']} at {row['budget']:g} ({row['n_remove']} of "
            f"{row['num_layers']} layers removed, {value:.3f} = {value / dense:.1%} of dense).")
