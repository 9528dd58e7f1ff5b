"""The topology page (``docs/results/topology.md``): the speed of the zigzag engines on three kinds of point clouds
(``topology.json``, written by ``bench/bench_topology.py``) and the ablations that chose the defaults on the dev
split, with the test split run once (``topology_ablations.json`` and its plot, written by
``bench/bench_topology_ablations.py``)."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from .common import DENSE, TIE, display_command, image, join, load, page, secs, wrap

TITLE = "Topology: engine speed and ablations"
SPEED_FILE = "topology.json"  # bench/bench_topology.py
ABLATIONS_FILE = "topology_ablations.json"  # bench/bench_topology_ablations.py
RANDOM_SEEDS = re.compile(r"random\[seed=\d+\]")


def _engine_result(values: dict | None) -> str:
    """An engine's total in one row: seconds, ``timed out (> T s)``, ``failed``, or ``–`` (not run)."""
    status = (values or {}).get("status")
    if status == "ok":
        return secs(values["total_s"])
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
            cells += [_engine_result(values), secs(values["zigzag_s"]) if ok else "–"]
        cells.append(" / ".join(secs(row[key]).removesuffix(" s") for key in ("distances_s", "complexes_s",
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
                cells.append(f"{engine} {secs(values['total_s'])} = {ratio:.2f}× ({verdict})")
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
                words = [*lost, ("slowest finished " if lost else "") + f"{secs(results[slowest]['total_s'])} at "
                         f"N = {slowest}" + (f" (not run at N = {', '.join(skipped)})" if skipped else "")]
            if words:
                cells.append(f"{engine} " + ", ".join(words))
        lines.append(f"{kind}: " + ("; ".join(cells) if cells else "nothing finished"))
    return lines


def topology_speed_block(data: dict) -> str:
    if not data.get("rows") or "kind" not in data["rows"][0]:
        return ("`bench/results/topology.json` is not from the current `bench/bench_topology.py`; run it, then "
                "`.venv/bin/python scripts/docs_pages.py --write`.")
    args, machine, engines = data["args"], data["machine"], data["engines"]
    cores = machine["cpus_available"]
    threads = {row["torch_threads"] for row in data["rows"] if "torch_threads" in row}
    runs = "one run" if args.get("repeats", 1) == 1 else f"medians of {args['repeats']} runs"
    intro = wrap(
        f"Measured with `{display_command(data['command'])}` ({cores} CPU core{'' if cores == 1 else 's'}"
        + (f", {join(sorted(map(str, threads)))} torch threads" if threads else "")
        + f", k = {args['k']}; point clouds → scores, the calibration pass not included; each kind and N in a fresh "
        f"process, {runs} of every stage after a warm-up):")
    classic = [engine for engine in engines if engine == "classic"]
    note = wrap(
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


def _budget_cells(entry: dict, budgets: list[str]) -> list[str]:
    """One cell per budget (n/a where the method cannot reach it) and the mean over the budgets it reached."""
    reached = [b for b in budgets if b in entry["budgets"]]
    mean = f"{entry['mean']:.3f}" + ("" if len(reached) == len(budgets) else f" ({len(reached)} of {len(budgets)})")
    return [f"{entry['budgets'][b]:.3f}" if b in entry["budgets"] else "n/a" for b in budgets] + [mean]


def _short(variant: str) -> str:
    """``topology[topo_score=multiscale,topo_k=5]`` → ``multiscale, k=5`` (the pages' row label)."""
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
    return wrap("On test, " + "; ".join(verdicts) + ".")


def topology_ablations_block(data: dict) -> str:
    """Dev ablations per zigzag score, zigzag against per-depth persistence, calibration size, the choice, and the
    test split once against every baseline."""
    budgets = [f"{b:g}" for b in data["budgets"]]
    dev, dense_dev, dense_test = data["dev"], data["dev"][DENSE]["mean"], data["test"][DENSE]["mean"]
    parts = [wrap(
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
    parts.append(wrap(f"Chosen on dev: `{data['chosen']}` (mean dev accuracy {dev[data['chosen']]['mean']:.3f}). "
                       f"Test split (`{data['test_metric']}`, dense {dense_test:.3f}), run once:"))
    test_rows = [(f"topology, {_short(data['chosen'])} (chosen on dev)", data["chosen"]),
                 (f"topology, {_short(data['first'])} (the first implementation's defaults)", data["first"])]
    test_rows += [(label, label) for label in data["baselines"] if not RANDOM_SEEDS.fullmatch(label)]
    parts.append(_comparison_table(data["test"], test_rows, budgets))
    parts.append(_versus_baselines(data, budgets))
    return "\n\n".join(parts)

def item(text: str) -> str:
    """A wrapped list item, its continuation lines indented under it."""
    return wrap(text).replace("\n", "\n  ")


def kinds_text(data: dict) -> str:
    """The three kinds of point clouds, with the sizes this run measured."""
    args = data.get("args", {})
    sizes = join([str(n) for n in args.get("sizes", [])]) or "?"
    real = join([str(n) for n in args.get("real_sizes", [])]) or "?"
    return "\n".join([
        wrap("`bench/bench_topology.py` measures three kinds of point clouds side by side:"), "",
        item(f"- `real`: the bundled model's own calibration states (`last_token` points of its calib split, "
             f"collected the way `method=topology` with `calib_limit=N` collects them; N = {real}). This is what a "
             "run on this repository's model actually scores."),
        item(f"- `gaussian`: seeded Gaussian clouds of {args.get('depths', '?')} depths and width "
             f"{args.get('dim', '?')} (N = {sizes}). With no structure, the k-NN graphs change completely from one "
             "depth to the next and the zigzag carries thousands of bars: the worst case for an engine."),
        item("- `synthetic`: `topology.synthetic.drifting_clouds` (slowly rotating low-dimensional clouds with one "
             "abrupt transition) of the same sizes: a handful of bars, the easy case."),
    ])


HOW = wrap(
    "Each kind and N runs in a fresh process, so its peak RSS is its own; every engine of "
    "`topology.engines.ENGINES` runs by default (`--engines`), each with its own `--timeout`: an engine that runs "
    "past it is recorded as timed out and the row keeps what finished. The classic engine is quadratic in N and runs "
    "only up to `--classic-max`. Other sizes: `--kinds`, `--sizes`, `--real-sizes`, `--depths`, `--dim`, `--k`. The "
    "calibration forward pass is not in these times; each run's report has it (`timings_s.calibrate`).")

ABLATIONS_INTRO = wrap(
    "`bench/bench_topology_ablations.py` runs the paper's ablations with the sweep (method variants such as "
    "`topology[topo_score=multiscale,topo_k=5]`, each a real lmms-eval evaluation) on the bundled benchmark's dev "
    "split only (`topo_synth_dev`: disjoint from calibration, test and the model's training items), chooses the "
    "defaults by mean dev accuracy, and then evaluates the chosen configuration, the first implementation's defaults "
    "and every baseline on the test split once.")


def render(results_dir: Path) -> str:
    """The whole topology page from ``results_dir``."""
    speed = load(SPEED_FILE, results_dir)
    return page(TITLE, f"{SPEED_FILE}, {ABLATIONS_FILE}",
                "## Engine speed", kinds_text(speed), topology_speed_block(speed), HOW,
                "## Ablations and defaults chosen on the dev split", ABLATIONS_INTRO,
                image("topology_ablations.png", "dev accuracy of the topology ablations against the budget"),
                topology_ablations_block(load(ABLATIONS_FILE, results_dir)))


def headline(results_dir: Path) -> str:
    """One line for the results index: the default chosen on dev, and the engines against the speed goals."""
    ablations = load(ABLATIONS_FILE, results_dir)
    goals = "; ".join(topology_goals(load(SPEED_FILE, results_dir)))
    return f"chosen on the dev split: `{ablations['chosen']}`. Speed goals: {goals}."
