#!/usr/bin/env python3
"""The README's result tables, generated from ``bench/results/*.json`` (never typed by hand).

    python bench/readme_tables.py            # print every generated block
    python bench/readme_tables.py --write    # replace the blocks in README.md in place
    python bench/readme_tables.py --check    # exit 1 when a README block differs from its JSON

Each block sits in README.md between two marker lines::

    <!-- BEGIN generated: NAME (python bench/readme_tables.py) -->
    ...
    <!-- END generated: NAME -->

``quality`` comes from ``quality.json`` (written by ``bench/bench_quality.py``) and ``topology-speed`` from
``topology.json`` (written by ``bench/bench_topology.py``). Only the text between the markers is touched.
Standard library only, so the check runs without torch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
WIDTH = 115  # the README's line width for generated prose
TIE = 5e-4  # overall scores closer than this (they are shown with 3 decimals) count as equal

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


# ---------------------------------------------------------------------------------------------- quality


def _mean(row: dict, key: str) -> float:
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
    return {name: _mean(row, key) for name, rows in results["methods"].items() if name != method
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
        ours = _mean(row, "overall")
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
            scores = {name: _mean(row, kind) for name, rows in results["methods"].items()
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


# ---------------------------------------------------------------------------------------------- speed


def _seconds(value: float) -> str:
    return f"{value:.2f} s"


def speed_table(data: dict) -> str:
    """One row per measured N: simplices, fast and classic totals, speedups, peak RSS."""
    target = data.get("target") or {}
    lines = ["| N | simplices | fast total | classic total | speedup (total / zigzag only) | peak RSS |",
             "|---|---|---|---|---|---|"]
    for row in data["rows"]:
        fast = _seconds(row["total_fast"])
        if row["n"] == target.get("n"):
            fast += f" (target ≤ {target['seconds']:g} s)"
        if "total_classic" in row:
            classic = _seconds(row["total_classic"])
            speedup = (f"{row['total_classic'] / row['total_fast']:.1f}× / "
                       f"{row['zigzag_classic'] / row['zigzag_fast']:.1f}×")
        else:
            classic = speedup = "–"
        lines.append(f"| {row['n']} | {row['simplices']:,} | {fast} | {classic} | {speedup} | "
                     f"{row['peak_mb']:.0f} MB |")
    return "\n".join(lines)


def speed_block(data: dict) -> str:
    args, machine = data["args"], data["machine"]
    cores = machine["cpus_available"]
    intro = _wrap(f"Speed (`{data['command']}`, {cores} CPU core{'' if cores == 1 else 's'}, {args['depths']} "
                  f"depths, d = {args['dim']}, k = {args['k']}, point clouds → scores, calibration not included):")
    parts = [intro, speed_table(data)]
    compared = [row for row in data["rows"] if "same" in row]
    if compared:
        sizes = _join([str(row["n"]) for row in compared])
        differ = [str(row["n"]) for row in compared if not row["same"]]
        parts.append(f"The classic engine gave identical scores at N = {sizes}." if not differ else
                     f"The classic engine gave DIFFERENT scores at N = {_join(differ)}.")
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------- README


def _load(name: str, results_dir: Path) -> dict:
    return json.loads((results_dir / name).read_text())


BLOCKS: dict[str, tuple[str, Callable[[dict], str]]] = {
    "quality": ("quality.json", quality_block),
    "topology-speed": ("topology.json", speed_block),
}


def render_blocks(results_dir: Path = RESULTS) -> dict[str, str]:
    """``{block name: generated markdown}`` for every block, from the JSON files in ``results_dir``."""
    return {name: render(_load(source, results_dir)) for name, (source, render) in BLOCKS.items()}


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
