"""The results pages of the documentation site are generated from bench/results/ (bench/pages/), never typed.

Every renderer is checked against a small hand-made input with its exact expected output, and every page against a
hand-made results folder; tests/test_docs_pages.py checks the committed pages against the committed results.
"""

import csv
import json
import sys
from pathlib import Path

import pytest

from script_modules import load_script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import pages  # noqa: E402  (bench/pages)
from pages import comp, common, onnx, quality, recovery, speed, tokens, topology  # noqa: E402


def _load(name: str):
    return load_script(Path("bench") / f"{name}.py")


# ---------------------------------------------------------------------------------------------- sweep rows


def sweep_row(method, budget, removed, presence, math, overall, *, key=None, score_s=0.0, eval_s=2.0,
              prefill_s=0.010, decode_s=0.004, num_layers=4):
    """One sweep row as ``configs/*.json`` holds it, with the metrics lmms-eval reports for topo_synth."""
    return {
        "key": key or f"{method}-{budget:g}",
        "method": method, "budget": budget, "calib_limit": None, "n_remove": len(removed), "num_layers": num_layers,
        "removed_layers": removed, "calibration": None, "method_params": {}, "score_s": score_s,
        "cost": {"prefill_s": prefill_s, "decode_s_per_token": decode_s, "peak_memory_bytes": 5e8,
                 "memory_kind": "cpu_rss_peak", "parameters": 3_000_000, "num_layers": num_layers - len(removed),
                 "repeats": 5, "device": "cpu", "prefill_tokens": 40},
        "eval_s": eval_s,
        "metrics": {"topo_synth/exact_match": overall, "topo_synth_nonmath/exact_match": presence,
                    "topo_synth_mathdomain/exact_match": math,
                    "topo_synth_presence/exact_match": presence, "topo_synth_presence/pope_f1": 0.5,
                    "topo_synth_math/exact_match": math},
        "stderr": {"topo_synth/exact_match": 0.01},
    }


MAIN_ROWS = [
    sweep_row("none", 0.0, [], 1.0, 0.9, 0.95, eval_s=3.0, prefill_s=0.012, decode_s=0.006),
    sweep_row("random", 0.25, [1], 0.4, 0.6, 0.5),
    sweep_row("random", 0.5, [1, 2], 0.1, 0.3, 0.2),
    sweep_row("spacing", 0.25, [2], 0.5, 0.7, 0.6, eval_s=1.0),
    sweep_row("topology", 0.25, [1], 0.7, 0.5, 0.6, score_s=4.0, prefill_s=0.008, decode_s=0.005),
    sweep_row("topology", 0.5, [1, 2], 0.2, 0.2, 0.2, eval_s=5.0),
]
SEED_ROWS = [
    sweep_row("none", 0.0, [], 1.0, 0.9, 0.95, key="seed-dense"),
    sweep_row("random", 0.25, [2], 0.6, 0.8, 0.7, key="seed-random-0.25"),
    sweep_row("random", 0.5, [1, 3], 0.3, 0.5, 0.4, key="seed-random-0.5"),
]

DENSE_SCORES = {"presence": 1.0, "math": 0.9, "overall": 0.95}
QUALITY = {
    "dense": DENSE_SCORES,
    "methods": {
        "random": [
            {"fraction": 0.0, "removed": [[]], "runs": [DENSE_SCORES]},
            {"fraction": 0.25, "removed": [[1], [2]],
             "runs": [{"presence": 0.4, "math": 0.6, "overall": 0.5}, {"presence": 0.6, "math": 0.8, "overall": 0.7}]},
            {"fraction": 0.5, "removed": [[1, 2], [1, 3]],
             "runs": [{"presence": 0.1, "math": 0.3, "overall": 0.2}, {"presence": 0.3, "math": 0.5, "overall": 0.4}]},
        ],
        "spacing": [
            {"fraction": 0.0, "removed": [[]], "runs": [DENSE_SCORES]},
            {"fraction": 0.25, "removed": [[2]], "runs": [{"presence": 0.5, "math": 0.7, "overall": 0.6}]},
        ],
        "topology": [
            {"fraction": 0.0, "removed": [[]], "runs": [DENSE_SCORES]},
            {"fraction": 0.25, "removed": [[1]], "runs": [{"presence": 0.7, "math": 0.5, "overall": 0.6}]},
            {"fraction": 0.5, "removed": [[1, 2]], "runs": [{"presence": 0.2, "math": 0.2, "overall": 0.2}]},
        ],
    },
}

QUALITY_MARKDOWN = """\
| method | 0 (0 layers) | 0.25 (1 layer) | 0.5 (2 layers) |
|---|---|---|---|
| random | 0.950 | 0.600 (0.50..0.70) | 0.300 (0.20..0.40) |
| spacing | 0.950 | 0.600 | n/a |
| topology | 0.950 | 0.600 | 0.200 |

n/a: a budget the method cannot reach, so the run refused it: `spacing` at 0.5 (it never removes two adjacent
layers and keeps the first and the last).

Overall, topology ties random and spacing at 1 layer and is behind random at 2 layers (the best other layer method
at each budget; `random` counts with its mean over seeds):

| removed | topology | best other method | difference |
|---|---|---|---|
| 1 layer (0.25) | 0.600 | random, spacing 0.600 | +0.000 |
| 2 layers (0.5) | 0.200 | random 0.300 | -0.100 |

Per kind, the best method at each budget (exact match, mean over seeds; topology's own score in brackets where it
is not the best):

| kind | 1 layer | 2 layers |
|---|---|---|
| presence | topology 0.70 | random, topology 0.20 |
| math | random, spacing 0.70 (topology 0.50) | random 0.40 (topology 0.20) |"""


