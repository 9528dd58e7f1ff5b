#!/usr/bin/env python3
"""Measured prefill and decode speedup of width pruning (uniform, per_layer, per_layer rounded) against its FLOPs
prediction, PyTorch and ONNX Runtime, batch 1 and 8, side by side in one run.

    .venv/bin/python bench/bench_comp_speed.py            # 8 layers x 512, 16 heads / 4 KV heads, 576 image tokens
    .venv/bin/python bench/bench_comp_speed.py --layers 4 --hidden 256 --image-tokens 64 --skip-onnx   # a quick look

The model is ``bench_speed``'s random-weight LLaVA-shaped model (a Llama decoder behind a small CLIP tower, so
that the decoder dominates) with grouped-query attention (``--kv-heads``). Per ``--rates`` (the share of the
decoder's prefill FLOPs removed) three configurations are cut from a copy of the dense model by
``surgery.widths.slice_widths``:

- ``uniform``: every decoder layer keeps the same head groups and MLP channels (a multiple of 8), layout uniform;
- ``per_layer``: seeded random head groups and MLP channels per layer, no channel count a multiple of 8, as many
  head groups in all as uniform and balanced to its FLOPs within 1% (the same attention/MLP mix: only the
  irregularity differs), layout per_layer;
- ``per_layer_rounded``: the same widths with the channels rounded to multiples of 8 and re-balanced (head groups
  are whole units already: a key/value head with its query heads).

The prediction is ``scorers.comp.flops.FlopsModel`` on the dense model: prefill as it is timed and as the comp
method counts it (the LM head on the last position, as ``generate`` runs it) and one decode step (one row through every decoder site, attention over the mean context).
Timed: PyTorch eager prefill (``search.measure.prefill``) and per-token decode (``search.measure.decode``) on a
batch of ``--batches`` copies of the cost prompt; ONNX Runtime (CPU, one thread) runs the fp32 build of
``exporters.export.export_checkpoint`` through ``runtime.onnx_runner.OnnxVLM`` (prefill = processor, vision
graph, embedding and decoder; decode = ``next_step``). A configuration that does not export is a row
``{"blocked": ...}``. Every cell (runtime x batch x configuration) is run once per round, in a rotating order,
medians of ``--repeats`` rounds after one warm-up round, in wall time and in this thread's CPU time: with one
thread both runtimes compute in the calling thread, so the CPU time is what other processes on a shared machine
do not inflate (wall time varied by +-50% between rounds on a loaded 2-core box; the table's "of pr" is the CPU-time
speedup over the predicted one). One thread by default (``bench_speed``'s reasons).
Writes ``--out`` (default ``bench/results/comp_speed.json``) atomically and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_speed  # noqa: E402  (constants, machine and command-line helpers)
from pages import comp as comp_page  # noqa: E402  (the results page's section it prints)

DEFAULT_OUT = bench_speed.ROOT / "bench" / "results" / "comp_speed.json"
CONFIGS = ("uniform", "per_layer", "per_layer_rounded")
ALIGN = 8  # channels
FLOPS_TOLERANCE = 0.01  # per_layer configurations' decoder FLOPs against uniform's
SPREAD = (0.5, 1.5)  # per_layer widths: uniform's times a seeded factor in this range


# -- the model --------------------------------------------------------------------------------------------------


# -- the FLOPs prediction ---------------------------------------------------------------------------------------


def decode_load(sites, context: int, lm_head: torch.nn.Linear):
    """The ``PromptLoad`` of one decode step: one row through every decoder site, attention over ``context``
    cached positions, the LM head on one position."""
    from lmms_topo_plugin.scorers.comp.flops import PromptLoad

    text = [site for site in sites if site.tower == "text"]
    return PromptLoad(tokens=1, visual=0, rows={site.name: int(site.tower == "text") for site in sites},
                      pairs={site.name: context for site in text if site.kind == "heads"},
                      fixed=2 * lm_head.in_features * lm_head.out_features)


def flops_models(loaded, prompt, decode_tokens: int) -> dict:
    """``FlopsModel``s of the dense model: ``prefill`` as timed (logits of the last position) and ``decode`` (one
    step at the mean context length)."""
    from lmms_topo_plugin.models.prompting import encode
    from lmms_topo_plugin.scorers.comp.flops import FlopsModel, measure_load
    from lmms_topo_plugin.surgery.widths import width_sites

    sites = width_sites(loaded.adapter)
    inputs = dict(encode(loaded.processor, loaded.adapter, [prompt]))
    visual = loaded.adapter.image_token_mask(inputs["input_ids"])
    context = inputs["input_ids"].shape[1] + (decode_tokens + 1) // 2
    return {
        "prefill": FlopsModel(sites, [measure_load(loaded.model, sites, inputs, visual)], 0),
        "decode": FlopsModel(sites, [decode_load(sites, context, loaded.model.lm_head)], 0),
    }


def unit_costs(flops_model) -> dict[str, float]:
    """FLOPs per kept unit of every site (a site's FLOPs are linear in its units)."""
    return {name: value / flops_model.dense_units[name] for name, value in flops_model.site_flops().items()}


def decoder_flops(counts: dict[str, int], cost: dict[str, float]) -> float:
    return sum(count * cost[name] for name, count in counts.items())


# -- the widths -------------------------------------------------------------------------------------------------


def decoder_sites(flops_model, kind: str) -> list[str]:
    """The decoder's ``attn`` or ``mlp`` site names, in layer order."""
    names = [name for name in flops_model.dense_units if name.startswith("text.") and name.endswith(f".{kind}")]
    return sorted(names, key=lambda name: int(name.split(".")[1]))


def plan_uniform(flops_model, rate: float) -> dict[str, int]:
    """Every decoder layer keeps ``round((1 - rate) x`` its head groups ``)`` and the MLP channels (a multiple of
    :data:`ALIGN`) that bring the decoder's prefill FLOPs closest to ``1 - rate`` of dense."""
    cost, dense = unit_costs(flops_model), flops_model.dense_units
    attn, mlp = decoder_sites(flops_model, "attn"), decoder_sites(flops_model, "mlp")
    groups = dense[attn[0]]
    heads = min(groups, max(1, round(groups * (1 - rate))))
    target = (1 - rate) * decoder_flops({name: dense[name] for name in attn + mlp}, cost)
    channels = (target - sum(heads * cost[name] for name in attn)) / sum(cost[name] for name in mlp)
    channels = min(dense[mlp[0]] // ALIGN * ALIGN, max(ALIGN, round(channels / ALIGN) * ALIGN))
    return {**dict.fromkeys(attn, heads), **dict.fromkeys(mlp, channels)}


def rebalance(counts: dict[str, int], names: list[str], cost: dict[str, float], target: float,
              high: dict[str, int], step: int) -> dict[str, int]:
    """``counts`` with ``names`` moved ``step`` at a time (the one with the most room first, within
    ``[step, high]``) until the decoder FLOPs are within half a step of ``target``."""
    counts = dict(counts)
    while True:
        gap = target - decoder_flops(counts, cost)
        sign = 1 if gap > 0 else -1
        room = {name: (high[name] - counts[name] if sign > 0 else counts[name] - step) for name in names}
        name = max(names, key=room.__getitem__)
        if room[name] < step or abs(gap) <= step * cost[name] / 2:
            return counts
        counts[name] += sign * step


def plan_per_layer(flops_model, uniform: dict[str, int], seed: int) -> dict[str, int]:
    """Seeded irregular widths at uniform's decoder FLOPs and attention/MLP mix: head groups moved between random
    layers (uniform's total kept), channels uniform's times a random factor in :data:`SPREAD`, balanced to uniform's
    FLOPs, none left a multiple of :data:`ALIGN`."""
    rng = random.Random(seed)
    cost, dense = unit_costs(flops_model), flops_model.dense_units
    attn, mlp = decoder_sites(flops_model, "attn"), decoder_sites(flops_model, "mlp")
    counts = dict(uniform)
    for _ in range(len(attn)):
        give, take = rng.sample(attn, 2)
        amount = min(rng.randint(1, max(1, uniform[give] // 2)), counts[give] - 1, dense[take] - counts[take])
        counts[give], counts[take] = counts[give] - amount, counts[take] + amount
    factors = {name: rng.uniform(*SPREAD) for name in mlp}  # scaled so that the MLPs keep uniform's FLOPs
    scale = decoder_flops({name: uniform[name] for name in mlp}, cost) / sum(
        uniform[name] * factors[name] * cost[name] for name in mlp)
    for name in mlp:
        counts[name] = min(dense[name] - 1, max(1, round(uniform[name] * factors[name] * scale)))
    counts = rebalance(counts, mlp, cost, decoder_flops(uniform, cost), {name: dense[name] - 1 for name in mlp}, 1)
    for index, name in enumerate(mlp):
        if counts[name] % ALIGN == 0:  # off the grid, alternately up and down so that the total hardly moves
            counts[name] += 1 if index % 2 and counts[name] < dense[name] - 1 else -1
    return checked_flops(counts, uniform, cost)


def plan_rounded(flops_model, per_layer: dict[str, int], uniform: dict[str, int]) -> dict[str, int]:
    """``per_layer``'s channels rounded to multiples of :data:`ALIGN`, re-balanced to uniform's FLOPs in steps of
    :data:`ALIGN` (head groups unchanged: whole units already)."""
    cost, dense = unit_costs(flops_model), flops_model.dense_units
    mlp = decoder_sites(flops_model, "mlp")
    high = {name: dense[name] // ALIGN * ALIGN for name in mlp}
    counts = {**per_layer, **{name: min(high[name], max(ALIGN, round(per_layer[name] / ALIGN) * ALIGN))
                              for name in mlp}}
    return checked_flops(rebalance(counts, mlp, cost, decoder_flops(uniform, cost), high, ALIGN), uniform, cost)


def checked_flops(counts: dict[str, int], uniform: dict[str, int], cost: dict[str, float]) -> dict[str, int]:
    """``counts``, after checking their decoder FLOPs are uniform's within :data:`FLOPS_TOLERANCE`."""
    ratio = decoder_flops(counts, cost) / decoder_flops(uniform, cost)
    if abs(ratio - 1) > FLOPS_TOLERANCE:
        raise SystemExit(f"per-layer widths at {ratio:.3f} of uniform's FLOPs (the widths cannot absorb the spread; "
                         f"try another --rates)")
    return counts


def plans(flops_model, rate: float, seed: int) -> dict[str, dict[str, int]]:
    """The kept unit counts per decoder site of each of :data:`CONFIGS` at ``rate``."""
    uniform = plan_uniform(flops_model, rate)
    per_layer = plan_per_layer(flops_model, uniform, seed)
    return {"uniform": uniform, "per_layer": per_layer,
            "per_layer_rounded": plan_rounded(flops_model, per_layer, uniform)}


def kept_units(counts: dict[str, int], dense_units: dict[str, int], seed: int) -> dict[str, list[int]]:
    """Seeded unit indices of each site's count (which units stay does not change the speed)."""
    rng = random.Random(seed)
    return {name: sorted(rng.sample(range(dense_units[name]), count)) for name, count in counts.items()}


def pruned_copy(dense, name: str, kept: dict[str, list[int]], layout: str):
    """A deep copy of the dense ``LoadedModel`` with ``kept`` sliced in ``layout`` and the widths recorded in its
    config (so that the exported checkpoint reloads at its widths)."""
    from lmms_topo_plugin.families import adapter_class_for
    from lmms_topo_plugin.models.loading import LoadedModel
    from lmms_topo_plugin.records import PRUNING, set_pruning_record
    from lmms_topo_plugin.surgery.widths import slice_widths, widths_record

    model = copy.deepcopy(dense.model)
    adapter = adapter_class_for(model.config)(model)
    slice_widths(adapter, kept, layout)
    record = {"method": "bench_comp_speed", "widths": widths_record(kept, layout)}
    set_pruning_record(model.config, PRUNING.stamp(record))
    return LoadedModel(model, dense.processor, adapter, f"random-weight LLaVA, {name}")


def describe_widths(counts: dict[str, int], flops_model) -> dict:
    """Head groups and MLP channels per layer, and how many channel counts are off the :data:`ALIGN` grid."""
    heads = [counts.get(name, flops_model.dense_units[name]) for name in decoder_sites(flops_model, "attn")]
    channels = [counts.get(name, flops_model.dense_units[name]) for name in decoder_sites(flops_model, "mlp")]
    return {"head_groups": heads, "mlp_channels": channels,
            "channels_off_grid": sum(count % ALIGN != 0 for count in channels)}


def predictions(counts: dict[str, int], models: dict) -> dict:
    """Predicted FLOPs (dense and pruned) and speedups of each ``FlopsModel``, and the decoder's share removed."""
    prefill = models["prefill"]
    cost = unit_costs(prefill)
    decoder_dense = decoder_flops({name: prefill.dense_units[name] for name in cost if name.startswith("text.")}, cost)
    result = {"decoder_flops_removed": 1 - decoder_flops(counts, cost) / decoder_dense if counts else 0.0}
    for kind, model in models.items():
        pruned = model.flops(counts)
        result[f"{kind}_flops"] = pruned
        result[f"predicted_{kind}_speedup"] = model.dense / pruned
    return result


# -- timing -----------------------------------------------------------------------------------------------------


PHASES = (("prefill", "prefill_s"), ("decode", "decode_s_per_token"))
CLOCKS = (("wall", ""), ("cpu", "cpu_"))  # wall time; this thread's CPU time (what other processes do not inflate)


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


def spans(start: tuple, middle: tuple, end: tuple, steps: int) -> dict[str, float]:
    """Wall and this thread's CPU seconds of the prefill (``start`` to ``middle``) and per decode step."""
    return {"prefill_s": middle[0] - start[0], "cpu_prefill_s": middle[1] - start[1],
            "decode_s_per_token": (end[0] - middle[0]) / steps, "cpu_decode_s_per_token": (end[1] - middle[1]) / steps}


def torch_cell(loaded, inputs, steps: int) -> Callable[[], dict[str, float]]:
    """One round of PyTorch: a prefill (``search.measure.prefill``) and ``steps`` decode steps after it."""
    from lmms_topo_plugin.search.measure import decode, prefill

    def run() -> dict[str, float]:
        with torch.inference_mode():
            start = clocks()
            prefilled = prefill(loaded.model, inputs)
            middle = clocks()
            decode(loaded.model, prefilled, steps)
            return spans(start, middle, clocks(), steps)
    return run


def ort_cell(runner, prompts, steps: int) -> Callable[[], dict[str, float]]:
    """One round of ONNX Runtime: the runner's prefill (processor, vision, embedding, decoder with the last
    position's logits) and ``steps`` ``next_step`` calls, as ``OnnxVLM.benchmark`` times them."""

    def run() -> dict[str, float]:
        start = clocks()
        embeds, mask, positions = runner.prefill_inputs(prompts)
        logits, past = runner.decode(embeds, mask, runner.empty_past(len(prompts)), positions, last_only=True)
        middle = clocks()
        for _ in range(steps):
            logits, mask, past, positions = runner.next_step(runner.greedy(logits), mask, past, positions)
        return spans(start, middle, clocks(), steps)
    return run


def interleaved(cells: dict[tuple, Callable[[], dict[str, float]]], repeats: int) -> dict[tuple, dict]:
    """Each cell's medians (and samples) over ``repeats`` rounds after one warm-up round, every cell once per
    round, the order rotated by one cell each round (a busy machine slows every cell alike)."""
    keys = list(cells)
    samples: dict[tuple, dict[str, list[float]]] = {key: {} for key in keys}
    for round_ in range(repeats + 1):
        start = time.perf_counter()
        shift = round_ % len(keys)
        for key in keys[shift:] + keys[:shift]:
            for metric, value in cells[key]().items():
                if round_:
                    samples[key].setdefault(metric, []).append(value)
        print(f"round {round_}/{repeats}{' (warm-up)' if not round_ else ''}: {time.perf_counter() - start:.0f} s",
              flush=True)
    return {key: {**{metric: statistics.median(values) for metric, values in metrics.items()},
                  "samples": metrics} for key, metrics in samples.items()}


def onnx_runner(loaded, build_dir: Path, threads: int):
    """The ONNX Runtime runner of ``loaded``'s fp32 build (exported into ``build_dir`` and validated by
    ``export_checkpoint``), or ``{"blocked": one line}`` when it does not export or load."""
    from lmms_topo_plugin.exporters.export import export_checkpoint
    from lmms_topo_plugin.failures import first_line
    from lmms_topo_plugin.runtime.onnx_runner import OnnxVLM

    start = time.perf_counter()
    try:
        export_checkpoint(loaded, build_dir, ("fp32",))
        runner = OnnxVLM(build_dir, provider="cpu", threads=threads)
    except Exception as error:  # noqa: BLE001  (recorded as the row's reason, the run goes on)
        print(f"ONNX export of {build_dir.name} blocked: {type(error).__name__}: {first_line(error)}", flush=True)
        return {"blocked": f"{type(error).__name__}: {first_line(error)}"}
    print(f"exported {build_dir.name} in {time.perf_counter() - start:.0f} s", flush=True)
    return runner


def speedups(cell: dict, dense: dict, predicted: dict) -> dict:
    """Measured speedups against dense, by wall and by CPU time, and their fraction of the FLOPs prediction."""
    result = {}
    for phase, key in PHASES:
        for clock, prefix in CLOCKS:
            speedup = dense[prefix + key] / cell[prefix + key]
            result[f"{phase}_{prefix}speedup"] = speedup
            result[f"{phase}_{prefix}of_predicted"] = speedup / predicted[f"predicted_{phase}_speedup"]
    return result


# -- output -----------------------------------------------------------------------------------------------------


def comparisons(rows: list[dict]) -> list[dict]:
    """Per rate, runtime and batch: per_layer's and per_layer_rounded's measured speed relative to uniform's, by
    wall and by CPU time (equal FLOPs, so 1.0 is what the FLOPs predict)."""
    found = []
    by_key = {(row["rate"], row["config"]): row for row in rows}
    for rate in sorted({row["rate"] for row in rows if row["config"] != "dense"}):
        for runtime in ("pytorch", "onnxruntime"):
            for batch, base in by_key[rate, "uniform"].get(runtime, {}).items():
                for config in ("per_layer", "per_layer_rounded"):
                    cell = by_key[rate, config].get(runtime, {}).get(batch, {})
                    if "blocked" in base or "blocked" in cell:
                        continue
                    found.append({"rate": rate, "runtime": runtime, "batch": batch, "config": config, **{
                        f"{phase}_{prefix}vs_uniform": base[prefix + key] / cell[prefix + key]
                        for phase, key in PHASES for _, prefix in CLOCKS}})
    return found


# -- main -------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8, help="decoder layers (default: %(default)s)")
    parser.add_argument("--hidden", type=int, default=512, help="decoder width, a multiple of 64")
    parser.add_argument("--kv-heads", type=int, default=4, help="key/value heads of the 16 (default: %(default)s)")
    parser.add_argument("--image-tokens", type=int, default=576, help="image tokens, a square (default: %(default)s)")
    parser.add_argument("--rates", default="0.5", help="decoder FLOPs removed, comma-separated (default: %(default)s)")
    parser.add_argument("--batches", default="1,8", help="batch sizes, comma-separated (default: %(default)s)")
    parser.add_argument("--onnx-batches", default="1,8", help="ONNX Runtime batch sizes (default: %(default)s)")
    parser.add_argument("--skip-onnx", action="store_true", help="PyTorch only (no export)")
    parser.add_argument("--repeats", type=int, default=5, help="measured rounds after one warm-up round")
    parser.add_argument("--decode-tokens", type=int, default=16, help="decode steps per round")
    parser.add_argument("--seed", type=int, default=0, help="per_layer widths and kept units")
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads (0: their default)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON (default: %(default)s)")
    args = parser.parse_args(argv)
    args.rates = [float(rate) for rate in args.rates.split(",")]
    args.batches = [int(batch) for batch in args.batches.split(",")]
    args.onnx_batches = [] if args.skip_onnx else [int(batch) for batch in args.onnx_batches.split(",") if batch]
    if args.hidden % 64 or bench_speed.HEADS % args.kv_heads or not all(0 < rate < 1 for rate in args.rates):
        raise SystemExit(f"--hidden must be a multiple of 64, --kv-heads divide {bench_speed.HEADS}, --rates in (0, 1)")
    return args


def configurations(dense, models: dict, args) -> list[dict]:
    """The dense row and, per rate, each of :data:`CONFIGS` (its counts, kept units, widths and predictions)."""
    rows = [{"config": "dense", "rate": 0.0, "layout": None, "loaded": dense, "counts": {},
             "widths": describe_widths({}, models["prefill"]), **predictions({}, models)}]
    for rate in args.rates:
        for config, counts in plans(models["prefill"], rate, args.seed).items():
            layout = "uniform" if config == "uniform" else "per_layer"
            kept = kept_units(counts, models["prefill"].dense_units, args.seed)
            rows.append({"config": config, "rate": rate, "layout": layout, "counts": counts,
                         "loaded": pruned_copy(dense, f"{config} {rate}", kept, layout),
                         "widths": describe_widths(counts, models["prefill"]), **predictions(counts, models)})
    return rows


def measure(rows: list[dict], prompt, args, build_root: Path) -> dict:
    """Every configuration's cells timed side by side; ONNX builds exported first into ``build_root``."""
    from lmms_topo_plugin.models.prompting import encode

    cells, blocked = {}, {}
    for index, row in enumerate(rows):
        loaded = row["loaded"]
        for batch in args.batches:
            inputs = encode(loaded.processor, loaded.adapter, [prompt] * batch)
            cells[index, "pytorch", batch] = torch_cell(loaded, inputs, args.decode_tokens)
        if args.onnx_batches:
            runner = onnx_runner(loaded, build_root / f"{index}-{row['config']}-{row['rate']:g}", args.threads)
            for batch in args.onnx_batches:
                if isinstance(runner, dict):
                    blocked[index, "onnxruntime", batch] = runner
                else:
                    cells[index, "onnxruntime", batch] = ort_cell(runner, [prompt] * batch, args.decode_tokens)
    return {**interleaved(cells, args.repeats), **blocked}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from lmms_topo_plugin.cache import atomic_write_json
    from lmms_topo_plugin.search.measure import default_cost_prompt

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    machine = bench_speed.machine_info()
    started = time.perf_counter()
    dense, image_size = bench_speed.build_model(args.layers, args.hidden, args.image_tokens, args.kv_heads)
    prompt = default_cost_prompt()
    models = flops_models(dense, prompt, args.decode_tokens)
    rows = configurations(dense, models, args)
    print(f"built dense and {len(rows) - 1} pruned copies ({args.layers} layers x {args.hidden}, "
          f"{args.image_tokens} image tokens) in {time.perf_counter() - started:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="comp_speed_") as build_root:
        timed = measure(rows, prompt, args, Path(build_root))
    for index, row in enumerate(rows):
        del row["loaded"], row["counts"]
        for (cell_row, runtime, batch), cell in timed.items():
            if cell_row == index:
                dense_cell = timed.get((0, runtime, batch), {})
                if "blocked" not in cell and "blocked" not in dense_cell:
                    cell = {**cell, **speedups(cell, dense_cell, row)}
                row.setdefault(runtime, {})[str(batch)] = cell
    found = comparisons(rows)
    machine["loadavg_at_end"] = list(os.getloadavg())
    record = {
        "command": bench_speed.command_line(),
        "args": {key: value for key, value in vars(args).items() if key != "out"},
        "model": {"family": "llava", "layers": args.layers, "hidden": args.hidden, "heads": bench_speed.HEADS,
                  "kv_heads": args.kv_heads, "intermediate": models["prefill"].dense_units["text.0.mlp"],
                  "vocab": bench_speed.VOCAB, "image_tokens": args.image_tokens, "image_size": image_size,
                  "dtype": "float32", "weights": "random"},
        "machine": machine,
        "dense_flops": {kind: model.dense for kind, model in models.items()},
        "rows": rows,
        "comparisons": found,
        "wall_s": time.perf_counter() - started,
    }
    atomic_write_json(args.out, record)
    print(comp_page.comp_speed_block(record))
    print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
