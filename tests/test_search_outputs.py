"""Sweep outputs: the results table, its CSV and Markdown, the Pareto PNG and the winner record."""

import csv
import json

import pytest

from lmms_topo_plugin.search.outputs import (
    csv_text,
    pareto_figure,
    pareto_png,
    render_markdown,
    results_table,
    winner_record,
    write_csv,
    write_markdown,
    write_winner,
)
from lmms_topo_plugin.search.rules import parse_rule, pick_winner

EM, ANLS = "topo_synth/exact_match", "topo_synth/anls"


def row(key, method, budget, calib_limit, removed, metrics, stderr, prefill_s, decode_s, memory, parameters):
    """A sweep row of a 12-layer model; ``metrics``/``stderr`` are (exact_match, anls) pairs."""
    return {"key": key, "method": method, "budget": budget, "calib_limit": calib_limit, "n_remove": len(removed),
            "num_layers": 12, "removed_layers": removed, "metrics": dict(zip((EM, ANLS), metrics)),
            "stderr": dict(zip((EM, ANLS), stderr)), "eval_s": 2.0, "method_params": {"seed": 0} if removed else {},
            "calibration": {"samples": calib_limit, "fingerprint": "f" * 24} if calib_limit else None,
            "cost": {"prefill_s": prefill_s, "decode_s_per_token": decode_s, "peak_memory_bytes": memory,
                     "memory_kind": "rss", "parameters": parameters, "num_layers": 12 - len(removed),
                     "prefill_flops": 1000 * (12 - len(removed))}}


# Binary fractions throughout, so every ratio below is exactly the quotient written in the test.
DENSE = row("dense", "none", 0.0, None, [], (0.5, 0.75), (0.046875, None), 0.5, 0.03125, 2_000_000, 12_000_000)
PRUNED = row("topology-0.25-64", "topology", 0.25, 64, [2, 5, 9], (0.375, 0.5), (0.0546875, None),
             0.375, 0.0234375, 1_500_000, 9_000_000)
RULE = parse_rule("keep>=0.75")  # 0.75 × 0.5 = 0.375: PRUNED passes exactly at the bar


def sweep_rows():
    """Seven configurations: five methods, topology at two calibration sizes, and dense."""
    def pruned(key, method, budget, calib_limit, n, value, prefill_s):
        return row(key, method, budget, calib_limit, list(range(n)), (value, value), (0.02, 0.02), prefill_s,
                   0.01, 10**9, 10**9 - n * 10**7)

    return [
        pruned("topology-0.5", "topology", 0.5, None, 6, 0.42, 0.45),
        pruned("topology-0.25", "topology", 0.25, None, 3, 0.49, 0.7),
        pruned("topology-0.25-64", "topology", 0.25, 64, 3, 0.46, 0.71),
        pruned("angular-0.25", "angular", 0.25, None, 3, 0.47, 0.69),
        pruned("random-0.25", "random", 0.25, None, 3, 0.30, 0.72),
        pruned("block_influence-0.375", "block_influence", 0.375, None, 4, 0.48, 0.6),
        row("dense", "none", 0.0, None, [], (0.5, 0.5), (0.02, 0.02), 1.0, 0.02, 10**9, 10**9),
    ]


def test_results_table_values():
    table = results_table([PRUNED, DENSE], EM, RULE)
    assert table == [
        {"key": "dense", "method": "none", "variant": "none", "budget": 0.0, "calib_limit": None, "n_remove": 0, "num_layers": 12,
         "removed_fraction": 0.0, "removed_layers": [], "flops_removed": 0.0, ANLS: 0.75, ANLS + " stderr": None, EM: 0.5,
         EM + " stderr": 0.046875, "retained": 1.0, "prefill_s": 0.5, "decode_s_per_token": 0.03125,
         "prefill_speedup": 1.0, "decode_speedup": 1.0, "ideal_speedup": 1.0, "memory_mb": 2.0, "memory_ratio": 1.0,
         "memory_kind": "rss", "parameters": 12_000_000, "passes": None},
        {"key": "topology-0.25-64", "method": "topology", "variant": "topology", "budget": 0.25, "calib_limit": 64, "n_remove": 3,
         "num_layers": 12, "removed_fraction": 0.25, "removed_layers": [2, 5, 9], "flops_removed": 0.25, ANLS: 0.5, ANLS + " stderr": None,
         EM: 0.375, EM + " stderr": 0.0546875, "retained": 0.75, "prefill_s": 0.375, "decode_s_per_token": 0.0234375,
         "prefill_speedup": 0.5 / 0.375, "decode_speedup": 4 / 3, "ideal_speedup": 12 / 9, "memory_mb": 1.5,
         "memory_ratio": 0.75, "memory_kind": "rss", "parameters": 9_000_000, "passes": True},
    ]
    assert results_table([PRUNED, DENSE], EM, parse_rule("keep>0.75"))[1]["passes"] is False