def write_sweep(folder: Path, rows: list[dict], sweep: dict | None = None, **files) -> None:
    """A sweep folder as run_sweep leaves it: configs/*.json, results.csv (key and passes here), sweep.json, …"""
    (folder / "configs").mkdir(parents=True)
    for row in rows:
        (folder / "configs" / f"{row['key']}.json").write_text(json.dumps(row))
    with open(folder / "results.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "method", "passes"])
        for row in rows:
            writer.writerow([row["key"], row["method"], {None: "", True: "True", False: "False"}[row.get("passes")]])
    for name, content in {"sweep.json": sweep or {"wall_s": 30.0, "load_s": 0.5, "tasks": ["topo_synth"],
                                                   "limit": None}, **files}.items():
        (folder / name).write_text(json.dumps(content))


def test_quality_block_renders_known_input_exactly():
    assert quality.quality_block(QUALITY) == QUALITY_MARKDOWN


def test_quality_comes_from_the_sweep_rows_and_the_extra_seeds():
    assert common.quality_from_sweeps(MAIN_ROWS, [SEED_ROWS]) == QUALITY


def test_an_extra_seed_of_a_configuration_the_main_sweep_lacks_is_an_error():
    with pytest.raises(ValueError, match="spacing at 0.5: an extra seed"):
        common.quality_from_sweeps(MAIN_ROWS, [[sweep_row("spacing", 0.5, [1, 3], 0, 0, 0)]])


def test_read_sweep_takes_the_rows_results_csv_lists(tmp_path):
    stale = sweep_row("angular", 0.25, [2], 0, 0, 0, key="from-an-earlier-spec")
    write_sweep(tmp_path, MAIN_ROWS)
    (tmp_path / "configs" / "stale.json").write_text(json.dumps(stale))
    rows = common.read_sweep(tmp_path)
    assert [row["key"] for row in rows] == [row["key"] for row in MAIN_ROWS]
    assert rows[0] == {**MAIN_ROWS[0], "passes": None}
    (tmp_path / "configs" / "spacing-0.25.json").unlink()
    with pytest.raises(FileNotFoundError, match="no row for key spacing-0.25"):
        common.read_sweep(tmp_path)


def test_load_quality_reads_the_sweep_folder_and_its_seed_folders(tmp_path):
    write_sweep(tmp_path / "quality_sweep", MAIN_ROWS)
    write_sweep(tmp_path / "quality_sweep" / "seed1", SEED_ROWS)
    assert common.load_quality(tmp_path) == QUALITY


# ---------------------------------------------------------------------------------------------- sweep block

RELOAD = {
    "command": ".venv/bin/python bench/bench_quality.py",
    "sparsity": 0.25,
    "reload_s": {"none": 0.5, "random": 1.0, "spacing": 1.0, "topology": 6.0},
    "reload_cached_s": {"random": 1.0, "spacing": 1.0, "topology": 1.5},
    "spec": {"methods": ["random", "spacing", "topology"], "budgets": [0.25, 0.5], "tasks": ["topo_synth"],
             "limit": None, "metric": "topo_synth/exact_match", "rule": "keep>=0.6", "objective": "layers"},
    "machine": {"cpus_available": 2, "torch_threads": 1, "loadavg_at_start": [1.23, 1, 1],
                "loadavg_at_end": [2.0, 1, 1]},
}
PASSING = {"random-0.25": True, "topology-0.25": True}


def sweep_data(winner_key: str | None = "topology-0.25", passing: dict = PASSING) -> dict:
    rows = [{**row, "passes": None if row["method"] == "none" else passing.get(row["key"], False)} for row in MAIN_ROWS]
    return {"rows": rows, "sweep": {"wall_s": 30.0, "load_s": 0.5, "tasks": ["topo_synth"], "limit": None},
            "winner": None if winner_key is None else {"winner": {"key": winner_key}}, "reload": RELOAD,
            "seeds": [{"name": "seed1", "sweep": {"wall_s": 12.0}, "configurations": 3}]}


SWEEP_MARKDOWN = """\
`.venv/bin/python bench/bench_quality.py` ran one sweep (`lmms_topo_plugin.search.run_sweep`, what `topo-prune
sweep` runs) of the bundled model: 3 layer methods (random, spacing and topology) × 2 budgets (0.25, 0.5) and the
dense reference, each evaluated by lmms-eval on `topo_synth` (the whole test split) with its cost measured: 6
configurations, dense included (1 not reachable: spacing at 0.5), in 30.0 s of wall time with 1 torch thread on 2
CPU cores (1-minute load average 1.2 at the start and 2.0 at the end), loading the weights once (0.50 s). Each
configuration's evaluation and cost measurement took a median 2.0 s (`eval_s`). `random`'s other seeds are 1 more
sweeps of `random` alone (`seed1/`: 3 configurations in 12.0 s; each has its own dense row). Everything is in
`bench/results/quality_sweep/` (`results.md`, `results.csv`, `pareto.png`, `winner.json`, `sweep.json`,
`reload_overhead.json`, one JSON per configuration in `configs/`).

Winner under `keep>=0.6` on `topo_synth/exact_match`, objective `layers`: **topology at 0.25**, removing layer 1 (1
of 4): 0.600 ± 0.010 = 63.2% of dense 0.950. Measured against dense: prefill speedup 1.50×, decode speedup 1.20×
(ideal L/L' 1.33×); the dense prefill of this 3.0M-parameter model takes 12.0 ms, and the [layer speed
page](speed.md) measures layer removal on a model whose decoder dominates the cost.

Time saved against reloading per configuration, computed from these measured numbers: reloading would pay, for each
configuration, one fresh `load_pruned` of its method (weights load + calibration + scoring + surgery,
`recompute=true`), measured in the same run once per method at sparsity 0.25 (`reload_overhead.json`); the sweep
paid one weights load (`load_s` in `sweep.json`) and one calibration + scoring per method (its rows' `score_s`; the
sweep ran with `recompute=true` too). Evaluation and cost measurement are the same either way and are not counted.

| method | configurations | one reload | reloads | reloads, scores cached | sweep: scoring once |
|---|---|---|---|---|---|
| dense | 1 | 0.5 s | 0.5 s | 0.5 s | – |
| random | 2 | 1.0 s | 2.0 s | 2.0 s | 0.0 s |
| spacing | 1 | 1.0 s | 1.0 s | 1.0 s | 0.0 s |
| topology | 2 | 6.0 s | 12.0 s | 7.5 s | 4.0 s |
| all | 6 | | 15.5 s | 11.0 s | 4.5 s (with the 0.50 s load) |

Saved: 15.5 s − 4.5 s = **11.0 s** (37% of the sweep's wall time). Against reloads that reuse cached scores (each
method's first budget calibrates, its other budgets hit the cache), 11.0 s − 4.5 s = 6.5 s."""


def test_sweep_block_renders_known_input_exactly():
    assert quality.sweep_block(sweep_data()) == SWEEP_MARKDOWN


def test_time_saved_is_the_reloads_minus_one_load_and_one_scoring_per_method():
    data = sweep_data()
    saved = quality.reload_comparison(data["rows"], data["sweep"], RELOAD)
    assert saved["reloads_s"] == 0.5 + 2 * 1.0 + 1 * 1.0 + 2 * 6.0
    assert saved["reloads_cached_s"] == 0.5 + 2 * 1.0 + 1.0 + (6.0 + 1.5)
    assert saved["sweep_s"] == 0.5 + 4.0
    assert saved["saved_s"] == pytest.approx(11.0) and saved["saved_cached_s"] == pytest.approx(6.5)
    assert list(saved["per_method"]) == ["none", "random", "spacing", "topology"]


@pytest.mark.parametrize("winner_key", [None, "topology-0.25"])  # no winner.json, or one an earlier sweep left
def test_sweep_block_without_a_passing_winner_names_the_best_pruned(winner_key):
    text = quality.sweep_block(sweep_data(winner_key, passing={}))
    assert ("objective `layers`: none; no configuration passes. The best pruned ones, spacing at 0.25 (1 of 4 layers) "
            "and topology at 0.25 (1 of 4 layers), score 0.600 = 63.2% of dense 0.950.") in " ".join(text.split())
    assert "`winner.json`" not in text and "**" not in text.split("\n\n")[1]


def test_sweep_block_says_when_cached_reloads_would_be_cheaper():
    data = sweep_data()
    data["rows"][4] = {**data["rows"][4], "score_s": 20.0}
    assert " ".join(quality.sweep_block(data).split()).endswith(
        "Saved: 15.5 s − 20.5 s = **-5.0 s** (-17% of the sweep's wall time). Against reloads that reuse cached "
        "scores (each method's first budget calibrates, its other budgets hit the cache), 11.0 s − 20.5 s = -9.5 s: "
        "no saving; the sweep's scoring once took longer than those reloads in this run.")


# ---------------------------------------------------------------------------------------------- layer speed


def speed_row(config, removed, layers, prefill, decode, memory, per_layer, rest, vs):
    """One bench_speed.py row: measured cost, the layers/rest split (prefill s, decode s/token), vs dense."""
    return {"config": config, "removed": removed, "num_layers": layers, "prefill_s": prefill,
            "decode_s_per_token": decode, "peak_memory_bytes": memory, "prefill_tokens": 597,
            "prefill_layers_s": per_layer[0] * layers, "prefill_other_s": rest[0],
            "prefill_layers_s_per_layer": per_layer[0],
            "decode_layers_s_per_token": per_layer[1] * layers, "decode_other_s_per_token": rest[1],
            "decode_layers_s_per_token_per_layer": per_layer[1], "vs_dense": vs}


LAYER_SPEED = {
    "command": "/somewhere/checkout/.venv/bin/python bench/bench_speed.py --layers 8",
    "args": {"layers": 8, "repeats": 3, "decode_tokens": 16},
    "model": {"family": "llava", "layers": 8, "hidden": 256, "heads": 16, "vocab": 32000, "image_tokens": 576,
              "image_size": 336, "dtype": "float32", "weights": "random"},
    "machine": {"cpus_available": 2, "torch_threads": 1, "loadavg_at_start": [0.5, 0, 0],
                "loadavg_at_end": [1.0, 0, 0]},
    "goal_of_ideal": 0.9,
    "fixed_parts_timed_alone": {"vision_tower_and_projector_s": 0.02, "lm_head_last_position_s": 0.001,
                                "lm_head_all_positions_s": 0.1},
    "rows": [
        speed_row("dense", [], 8, 1.0, 0.010, 2e9, (0.1, 0.001), (0.2, 0.002), {}),
        speed_row("half", [1, 3, 5, 7], 4, 0.6, 0.0055, 1.2e9, (0.1, 0.001125), (0.2, 0.001), {
            "prefill_speedup": 1.0 / 0.6, "decode_speedup": 0.010 / 0.0055, "ideal_speedup": 2.0,
            "prefill_of_ideal": 1.0 / 1.2, "decode_of_ideal": 0.010 / 0.011, "memory_ratio": 0.6,
            "prefill_layers_speedup": 2.0, "prefill_bound": 1.0 / 0.6, "prefill_other_share_dense": 0.2,
            "decode_layers_speedup": 0.008 / 0.0045, "decode_bound": 0.010 / 0.006, "decode_other_share_dense": 0.2}),
    ],
}

LAYER_SPEED_MARKDOWN = """\
Measured with `.venv/bin/python bench/bench_speed.py --layers 8` on a random-weight LLaVA-shaped model built from a
config (8 decoder layers of width 256, 16 heads, a 32,000-token vocabulary, 576 image tokens from a 336 px image;
float32), 1 torch thread on 2 CPU cores (1-minute load average 0.5 at the start and 1.0 at the end). One prompt of
597 tokens: prefill with logits for the last position, as `generate` does; decode 16 one-token steps with the KV
cache; medians of 3 after one warm-up. Layers are removed evenly (every fourth, every other):

| removed | layers | prefill | speedup | ideal L/L' | of ideal | decode / token | speedup | of ideal | peak RSS | ratio |
|---|---|---|---|---|---|---|---|---|---|---|
| none (dense) | 8 | 1.00 s | – | – | – | 10.0 ms | – | – | 2,000 MB | – |
| half: 4 of 8 | 4 | 600.0 ms | 1.67× | 2.00× | 0.83 | 5.5 ms | 1.82× | 0.91 | 1,200 MB | 0.60 |

Goal ≥ 0.9 of ideal: prefill misses it at every budget: 4 removed (0.833); decode meets it at every budget: 4
removed (0.909).

Where prefill misses (4 removed, 0.833 of ideal): the non-layer rest of each forward (vision tower + projector,
embeddings, masks and rotary tables, final norm, LM head, Python dispatch) took 200.0 ms of dense's 1.00 s (20.0%)
and 200.0 ms with 4 layers; layer removal cannot shrink it, so it alone bounds the speedup at 1.67× = 0.83 of ideal
(Amdahl). The decoder layers themselves sped up 2.00× (ideal 2.00×).

Timed alone on the same inputs: the vision tower + projector 20.0 ms, the LM head 1.0 ms for the last position and
100.0 ms for all 597 positions (10.0% of dense prefill): a forward that computes logits for every prompt position
pays that as a fixed cost layer removal cannot shrink; the measured prefill (`logits_to_keep=1`) does not. The
layer/rest split comes from forward hooks on the first and last decoder layer inside the measured forwards."""


def test_layer_speed_block_renders_known_input_exactly():
    assert speed.layer_speed_block(LAYER_SPEED) == LAYER_SPEED_MARKDOWN


def test_layer_speed_block_explains_slower_layers_too():
    data = json.loads(json.dumps(LAYER_SPEED))
    data["rows"][1]["vs_dense"] |= {"decode_of_ideal": 0.85, "decode_layers_speedup": 1.78}
    text = speed.layer_speed_block(data)
    assert "decode misses it at every budget: 4 removed (0.850)" in " ".join(text.split())
    assert ("Where decode misses (4 removed, 0.850 of ideal): the non-layer rest of each forward (embeddings, "
            "masks and rotary tables, final norm, LM head, Python dispatch) took 2.0 ms of dense's 10.0 ms (20.0%) "
            "and 1.0 ms with 4 layers; layer removal cannot shrink it, so it alone bounds the speedup at 1.67× = 0.83 "
            "of ideal (Amdahl). The decoder layers themselves sped up 1.78× instead of 2.00×: their time per layer "
            "rose from 1.00 ms to 1.12 ms between the two measurements.") in " ".join(text.split())


def test_display_command_drops_the_checkout_path():
    assert common.display_command("/a/b/.venv/bin/python bench/x.py -n 1") == ".venv/bin/python bench/x.py -n 1"
    assert common.display_command(".venv/bin/python bench/x.py") == ".venv/bin/python bench/x.py"
    assert common.display_command("python3 bench/x.py") == "python3 bench/x.py"


# ---------------------------------------------------------------------------------------------- topology speed

def _engine(total: float, zigzag: float, same: bool | None = None) -> dict:
    values = {"status": "ok", "total_s": total, "zigzag_s": zigzag}
    return values if same is None else {**values, "same": same}


def _topology_row(kind: str, n: int, depths: int, dim: int, engines: dict, **measured) -> dict:
    return {"kind": kind, "n": n, "depths": depths, "dim": dim, "torch_threads": 2, "engines": engines, **measured}


SKIPPED = {"status": "skipped"}
TOPOLOGY_SPEED = {
    "command": "/x/.venv/bin/python bench/bench_topology.py --sizes 512,2048 --real-sizes 256,320",
    "argv": ["--sizes", "512,2048", "--real-sizes", "256,320"],
    "args": {"kinds": ["real", "gaussian", "synthetic"], "sizes": [512, 2048], "real_sizes": [256, 320],
             "depths": 33, "dim": 4096, "k": 15, "repeats": 1, "timeout": 600.0},
    "machine": {"cpu_count": 8, "cpus_available": 2, "platform": "Linux-x86_64"},
    "engines": ["fast", "classic"],
    "classic_max": 256,
    "targets": [{"kind": "gaussian", "n": 512, "seconds": 5.0}, {"kind": "real", "n": 320, "seconds": 1.0}],
    "rows": [
        _topology_row("real", 256, 13, 160, {"fast": _engine(1.5, 1.2, True), "classic": _engine(60.0, 58.0, True)},
                      simplices=40_000, raw_bars_h0=900, raw_bars_h1=2100, bars_h0=300, bars_h1=700,
                      distances_s=0.05, complexes_s=0.3, scores_s=0.01, peak_mb=410.2),
        _topology_row("real", 320, 13, 160, {"fast": _engine(2.0, 1.6), "classic": SKIPPED}, simplices=50_000,
                      raw_bars_h0=1100, raw_bars_h1=2600, bars_h0=350, bars_h1=800, distances_s=0.06,
                      complexes_s=0.4, scores_s=0.012, peak_mb=430.0),
        _topology_row("gaussian", 512, 33, 4096, {"fast": _engine(4.0, 3.0), "classic": SKIPPED},
                      simplices=360_000, raw_bars_h0=7500, raw_bars_h1=18_000, bars_h0=7000, bars_h1=1000,
                      distances_s=0.5, complexes_s=0.25, scores_s=0.125, peak_mb=900.0),
        _topology_row("gaussian", 2048, 33, 4096, {"fast": {"status": "timed out", "timeout_s": 600.0},
                                                   "classic": SKIPPED},
                      simplices=1_500_000, distances_s=12.0, complexes_s=2.5, peak_mb=5000.0),
        _topology_row("synthetic", 512, 33, 4096, {"fast": _engine(1.32, 0.456), "classic": SKIPPED},
                      simplices=47_264, raw_bars_h0=14, raw_bars_h1=8, bars_h0=5, bars_h1=2,
                      distances_s=0.4, complexes_s=0.02, scores_s=0.005, peak_mb=566.4),
    ],
}

TOPOLOGY_SPEED_MARKDOWN = """\
Measured with `.venv/bin/python bench/bench_topology.py --sizes 512,2048 --real-sizes 256,320` (2 CPU cores, 2
torch threads, k = 15; point clouds → scores, the calibration pass not included; each kind and N in a fresh
process, one run of every stage after a warm-up):

| kind | N | depths | d | simplices | bars H0 / H1 (kept) | fast total | fast zigzag | classic total | classic zigzag | distances / complexes / scores | peak RSS | same |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
| real | 256 | 13 | 160 | 40,000 | 900 / 2,100 (300 / 700) | 1.50 s | 1.20 s | 60.0 s | 58.0 s | 0.050 / 0.300 / 0.010 s | 410 MB | yes |
| real | 320 | 13 | 160 | 50,000 | 1,100 / 2,600 (350 / 800) | 2.00 s | 1.60 s | – | – | 0.060 / 0.400 / 0.012 s | 430 MB | – |
| gaussian | 512 | 33 | 4096 | 360,000 | 7,500 / 18,000 (7,000 / 1,000) | 4.00 s | 3.00 s | – | – | 0.500 / 0.250 / 0.125 s | 900 MB | – |
| gaussian | 2048 | 33 | 4096 | 1,500,000 | – | timed out (> 600 s) | – | – | – | – | 5000 MB | – |
| synthetic | 512 | 33 | 4096 | 47,264 | 14 / 8 (5 / 2) | 1.32 s | 0.456 s | – | – | 0.400 / 0.020 / 0.005 s | 566 MB | – |

bars = the engine's, kept = those that span two depths or more; distances = the k-NN of every depth from squared
distances, complexes = the symmetrised graphs and their triangles, scores = bars → depths, consistency and
persistence images (of the first engine's bars); an engine's zigzag = building the zigzag and the engine's barcode,
its total = `analyze_topology` timed on its own; peak RSS = the process's, the clouds included; same = the engine's
depth bars equal fast's exactly; – = not run (the quadratic classic engine only up to N = 256).

Goals (measured ÷ target):

- gaussian N = 512 total ≤ 5 s: fast 4.00 s = 0.80× (meets)
- real N = 320 total ≤ 1 s: fast 2.00 s = 2.00× (misses)

Worst case (the slowest row per kind and engine):

- real: fast 2.00 s at N = 320; classic 60.0 s at N = 256 (not run at N = 320)
- gaussian: fast timed out (> 600 s) at N = 2048, slowest finished 4.00 s at N = 512
- synthetic: fast 1.32 s at N = 512"""


def test_topology_speed_block_renders_known_input_exactly():
    """Every kind, a skipped classic engine (N > classic_max), a timed-out row, the goals and the worst cases."""
    assert topology.topology_speed_block(TOPOLOGY_SPEED) == TOPOLOGY_SPEED_MARKDOWN


def test_topology_speed_block_flags_an_engine_mismatch_and_a_missing_goal_row():
    data = json.loads(json.dumps(TOPOLOGY_SPEED))
    data["rows"][0]["engines"]["classic"]["same"] = False
    del data["rows"][1]
    block = topology.topology_speed_block(data)
    assert "| 410 MB | NO: classic |" in block
    assert "- real N = 320 total ≤ 1 s: not measured" in block


def test_topology_speed_block_asks_to_rerun_an_old_results_file():
    old = {"command": "python bench/bench_topology.py", "rows": [{"n": 512, "total_fast": 1.0}]}
    assert topology.topology_speed_block(old).startswith("`bench/results/topology.json` is not from the current")


# ---------------------------------------------------------------------------------------------- committed sweep


def test_committed_sweep_has_every_method_budget_and_three_random_seeds():
    quality = common.load_quality(ROOT / "bench" / "results")
    random_runs = [len(entry["runs"]) for entry in quality["methods"]["random"] if entry["fraction"] > 0]
    assert random_runs == [3, 3, 3, 3]
    assert sorted(quality["methods"]) == ["angular", "block_influence", "domain_math", "domain_mixed", "domain_nonmath",
                                       "random", "spacing", "topology"]
    assert list(quality["dense"]) == [*common.KINDS, "overall"]


REGIMES = {"metric": "topo_synth/exact_match", "dense": 0.95, "rule": {"sensitive_spread": 0.1, "spacing_margin": 0.01},
           "budgets": [
               {"budget": 0.25, "n_remove": [1], "values": {"domain_math": 0.65, "random": 0.5, "spacing": 0.6,
                                                             "topology": 0.6},
                "spread": 0.15, "layer_overlap": 0.5, "best": ["domain_math"], "regime": "ranking-sensitive"},
               {"budget": 0.5, "n_remove": [2], "values": {"domain_math": 0.2, "random": 0.2, "topology": 0.25},
                "spread": 0.05, "layer_overlap": 1.0, "best": ["topology"], "regime": "converging"}]}


TOKENS = {
    "command": "/x/.venv/bin/python bench/bench_tokens.py", "limit": None, "halfv_anchor": 0.2,
    "lifecycle": {"samples": 100, "ivr_layer": 4, "ssr_layer": 6, "ssr_mode": "freeze"},
    "machine": {"cpus_available": 2, "torch_threads": 1},
    "speed_model": {"layers": 4, "hidden": 256, "image_tokens": 576, "dtype": "float32", "token_layer": 2,
                    "ssr_layer": 3, "repeats": 3, "decode_tokens": 16},
    "speed": [
        {"batch": 1, "pruner": "dense", "keep": 1.0, "prefill_s": 0.100, "end_to_end_s": 0.200,
         "tokens_per_layer": [600, 600, 600, 600], "decoder_prefill_flops": 4e9},
        {"batch": 1, "pruner": "fastv", "keep": 0.25, "prefill_s": 0.080, "end_to_end_s": 0.160,
         "tokens_per_layer": [600, 600, 168, 168], "decoder_prefill_flops": 2.5e9, "flops_speedup": 1.6,
         "prefill_speedup": 1.25, "end_to_end_speedup": 1.25},
        {"batch": 1, "pruner": "random", "keep": 0.25, "prefill_s": 0.0625, "end_to_end_s": 0.150,
         "tokens_per_layer": [600, 600, 168, 168], "decoder_prefill_flops": 2.5e9, "flops_speedup": 1.6,
         "prefill_speedup": 1.6, "end_to_end_speedup": 1.3333},
        {"batch": 1, "pruner": "halfv+freeze", "keep": 0.25, "prefill_s": 0.05, "end_to_end_s": 0.125,
         "tokens_per_layer": [[600, 600], [600, 600], [168, 168], [24, 168]], "decoder_prefill_flops": 2e9,
         "flops_speedup": 2.0, "prefill_speedup": 2.0, "end_to_end_speedup": 1.6},
    ],
    "accuracy": [
        {"layers": "none", "removed_layers": [], "pruner": "dense", "keep": 1.0, "token_layer": None,
         "exact_match": 0.99, "math": 0.97, "non_math": 0.995},
        {"layers": "block_influence", "removed_layers": [7, 10], "pruner": "fastv", "keep": 0.25, "token_layer": 2,
         "exact_match": 0.7, "math": 0.5, "non_math": 0.75},
        {"layers": "none", "removed_layers": [], "pruner": "halfv+freeze", "keep": 0.25, "token_layer": 4,
         "ssr_layer": 6, "exact_match": 0.9, "math": 0.8, "non_math": 0.925},
    ],
}


COMP = {"command": ".venv/bin/python bench/bench_comp.py", "rates": [0.6], "metric": "topo_synth/exact_match",
        "dev": {"metric": "topo_synth_dev/exact_match", "rate": 0.6, "by_step": {"0.05": 0.9, "0.1": 0.8},
                "chosen_step": "0.05"},
        "rows": [{"family": "dense", "target_rate": 0.0, "exact_match": 1.0, "flops_removed": 0.0},
                 {"family": "comp", "target_rate": 0.6, "exact_match": 0.75, "flops_removed": 0.6},
                 {"family": "wanda_widths", "target_rate": 0.6, "exact_match": 0.5, "flops_removed": 0.6}]}


COMP_SPEED = {
    "command": ".venv/bin/python bench/bench_comp_speed.py", "args": {"rates": [0.5], "repeats": 5},
    "model": {"layers": 8, "hidden": 512, "heads": 16, "kv_heads": 4, "intermediate": 1408, "image_tokens": 576,
              "dtype": "float32"},
    "rows": [{"config": "dense"}, *({"config": config, "predicted_prefill_speedup": 2.0, "predicted_decode_speedup": 1.5,
                                     "pytorch": {"1": {"prefill_cpu_speedup": speed, "decode_cpu_speedup": 1.25}},
                                     "onnxruntime": {"1": {"blocked": "ValueError: no"}}}
                                    for config, speed in (("uniform", 1.875), ("per_layer", 1.5)))],
    "comparisons": [{"config": "per_layer", "prefill_cpu_vs_uniform": 0.8, "decode_cpu_vs_uniform": 1.0}]}


def write_results(folder: Path) -> None:
    """A results folder with every source the README's blocks read, from the hand-made inputs above."""
    data = sweep_data()
    write_sweep(folder / "quality_sweep", data["rows"], data["sweep"],
                **{"winner.json": data["winner"], "reload_overhead.json": RELOAD})
    write_sweep(folder / "quality_sweep" / "seed1", SEED_ROWS, {"wall_s": 12.0})
    (folder / "quality_sweep" / "regimes.json").write_text(json.dumps(REGIMES))
    (folder / "speed.json").write_text(json.dumps(LAYER_SPEED))
    (folder / "topology.json").write_text(json.dumps(TOPOLOGY_SPEED))
    (folder / "onnx.json").write_text(json.dumps(ONNX_SPEED))
    (folder / "onnx_anchor.json").write_text(json.dumps(ONNX_ANCHOR))
    (folder / "tokens.json").write_text(json.dumps(TOKENS))
    (folder / "topology_ablations.json").write_text(json.dumps(ABLATIONS))
    (folder / "comp.json").write_text(json.dumps(COMP))
    (folder / "comp_speed.json").write_text(json.dumps(COMP_SPEED))
    (folder / "recovery.json").write_text(json.dumps(RECOVERY))


DOMAINS_MARKDOWN = """\
Math questions (`topo_synth_mathdomain`), exact match per method and budget:

| method | 0 (0 layers) | 0.25 (1 layer) | 0.5 (2 layers) |
|---|---|---|---|
| random | 0.900 | 0.700 (0.60..0.80) | 0.400 (0.30..0.50) |
| spacing | 0.900 | 0.700 | n/a |
| topology | 0.900 | 0.500 | 0.200 |

Non-math questions (`topo_synth_nonmath`: presence, attribute, count, spatial):

| method | 0 (0 layers) | 0.25 (1 layer) | 0.5 (2 layers) |
|---|---|---|---|
| random | 1.000 | 0.500 (0.40..0.60) | 0.200 (0.10..0.30) |
| spacing | 1.000 | 0.500 | n/a |
| topology | 1.000 | 0.700 | 0.200 |

Regimes (`topo-prune regimes`, on `topo_synth/exact_match`, dense 0.950, random's seed-0 run; ranking-sensitive
from a spread of 0.1, continuity-dominated when spacing leads by more than 0.01; layer overlap is the mean pairwise
Jaccard overlap of the methods' removed layers):

| budget | layers removed | spread (max − min) | layer overlap | best | regime |
|---|---|---|---|---|---|
| 0.25 | 1 | 0.150 | 0.50 | domain_math | ranking-sensitive |
| 0.5 | 2 | 0.050 | 1.00 | topology | converging |

The paper's regimes, checked on this run: (1) at the two lowest budgets the best domain-aware method is domain_math
0.650 at 0.25 (rank 1 of 4) and domain_math 0.200 at 0.5 (rank 2 of 3); (2) the spread between methods shrinks with
the budget (0.150, 0.050), so the methods converge at moderate budgets; (3) spacing ranks 2 of 4 at 0.25. Regimes
by the rule: 1 converging and 1 ranking-sensitive."""


def test_domains_block_gives_each_domain_the_regimes_and_the_checked_claims(tmp_path):
    """Math and non-math tables (random: mean of seeds), the regimes table, and the claims read off its values:
    ranks 1 and 2 (a tie with random at 0.5 shares rank 2), a shrinking spread, spacing tied 2nd of 4."""
    write_results(tmp_path)
    assert quality.domains_block(quality.load_domains(tmp_path)) == DOMAINS_MARKDOWN


TOKENS_MARKDOWN = """\
Measured with `.venv/bin/python bench/bench_tokens.py` (2 CPU cores, 1 torch thread; medians of 3 after a warm-up).
Speed: a random-weight LLaVA-1.5-shaped model, 4 decoder layers of width 256, 576 image tokens, float32, pruning
from decoder layer 2 (HalfV's step 2 from layer 3: `halfv+freeze`, `halfv+top5`; `halfv` is step 1 alone);
prefill = one forward of the prompt with the KV cache, end to end = prefill + 16 greedy steps. Tokens: what the
last layer computes (queries of keys where frozen visual tokens give keys and values only).

| batch | pruner | keep | tokens (last layer) | decoder FLOPs | FLOPs-predicted | measured prefill | measured ÷ predicted | prefill | end to end (speedup) |
|---|---|---|---|---|---|---|---|---|---|
| 1 | dense | 1 | 600 | 4.0 G | – | – | – | 100.0 ms | 200.0 ms |
| 1 | fastv | 0.25 | 168 | 2.5 G | 1.60× | 1.25× | 0.78 | 80.0 ms | 160.0 ms (1.25×) |
| 1 | random | 0.25 | 168 | 2.5 G | 1.60× | 1.60× | 1.00 | 62.5 ms | 150.0 ms (1.33×) |
| 1 | halfv+freeze | 0.25 | 24 of 168 | 2.0 G | 2.00× | 2.00× | 1.00 | 50.0 ms | 125.0 ms (1.60×) |

Measured prefill speedup below 0.8 of the FLOPs-predicted one: fastv at 0.25 (batch 1, 0.78). The FLOPs count only
the decoder layers; the vision tower, embeddings, LM head and Python dispatch are not pruned, and a few-token
decode step gains little, so the end-to-end speedup is smaller.

Accuracy: the bundled model on `topo_synth` (the whole test split), exact match. HalfV (anchor ratio 0.2) prunes
from the IVR layer its lifecycle analysis detected on 100 calibration prompts, and `halfv+freeze` / `halfv+top5`
also from its SSR layer: IVR 4, SSR 6 (detected mode freeze):

| layer removal | pruner | keep | from layer | step 2 from | topo_synth | math | non-math |
|---|---|---|---|---|---|---|---|
| none | dense | 1 | – | – | 0.990 | 0.970 | 0.995 |
| block_influence (layers 7, 10) | fastv | 0.25 | 2 | – | 0.700 | 0.500 | 0.750 |
| none | halfv+freeze | 0.25 | 4 | 6 | 0.900 | 0.800 | 0.925 |"""


def test_token_block_compares_measured_with_flops_predicted_and_names_the_shortfalls():
    """1.25x measured against 1.6x predicted is 0.78 of it: below 0.8, so named; 1.6 of 1.6 is not."""
    assert tokens.tokens_block(TOKENS) == TOKENS_MARKDOWN


def test_a_resumed_sweep_cannot_feed_the_time_figures(tmp_path):
    write_results(tmp_path)
    sweep = json.loads((tmp_path / "quality_sweep" / "sweep.json").read_text())
    (tmp_path / "quality_sweep" / "sweep.json").write_text(json.dumps({**sweep, "reused": 3}))
    with pytest.raises(ValueError, match="that run reused finished configurations"):
        quality.load_sweep(tmp_path)


# ---------------------------------------------------------------------------------------------- the benches


def test_bench_quality_is_one_sweep_call_with_the_readme_spec(monkeypatch, tmp_path):
    """bench_quality.py evaluates nothing itself: it hands the README's spec to run_sweep."""
    search = pytest.importorskip("lmms_topo_plugin.search")
    bench_quality = _load("bench_quality")
    specs = []
    monkeypatch.setattr(search, "run_sweep", lambda spec: specs.append(spec) or {"winner": None})
    bench_quality.sweep(tmp_path, ["topology", "random"], {"device": "cpu"}, None)
    (spec,) = specs
    assert (spec.methods, spec.budgets, spec.tasks, spec.metric, spec.rule, spec.objective, spec.limit, spec.out) == (
        ["topology", "random"], [0.125, 0.25, 0.375, 0.5], ["topo_synth"], "topo_synth/exact_match", "keep>=0.95",
        "layers", None, tmp_path)
    assert bench_quality.MODEL_ARGS == {"device": "cpu", "batch_size": "16", "recompute": "true"}
    assert bench_quality.parse_pairs("topo_k=10, seed=1") == {"topo_k": "10", "seed": "1"}


def test_bench_topology_writes_its_json_atomically(tmp_path):
    bench_topology = _load("bench_topology")
    out = tmp_path / "results" / "topology.json"
    bench_topology.write_json_atomic(out, TOPOLOGY_SPEED)
    assert json.loads(out.read_text()) == TOPOLOGY_SPEED
    assert [p.name for p in out.parent.iterdir()] == ["topology.json"]
    machine = bench_topology.machine_info()
    assert machine["cpus_available"] >= 1 and machine["platform"]


def _engine_message(name: str, digest: str, peak: float) -> tuple:
    return "engine", {"engine": name, "status": "ok", "total_s": 1.0, "zigzag_s": 0.5, "scores_s": 0.1,
                      "bars_h0": 3, "bars_h1": 2, "raw_bars_h0": 5, "raw_bars_h1": 4, "bars_sha256": digest,
                      "peak_mb": peak}


def test_bench_topology_row_keeps_what_finished_when_an_engine_times_out(monkeypatch):
    """A timed-out engine is recorded as such, the next engine runs in a fresh process, same is against the first."""
    bench_topology = _load("bench_topology")
    common = {"k": 15, "distances_s": 0.25, "complexes_s": 0.125, "build_s": 0.1, "simplices": 99, "operations": 150}
    scripts = [
        [("cloud", {"depths": 5, "dim": 8, "input_mb": 0.1, "torch_threads": 2}),
         ("common", {**common, "peak_mb": 300.0}),
         ("start", "fast"), _engine_message("fast", "aaa", 350.0), ("start", "x"), ("timed out", 700.0)],
        [("cloud", {"depths": 5, "dim": 8, "input_mb": 0.1, "torch_threads": 2}),
         ("common", {**common, "distances_s": 9.0, "peak_mb": 310.0}), ("start", "y"),
         _engine_message("y", "bbb", 320.0), ("done", {"peak_mb": 320.0}), ("result", None)],
    ]
    pending = []

    def fake_messages(target, args, timeout):
        pending.append(args[0]["engines"])
        yield from scripts[len(pending) - 1]

    monkeypatch.setattr(bench_topology, "_messages", fake_messages)
    spec = {"kind": "gaussian", "n": 64, "depths": 5, "dim": 8}
    row = bench_topology.run_row(spec, ["fast", "x", "y"], ["classic"], timeout=5.0)
    assert pending == [["fast", "x", "y"], ["y"]]
    assert list(row["engines"]) == ["fast", "x", "y", "classic"]
    assert row["engines"]["x"] == {"status": "timed out", "timeout_s": 5.0, "peak_mb": 700.0}
    assert row["engines"]["classic"] == {"status": "skipped"}
    assert (row["engines"]["fast"]["same"], row["engines"]["y"]["same"]) == (True, False)
    assert (row["distances_s"], row["simplices"], row["peak_mb"], row["bars_h1"]) == (0.25, 99, 700.0, 2)
    assert bench_topology._progress(row).startswith("gaussian N=64: 5+4 bars, fast 1.00 s (zigzag 0.50 s); x timed out")


def test_bench_topology_cli_reads_comma_lists():
    args = _load("bench_topology").parse_args(["--kinds", "real,gaussian", "--sizes", "128, 256", "--engines", "fast"])
    assert (args.kinds, args.sizes, args.real_sizes, args.engines) == (["real", "gaussian"], [128, 256], [256, 320],
                                                                        ["fast"])


def _onnx_row(layers, torch_costs, ort_costs, size):
    return {"model": "m", "config": "dense" if layers == 4 else "half removed", "layers": layers,
            "pytorch": dict(zip(("prefill_s", "decode_s_per_token"), torch_costs)),
            "onnxruntime": dict(zip(("prefill_s", "decode_s_per_token"), ort_costs)),
            "bytes": {"decoder_model_merged": size}}


ONNX_SPEED = {"command": "/x/.venv/bin/python bench/bench_onnx.py", "machine": {"cpus_available": 2},
              "args": {"repeats": 3, "decode_tokens": 16},
              "rows": [_onnx_row(4, (0.25, 0.01), (0.125, 0.005), 8_000_000),
                       _onnx_row(2, (0.125, 0.008), (0.0625, 0.004), 5_000_000)]}
# the second row also has the runner's variants (last-position prefill, bound cache); the first predates them
ONNX_SPEED["rows"][1]["onnxruntime"].update(prefill_s_last_logits=0.05, decode_s_per_token_bound=0.005)
ONNX_ANCHOR = {"command": "/x/.venv/bin/python bench/bench_onnx_anchor.py",
               "machine": {"cpus_available": 2, "loadavg_at_start": [1.04], "loadavg_at_end": [2.0]},
               "args": {"repeats": 5, "decode_tokens": 16},
               "rows": [{"model": "tiny", "config": "dense", "layers": 4, "builder_error": "head size 40: no"},
                        {"model": "tiny", "config": "half removed", "layers": 2, "nodes": {"ours": 300, "builder": 50},
                         "thread_cpu_s": {"prefill_runner_torch": 0.3, "prefill_runner_builder": 0.2,
                                          "prefill_builder_shared": 0.25, "decode_runner_torch": 0.012,
                                          "decode_runner_builder": 0.01, "decode_builder_shared": 0.008},
                         "check": {"same_tokens": True, "max_abs_logit_diff": {"runner_builder_vs_pytorch": 2e-6}}}]}
ONNX_ANCHOR_MARKDOWN = """\
| model | layers | | ours | the builder's | bare builder | ours / the builder's | the builder's / bare | nodes (ours / builder) |
|---|---:|---|---:|---:|---:|---:|---:|---:|
| tiny | 2 | prefill, last logits | 300.0 ms | 200.0 ms | 250.0 ms | 1.50× | 0.80× | 300 / 50 |
| tiny | 2 | decode per token | 12.0 ms | 10.0 ms | 8.0 ms | 1.20× | 1.25× | 300 / 50 |

- tiny (dense): head size 40: no
- tiny (half removed): greedy tokens identical in every variant and PyTorch: True; largest logit difference, the \
builder's through our runner against PyTorch: 2e-06"""


def test_the_builder_anchor_block_renders_known_input_exactly():
    text = onnx.anchor_block(ONNX_ANCHOR)
    assert text.endswith(ONNX_ANCHOR_MARKDOWN)
    assert text.startswith("Measured with `.venv/bin/python bench/bench_onnx_anchor.py` (2 CPU cores, load 1.0 at the "
                           "start and 2.0 at the end;")


def test_onnx_speed_block_renders_known_input_exactly():
    intro, table = onnx.onnx_speed_block(ONNX_SPEED).split("\n\n")
    assert intro.startswith("Measured with `.venv/bin/python bench/bench_onnx.py` (2 CPU cores, one thread in both")
    assert table.splitlines()[2:] == [
        "| m | 4 | 250.0 ms | 125.0 ms | 2.00× faster | 10.0 ms | 5.0 ms | 2.00× faster | – | 8.0 MB | – | – |",
        "| m | 2 | 125.0 ms | 62.5 ms | 2.00× faster | 8.0 ms | 4.0 ms | 2.00× faster | 2.00× prefill, 1.25× decode / "
        "2.00× prefill, 1.25× decode / 2.00× | 5.0 MB | 50.0 ms (1.25× faster) | 5.0 ms (0.80× as fast) |",
    ]


def _entry(*values):
    budgets = dict(zip(("0.125", "0.25"), values))
    return {"budgets": budgets, "removed": {}, "mean": sum(values) / len(values)}


ABLATIONS = {
    "command": "/x/.venv/bin/python bench/bench_topology_ablations.py", "budgets": [0.125, 0.25],
    "dev_metric": "topo_synth_dev/exact_match", "test_metric": "topo_synth/exact_match",
    "defaults": {"topo_k": "15"}, "baseline": {"depth_bars": "topology[topo_score=depth_bars,topo_k=15]"},
    "ablations": {"depth_bars": {"topo_k": {"5": "topology[topo_score=depth_bars,topo_k=5]",
                                            "15": "topology[topo_score=depth_bars,topo_k=15]"}}},
    "picks": {"depth_bars": {"factors": {"topo_k": "5"}, "combined": "topology[topo_score=depth_bars,topo_k=5]"}},
    "per_depth": ["topology[topo_score=per_depth,topo_distance=bottleneck,topo_k=15]"],
    "baselines": ["angular", "random[seed=0]", "random[seed=1]"],
    "chosen": "topology[topo_score=depth_bars,topo_k=5]", "first": "topology[topo_score=depth_bars,topo_k=15]",
    "dev": {"none": _entry(1.0, 1.0), "topology[topo_score=depth_bars,topo_k=5]": _entry(0.75, 0.625),
            "topology[topo_score=depth_bars,topo_k=15]": _entry(0.5, 0.5),
            "topology[topo_score=per_depth,topo_distance=bottleneck,topo_k=15]": _entry(0.5, 0.25),
            "random[seed=0]": _entry(0.5, 0.25), "random[seed=1]": _entry(0.75, 0.5), "angular": _entry(0.5, 0.5)},
    "dev_calibration": {"none": _entry(1.0, 1.0),
                        "topology[topo_score=depth_bars,topo_k=5] (calibration 128)": _entry(0.5, 0.5),
                        "topology[topo_score=depth_bars,topo_k=5] (calibration 64)": _entry(0.25, 0.5)},
    "test": {"none": _entry(1.0, 1.0), "topology[topo_score=depth_bars,topo_k=5]": _entry(0.75, 0.5),
             "topology[topo_score=depth_bars,topo_k=15]": _entry(0.875, 0.25), "angular": _entry(0.5, 0.5),
             "random[seed=0]": _entry(0.875, 0.25), "random[seed=1]": _entry(0.625, 0.25)},
}


def test_topology_ablations_block_renders_known_input_exactly():
    block = topology.topology_ablations_block(ABLATIONS)
    assert block.startswith("Measured with `.venv/bin/python bench/bench_topology_ablations.py`: every row")
    assert "| k | 5 ★ | 0.750 | 0.625 | 0.688 |\n| k | 15 (baseline) | 0.500 | 0.500 | 0.500 |" in block
    # each configuration once: the chosen one is also the combined pick
    assert ("| zigzag, depth_bars, k=5 (chosen) | 0.750 | 0.625 | 0.688 |\n"
            "| zigzag, depth_bars, k=15 (baseline) | 0.500 | 0.500 | 0.500 |\n"
            "| per-depth persistence, distance=bottleneck, k=15 | 0.500 | 0.250 | 0.375 |\n"
            "| random (mean of 2 seeds, min–max) | 0.625 (0.500–0.750) | 0.375 (0.250–0.500) | 0.500 |") in block
    assert ("| depth_bars, k=5 | 64 | 0.250 | 0.500 | 0.375 |\n| depth_bars, k=5 | 128 | 0.500 | 0.500 | 0.500 |"
            in block)  # sorted by size
    assert "| random (mean of 2 seeds, min–max) | 0.750 (0.625–0.875) | 0.250 (0.250–0.250) | 0.500 |" in block
    assert block.endswith("On test, at 0.125 it ties random (mean) (0.750); at 0.25 it ties angular (0.500).")


def test_comp_block_names_the_strongest_reached_single_mode_baseline_and_unreachable_cells():
    def row(family, rate, score, flops, seed=0):
        return {"family": family, "target_rate": rate, "exact_match": score, "flops_removed": flops, "seed": seed}

    rows = [row("dense", 0.0, 0.99, 0.0), row("comp", 0.6, 0.8, 0.6), row("comp (no MPS: joint)", 0.6, 0.9, 0.6),
            row("wanda_widths", 0.6, 0.5, 0.61), row("random (layers)", 0.6, 0.7, 0.64),
            row("random (layers)", 0.6, 0.3, 0.64, seed=1), row("block_influence (layers)", 0.6, 0.55, 0.64)]
    table = comp.comp_table(rows, [0.3, 0.6])
    assert "| random (layers) | unreachable | 0.500 (0.300..0.700) @ 64% |" in table.splitlines()
    assert "| comp | unreachable | 0.800 @ 60% |" in table.splitlines()
    verdict = comp._comp_verdict({"rows": rows})
    # ablations of comp are not single-mode baselines; random's mean (0.5) loses to block_influence (0.55)
    assert verdict == ("At 60% of the prefill FLOPs, `comp` keeps 0.800 exact match against 0.550 for the strongest "
                       "single-mode baseline (`block_influence (layers)`); CoMP wins on this model.")


# ---------------------------------------------------------------------------------------------- whole pages

LIFECYCLE = {"pretrained": "/x/default_model", "calibration": "bundled:topo_synth/calib", "samples": 100, "k": 50,
             "ivr_layer": 4, "ssr_layer": 6, "kl_threshold": 0.001, "ssr_mode": "freeze"}


def _recovery_row(method, budget, recovered, score, kl=None, seconds=None, hidden=0.0):
    return {"method": method, "variant": method, "budget": budget, "recovered": recovered, "exact_match": score,
            "kl_before": kl[0] if kl else None, "kl_after": kl[1] if kl else None, "train_s": seconds,
            "recover_hidden": hidden}


RECOVERY = {"command": "/x/.venv/bin/python bench/bench_recovery.py", "budgets": [0.25, 0.5], "limit": None,
            "dev": {"method": "block_influence", "budget": 0.375, "by_steps": {"100": 0.9, "200": 0.95},
                    "chosen_steps": 200},
            "machine": {"cpus_available": 2, "torch_threads": 1},
            "rows": [_recovery_row("none", 0.0, False, 0.99),
                     _recovery_row("angular", 0.25, False, 0.8), _recovery_row("angular", 0.25, True, 0.9, (0.2, 0.05), 20),
                     _recovery_row("angular", 0.5, False, 0.5), _recovery_row("angular", 0.5, True, 0.7, (0.5, 0.1), 30),
                     _recovery_row("spacing", 0.25, False, 0.6), _recovery_row("spacing", 0.25, True, 0.58, (0.3, 0.2), 22)]}


def test_the_recovery_table_pairs_each_configuration_with_its_recovered_twin():
    assert recovery.recovery_table(RECOVERY) == (
        "| method | 0.25 | 0.5 |\n|---|---:|---:|\n"
        "| angular | 0.800 → **0.900** (KL 0.2 → 0.05) | 0.500 → **0.700** (KL 0.5 → 0.1) |\n"
        "| spacing | 0.600 → **0.580** (KL 0.3 → 0.2) | unreachable |")
    assert recovery.gains(RECOVERY) == pytest.approx([0.1, 0.2, -0.02])
    block = " ".join(recovery.recovery_block(RECOVERY).split())
    assert "(dev exact match by steps: 100: 0.900, 200: 0.950; chosen 200)." in block
    assert "Training took 20–30 s per configuration (median 22 s)" in block
    assert "Recovery changes exact match by -0.020 to +0.200 (median +0.100) over the 3 configurations" in block
    assert recovery.winners_table(RECOVERY) == (
        "| budget | best pruning alone | best with recover=kd |\n|---:|---|---|\n"
        "| 0.25 | `angular` 0.800 | `angular` 0.900 |\n| 0.5 | `angular` 0.500 | `angular` 0.700 |")

    # the hidden-state weight chosen on dev (JSON since it was added): its rows are the table's, the KL-only ones
    # are compared with them
    hidden_rows = [_recovery_row("angular", 0.25, True, 0.85, (0.2, 0.04), 40, 1.0),
                   _recovery_row("angular", 0.5, True, 0.75, (0.5, 0.2), 50, 1.0),
                   _recovery_row("spacing", 0.25, True, 0.7, (0.3, 0.1), 60, 1.0)]
    later = {**RECOVERY, "rows": RECOVERY["rows"] + hidden_rows, "dev": {
        **RECOVERY["dev"], "by_hidden": {"0.0": {"exact_match": 0.95}, "1.0": {"exact_match": 0.96}},
        "chosen_hidden": 1.0}}
    assert recovery.recovery_table(later).splitlines()[2:] == [
        "| angular | 0.800 → **0.850** (KL 0.2 → 0.04) | 0.500 → **0.750** (KL 0.5 → 0.2) |",
        "| spacing | 0.600 → **0.700** (KL 0.3 → 0.1) | unreachable |"]
    assert recovery.winners_table(later).splitlines()[2:] == ["| 0.25 | `angular` 0.800 | `angular` 0.850 |",
                                                              "| 0.5 | `angular` 0.500 | `angular` 0.750 |"]
    block = " ".join(recovery.recovery_block(later).split())
    assert ("(dev exact match by steps: 100: 0.900, 200: 0.950; chosen 200), then at that count the weight of the "
            "hidden-state term, `recover_hidden` (dev exact match by weight: 0: 0.950, 1: 0.960; chosen 1).") in block
    assert "Training took 40–60 s per configuration (median 50 s)" in block
    assert ("the hidden-state term (`recover_hidden=1`) changes exact match by -0.050 to +0.120 (median +0.050; 2 "
            "better, 1 worse, 0 equal of 3).") in block
    assert "KL alone" not in " ".join(recovery.recovery_block(RECOVERY).split())


def test_random_is_the_mean_of_its_seeds_on_the_recovery_page():
    seeded = [_recovery_row("random", 0.25, False, score) | {"seed": seed} for seed, score in ((0, 0.5), (1, 0.7))]
    seeded += [_recovery_row("random", 0.25, True, score, kl, seconds) | {"seed": seed}
               for seed, score, kl, seconds in ((0, 0.8, (0.4, 0.1), 10), (1, 0.9, (0.2, 0.05), 30))]
    data = {**RECOVERY, "budgets": [0.25], "rows": [RECOVERY["rows"][0], *seeded]}
    block = " ".join(recovery.recovery_block(data).split())
    assert "| random (mean of 2 seeds) | 0.600 → **0.850** (KL 0.3 → 0.075) |" in block
    assert "`random` is the mean of 2 seeds (0, 1; each seed also draws its own recovery prompts)" in block
    assert "Training took 20–20 s per configuration" in block  # one configuration: the seeds' mean
    assert "`random` is one seed (seed 0)" in " ".join(recovery.recovery_block(RECOVERY).split())


def test_the_recovery_page_says_it_is_not_measured_until_its_json_exists(tmp_path):
    assert recovery.NOT_MEASURED in " ".join(recovery.render(tmp_path).split())
    assert recovery.headline(tmp_path) == "not measured yet."
    (tmp_path / "recovery.json").write_text(json.dumps(RECOVERY))
    assert recovery.recovery_table(RECOVERY) in recovery.render(tmp_path)


def write_all_results(folder: Path) -> None:
    """Every source the results pages read, from the hand-made inputs above."""
    write_results(folder)
    (folder / "lifecycle").mkdir()
    (folder / "lifecycle" / "entropy.json").write_text(json.dumps(LIFECYCLE))


def test_every_page_is_its_title_the_generated_note_and_its_sections(tmp_path):
    write_all_results(tmp_path)
    rendered = pages.render_all(tmp_path)
    assert list(rendered) == ["results/index.md", *(f"results/{name}.md" for name in pages.PAGES)]
    for name, module in pages.PAGES.items():
        text = rendered[f"results/{name}.md"]
        assert text.startswith(f"# {module.TITLE}\n\n<!-- Generated by scripts/docs_pages.py from bench/results/ (")
        assert text.endswith("\n") and not text.endswith("\n\n")
    page = rendered["results/quality.md"]
    for markdown in (QUALITY_MARKDOWN, SWEEP_MARKDOWN, DOMAINS_MARKDOWN):
        assert markdown in page
    assert "![exact match against removed layers, overall and per kind](../assets/results/quality.png)" in page
    assert "(../assets/results/quality_sweep/regimes.png)" in page
    assert ("`.venv/bin/python bench/bench_quality.py` is a thin call of the sweep (`topo-prune sweep`): it prunes the "
            "bundled model with every layer method of the registry at 0, 0.25 and 0.5 of the decoder (`sparsity=`, "
            "rounded to whole layers: 0, 1 and 2 of 4), and lmms-eval answers the test questions after each; "
            "`random` is the mean of 2 seeds") in " ".join(page.split())
    assert LAYER_SPEED_MARKDOWN in rendered["results/speed.md"]
    assert TOPOLOGY_SPEED_MARKDOWN in rendered["results/topology.md"]
    assert topology.topology_ablations_block(ABLATIONS) in rendered["results/topology.md"]
    assert "N = 256 and 320" in rendered["results/topology.md"] and "of 33 depths and width 4096 (N = 512 and 2048)" in (
        " ".join(rendered["results/topology.md"].split()))
    assert TOKENS_MARKDOWN in rendered["results/tokens.md"]
    assert ("It places the IVR layer (where HalfV's step 1 prunes) at 4 and the SSR layer (step 2) at 6, with mode "
            "`freeze`") in " ".join(rendered["results/tokens.md"].split())
    assert "| comp | 0.750 @ 60% |" in rendered["results/comp.md"]
    assert "(`wanda_widths`); CoMP wins on this model." in " ".join(rendered["results/comp.md"].split())
    assert "**Training-free**" in rendered["results/comp.md"]
    assert "![exact match against FLOPs removed](../assets/results/comp.png)" in rendered["results/comp.md"]
    assert "| pytorch | 1 | per_layer | 2.00× | 1.50× | 1.50× | 1.25× |" in rendered["results/comp.md"]
    assert "| onnxruntime | 1 | uniform | 2.00× | blocked | 1.50× | blocked |" in rendered["results/comp.md"]
    assert onnx.onnx_speed_block(ONNX_SPEED) in rendered["results/onnx.md"]
    assert "## On a GPU\n\nNot run yet: no GPU has been available. `bench/gpu_check.py`" in rendered["results/onnx.md"]


def test_the_index_gives_each_page_its_headline_from_the_json(tmp_path):
    write_all_results(tmp_path)
    lines = [line for line in pages.render_all(tmp_path)["results/index.md"].splitlines() if line.startswith("- [")]
    assert lines == [
        "- [Quality: accuracy against removed layers](quality.md): under `keep>=0.6`, the winner is topology at 0.25 "
        "(1 of 4 layers removed, 0.600 = 63.2% of dense).",
        "- [CoMP: widths against single-mode baselines at matched FLOPs](comp.md): at 60% of the prefill FLOPs, "
        "`comp` keeps 0.750 exact match against 0.500 for the strongest single-mode baseline (`wanda_widths`); CoMP "
        "wins on this model. Training-free: nothing is fine-tuned.",
        "- [Recovery: pruning alone against pruning + recover=kd](recovery.md): recover=kd changes exact match by "
        "-0.020 to +0.200 (median +0.100) across angular, spacing at budgets 0.25 to 0.5.",
        "- [Visual-token pruning: speed and accuracy](tokens.md): keeping 0.25 of the visual tokens, halfv+freeze "
        "scores 0.900 against the dense 0.990; the largest measured prefill speedup is 2.00× (halfv+freeze at 0.25, "
        "batch 1; the FLOPs predict 2.00×).",
        "- [Topology: engine speed and ablations](topology.md): chosen on the dev split: "
        "`topology[topo_score=depth_bars,topo_k=5]`. Speed goals: gaussian N = 512 total ≤ 5 s: fast 4.00 s = 0.80× "
        "(meets); real N = 320 total ≤ 1 s: fast 2.00 s = 2.00× (misses).",
        "- [Speed: layer removal against the ideal L/L'](speed.md): removing 4 of 8 layers speeds prefill up 1.67× "
        "and decode 1.82× (ideal 2.00×).",
        "- [ONNX Runtime against PyTorch](onnx.md): on the CPU, ONNX Runtime runs prefill 2.00–2.00× and decode "
        "2.00–2.00× as fast as PyTorch eager; on a GPU: not run yet.",
    ]


def test_quality_headline_without_a_winner_names_the_best_pruned(tmp_path):
    write_all_results(tmp_path)
    (tmp_path / "quality_sweep" / "winner.json").unlink()
    assert quality.headline(tmp_path) == (
        "no layer configuration passes `keep>=0.6` on the bundled model; the best pruned, spacing at 0.25 (1 of 4 "
        "layers) and topology at 0.25 (1 of 4 layers), keeps 0.600 = 63.2% of dense.")


def test_gpu_section_shows_each_section_of_the_check(tmp_path):
    write_all_results(tmp_path)
    (tmp_path / "gpu_check.json").write_text(json.dumps({
        "command": "/x/.venv/bin/python bench/gpu_check.py", "gpu_result": True, "complete": True,
        "machine": {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "torch": "2.5.1", "torch_cuda": "12.4"},
        "sections": {"torch_speed": {"status": "ok", "seconds": 12.25, "result": {}},
                     "ort_cuda": {"status": "blocked", "reason": "no CUDAExecutionProvider | in onnxruntime",
                                  "seconds": 0.0},
                     "genai_cuda": {"status": "failed", "error": "RuntimeError: boom", "seconds": 1.0}}}))
    section = onnx.gpu_section(tmp_path)
    assert section.startswith("Measured with `.venv/bin/python bench/gpu_check.py` on NVIDIA H100 80GB HBM3 (torch "
                              "2.5.1, CUDA 12.4).\n\n| section | status | seconds | note |")
    assert "| torch_speed | ok | 12.2 | – |" in section  # 12.25 rounds half to even
    assert "| ort_cuda | blocked | 0.0 | no CUDAExecutionProvider / in onnxruntime |" in section
    assert "| genai_cuda | failed | 1.0 | RuntimeError: boom |" in section
    assert "Not run yet" not in section and "on a GPU: see the page." in onnx.headline(tmp_path)


def test_a_cpu_smoke_run_of_the_gpu_check_is_not_shown_as_a_gpu_result(tmp_path):
    write_all_results(tmp_path)
    (tmp_path / "gpu_check.json").write_text(json.dumps({
        "command": "python3 bench/gpu_check.py --device cpu", "gpu_result": False, "complete": False,
        "machine": {"device": "cpu", "torch": "2.5.1", "torch_cuda": None}, "sections": {}}))
    text = " ".join(onnx.gpu_section(tmp_path).split())
    assert ("on cpu (torch 2.5.1). **This run is a plumbing smoke test on the CPU, not a GPU result.** The run did not "
            "finish") in text
