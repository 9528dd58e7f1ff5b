#!/usr/bin/env python3
"""The README's result tables, generated from what the benches write to ``bench/results/`` (never typed by hand).

    python bench/readme_tables.py            # print every generated block
    python bench/readme_tables.py --write    # replace the blocks in README.md in place
    python bench/readme_tables.py --check    # exit 1 when a README block differs from its JSON

Each block sits in README.md between two marker lines::

    <!-- BEGIN generated: NAME (python bench/readme_tables.py) -->
    ...
    <!-- END generated: NAME -->

``quality`` and ``sweep`` come from the sweep ``bench/bench_quality.py`` runs (``quality_sweep/``: its rows in
``configs/*.json``, the row keys of ``results.csv``, ``sweep.json``, ``winner.json``, ``reload_overhead.json``,
and the extra ``random`` seeds in ``quality_sweep/seed*/``), ``layer-speed`` from ``speed.json`` (written by
``bench/bench_speed.py``) and ``topology-speed`` from ``topology.json`` (written by ``bench/bench_topology.py``).
Only the text between the markers is touched. Standard library only, so the check runs without torch.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import stat
import statistics
import sys
import tempfile
import textwrap
from collections import Counter
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
WIDTH = 115  # the README's line width for generated prose
TIE = 5e-4  # overall scores closer than this (they are shown with 3 decimals) count as equal
SWEEP_DIR = "quality_sweep"  # bench/bench_quality.py's sweep, under bench/results/
RELOAD_FILE = "reload_overhead.json"  # its measured reload-per-configuration cost, in SWEEP_DIR
DENSE = "none"  # the sweep's dense reference row
OVERALL_METRIC = "topo_synth/exact_match"
DOMAIN_METRICS = {"math": "topo_synth_mathdomain/exact_match", "non-math": "topo_synth_nonmath/exact_match"}
REGIMES_FILE = "regimes.json"  # topo-prune regimes of the quality sweep, in SWEEP_DIR
DOMAIN_AWARE = "domain_"  # prefix of the domain-aware methods
KINDS = ("presence", "attribute", "count", "spatial", "math")  # topo_synth's question kinds, in README order

# Why a method cannot reach some budgets (shown under the table when it has an n/a cell).
UNREACHABLE = {
    "spacing": "it never removes two adjacent layers and keeps the first and the last",
}


def begin_marker(name: str) -> str:
    return f"<!-- BEGIN generated: {name} (python bench/readme_tables.py) -->"


def end_marker(name: str) -> str:
    return f"<!-- END generated: {name} -->"


def _wrap(text: str) -> str:
    """``text`` filled to the README's width, never breaking inside ``x = y``."""
    glued = text.replace(" = ", "\0=\0")
    return textwrap.fill(glued, width=WIDTH, break_long_words=False, break_on_hyphens=False).replace("\0", " ")


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


# ---------------------------------------------------------------------------------------------- sweep rows


def kind_metric(kind: str) -> str:
    return f"topo_synth_{kind}/exact_match"


def read_sweep(folder: Path) -> list[dict]:
    """The rows of the sweep in ``folder``, in ``results.csv``'s order, each with that table's ``passes``.

    A row is the ``configs/*.json`` of its key; ``configs/`` may also hold rows of an earlier sweep into the same
    folder (another spec, other keys), ``results.csv`` lists the ones of the last.
    """
    with open(folder / "results.csv", newline="", encoding="utf-8") as handle:
        passes = {entry["key"]: {"True": True, "False": False}.get(entry["passes"])
                  for entry in csv.DictReader(handle)}
    rows = {}
    for path in sorted((folder / "configs").glob("*.json")):
        row = json.loads(path.read_text(encoding="utf-8"))
        rows[row["key"]] = row
    missing = [key for key in passes if key not in rows]
    if missing:
        raise FileNotFoundError(f"{folder / 'configs'} has no row for key {missing[0]} of results.csv")
    return [{**rows[key], "passes": passed} for key, passed in passes.items()]


def _dense(rows: list[dict]) -> dict:
    dense = [row for row in rows if row["method"] == DENSE]
    if len(dense) != 1:
        raise ValueError(f"a sweep has exactly one dense row; found {len(dense)}")
    return dense[0]


def _scores(row: dict) -> dict[str, float]:
    """Exact match per kind (those the row reports) and ``overall``, from a sweep row's lmms-eval metrics."""
    metrics = row["metrics"]
    scores = {kind: metrics[kind_metric(kind)] for kind in KINDS if kind_metric(kind) in metrics}
    return scores | {"overall": metrics[OVERALL_METRIC]}


def _domain_scores(row: dict) -> dict[str, float]:
    """Exact match of the math and the non-math questions, and ``overall``, from a sweep row's metrics."""
    return {domain: row["metrics"][metric] for domain, metric in DOMAIN_METRICS.items()} | {
        "overall": row["metrics"][OVERALL_METRIC]}


def quality_from_sweeps(rows: list[dict], extra_seeds: list[list[dict]] = (),
                        scores: Callable[[dict], dict[str, float]] = _scores) -> dict:
    """The quality tables' input from sweep rows: per method, one entry per budget with one run per seed.

    ``{"dense": scores, "methods": {method: [{"fraction", "removed": [layers per seed], "runs": [scores per
    seed]}]}}``, budget 0 being the dense row. ``extra_seeds`` are the rows of more sweeps (other ``seed=``) of
    configurations the main sweep has; their dense rows are not used.
    """
    dense = scores(_dense(rows))
    methods: dict[str, list[dict]] = {}
    for row in rows:
        if row["method"] == DENSE:
            continue
        budgets = methods.setdefault(row["method"], [{"fraction": 0.0, "removed": [[]], "runs": [dense]}])
        if any(budget["fraction"] == row["budget"] for budget in budgets):
            raise ValueError(f"{row['method']} at {row['budget']:g}: two rows in one sweep")
        budgets.append({"fraction": row["budget"], "removed": [list(row["removed_layers"])], "runs": [scores(row)]})
    for seed_rows in extra_seeds:
        for row in seed_rows:
            if row["method"] == DENSE:
                continue
            found = [budget for budget in methods.get(row["method"], []) if budget["fraction"] == row["budget"]]
            if not found:
                raise ValueError(f"{row['method']} at {row['budget']:g}: an extra seed of a configuration the main "
                                 "sweep lacks")
            found[0]["removed"].append(list(row["removed_layers"]))
            found[0]["runs"].append(scores(row))
    for budgets in methods.values():
        budgets.sort(key=lambda budget: budget["fraction"])
    return {"dense": dense, "methods": dict(sorted(methods.items()))}


def load_quality(results_dir: Path, name: str = SWEEP_DIR, scores: Callable[[dict], dict[str, float]] = _scores) -> dict:
    """:func:`quality_from_sweeps` of the sweep in ``results_dir/name`` and of its ``seed*/`` sweeps."""
    folder = results_dir / name
    extra = [read_sweep(path) for path in sorted(folder.glob("seed*")) if (path / "results.csv").is_file()]
    return quality_from_sweeps(read_sweep(folder), extra, scores)


# ---------------------------------------------------------------------------------------------- quality


def mean_score(row: dict, key: str) -> float:
    return statistics.fmean(run[key] for run in row["runs"])


def n_removed(row: dict) -> int:
    return len(row["removed"][0])


def _budgets(results: dict) -> list[dict]:
    """The rows of the method with the most budgets: their fractions and layer counts head the columns."""
    return max(results["methods"].values(), key=len)


