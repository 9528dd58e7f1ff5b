"""The layer-speed page (``docs/results/speed.md``): prefill and decode latency of layer removal against the ideal
L/L', and why a miss misses, from ``speed.json`` (written by ``bench/bench_speed.py``)."""

from __future__ import annotations

from pathlib import Path

from .common import display_command, join, latency, load, ms, page, wrap

TITLE = "Speed: layer removal against the ideal L/L'"
SPEED_FILE = "speed.json"  # bench/bench_speed.py

PHASES = (("prefill", "_s"), ("decode", "_s_per_token"))
_REST = "embeddings, masks and rotary tables, final norm, LM head, Python dispatch"
REST = {"prefill": "vision tower + projector, " + _REST, "decode": _REST}  # a decode step runs no vision tower


def _removed_label(row: dict, dense: dict) -> str:
    return "none (dense)" if not row["removed"] else f"{row['config']}: {len(row['removed'])} of {dense['num_layers']}"


def layer_speed_table(data: dict) -> str:
    """One row per configuration: prefill and decode latency, speedup, ideal L/L', fraction of ideal, memory."""
    dense = data["rows"][0]
    lines = ["| removed | layers | prefill | speedup | ideal L/L' | of ideal | decode / token | speedup | of ideal | "
             "peak RSS | ratio |", "|---" * 11 + "|"]
    for row in data["rows"]:
        vs = row["vs_dense"]
        cells = [_removed_label(row, dense), str(row["num_layers"]), latency(row["prefill_s"])]
        if row is dense:
            cells += ["–", "–", "–", ms(row["decode_s_per_token"]), "–", "–"]
        else:
            cells += [f"{vs['prefill_speedup']:.2f}×", f"{vs['ideal_speedup']:.2f}×", f"{vs['prefill_of_ideal']:.2f}",
                      ms(row["decode_s_per_token"]), f"{vs['decode_speedup']:.2f}×", f"{vs['decode_of_ideal']:.2f}"]
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
            return join([f"{len(row['removed'])} removed ({row['vs_dense'][f'{phase}_of_ideal']:.3f})"
                          for row in rows])

        if not missed:
            clauses.append(f"{phase} meets it at every budget: {listed(met)}")
        elif not met:
            clauses.append(f"{phase} misses it at every budget: {listed(missed)}")
        else:
            clauses.append(f"{phase} meets it with {listed(met)} and misses it with {listed(missed)}")
    return wrap(f"Goal ≥ {goal:g} of ideal: " + "; ".join(clauses) + ".")


def _miss_explanation(data: dict, row: dict, phase: str, suffix: str) -> str:
    """Why ``row`` misses the goal in ``phase``, from the layer/rest split measured inside the same forwards."""
    dense, vs = data["rows"][0], row["vs_dense"]
    unit = ms if phase == "decode" else latency
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
    return wrap(text)


def layer_speed_block(data: dict) -> str:
    """``bench/bench_speed.py``'s measurement: the table, the goal verdicts and why a miss misses (measured)."""
    model, machine, args = data["model"], data["machine"], data["args"]
    dense = data["rows"][0]
    cores, threads = machine["cpus_available"], machine["torch_threads"]
    start, end = machine["loadavg_at_start"][0], machine["loadavg_at_end"][0]
    intro = wrap(
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
    parts.append(wrap(
        f"Timed alone on the same inputs: the vision tower + projector {ms(fixed['vision_tower_and_projector_s'])}, "
        f"the LM head {ms(fixed['lm_head_last_position_s'])} for the last position and "
        f"{ms(fixed['lm_head_all_positions_s'])} for all {dense['prefill_tokens']} positions "
        f"({fixed['lm_head_all_positions_s'] / dense['prefill_s']:.1%} of dense prefill): a forward that computes "
        "logits for every prompt position pays that as a fixed cost layer removal cannot shrink; the measured "
        "prefill (`logits_to_keep=1`) does not. The layer/rest split comes from forward hooks on the first and "
        "last decoder layer inside the measured forwards."))
    return "\n\n".join(parts)


def render(results_dir: Path) -> str:
    """The whole layer-speed page from ``results_dir``."""
    return page(TITLE, SPEED_FILE,
                wrap("`bench/bench_speed.py` measures dense and layer-pruned models side by side in one run and writes "
                     f"`bench/results/{SPEED_FILE}`, which this page is generated from."),
                layer_speed_block(load(SPEED_FILE, results_dir)))


def headline(results_dir: Path) -> str:
    """One line for the results index: the speedups of the largest removal against its ideal."""
    data = load(SPEED_FILE, results_dir)
    row, dense = data["rows"][-1], data["rows"][0]
    vs = row["vs_dense"]
    return (f"removing {len(row['removed'])} of {dense['num_layers']} layers speeds prefill up "
            f"{vs['prefill_speedup']:.2f}× and decode {vs['decode_speedup']:.2f}× (ideal {vs['ideal_speedup']:.2f}×).")
