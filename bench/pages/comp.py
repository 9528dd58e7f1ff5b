"""The CoMP page (``docs/results/comp.md``): CoMP and its ablations against the single-mode baselines at matched
FLOPs (``comp.json``, written by ``bench/bench_comp.py``, and its plot ``comp.png``), and the width layouts'
predicted against measured speedups (``comp_speed.json``, written by ``bench/bench_comp_speed.py``)."""

from __future__ import annotations

import statistics
from pathlib import Path

from .common import TIE, display_command, image, join, load, page, wrap

TITLE = "CoMP: widths against single-mode baselines at matched FLOPs"
COMP_FILE = "comp.json"  # bench/bench_comp.py: CoMP against the single-mode baselines at matched FLOPs
COMP_SPEED_FILE = "comp_speed.json"  # bench/bench_comp_speed.py: width layouts, predicted against measured


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
    text = wrap(
        f"Measured by `{display_command(data['command'])}` on the bundled model: exact match on the `topo_synth` test "
        f"split (evaluated once); the dense model scores "
        f"{next(row['exact_match'] for row in data['rows'] if row['family'] == 'dense'):.3f}. `comp_step` was "
        f"chosen on the dev split at {dev['rate']:.0%} ({steps}; chosen {dev['chosen_step']}). Each cell: exact "
        "match @ the share of dense prefill FLOPs the configuration removed, counted on the sweep's cost prompt. "
        "Layer and token baselines are matched to each rate on the FLOPs model comp uses (the fewest layers, or "
        "the token keep fraction, that reach it). **Training-free**: CoMP's paper fine-tunes during and after "
        "pruning; nothing here is fine-tuned.")
    return "\n\n".join([text, comp_table(data["rows"], data["rates"]), wrap(_comp_verdict(data)),
                         image("comp.png", "exact match against FLOPs removed")])


def _range(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def comp_speed_block(data: dict) -> str:
    """Predicted (FLOPs) and measured (CPU time) speedups of the width layouts, and irregular widths relative to
    uniform ones at equal FLOPs."""
    model = data["model"]
    text = wrap(
        f"Measured by `{display_command(data['command'])}`: a random-weight LLaVA-shaped model ({model['layers']} "
        f"decoder layers of width {model['hidden']}, {model['heads']} heads on {model['kv_heads']} key/value heads, "
        f"MLP {model['intermediate']}, {model['image_tokens']} image tokens, {model['dtype']}, CPU, one thread), "
        f"its decoder's prefill FLOPs cut by {join([f'{rate:.0%}' for rate in data['args']['rates']])} three ways at "
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
    return "\n\n".join([text, "\n".join(lines), wrap(" ".join(verdicts))])


def render(results_dir: Path) -> str:
    """The whole CoMP page from ``results_dir``."""
    return page(TITLE, f"{COMP_FILE}, {COMP_SPEED_FILE}",
                "## Quality at matched FLOPs", comp_block(load(COMP_FILE, results_dir)),
                "## Speed: width layouts against their FLOPs", comp_speed_block(load(COMP_SPEED_FILE, results_dir)))


def headline(results_dir: Path) -> str:
    """One line for the results index: CoMP against the strongest single-mode baseline (training-free)."""
    verdict = _comp_verdict(load(COMP_FILE, results_dir))
    return verdict[0].lower() + verdict[1:] + " Training-free: nothing is fine-tuned."