def _layers(n: int) -> str:
    return f"{n} layer" + ("" if n == 1 else "s")


def quality_table(results: dict, key: str = "overall") -> str:
    """Methods × budgets table of ``key`` (mean over seeds; several seeds add min..max; n/a: unreachable)."""
    budgets = _budgets(results)
    header = "| method | " + " | ".join(f"{row['fraction']:g} ({_layers(n_removed(row))})" for row in budgets) + " |"
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
    fractions = [row["fraction"] for row in _budgets(results)]
    missing = []
    for method, rows in results["methods"].items():
        have = {row["fraction"] for row in rows}
        lost = [f"{fraction:g}" for fraction in fractions if fraction not in have]
        if lost:
            reason = UNREACHABLE.get(method)
            missing.append(f"`{method}` at {_join(lost)}" + (f" ({reason})" if reason else ""))
    if not missing:
        return None
    return _wrap(f"n/a: a budget the method cannot reach, so the run refused it: {'; '.join(missing)}.")


def _others_at(results: dict, method: str, fraction: float, key: str) -> dict[str, float]:
    return {name: mean_score(row, key) for name, rows in results["methods"].items() if name != method
            for row in rows if row["fraction"] == fraction}


def _best(scores: dict[str, float]) -> tuple[list[str], float]:
    top = max(scores.values())
    return [name for name, value in scores.items() if top - value < TIE], top


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
        names, top = _best(others)
        ours = mean_score(row, "overall")
        difference = 0.0 if abs(ours - top) < TIE else ours - top
        lines.append(f"| {_layers(n_removed(row))} ({row['fraction']:g}) | {ours:.3f} | {', '.join(names)} "
                     f"{top:.3f} | {difference:+.3f} |")
        rival = _join(names)
        verdict = f"ties {rival}" if difference == 0 else (
            f"is ahead of {rival}" if difference > 0 else f"is behind {rival}")
        verdicts.setdefault(verdict, []).append(str(n_removed(row)))
    if len(lines) == 2:
        return None
    phrases = [f"{verdict} at {_join(counts)} layer{'' if counts == ['1'] else 's'}"
               for verdict, counts in verdicts.items()]
    summary = _wrap(f"Overall, {method} {_join(phrases)} (the best other layer method at each budget; "
                    "`random` counts with its mean over seeds):")
    return summary + "\n\n" + "\n".join(lines)


def best_per_kind(results: dict, method: str = "topology") -> str | None:
    """Kinds × pruned budgets: the best method(s) and score, and ``method``'s own score when it is not best."""
    kinds = [key for key in results["dense"] if key != "overall"]
    budgets = [row for row in _budgets(results) if row["fraction"] > 0]
    if not kinds or not budgets:
        return None
    lines = ["| kind | " + " | ".join(_layers(n_removed(row)) for row in budgets) + " |",
             "|---" * (len(budgets) + 1) + "|"]
    for kind in kinds:
        cells = []
        for budget in budgets:
            scores = {name: mean_score(row, kind) for name, rows in results["methods"].items()
                      for row in rows if row["fraction"] == budget["fraction"]}
            names, top = _best(scores)
            cell = f"{', '.join(names)} {top:.2f}"
            if method in scores and method not in names:
                cell += f" ({method} {scores[method]:.2f})"
            cells.append(cell)
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    intro = _wrap(f"Per kind, the best method at each budget (exact match, mean over seeds; {method}'s own score "
                  f"in brackets where it is not the best):")
    return intro + "\n\n" + "\n".join(lines)


def quality_block(results: dict) -> str:
    parts = [quality_table(results), _unreachable_note(results), versus_best_other(results), best_per_kind(results)]
    return "\n\n".join(part for part in parts if part)


# ---------------------------------------------------------------------------------------------- domains


def load_domains(results_dir: Path) -> dict:
    """The quality sweep's math / non-math scores (:func:`load_quality`) and its ``regimes.json``."""
    return {"scores": load_quality(results_dir, SWEEP_DIR, _domain_scores),
            "regimes": _load(f"{SWEEP_DIR}/{REGIMES_FILE}", results_dir)}


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
    return _wrap(
        f"The paper's regimes, checked on this run: (1) at the two lowest budgets the best domain-aware method is "
        f"{_join(stable)}; (2) the spread between methods {trend} with the budget ({', '.join(f'{v:.3f}' for v in spreads)}), "
        f"so the methods {'do not converge' if trend == 'grows' else 'converge'} at moderate budgets; (3) spacing ranks "
        f"{_join(spacing)}. Regimes by the rule: "
        + _join([f"{count} {name}" for name, count in sorted(regimes_seen.items())]) + ".")


def domains_block(data: dict) -> str:
    rule = data["regimes"]["rule"]
    scores = data["scores"]
    parts = [
        "Math questions (`topo_synth_mathdomain`), exact match per method and budget:", quality_table(scores, "math"),
        "Non-math questions (`topo_synth_nonmath`: presence, attribute, count, spatial):", quality_table(scores, "non-math"),
        _wrap(f"Regimes (`topo-prune regimes`, on `{data['regimes']['metric']}`, dense {data['regimes']['dense']:.3f}, "
              "random's seed-0 run; "
              f"ranking-sensitive from a spread of {rule['sensitive_spread']:g}, continuity-dominated when spacing "
              f"leads by more than {rule['spacing_margin']:g}; layer overlap is the mean pairwise Jaccard overlap of "
              "the methods' removed layers):"),
        regimes_table(data["regimes"]), claims(data["regimes"])]
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------- sweep


def _s(value: float) -> str:
    return f"{value:.1f} s"


