#!/usr/bin/env python3
"""CoMP against the single-mode baselines at matched prefill FLOPs on the bundled model: the reviewer's test.

    .venv/bin/python bench/bench_comp.py                  # what the results pages report (resumable)
    .venv/bin/python bench/bench_comp.py --rates 0.6 --limit 50 --out /tmp/c    # a look

Everything is evaluated by :func:`lmms_topo_plugin.search.run_sweep` (lmms-eval in-process, one loaded model), so
there is no second evaluation code path. Three steps, into ``--out`` (default ``bench/results/comp/``):

1. **Choice on dev** (``dev/``): ``comp`` at 60% with ``comp_step`` 0.05 and 0.1, on the ``topo_synth_dev`` split
   (500 questions); the step with the higher dev exact match is used below. Nothing else is tuned.
2. **Test, once** (``test/``, ``test_seed1/``, ``test_seed2/``, ``layers/``, ``tokens/``), on ``topo_synth`` (the
   500-question test split), at ``--rates`` of the dense prefill FLOPs (30, 45, 60, 75%):
   - ``comp`` and its ablations: without the collaborative terms (``comp_collaborative=false``), without MPS
     (``comp_schedule=joint``), exploration off (``comp_explore=0``);
   - width-only baselines: ``wanda_widths`` (plain Wanda, parameters only) and ``random_widths`` (3 seeds);
   - layer removal at matched FLOPs: ``block_influence`` and ``random`` (3 seeds), removing the fewest decoder
     layers whose FLOPs reach the rate;
   - token-only at matched FLOPs: ``fastv`` and ``cit`` (``method=none``, ``token_layer=2``) with the
     ``token_keep`` whose FLOPs reach the rate; a rate token pruning cannot reach is reported as such.
   The FLOPs basis of the matching is the one comp's search uses: the model's FLOPs model on the held-out
   calibration prompts (:mod:`lmms_topo_plugin.scorers.comp.flops`); every row also reports the FLOPs the sweep
   counted on its cost prompt (``flops_removed``).
3. ``comp.json`` (every row: method, rate, exact match, FLOPs removed; the command; the machine) and
   ``comp.png`` (exact match against FLOPs removed, one line per method, random: mean over seeds).

Training-free: CoMP's paper fine-tunes during and after pruning; nothing here is fine-tuned. One torch thread by
default (``--threads``), as the other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pages import comp as comp_page  # noqa: E402  (bench/pages: standard library only)

DEFAULT_OUT = ROOT / "bench" / "results" / "comp"
RATES = [0.3, 0.45, 0.6, 0.75]
DEV_STEPS = ("0.05", "0.1")
DEV_RATE = 0.6
TEST_TASKS, DEV_TASKS = ["topo_synth"], ["topo_synth_dev"]
METRIC, DEV_METRIC = "topo_synth/exact_match", "topo_synth_dev/exact_match"
MODEL_ARGS = {"device": "cpu", "batch_size": "16"}
SEEDS = (0, 1, 2)
TOKEN_LAYER = 2
ABLATIONS = {"comp": {}, "comp (no collaborative terms)": {"comp_collaborative": "false"},
             "comp (no MPS: joint)": {"comp_schedule": "joint"}, "comp (no exploration)": {"comp_explore": "0"}}


def variant(method: str, params: dict[str, str]) -> str:
    return method + ("[" + ",".join(f"{key}={value}" for key, value in params.items()) + "]" if params else "")


def sweep(out: Path, methods: list[str], budgets: list[float], tasks: list[str], metric: str, limit: int | None,
          seed: int = 0) -> dict:
    from lmms_topo_plugin.search import SweepSpec, run_sweep

    return run_sweep(SweepSpec(model_args={**MODEL_ARGS, "seed": str(seed)}, methods=methods, budgets=budgets,
                               tasks=tasks, out=out, rule="metric>=0", metric=metric, objective="flops", limit=limit,
                               cost_repeats=1))


def add_run_arguments(parser: argparse.ArgumentParser, default_out: Path) -> None:
    """``--limit``, ``--out`` and ``--threads``, the options of the accuracy benchmarks that sweep the bundled model."""
    parser.add_argument("--limit", type=int, default=None, help="documents per task (default: all)")
    parser.add_argument("--out", type=Path, default=default_out, help="folder (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s; 0: torch's)")


def set_torch_threads(threads: int) -> int:
    """``threads`` torch threads (0: torch's default); the count torch runs with."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def flops_model():
    """The dense bundled model's FLOPs model on the held-out calibration prompts comp's search uses."""
    from lmms_topo_plugin.api import load_pruned
    from lmms_topo_plugin.calibration.collect import move_inputs
    from lmms_topo_plugin.calibration.sources import default_calibration_prompts
    from lmms_topo_plugin.models.prompting import encode
    from lmms_topo_plugin.scorers.comp.config import CompConfig
    from lmms_topo_plugin.scorers.comp.flops import FlopsModel, measure_load
    from lmms_topo_plugin.scorers.comp.method import CompMethod
    from lmms_topo_plugin.surgery.widths import width_sites

    loaded, _ = load_pruned({"device": "cpu"})
    held_out = CompConfig().comp_val
    prompts = default_calibration_prompts(CompMethod.default_samples, 0)[-held_out:]
    sites = width_sites(loaded.adapter)
    loads = []
    for prompt in prompts:
        inputs = move_inputs(encode(loaded.processor, loaded.adapter, [prompt]), "cpu", loaded.model.dtype)
        loads.append(measure_load(loaded.model, sites, inputs, loaded.adapter.image_token_mask(inputs["input_ids"])))
    return FlopsModel(sites, loads, TOKEN_LAYER), loaded.adapter.num_layers


def matched_layers(model, num_layers: int, rate: float) -> int | None:
    """The fewest decoder layers whose FLOPs reach ``rate`` (None: more than keep_first_last allows)."""
    per_site = model.site_flops()
    layer = sum(value for name, value in per_site.items() if name.startswith("text.")) / num_layers
    count = math.ceil(rate * model.dense / layer - 1e-9)
    return count if count <= num_layers - 2 else None


def matched_keep(model, rate: float) -> float | None:
    """The visual-token keep fraction whose FLOPs reach ``rate`` (None: not reachable by tokens alone)."""
    target = (1 - rate) * model.dense
    if model.flops(keep=0.0) > target:
        return None
    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if model.flops(keep=middle) <= target else (low, middle)
    return round(low, 4)


def rows_of(folder: Path, label: str, seed: int = 0) -> list[dict]:
    """The pruned rows a sweep folder holds, with their test exact match and FLOPs removed."""
    from lmms_topo_plugin.search.rules import dense_row, flops_removed

    rows = [json.loads(path.read_text()) for path in sorted((folder / "configs").glob("*.json"))]
    dense = dense_row(rows)
    return [{"family": label, "variant": row["variant"], "seed": seed, "budget": row["budget"],
             "exact_match": row["metrics"][METRIC], "flops_removed": flops_removed(row, dense),
             "search_rate": (row.get("search") or {}).get("rate"), "token_pruning": row.get("token_pruning"),
             "removed_layers": row["removed_layers"]} for row in rows if row["method"] != "none" or
            row.get("token_pruning")] + [{"family": "dense", "variant": "none", "seed": seed, "budget": 0.0,
                                          "exact_match": dense["metrics"][METRIC], "flops_removed": 0.0,
                                          "search_rate": None, "token_pruning": None, "removed_layers": []}]


def command_line() -> str:
    """The command as run, paths inside the checkout relative to it."""
    python, script = Path(sys.executable), Path(sys.argv[0]).resolve()
    inside = [os.path.relpath(path, ROOT) if str(path).startswith(str(ROOT)) else str(path) for path in (python, script)]
    return shlex.join([*inside, *sys.argv[1:]])


def plot(rows: list[dict], path: Path) -> None:
    from lmms_topo_plugin.plotting import figure_png, subplots

    figure, axis = subplots(figsize=(7, 4.2))
    families = sorted({row["family"] for row in rows if row["family"] != "dense"})
    for family in families:
        points: dict[float, list[tuple[float, float]]] = {}
        for row in rows:
            if row["family"] == family and row["flops_removed"] is not None:
                points.setdefault(row["target_rate"], []).append((row["flops_removed"], row["exact_match"]))
        xs = [statistics.mean(x for x, _ in values) for _, values in sorted(points.items())]
        ys = [statistics.mean(y for _, y in values) for _, values in sorted(points.items())]
        axis.plot(xs, ys, marker="o", label=family, linestyle="--" if "random" in family else "-")
    dense = next(row["exact_match"] for row in rows if row["family"] == "dense")
    axis.axhline(dense, color="#7f7f7f", linewidth=1, label="dense")
    axis.set_xlabel("share of dense prefill FLOPs removed (counted on the cost prompt)")
    axis.set_ylabel("exact match, topo_synth test (500)")
    axis.set_title("bundled model, training-free: CoMP vs single-mode baselines at matched FLOPs", fontsize=9)
    axis.legend(fontsize=7, ncol=2)
    path.write_bytes(figure_png(figure))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default=",".join(map(str, RATES)), help="FLOPs rates (default: %(default)s)")
    add_run_arguments(parser, DEFAULT_OUT)
    args = parser.parse_args()
    from lmms_topo_plugin.cache import atomic_write_json

    threads = set_torch_threads(args.threads)
    rates = [float(rate) for rate in args.rates.split(",")]
    loadavg = list(os.getloadavg())
    dev = sweep(args.out / "dev", [variant("comp", {"comp_step": step}) for step in DEV_STEPS], [DEV_RATE],
                DEV_TASKS, DEV_METRIC, args.limit)
    by_step = {step: next(row["metrics"][DEV_METRIC] for row in dev["rows"]
                          if row["variant"] == variant("comp", {"comp_step": step})) for step in DEV_STEPS}
    step = max(DEV_STEPS, key=lambda s: (by_step[s], -float(s)))
    print(f"dev: exact match by comp_step {by_step}; using comp_step={step}", flush=True)
    widths = {name: variant(method, {**params, "comp_step": step}) for name, (method, params) in {
        **{label: ("comp", params) for label, params in ABLATIONS.items()},
        "wanda_widths": ("wanda_widths", {}), "random_widths": ("random_widths", {})}.items()}
    sweep(args.out / "test", list(widths.values()), rates, TEST_TASKS, METRIC, args.limit)
    for seed in SEEDS[1:]:
        sweep(args.out / f"test_seed{seed}", [widths["random_widths"]], rates, TEST_TASKS, METRIC, args.limit, seed)
    model, num_layers = flops_model()
    layer_budgets = {rate: matched_layers(model, num_layers, rate) for rate in rates}
    sparsities = sorted({count / num_layers for count in layer_budgets.values() if count})
    for seed in SEEDS:
        methods = ["block_influence", "random"] if seed == 0 else ["random"]
        sweep(args.out / f"layers_seed{seed}", methods, sparsities, TEST_TASKS, METRIC, args.limit, seed)
    keeps = {rate: matched_keep(model, rate) for rate in rates}
    token_variants = [variant("none", {"token_method": method, "token_keep": str(keep),
                                       "token_layer": str(TOKEN_LAYER)})
                      for keep in sorted({k for k in keeps.values() if k is not None}) for method in ("fastv", "cit")]
    if token_variants:
        sweep(args.out / "tokens", token_variants, [rates[0]], TEST_TASKS, METRIC, args.limit)

    label_of = {value: key for key, value in widths.items()}
    rows = []
    for folder, seed in [("test", 0), *((f"test_seed{s}", s) for s in SEEDS[1:])]:
        for row in rows_of(args.out / folder, "", seed):
            if row["variant"] in label_of:
                rows.append({**row, "family": label_of[row["variant"]], "target_rate": row["budget"]})
            elif row["family"] == "dense" and seed == 0:
                rows.append({**row, "target_rate": 0.0})
    for seed in SEEDS:
        for row in rows_of(args.out / f"layers_seed{seed}", "", seed):
            for rate, count in layer_budgets.items():
                if count and row["variant"] != "none" and math.isclose(row["budget"], count / num_layers):
                    rows.append({**row, "family": f"{row['variant']} (layers)", "target_rate": rate})
    if token_variants:
        for row in rows_of(args.out / "tokens", ""):
            for rate, keep in keeps.items():
                tokens = row["token_pruning"] or {}
                if keep is not None and tokens.get("keep") == keep:
                    rows.append({**row, "family": f"{tokens['method']} (tokens)", "target_rate": rate})
    atomic_write_json(args.out.parent / "comp.json", {
        "command": command_line(), "dev": {"metric": DEV_METRIC, "rate": DEV_RATE, "by_step": by_step,
                                           "chosen_step": step},
        "rates": rates, "metric": METRIC, "training_free": True,
        "matched": {"layers": {str(rate): count for rate, count in layer_budgets.items()},
                    "token_keep": {str(rate): keep for rate, keep in keeps.items()},
                    "basis": "FLOPs model of the dense model on the held-out calibration prompts comp uses"},
        "rows": rows,
        "machine": {"cpus_available": len(os.sched_getaffinity(0)), "torch_threads": threads,
                    "loadavg_at_start": loadavg, "loadavg_at_end": list(os.getloadavg())},
    })
    plot(rows, args.out.parent / "comp.png")
    print(comp_page.comp_table(rows, rates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
