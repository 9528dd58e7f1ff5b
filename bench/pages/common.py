"""What every results page shares: the results folder, number and prose formatting, the command display, the page
frame (title, the note that it is generated, images), and reading the sweep folders the quality pages and the
benches use. Standard library only, like every bench script, so the pages build without torch."""

from __future__ import annotations

import csv
import json
import statistics
import textwrap
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
WIDTH = 115  # the line width of generated prose (Markdown joins the lines again)
TIE = 5e-4  # overall scores closer than this (they are shown with 3 decimals) count as equal
SWEEP_DIR = "quality_sweep"  # bench/bench_quality.py's sweep, under bench/results/
DENSE = "none"  # the sweep's dense reference row
OVERALL_METRIC = "topo_synth/exact_match"
DOMAIN_METRICS = {"math": "topo_synth_mathdomain/exact_match", "non-math": "topo_synth_nonmath/exact_match"}
KINDS = ("presence", "attribute", "count", "spatial", "math")  # topo_synth's question kinds, in the pages' order


def wrap(text: str) -> str:
    """``text`` filled to the pages' width, never breaking inside ``x = y``."""
    glued = text.replace(" = ", "\0=\0")
    return textwrap.fill(glued, width=WIDTH, break_long_words=False, break_on_hyphens=False).replace("\0", " ")


def join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


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


def dense_row(rows: list[dict]) -> dict:
    dense = [row for row in rows if row["method"] == DENSE]
    if len(dense) != 1:
        raise ValueError(f"a sweep has exactly one dense row; found {len(dense)}")
    return dense[0]


def kind_scores(row: dict) -> dict[str, float]:
    """Exact match per kind (those the row reports) and ``overall``, from a sweep row's lmms-eval metrics."""
    metrics = row["metrics"]
    scores = {kind: metrics[kind_metric(kind)] for kind in KINDS if kind_metric(kind) in metrics}
    return scores | {"overall": metrics[OVERALL_METRIC]}


def domain_scores(row: dict) -> dict[str, float]:
    """Exact match of the math and the non-math questions, and ``overall``, from a sweep row's metrics."""
    return {domain: row["metrics"][metric] for domain, metric in DOMAIN_METRICS.items()} | {
        "overall": row["metrics"][OVERALL_METRIC]}


def quality_from_sweeps(rows: list[dict], extra_seeds: list[list[dict]] = (),
                        scores: Callable[[dict], dict[str, float]] = kind_scores) -> dict:
    """The quality tables' input from sweep rows: per method, one entry per budget with one run per seed.

    ``{"dense": scores, "methods": {method: [{"fraction", "removed": [layers per seed], "runs": [scores per
    seed]}]}}``, budget 0 being the dense row. ``extra_seeds`` are the rows of more sweeps (other ``seed=``) of
    configurations the main sweep has; their dense rows are not used.
    """
    dense = scores(dense_row(rows))
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


def load_quality(results_dir: Path, name: str = SWEEP_DIR, scores: Callable[[dict], dict[str, float]] = kind_scores) -> dict:
    """:func:`quality_from_sweeps` of the sweep in ``results_dir/name`` and of its ``seed*/`` sweeps."""
    folder = results_dir / name
    extra = [read_sweep(path) for path in sorted(folder.glob("seed*")) if (path / "results.csv").is_file()]
    return quality_from_sweeps(read_sweep(folder), extra, scores)


def mean_score(row: dict, key: str) -> float:
    return statistics.fmean(run[key] for run in row["runs"])


def n_removed(row: dict) -> int:
    return len(row["removed"][0])


def budget_rows(results: dict) -> list[dict]:
    """The rows of the method with the most budgets: their fractions and layer counts head the columns."""
    return max(results["methods"].values(), key=len)


def layers_word(n: int) -> str:
    return f"{n} layer" + ("" if n == 1 else "s")


def best(scores: dict[str, float]) -> tuple[list[str], float]:
    top = max(scores.values())
    return [name for name, value in scores.items() if top - value < TIE], top


def sec(value: float) -> str:
    return f"{value:.1f} s"


def secs(value: float) -> str:
    return f"{value:.1f} s" if value >= 10 else f"{value:.2f} s" if value >= 1 else f"{value:.3f} s"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def latency(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else ms(seconds)


def display_command(command: str) -> str:
    """``command`` without the machine's checkout path: ``/x/y/.venv/bin/python`` is shown as ``.venv/bin/python``."""
    executable, _, rest = command.partition(" ")
    if "/.venv/" in executable:
        executable = ".venv/" + executable.rsplit("/.venv/", 1)[1]
    return f"{executable} {rest}".strip()


def load(name: str, results_dir: Path) -> dict:
    return json.loads((results_dir / name).read_text(encoding="utf-8"))


IMAGES = "../assets/results"  # where docs/hooks/results_images.py publishes bench/results/**/*.png, seen from a page


def image(name: str, alt: str) -> str:
    """A figure of ``bench/results/<name>`` on a page under ``docs/results/``."""
    return f"![{alt}]({IMAGES}/{name})"


def page(title: str, sources: str, *parts: str | None) -> str:
    """A whole page: its title, a note that it is generated from ``sources``, then the non-empty ``parts``."""
    note = (f"<!-- Generated by scripts/docs_pages.py from bench/results/ ({sources}); edit the generator in "
            "bench/pages/, not this page. -->")
    return "\n\n".join([f"# {title}", note, *(part for part in parts if part)]) + "\n"