def load_sweep(results_dir: Path) -> dict:
    """The main sweep's rows, ``sweep.json``, ``winner.json`` (None when absent), ``reload_overhead.json``, and
    per extra-seed sweep its name, ``sweep.json`` and row count."""
    folder = results_dir / SWEEP_DIR
    for path in [folder, *sorted(folder.glob("seed*"))]:
        if _load("sweep.json", path).get("reused"):
            raise ValueError(f"{path / 'sweep.json'}: that run reused finished configurations, so its wall time is "
                             "not the whole sweep's; remove the folder and re-run bench/bench_quality.py")
    winner = folder / "winner.json"
    seeds = [{"name": path.name, "sweep": _load("sweep.json", path), "configurations": len(read_sweep(path))}
             for path in sorted(folder.glob("seed*")) if (path / "results.csv").is_file()]
    return {"rows": read_sweep(folder), "sweep": _load("sweep.json", folder),
            "winner": json.loads(winner.read_text(encoding="utf-8")) if winner.is_file() else None,
            "reload": _load(RELOAD_FILE, folder), "seeds": seeds}


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
    dense = _dense(rows)["metrics"][metric]
    head = f"Winner under `{rule}` on `{metric}`, objective `{objective}`: "
    row = _winner_row(data)
    if row is None:
        names, top = _best({f"{row['method']} at {row['budget']:g} ({row['n_remove']} of {row['num_layers']} "
                            "layers)": row["metrics"][metric] for row in rows if row["method"] != DENSE})
        return _wrap(head + f"none; no configuration passes. The best pruned one{'s' if len(names) > 1 else ''}, "
                     f"{_join(names)}, score{'' if len(names) > 1 else 's'} {top:.3f} = {top / dense:.1%} of dense "
                     f"{dense:.3f}.")
    value, error = row["metrics"][metric], row["stderr"].get(metric)
    layers = _join([str(layer) for layer in row["removed_layers"]])
    cost, dense_cost = row["cost"], _dense(rows)["cost"]
    plural = "" if row["n_remove"] == 1 else "s"
    return _wrap(head + f"**{row['method']} at {row['budget']:g}**, removing layer{plural} "
                 f"{layers} ({row['n_remove']} of {row['num_layers']}): {value:.3f}"
                 + (f" ± {error:.3f}" if error is not None else "")
                 + f" = {value / dense:.1%} of dense {dense:.3f}. Measured against dense: prefill speedup "
                 f"{dense_cost['prefill_s'] / cost['prefill_s']:.2f}×, decode speedup "
                 f"{dense_cost['decode_s_per_token'] / cost['decode_s_per_token']:.2f}× (ideal L/L' "
                 f"{row['num_layers'] / cost['num_layers']:.2f}×); the dense prefill of this "
                 f"{dense_cost['parameters'] / 1e6:.1f}M-parameter model takes {dense_cost['prefill_s'] * 1e3:.1f} ms, "
                 "and the speed section below measures layer removal on a model whose decoder dominates the cost.")


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
        f"of the bundled model: {len(methods)} layer methods ({_join(methods)}) × {len(spec['budgets'])} budgets "
        f"({', '.join(f'{budget:g}' for budget in spec['budgets'])}) and the dense reference, each evaluated by "
        f"lmms-eval on {tasks} ({limit}) with its cost measured: {len(rows)} configurations, dense included"
        + (f" ({len(skipped)} not reachable: {_join(skipped)})" if skipped else "")
        + f", in {_s(sweep['wall_s'])} of wall time with {threads} torch thread{'' if threads == 1 else 's'} on "
        f"{cores} CPU core{'' if cores == 1 else 's'} (1-minute load average {machine['loadavg_at_start'][0]:.1f} at "
        f"the start and {machine['loadavg_at_end'][0]:.1f} at the end), loading the weights once "
        f"({sweep['load_s']:.2f} s). Each configuration's evaluation and cost measurement took a "
        f"median {_s(statistics.median(row['eval_s'] for row in rows))} (`eval_s`).")
    if data["seeds"]:
        seeds = data["seeds"]
        intro += (f" `random`'s other seeds are {len(seeds)} more sweeps of `random` alone ("
                  + _join([f"`{seed['name']}/`" for seed in seeds]) + ": "
                  + _join([f"{seed['configurations']} configurations in {_s(seed['sweep']['wall_s'])}"
                           for seed in seeds]) + "; each has its own dense row).")
    files = ["results.md", "results.csv", "pareto.png", *(["winner.json"] if _winner_row(data) else []),
             "sweep.json", RELOAD_FILE]
    intro += (f" Everything is in `bench/results/{SWEEP_DIR}/` ({', '.join(f'`{name}`' for name in files)}, one JSON "
              "per configuration in `configs/`).")
    parts = [_wrap(intro)]
    parts.append(_winner_text(data, spec["rule"], spec["objective"], spec["metric"]))
    saved = reload_comparison(rows, sweep, reload)
    parts.append(_wrap(
        "Time saved against reloading per configuration, computed from these measured numbers: reloading would "
        f"pay, for each configuration, one fresh `load_pruned` of its method (weights load + calibration + "
        f"scoring + surgery, `recompute=true`), measured in the same run once per method at sparsity "
        f"{reload['sparsity']:g} (`{RELOAD_FILE}`); the sweep paid one weights load (`load_s` in `sweep.json`) and "
        "one calibration + scoring per method (its rows' `score_s`; the sweep ran with `recompute=true` too). "
        "Evaluation and cost measurement are the same either way and are not counted."))
    lines = ["| method | configurations | one reload | reloads | reloads, scores cached | sweep: scoring once |",
             "|---|---|---|---|---|---|"]
    for method, item in saved["per_method"].items():
        score = "–" if method == DENSE else _s(item["score_s"])
        lines.append(f"| {'dense' if method == DENSE else method} | {item['configurations']} | "
                     f"{_s(item['reload_s'])} | {_s(item['reloads_s'])} | {_s(item['reloads_cached_s'])} | {score} |")
    lines.append(f"| all | {len(rows)} | | {_s(saved['reloads_s'])} | {_s(saved['reloads_cached_s'])} | "
                 f"{_s(saved['sweep_s'])} (with the {sweep['load_s']:.2f} s load) |")
    parts.append("\n".join(lines))
    parts.append(_wrap(
        f"Saved: {_s(saved['reloads_s'])} − {_s(saved['sweep_s'])} = **{_s(saved['saved_s'])}** "
        f"({saved['saved_s'] / sweep['wall_s']:.0%} of the sweep's wall time). Against reloads that reuse cached "
        f"scores (each method's first budget calibrates, its other budgets hit the cache), "
        f"{_s(saved['reloads_cached_s'])} − {_s(saved['sweep_s'])} = {_s(saved['saved_cached_s'])}"
        + ("." if saved["saved_cached_s"] >= 0 else
           ": no saving; the sweep's scoring once took longer than those reloads in this run.")))
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------- topology speed


def _secs(value: float) -> str:
    return f"{value:.1f} s" if value >= 10 else f"{value:.2f} s" if value >= 1 else f"{value:.3f} s"


def _engine_result(values: dict | None) -> str:
    """An engine's total in one row: seconds, ``timed out (> T s)``, ``failed``, or ``–`` (not run)."""
    status = (values or {}).get("status")
    if status == "ok":
        return _secs(values["total_s"])
    if status == "timed out":
        return f"timed out (> {values['timeout_s']:g} s)"
    return "failed" if status == "failed" else "–"


def _same_cell(row: dict, engines: list[str]) -> str:
    compared = [engine for engine in engines[1:] if "same" in row["engines"].get(engine, {})]
    differ = [engine for engine in compared if not row["engines"][engine]["same"]]
    return "–" if not compared else "yes" if not differ else "NO: " + ", ".join(differ)