def test_results_table_order_dense_first_then_method_budget_calibration():
    keys = [entry["key"] for entry in results_table(sweep_rows(), EM, RULE)]
    assert keys == ["dense", "angular-0.25", "block_influence-0.375", "random-0.25", "topology-0.25",
                    "topology-0.25-64", "topology-0.5"]


def test_csv_round_trips(tmp_path):
    table = results_table(sweep_rows(), EM, RULE)
    path = tmp_path / "results.csv"
    assert write_csv(table, path) is True
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == list(table[0])
        read = list(reader)
    assert read == [{name: "" if value is None else str(value) for name, value in entry.items()} for entry in table]
    assert [float(cells["prefill_speedup"]) for cells in read] == [entry["prefill_speedup"] for entry in table]
    assert [json.loads(cells["removed_layers"]) for cells in read] == [entry["removed_layers"] for entry in table]


def test_writers_leave_unchanged_files_alone(tmp_path):
    table = results_table(sweep_rows(), EM, RULE)
    path = tmp_path / "results.csv"
    write_csv(table, path)
    before = path.stat().st_mtime_ns
    assert write_csv(table, path) is False
    assert path.stat().st_mtime_ns == before
    assert path.read_text() == csv_text(table)
    assert write_markdown("a\n", tmp_path / "results.md") is True
    assert write_markdown("a\n", tmp_path / "results.md") is False
    assert write_markdown("b\n", tmp_path / "results.md") is True
    assert (tmp_path / "results.md").read_text() == "b\n"


HEADER = ("| method | budget | calibration | removed | FLOPs removed | topo_synth/exact_match | topo_synth/anls | retained "
          "| prefill ms | prefill speedup | decode ms/token | decode speedup | ideal L/L' | memory MB (rss) "
          "| memory ratio | parameters | passes |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
          "| ---: | ---: |\n")
DENSE_LINE = ("| dense | — | — | 0/12 | 0.0% | 0.500 ± 0.047 | 0.750 | 100.0% | 500.0 | 1.00× | 31.25 | 1.00× | 1.00× "
              "| 2.0 | 1.00× | 12.0M | — |\n")


def test_markdown_two_rows_with_winner():
    table = results_table([DENSE, PRUNED], EM, RULE)
    winner = pick_winner([DENSE, PRUNED], RULE, "layers", EM)
    assert render_markdown(table, EM, RULE, "layers", winner) == (
        "# Sweep results: topo_synth/exact_match\n\n"
        "Rule `keep>=0.75` on `topo_synth/exact_match`, objective `layers`: winner ★ **topology @ 0.25** "
        "(calibration 64), removes layers 2, 5, 9 (3/12), 0.375 = 75.0% of dense.\n\n"
        + HEADER + DENSE_LINE +
        "| topology ★ | 0.25 | 64 | 3/12 | 25.0% | 0.375 ± 0.055 | 0.500 | 75.0% | 375.0 | 1.33× | 23.44 | 1.33× | 1.33× "
        "| 1.5 | 0.75× | 9.0M | yes |\n"
    )


def test_markdown_two_rows_without_winner():
    rule = parse_rule("keep>80%")
    table = results_table([DENSE, PRUNED], EM, rule)
    assert render_markdown(table, EM, rule, "latency", None) == (
        "# Sweep results: topo_synth/exact_match\n\n"
        "Rule `keep>0.8` on `topo_synth/exact_match`, objective `latency`: no configuration passes the rule.\n\n"
        + HEADER + DENSE_LINE +
        "| topology | 0.25 | 64 | 3/12 | 25.0% | 0.375 ± 0.055 | 0.500 | 75.0% | 375.0 | 1.33× | 23.44 | 1.33× | 1.33× "
        "| 1.5 | 0.75× | 9.0M | no |\n"
    )


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which follows the 8-byte signature and the chunk length."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_pareto_png():
    rows = sweep_rows()
    by_key = {r["key"]: r for r in rows}
    first = pareto_png(rows, EM, by_key["block_influence-0.375"])
    # 12 × 4.5 in at 110 dpi, fitted by the tight box to the drawn area, which includes the legend outside the
    # right panel (the pixel size is fixed by the locked matplotlib and its bundled fonts).
    assert png_size(first) == (1373, 500)
    assert pareto_png(rows, EM, by_key["block_influence-0.375"]) == first
    assert pareto_png(rows, EM, by_key["topology-0.25"]) != first
    assert pareto_png(rows, EM, None) != first


def plotted_x(axis) -> list[float]:
    """Every x value the panel's lines plot (method lines, front, dense, winner), sorted."""
    return sorted(float(x) for line in axis.lines for x in line.get_xdata())