def topology_speed_table(data: dict) -> str:
    """One row per (kind, N): size, simplices, bars, per engine total and zigzag, the split, peak RSS, same."""
    engines = data["engines"]
    header = ["kind", "N", "depths", "d", "simplices", "bars H0 / H1 (kept)"]
    header += [f"{engine} {part}" for engine in engines for part in ("total", "zigzag")]
    header += ["distances / complexes / scores", "peak RSS", "same"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in data["rows"]:
        cells = [row["kind"], str(row["n"]), str(row.get("depths", "–")), str(row.get("dim", "–")),
                 f"{row['simplices']:,}" if "simplices" in row else "–",
                 f"{row['raw_bars_h0']:,} / {row['raw_bars_h1']:,} ({row['bars_h0']:,} / {row['bars_h1']:,})"
                 if "bars_h0" in row else "–"]
        for engine in engines:
            values = row["engines"].get(engine)
            ok = (values or {}).get("status") == "ok"
            cells += [_engine_result(values), _secs(values["zigzag_s"]) if ok else "–"]
        cells.append(" / ".join(_secs(row[key]).removesuffix(" s") for key in ("distances_s", "complexes_s",
                                                                                 "scores_s")) + " s"
                     if "scores_s" in row else "–")
        cells.append(f"{row['peak_mb']:.0f} MB" if row.get("peak_mb") else "–")
        cells.append(_same_cell(row, engines))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _find_row(data: dict, kind: str, n: int) -> dict | None:
    return next((row for row in data["rows"] if row["kind"] == kind and row["n"] == n), None)


def topology_goals(data: dict) -> list[str]:
    """Per target: each engine's measured total over the target (``timed out`` / ``not measured`` else)."""
    lines = []
    for target in data.get("targets", []):
        head = f"{target['kind']} N = {target['n']} total ≤ {target['seconds']:g} s"
        row = _find_row(data, target["kind"], target["n"])
        cells = []
        for engine, values in (row or {}).get("engines", {}).items():
            if values["status"] == "ok":
                ratio = values["total_s"] / target["seconds"]
                verdict = "meets" if ratio <= 1 else "misses"
                cells.append(f"{engine} {_secs(values['total_s'])} = {ratio:.2f}× ({verdict})")
            elif values["status"] in ("timed out", "failed"):
                cells.append(f"{engine} {_engine_result(values)}")
        lines.append(f"{head}: " + (", ".join(cells) if cells else "not measured"))
    return lines


def topology_worst(data: dict) -> list[str]:
    """Per kind and engine, the slowest row (a timeout counts as slower than any finished row)."""
    lines = []
    for kind in dict.fromkeys(row["kind"] for row in data["rows"]):
        rows = [row for row in data["rows"] if row["kind"] == kind]
        cells = []
        for engine in data["engines"]:
            results = {row["n"]: row["engines"].get(engine, {}) for row in rows}
            done = [n for n, values in results.items() if values.get("status") == "ok"]
            lost = [f"{_engine_result(values)} at N = {n}" for n, values in results.items()
                    if values.get("status") in ("timed out", "failed")]
            skipped = [str(n) for n, values in results.items() if values.get("status") == "skipped"]
            words = lost
            if done:
                slowest = max(done, key=lambda n: results[n]["total_s"])
                words = [*lost, ("slowest finished " if lost else "") + f"{_secs(results[slowest]['total_s'])} at "
                         f"N = {slowest}" + (f" (not run at N = {', '.join(skipped)})" if skipped else "")]
            if words:
                cells.append(f"{engine} " + ", ".join(words))
        lines.append(f"{kind}: " + ("; ".join(cells) if cells else "nothing finished"))
    return lines


def topology_speed_block(data: dict) -> str:
    if not data.get("rows") or "kind" not in data["rows"][0]:
        return ("`bench/results/topology.json` is not from the current `bench/bench_topology.py`; run it, then "
                "`python bench/readme_tables.py --write`.")
    args, machine, engines = data["args"], data["machine"], data["engines"]
    cores = machine["cpus_available"]
    threads = {row["torch_threads"] for row in data["rows"] if "torch_threads" in row}
    runs = "one run" if args.get("repeats", 1) == 1 else f"medians of {args['repeats']} runs"
    intro = _wrap(
        f"Measured with `{display_command(data['command'])}` ({cores} CPU core{'' if cores == 1 else 's'}"
        + (f", {_join(sorted(map(str, threads)))} torch threads" if threads else "")
        + f", k = {args['k']}; point clouds → scores, the calibration pass not included; each kind and N in a fresh "
        f"process, {runs} of every stage after a warm-up):")
    classic = [engine for engine in engines if engine == "classic"]
    note = _wrap(
        "bars = the engine's, kept = those that span two depths or more; distances = the k-NN of every depth from squared distances, complexes = the symmetrised graphs and their "
        "triangles, scores = bars → depths, consistency and persistence images (of the first engine's bars); an "
        "engine's zigzag = building the zigzag and the engine's barcode, its total = `analyze_topology` timed on its "
        "own; peak RSS = the process's, the clouds included; same = the engine's depth bars equal "
        f"{engines[0]}'s exactly; – = not run"
        + (f" (the quadratic {classic[0]} engine only up to N = {data['classic_max']})" if classic else "") + ".")
    parts = [intro, topology_speed_table(data), note]
    goals = topology_goals(data)
    if goals:
        parts.append("Goals (measured ÷ target):\n\n" + "\n".join(f"- {line}" for line in goals))
    parts.append("Worst case (the slowest row per kind and engine):\n\n"
                 + "\n".join(f"- {line}" for line in topology_worst(data)))
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------- layer speed

PHASES = (("prefill", "_s"), ("decode", "_s_per_token"))
_REST = "embeddings, masks and rotary tables, final norm, LM head, Python dispatch"
REST = {"prefill": "vision tower + projector, " + _REST, "decode": _REST}  # a decode step runs no vision tower


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def _latency(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else _ms(seconds)


def display_command(command: str) -> str:
    """``command`` without the machine's checkout path: ``/x/y/.venv/bin/python`` is shown as ``.venv/bin/python``."""
    executable, _, rest = command.partition(" ")
    if "/.venv/" in executable:
        executable = ".venv/" + executable.rsplit("/.venv/", 1)[1]
    return f"{executable} {rest}".strip()


def _removed_label(row: dict, dense: dict) -> str:
    return "none (dense)" if not row["removed"] else f"{row['config']}: {len(row['removed'])} of {dense['num_layers']}"


def layer_speed_table(data: dict) -> str:
    """One row per configuration: prefill and decode latency, speedup, ideal L/L', fraction of ideal, memory."""
    dense = data["rows"][0]
    lines = ["| removed | layers | prefill | speedup | ideal L/L' | of ideal | decode / token | speedup | of ideal | "
             "peak RSS | ratio |", "|---" * 11 + "|"]
    for row in data["rows"]:
        vs = row["vs_dense"]
        cells = [_removed_label(row, dense), str(row["num_layers"]), _latency(row["prefill_s"])]
        if row is dense:
            cells += ["–", "–", "–", _ms(row["decode_s_per_token"]), "–", "–"]
        else:
            cells += [f"{vs['prefill_speedup']:.2f}×", f"{vs['ideal_speedup']:.2f}×", f"{vs['prefill_of_ideal']:.2f}",
                      _ms(row["decode_s_per_token"]), f"{vs['decode_speedup']:.2f}×", f"{vs['decode_of_ideal']:.2f}"]
        cells += [f"{row['peak_memory_bytes'] / 1e6:,.0f} MB", "–" if row is dense else f"{vs['memory_ratio']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdicts(data: dict, goal: float) -> str:
    """Which phase meets the goal at which budget, with the measured fraction of ideal."""
    pruned = data["rows"][1:]
    clauses = []
    for phase, _ in PHASES:
        met = [row for row in pruned if row["vs_dense"][f"{phase}_of_ideal"] >= goal]
        missed = [row for row in pruned if row not in met]

        def listed(rows):
            return _join([f"{len(row['removed'])} removed ({row['vs_dense'][f'{phase}_of_ideal']:.3f})"
                          for row in rows])

        if not missed:
            clauses.append(f"{phase} meets it at every budget: {listed(met)}")
        elif not met:
            clauses.append(f"{phase} misses it at every budget: {listed(missed)}")
        else:
            clauses.append(f"{phase} meets it with {listed(met)} and misses it with {listed(missed)}")
    return _wrap(f"Goal ≥ {goal:g} of ideal: " + "; ".join(clauses) + ".")


def _miss_explanation(data: dict, row: dict, phase: str, suffix: str) -> str:
    """Why ``row`` misses the goal in ``phase``, from the layer/rest split measured inside the same forwards."""
    dense, vs = data["rows"][0], row["vs_dense"]
    unit = _ms if phase == "decode" else _latency
    rest_dense, rest_row = dense[f"{phase}_other{suffix}"], row[f"{phase}_other{suffix}"]
    total_dense = rest_dense + dense[f"{phase}_layers{suffix}"]
    per_layer_dense = dense[f"{phase}_layers{suffix}_per_layer"]
    per_layer_row = row[f"{phase}_layers{suffix}_per_layer"]
    ideal, bound = vs["ideal_speedup"], vs[f"{phase}_bound"]
    text = (f"Where {phase} misses ({len(row['removed'])} removed, {vs[f'{phase}_of_ideal']:.3f} of ideal): the "
            f"non-layer rest of each forward ({REST[phase]}) took {unit(rest_dense)} of dense's {unit(total_dense)} "
            f"({rest_dense / total_dense:.1%}) and {unit(rest_row)} with {row['num_layers']} layers; layer removal "
            f"cannot shrink it, so it alone bounds the speedup at {bound:.2f}× = {bound / ideal:.2f} of ideal "
            f"(Amdahl). ")
    layers_speedup = vs[f"{phase}_layers_speedup"]
    if layers_speedup < ideal:
        text += (f"The decoder layers themselves sped up {layers_speedup:.2f}× instead of {ideal:.2f}×: their time "
                 f"per layer rose from {per_layer_dense * 1e3:.2f} ms to {per_layer_row * 1e3:.2f} ms between the two "
                 "measurements.")
    else:
        text += f"The decoder layers themselves sped up {layers_speedup:.2f}× (ideal {ideal:.2f}×)."
    return _wrap(text)


def layer_speed_block(data: dict) -> str:
    """``bench/bench_speed.py``'s measurement: the table, the goal verdicts and why a miss misses (measured)."""
    model, machine, args = data["model"], data["machine"], data["args"]
    dense = data["rows"][0]
    cores, threads = machine["cpus_available"], machine["torch_threads"]
    start, end = machine["loadavg_at_start"][0], machine["loadavg_at_end"][0]
    intro = _wrap(
        f"Measured with `{display_command(data['command'])}` on a {model['weights']}-weight LLaVA-shaped model built "
        f"from a config ({model['layers']} decoder layers of width {model['hidden']}, {model['heads']} heads, a "
        f"{model['vocab']:,}-token vocabulary, {model['image_tokens']} image tokens from a {model['image_size']} px "
        f"image; {model['dtype']}), {threads} torch thread{'' if threads == 1 else 's'} on {cores} CPU "
        f"core{'' if cores == 1 else 's'} (1-minute load average {start:.1f} at the start and {end:.1f} at the "
        f"end). One prompt of {dense['prefill_tokens']} tokens: prefill with logits for the last position, as "
        f"`generate` does; decode {args['decode_tokens']} one-token steps with the KV cache; medians of "
        f"{args['repeats']} after one warm-up. Layers are removed evenly (every fourth, every other):")
    parts = [intro, layer_speed_table(data), _verdicts(data, data["goal_of_ideal"])]
    for row in data["rows"][1:]:
        for phase, suffix in PHASES:
            if row["vs_dense"][f"{phase}_of_ideal"] < data["goal_of_ideal"]:
                parts.append(_miss_explanation(data, row, phase, suffix))
    fixed = data["fixed_parts_timed_alone"]
    parts.append(_wrap(
        f"Timed alone on the same inputs: the vision tower + projector {_ms(fixed['vision_tower_and_projector_s'])}, "
        f"the LM head {_ms(fixed['lm_head_last_position_s'])} for the last position and "
        f"{_ms(fixed['lm_head_all_positions_s'])} for all {dense['prefill_tokens']} positions "
        f"({fixed['lm_head_all_positions_s'] / dense['prefill_s']:.1%} of dense prefill): a forward that computes "
        "logits for every prompt position pays that as a fixed cost layer removal cannot shrink; the measured "
        "prefill (`logits_to_keep=1`) does not. The layer/rest split comes from forward hooks on the first and "
        "last decoder layer inside the measured forwards."))
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------- README


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def onnx_speed_block(data: dict) -> str:
    """``bench/bench_onnx.py``: ONNX Runtime (CPU) against PyTorch eager, dense and half removed, per model."""
    machine, args = data["machine"], data["args"]
    intro = _wrap(
        f"Measured with `{display_command(data['command'])}` ({machine['cpus_available']} CPU cores, one thread in both "
        f"runtimes, medians of {args['repeats']} after a warm-up; prefill = vision tower + embedding + decoder over "
        f"the fixed prompt with an image, logits for every position; decode = one greedy token with the KV cache, "
        f"over {args['decode_tokens']} steps; ORT's cache fed as numpy arrays, the CPU runner's default). Graphs are "
        f"fp32; sizes are the decoder graph's. The last two columns are ONNX Runtime's own variants, measured in turn "
        f"in the same rounds: prefill with the last position's logits only (what generation runs), and decode with "
        f"the cache bound as OrtValues (I/O binding, the runner's default on a GPU):")
    lines = ["| model | layers | PyTorch prefill | ORT prefill | ORT / PyTorch | PyTorch decode | ORT decode | "
             "ORT / PyTorch | pruned vs dense (PyTorch / ORT / ideal) | decoder graph | ORT prefill, last logits | "
             "ORT decode, cache bound |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    dense_of = {}
    for row in data["rows"]:
        torch_costs, ort_costs = row["pytorch"], row["onnxruntime"]
        dense = dense_of.setdefault(row["model"], row)
        if row is dense:
            versus = "–"
        else:
            ideal = dense["layers"] / row["layers"]
            versus = " / ".join(
                f"{dense[runtime]['prefill_s'] / row[runtime]['prefill_s']:.2f}× prefill, "
                f"{dense[runtime]['decode_s_per_token'] / row[runtime]['decode_s_per_token']:.2f}× decode"
                for runtime in ("pytorch", "onnxruntime")) + f" / {ideal:.2f}×"
        lines.append(
            f"| {row['model']} | {row['layers']} | {_ms(torch_costs['prefill_s'])} | {_ms(ort_costs['prefill_s'])} | "
            f"{torch_costs['prefill_s'] / ort_costs['prefill_s']:.2f}× faster | "
            f"{_ms(torch_costs['decode_s_per_token'])} | {_ms(ort_costs['decode_s_per_token'])} | "
            f"{torch_costs['decode_s_per_token'] / ort_costs['decode_s_per_token']:.2f}× faster | {versus} | "
            f"{_mb(row['bytes']['decoder_model_merged'])} | {variant(ort_costs, 'prefill_s_last_logits', 'prefill_s')} "
            f"| {variant(ort_costs, 'decode_s_per_token_bound', 'decode_s_per_token')} |")
    return intro + "\n\n" + "\n".join(lines)


def variant(costs: dict, name: str, base: str) -> str:
    """``7.8 ms (1.03× faster)``: a variant's time and its speed against ``base``; – where a run predates it."""
    if name not in costs:
        return "–"
    ratio = costs[base] / costs[name]
    return f"{_ms(costs[name])} ({ratio:.2f}× {'faster' if ratio >= 1 else 'as fast'})"


# ---------------------------------------------------------------------------------------------- tokens

FLOPS_GOAL = 0.8  # the measured prefill speedup should reach this fraction of the FLOPs-predicted one


def tokens_block(data: dict) -> str:
    """Speed (FLOPs-predicted against measured, per batch) and accuracy of the visual-token pruners."""
    model, machine = data["speed_model"], data["machine"]
    intro = _wrap(
        f"Measured with `{display_command(data['command'])}` ({machine['cpus_available']} CPU cores, "
        f"{machine['torch_threads']} torch thread; medians of {model['repeats']} after a warm-up). Speed: a "
        f"random-weight LLaVA-1.5-shaped model, {model['layers']} decoder layers of width {model['hidden']}, "
        f"{model['image_tokens']} image tokens, {model['dtype']}, pruning from decoder layer {model['token_layer']}"
        + (f" (HalfV's step 2 from layer {model['ssr_layer']}: `halfv+freeze`, `halfv+top5`; `halfv` is step 1 "
           "alone)" if "ssr_layer" in model else "") +
        f"; prefill = one forward of the prompt with the KV cache, end to end = prefill + {model['decode_tokens']} "
        "greedy steps. Tokens: what the last layer computes (queries of keys where frozen visual tokens give keys "
        "and values only).")
    lines = ["| batch | pruner | keep | tokens (last layer) | decoder FLOPs | FLOPs-predicted | "
             "measured prefill | measured ÷ predicted | prefill | end to end (speedup) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    short = []
    for row in data["speed"]:
        tokens = _layer_tokens(row["tokens_per_layer"][-1])
        if row["pruner"] == "dense":
            lines.append(f"| {row['batch']} | dense | 1 | {tokens} | {row['decoder_prefill_flops'] / 1e9:.1f} G | "
                         f"– | – | – | {_ms(row['prefill_s'])} | {_ms(row['end_to_end_s'])} |")
            continue
        ratio = row["prefill_speedup"] / row["flops_speedup"]
        if ratio < FLOPS_GOAL:
            short.append(f"{row['pruner']} at {row['keep']:g} (batch {row['batch']}, {ratio:.2f})")
        lines.append(f"| {row['batch']} | {row['pruner']} | {row['keep']:g} | {tokens} | "
                     f"{row['decoder_prefill_flops'] / 1e9:.1f} G | {row['flops_speedup']:.2f}× | "
                     f"{row['prefill_speedup']:.2f}× | {ratio:.2f} | {_ms(row['prefill_s'])} | "
                     f"{_ms(row['end_to_end_s'])} ({row['end_to_end_speedup']:.2f}×) |")
    verdict = _wrap("Measured prefill speedup below " f"{FLOPS_GOAL:g} of the FLOPs-predicted one: "
                    + (_join(short) if short else "none") + ". The FLOPs count only the decoder layers; the vision "
                    "tower, embeddings, LM head and Python dispatch are not pruned, and a few-token decode step "
                    "gains little, so the end-to-end speedup is smaller.")
    accuracy = ["| layer removal | pruner | keep | from layer | step 2 from | topo_synth | math | non-math |",
                "|---|---|---|---|---|---|---|---|"]
    for row in data["accuracy"]:
        removal = "none" if row["layers"] == "none" else f"{row['layers']} (layers {', '.join(map(str, row['removed_layers']))})"
        layer = "–" if row["token_layer"] is None else str(row["token_layer"])
        step_2 = "–" if row.get("ssr_layer") is None else str(row["ssr_layer"])
        accuracy.append(f"| {removal} | {row['pruner']} | {row['keep']:g} | {layer} | {step_2} | {row['exact_match']:.3f} | "
                        f"{row['math']:.3f} | {row['non_math']:.3f} |")
    scope = "the whole test split" if data["limit"] is None else f"the first {data['limit']} documents of each task"
    life = data["lifecycle"]
    return "\n\n".join([intro, "\n".join(lines), verdict, _wrap(
        f"Accuracy: the bundled model on `topo_synth` ({scope}; 16 image tokens per prompt), exact match. HalfV "
        f"(anchor ratio {data['halfv_anchor']:g}) prunes from the IVR layer its lifecycle analysis detected on "
        f"{life['samples']} calibration prompts, and `halfv+freeze` / `halfv+top5` also from its SSR layer: IVR "
        f"{life['ivr_layer']}, SSR {life['ssr_layer']} (detected mode {life['ssr_mode']}):"), "\n".join(accuracy)])


def _layer_tokens(entry: int | list[int]) -> str:
    """A layer's prefill tokens: ``600``, or ``[queries, tokens]`` → ``21 of 309`` when they differ."""
    queries, tokens = entry if isinstance(entry, list) else (entry, entry)
    return str(tokens) if queries == tokens else f"{queries} of {tokens}"


# --- topology ablations (bench/bench_topology_ablations.py) -----------------------------------------------------

ABLATIONS_FILE = "topology_ablations.json"
RANDOM_SEEDS = re.compile(r"random\[seed=\d+\]")


def _budget_cells(entry: dict, budgets: list[str]) -> list[str]:
    """One cell per budget (n/a where the method cannot reach it) and the mean over the budgets it reached."""
    reached = [b for b in budgets if b in entry["budgets"]]
    mean = f"{entry['mean']:.3f}" + ("" if len(reached) == len(budgets) else f" ({len(reached)} of {len(budgets)})")
    return [f"{entry['budgets'][b]:.3f}" if b in entry["budgets"] else "n/a" for b in budgets] + [mean]


def _short(variant: str) -> str:
    """``topology[topo_score=multiscale,topo_k=5]`` → ``multiscale, k=5`` (the README's row label)."""
    inside = variant[variant.index("[") + 1:-1] if "[" in variant else ""
    items = dict(item.split("=", 1) for item in inside.split(",") if item)
    score = items.pop("topo_score", "depth_bars")
    extra = ", ".join(f"{key.removeprefix('topo_')}={value}" for key, value in items.items())
    return score + (f", {extra}" if extra else "")


def _ablation_table(data: dict, score: str, budgets: list[str]) -> str:
    """One row per value of each factor (one factor changed from the defaults); ★ = the factor's dev pick."""
    header = ["factor", "value", *[f"{float(b):g}" for b in budgets], "mean"]
    lines = [header, ["---", "---", *["---:"] * (len(budgets) + 1)]]
    for factor, options in data["ablations"][score].items():
        pick = data["picks"][score]["factors"][factor]
        for value, variant in options.items():
            default = " (baseline)" if data["defaults"][factor] == value else ""
            star = " ★" if value == pick else ""
            lines.append([factor.removeprefix("topo_"), f"{value}{default}{star}",
                          *_budget_cells(data["dev"][variant], budgets)])
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _random_entry(table: dict) -> dict | None:
    """The random seeds of ``table`` as one entry: the mean per budget, with ``spread`` = (min, max)."""
    seeds = [entry for label, entry in table.items() if RANDOM_SEEDS.fullmatch(label)]
    if not seeds:
        return None
    budgets = sorted(set.intersection(*(set(entry["budgets"]) for entry in seeds)), key=float)
    values = {b: [entry["budgets"][b] for entry in seeds] for b in budgets}
    means = {b: statistics.mean(v) for b, v in values.items()}
    return {"budgets": means, "spread": {b: (min(v), max(v)) for b, v in values.items()},
            "mean": statistics.mean(means.values()), "seeds": len(seeds)}


def _comparison_table(table: dict, rows: list[tuple[str, str]], budgets: list[str]) -> str:
    """``rows`` = (label, key in ``table``); random (mean, min..max of its seeds) last."""
    lines = [["method", *[f"{float(b):g}" for b in budgets], "mean"], ["---", *["---:"] * (len(budgets) + 1)]]
    shown = dict.fromkeys(key for _, key in rows if key in table)  # each configuration once, first label wins
    labels = {key: label for label, key in reversed(rows)}
    lines += [[labels[key], *_budget_cells(table[key], budgets)] for key in shown]
    random = _random_entry(table)
    if random is not None:
        cells = [f"{random['budgets'][b]:.3f} ({random['spread'][b][0]:.3f}–{random['spread'][b][1]:.3f})"
                 for b in budgets]
        lines.append([f"random (mean of {random['seeds']} seeds, min–max)", *cells, f"{random['mean']:.3f}"])
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _versus_baselines(data: dict, budgets: list[str]) -> str:
    """Per budget, the chosen topology configuration against the best baseline on test, in words."""
    test, chosen = data["test"], data["chosen"]
    others = {label: entry for label, entry in test.items()
              if label not in (chosen, data["first"], DENSE) and not RANDOM_SEEDS.fullmatch(label)}
    random = _random_entry(test)
    if random is not None:
        others["random (mean)"] = random
    verdicts = []
    for budget in budgets:
        mine = test[chosen]["budgets"][budget]
        best = max((entry["budgets"][budget], label) for label, entry in others.items() if budget in entry["budgets"])
        gap = mine - best[0]
        verb = "beats" if gap > TIE else ("ties" if abs(gap) <= TIE else "trails")
        verdicts.append(f"at {float(budget):g} it {verb} the best baseline ({best[1]}, {best[0]:.3f}) by "
                        f"{abs(gap):.3f}" if verb != "ties" else f"at {float(budget):g} it ties {best[1]} ({mine:.3f})")
    return _wrap("On test, " + "; ".join(verdicts) + ".")


def topology_ablations_block(data: dict) -> str:
    """Dev ablations per zigzag score, zigzag against per-depth persistence, calibration size, the choice, and the
    test split once against every baseline."""
    budgets = [f"{b:g}" for b in data["budgets"]]
    dev, dense_dev, dense_test = data["dev"], data["dev"][DENSE]["mean"], data["test"][DENSE]["mean"]
    parts = [_wrap(
        f"Measured with `{display_command(data['command'])}`: every row is an lmms-eval evaluation of the bundled "
        f"model on the dev split (`{data['dev_metric']}`, dense {dense_dev:.3f}) at 1/8 … 1/2 of the decoder "
        "layers removed; one factor changes at a time from the baseline, the defaults when the ablation ran ("
        + ", ".join(f"{key.removeprefix('topo_')} = {value}" for key, value in data["defaults"].items())
        + "); ★ marks the value with the best mean (ties keep the baseline).")]
    for score in data["ablations"]:
        parts.append(f"**{score}** (dev):\n\n" + _ablation_table(data, score, budgets))
    homology = [(f"zigzag, {_short(data['chosen'])} (chosen)", data["chosen"])]
    homology += [(f"zigzag, {_short(data['baseline'][score])} (baseline)", data["baseline"][score])
                 for score in data["ablations"]]
    homology += [(f"zigzag, {_short(data['picks'][score]['combined'])} (each factor's ★ combined)",
                  data["picks"][score]["combined"]) for score in data["ablations"]]
    homology += [(f"per-depth persistence, {_short(v).removeprefix('per_depth, ')}", v) for v in data["per_depth"]]
    parts.append("Zigzag against per-depth persistence (dev):\n\n" + _comparison_table(dev, homology, budgets))
    calibration = data["dev_calibration"]
    calib_rows = sorted(((label, entry) for label, entry in calibration.items() if label != DENSE),
                        key=lambda item: (item[0].split(" (")[0], int(re.search(r"calibration (\d+)", item[0]).group(1))))
    lines = [["configuration", "calibration prompts", *[f"{float(b):g}" for b in budgets], "mean"],
             ["---", "---:", *["---:"] * (len(budgets) + 1)]]
    for label, entry in calib_rows:
        variant, size = label.split(" (calibration ")
        lines.append([_short(variant), size.rstrip(")"), *_budget_cells(entry, budgets)])
    parts.append("Calibration size (dev; 320 is the whole bundled calib split):\n\n"
                 + "\n".join("| " + " | ".join(cells) + " |" for cells in lines))
    parts.append(_wrap(f"Chosen on dev: `{data['chosen']}` (mean dev accuracy {dev[data['chosen']]['mean']:.3f}). "
                       f"Test split (`{data['test_metric']}`, dense {dense_test:.3f}), run once:"))
    test_rows = [(f"topology, {_short(data['chosen'])} (chosen on dev)", data["chosen"]),
                 (f"topology, {_short(data['first'])} (the first implementation's defaults)", data["first"])]
    test_rows += [(label, label) for label in data["baselines"] if not RANDOM_SEEDS.fullmatch(label)]
    parts.append(_comparison_table(data["test"], test_rows, budgets))
    parts.append(_versus_baselines(data, budgets))
    return "\n\n".join(parts)


COMP_FILE = "comp.json"  # bench/bench_comp.py: CoMP against the single-mode baselines at matched FLOPs


def _comp_cell(rows: list[dict]) -> str:
    """Mean exact match (min..max over seeds) at the mean FLOPs the rows removed, or ``unreachable``."""
    if not rows:
        return "unreachable"
    scores = [row["exact_match"] for row in rows]
    spread = f" ({min(scores):.3f}..{max(scores):.3f})" if len(scores) > 1 else ""
    flops = statistics.mean(row["flops_removed"] for row in rows)
    return f"{statistics.mean(scores):.3f}{spread} @ {flops:.0%}"


def comp_table(rows: list[dict], rates: list[float]) -> str:
    """Exact match per method and target rate (random: mean (min..max) over 3 seeds) and the FLOPs the sweep
    counted on its cost prompt; a rate a method cannot reach is ``unreachable``."""
    families = sorted({row["family"] for row in rows if row["family"] != "dense"})
    lines = ["| method | " + " | ".join(f"{rate:.0%} of the FLOPs" for rate in rates) + " |",
             "|---|" + "---:|" * len(rates)]
    for family in families:
        cells = [_comp_cell([row for row in rows if row["family"] == family and row["target_rate"] == rate])
                 for rate in rates]
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _comp_verdict(data: dict, rate: float = 0.6) -> str:
    """The reviewer's question at ``rate``: CoMP against the strongest single-mode baseline."""
    def mean_at(family: str) -> float | None:
        scores = [row["exact_match"] for row in data["rows"] if row["family"] == family and row["target_rate"] == rate]
        return statistics.mean(scores) if scores else None

    single = {family: mean_at(family) for family in {row["family"] for row in data["rows"]}
              if not family.startswith("comp") and family != "dense"}
    reached = {family: score for family, score in single.items() if score is not None}
    best = max(reached, key=reached.get)
    comp = mean_at("comp")
    return (f"At {rate:.0%} of the prefill FLOPs, `comp` keeps {comp:.3f} exact match against {reached[best]:.3f} for "
            f"the strongest single-mode baseline (`{best}`); "
            + ("CoMP wins" if comp > reached[best] + TIE else "CoMP does not win") + " on this model.")


def comp_block(data: dict) -> str:
    """The settle-it table of CoMP, its ablations and the single-mode baselines at matched FLOPs."""
    dev = data["dev"]
    steps = ", ".join(f"{step}: {score:.3f}" for step, score in dev["by_step"].items())
    text = _wrap(
        f"Measured by `{display_command(data['command'])}` on the bundled model: exact match on the `topo_synth` test "
        f"split (500 questions, evaluated once); the dense model scores "
        f"{next(row['exact_match'] for row in data['rows'] if row['family'] == 'dense'):.3f}. `comp_step` was "
        f"chosen on the dev split at {dev['rate']:.0%} ({steps}; chosen {dev['chosen_step']}). Each cell: exact "
        "match @ the share of dense prefill FLOPs the configuration removed, counted on the sweep's cost prompt. "
        "Layer and token baselines are matched to each rate on the FLOPs model comp uses (the fewest layers, or "
        "the token keep fraction, that reach it). **Training-free**: CoMP's paper fine-tunes during and after "
        "pruning; nothing here is fine-tuned.")
    return "\n\n".join([text, comp_table(data["rows"], data["rates"]), _wrap(_comp_verdict(data)),
                         "![exact match against FLOPs removed](bench/results/comp.png)"])


COMP_SPEED_FILE = "comp_speed.json"  # bench/bench_comp_speed.py: width layouts, predicted against measured


def _range(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def comp_speed_block(data: dict) -> str:
    """Predicted (FLOPs) and measured (CPU time) speedups of the width layouts, and irregular widths relative to
    uniform ones at equal FLOPs."""
    model = data["model"]
    text = _wrap(
        f"Measured by `{display_command(data['command'])}`: a random-weight LLaVA-shaped model ({model['layers']} "
        f"decoder layers of width {model['hidden']}, {model['heads']} heads on {model['kv_heads']} key/value heads, "
        f"MLP {model['intermediate']}, {model['image_tokens']} image tokens, {model['dtype']}, CPU, one thread), "
        f"its decoder's prefill FLOPs cut by {_join([f'{rate:.0%}' for rate in data['args']['rates']])} three ways at "
        "equal FLOPs: `uniform` (every layer the same widths), `per_layer` (irregular widths, channel counts off "
        "multiples of 8, the same head groups in all) and `per_layer_rounded` (those widths rounded to multiples "
        "of 8). Speedups against dense by this thread's CPU time (what other processes on the machine do not "
        f"inflate), medians of {data['args']['repeats']} interleaved rounds; predicted: the FLOPs model.")
    lines = ["| runtime | batch | widths | prefill predicted | prefill measured | decode predicted | decode measured |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for row in data["rows"]:
        if row["config"] == "dense":
            continue
        for runtime in ("pytorch", "onnxruntime"):
            for batch, cell in row.get(runtime, {}).items():
                measured = (["blocked", "blocked"] if "blocked" in cell else
                            [f"{cell['prefill_cpu_speedup']:.2f}×", f"{cell['decode_cpu_speedup']:.2f}×"])
                lines.append(f"| {runtime} | {batch} | {row['config']} | {row['predicted_prefill_speedup']:.2f}× | "
                             f"{measured[0]} | {row['predicted_decode_speedup']:.2f}× | {measured[1]} |")
    verdicts = []
    for config in ("per_layer", "per_layer_rounded"):
        found = [item for item in data["comparisons"] if item["config"] == config]
        if found:
            verdicts.append(
                f"`{config}` runs at {_range([item['prefill_cpu_vs_uniform'] for item in found])} of `uniform`'s "
                f"prefill speed and {_range([item['decode_cpu_vs_uniform'] for item in found])} of its decode speed "
                "at equal FLOPs (1.00 is what the FLOPs predict; runtimes and batch sizes pooled).")
    return "\n\n".join([text, "\n".join(lines), _wrap(" ".join(verdicts))])


def _load(name: str, results_dir: Path) -> dict:
    return json.loads((results_dir / name).read_text(encoding="utf-8"))


# name: (what it is generated from, for messages; reader of the results folder; renderer)
BLOCKS: dict[str, tuple[str, Callable[[Path], dict], Callable[[dict], str]]] = {
    "quality": (f"{SWEEP_DIR}/ (configs/*.json, results.csv, seed*/)", load_quality, quality_block),
    "sweep": (f"{SWEEP_DIR}/ (sweep.json, winner.json, {RELOAD_FILE}, rows)", load_sweep, sweep_block),
    "domains": (f"{SWEEP_DIR}/ (rows, {REGIMES_FILE})", load_domains, domains_block),
    "layer-speed": ("speed.json", lambda folder: _load("speed.json", folder), layer_speed_block),
    "topology-speed": ("topology.json", lambda folder: _load("topology.json", folder), topology_speed_block),
    "onnx-speed": ("onnx.json", lambda folder: _load("onnx.json", folder), onnx_speed_block),
    "token-pruning": ("tokens.json", lambda folder: _load("tokens.json", folder), tokens_block),
    "topology-ablations": (ABLATIONS_FILE, lambda folder: _load(ABLATIONS_FILE, folder), topology_ablations_block),
    "comp": (COMP_FILE, lambda folder: _load(COMP_FILE, folder), comp_block),
    "comp-speed": (COMP_SPEED_FILE, lambda folder: _load(COMP_SPEED_FILE, folder), comp_speed_block),
}


def render_blocks(results_dir: Path = RESULTS) -> dict[str, str]:
    """``{block name: generated markdown}`` for every block, from the files in ``results_dir``."""
    return {name: render(read(results_dir)) for name, (_, read, render) in BLOCKS.items()}


def _block_pattern(name: str) -> re.Pattern:
    return re.compile(re.escape(begin_marker(name)) + r"\n(.*?)\n?" + re.escape(end_marker(name)), re.DOTALL)


def readme_blocks(text: str) -> dict[str, str]:
    """The current content of each generated block of a README text (a missing block raises KeyError)."""
    found = {}
    for name in BLOCKS:
        matches = _block_pattern(name).findall(text)
        if len(matches) != 1:
            raise KeyError(f"README must hold exactly one block {name!r} between its markers, found {len(matches)}")
        found[name] = matches[0]
    return found


def replace_blocks(text: str, blocks: dict[str, str]) -> str:
    """``text`` with each named block's content replaced; nothing outside the markers changes."""
    for name, content in blocks.items():
        readme_blocks(text)  # every marker pair present exactly once
        replacement = f"{begin_marker(name)}\n{content}\n{end_marker(name)}"
        text = _block_pattern(name).sub(lambda _: replacement, text)
    return text


def stale_blocks(text: str, blocks: dict[str, str]) -> list[str]:
    current = readme_blocks(text)
    return [name for name, content in blocks.items() if current[name] != content]


def _atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and ``os.replace``, keeping the file's permissions."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="regenerate the blocks in the README in place")
    mode.add_argument("--check", action="store_true", help="exit 1 when a README block differs from the JSON")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON files")
    args = parser.parse_args(argv)
    blocks = render_blocks(args.results)
    if not (args.write or args.check):
        for name, content in blocks.items():
            print(f"{begin_marker(name)}\n{content}\n{end_marker(name)}\n")
        return 0
    text = args.readme.read_text(encoding="utf-8")
    stale = stale_blocks(text, blocks)
    if args.check:
        for name in stale:
            print(f"{args.readme}: block {name!r} differs from {BLOCKS[name][0]}; run python bench/readme_tables.py "
                  "--write", file=sys.stderr)
        return 1 if stale else 0
    if stale:
        _atomic_write_text(args.readme, replace_blocks(text, {name: blocks[name] for name in stale}))
    print(f"{args.readme}: " + (f"rewrote {', '.join(stale)}" if stale else "up to date"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