def test_pareto_latency_panel_goes_log_when_one_point_is_over_10x_slower():
    rows = sweep_rows()  # prefill 0.45 s .. 1.0 s: linear
    latency, removed = pareto_figure(rows, EM, None).axes
    assert (latency.get_xscale(), removed.get_xscale()) == ("linear", "linear")
    assert latency.get_xlabel() == "measured prefill latency (ms)"
    rows[4]["cost"]["prefill_s"] = 27.0  # random-0.25 measured 60× slower than the fastest (0.45 s)
    latency, removed = pareto_figure(rows, EM, None).axes
    assert (latency.get_xscale(), removed.get_xscale()) == ("log", "linear")
    assert latency.get_xlabel() == "measured prefill latency (ms, log scale: the latencies span 60×)"
    assert max(plotted_x(latency)) == 27000.0  # the noisy point stays at its true value, nothing clipped
    assert [t.get_text() for t in latency.get_xticklabels() if 400 <= t.get_position()[0] <= 30000] == [
        "500", "1000", "2000", "5000", "10000", "20000"]
    rows[4]["cost"]["prefill_s"] = 4.5  # exactly 10×: still linear
    assert pareto_figure(rows, EM, None).axes[0].get_xscale() == "linear"


@pytest.mark.e2e
def test_sweep_writes_a_log_latency_pareto_when_one_measurement_is_noisy(tiny_checkpoints, tmp_path, monkeypatch):
    from lmms_topo_plugin.integrations.lmms_eval.tasks import bundled_tasks_dir
    from lmms_topo_plugin.cli.main import main
    from lmms_topo_plugin.search import outputs, sweep

    measured, figures = [], []
    real_measure, real_figure = sweep.measure_cost, outputs.pareto_figure

    def noisy(*args, **kwargs):  # the real measurement, its prefill latency replaced: the second one 80× the first
        cost = real_measure(*args, **kwargs)
        cost["prefill_s"] = (0.05, 4.0)[len(measured)]
        measured.append(cost["prefill_s"])
        return cost

    monkeypatch.setattr(sweep, "measure_cost", noisy)
    monkeypatch.setattr(outputs, "pareto_figure", lambda *a, **k: figures.append(real_figure(*a, **k)) or figures[-1])
    out = tmp_path / "sweep"
    assert main(["sweep", "--model_args", f"pretrained={tiny_checkpoints('llava', 6)},device=cpu", "--tasks",
                 "topo_synth_count", "--include_path", bundled_tasks_dir(), "--limit", "1", "--cost-repeats", "1",
                 "--calib-limits", "4", "--methods", "random", "--budgets", "0.34", "--rule", "metric>=0",
                 "--out", str(out)]) == 0
    assert (out / "pareto.png").read_bytes().startswith(b"\x89PNG")
    rows = [json.loads(path.read_text()) for path in sorted((out / "configs").glob("*.json"))]
    assert sorted(row["cost"]["prefill_s"] for row in rows) == measured == [0.05, 4.0]
    latency = figures[-1].axes[0]
    assert latency.get_xscale() == "log"
    assert latency.get_xlabel() == "measured prefill latency (ms, log scale: the latencies span 80×)"
    assert max(plotted_x(latency)) == 4000.0  # drawn at its true value, in ms


def test_winner_record(tmp_path):
    rows = [DENSE, PRUNED]
    context = {"model_fingerprint": "abc", "calibration_fingerprint": "def", "method_params": {"k": 8},
               "plugin_version": "0.3.0", "lmms_eval_version": "0.7.3", "model_args": "method=topology"}
    record = winner_record(PRUNED, rows, RULE, "layers", EM, context)
    assert record == {
        "schema": "lmms_topo_plugin.sweep_winner", "version": 1,
        "winner": {name: PRUNED[name] for name in ("key", "method", "budget", "calib_limit", "n_remove", "num_layers",
                                                    "removed_layers", "method_params", "calibration", "metrics",
                                                    "stderr", "cost", "eval_s")} | {"variant": "topology", "token_pruning": None},
        "dense": {"metrics": DENSE["metrics"], "stderr": DENSE["stderr"], "cost": DENSE["cost"]},
        "rule": "keep>=0.75", "objective": "layers", "metric": EM, **context,
    }
    assert parse_rule(record["rule"]) == RULE
    path = tmp_path / "winner.json"
    assert write_winner(record, path) is True
    assert json.loads(path.read_text()) == record
    assert write_winner(record, path) is False
    with pytest.raises(ValueError, match=r"\['metric', 'schema'\]"):
        winner_record(PRUNED, rows, RULE, "layers", EM, {"schema": "x", "metric": "y"})
