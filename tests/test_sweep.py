"""The sweep: one scoring per method, plans equal to single runs, virtual = physical pruning, resume, rules."""

import json
import re
import signal
import subprocess
import time

import pytest
import torch

from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.integrations.lmms_eval.tasks import bundled_tasks_dir
from lmms_topo_plugin.cli.main import main
from lmms_topo_plugin.config.prune import LoadConfig
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.models.loading import load_config, load_model
from lmms_topo_plugin.pipeline import model_fingerprint
from lmms_topo_plugin.models.prompting import Prompt, encode
from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.search import SweepSpec, run_sweep
from lmms_topo_plugin.search.rules import SweepArgsError
from lmms_topo_plugin.search.sweep import configurations
from lmms_topo_plugin.search.variants import parse_variant, split_methods
from lmms_topo_plugin.surgery.layers import layers_removed, remove_layers
from lmms_topo_plugin.families.tiny import example_image
from cli import argv, environment, run, topo_prune, torchrun


def sweep_args(checkpoint, out, *extra):
    """``topo-prune sweep`` on a tiny model and 2 documents; later flags in ``extra`` win."""
    return ["sweep", "--model_args", f"pretrained={checkpoint},device=cpu", "--tasks", "topo_synth_count",
            "--include_path", bundled_tasks_dir(), "--limit", "2", "--cost-repeats", "1", "--calib-limits", "8",
            "--out", str(out), *extra]


def logits(loaded, prompt):
    inputs = encode(loaded.processor, loaded.adapter, [prompt])
    with torch.inference_mode():
        return loaded.model(**move_inputs(inputs, "cpu", loaded.model.dtype), use_cache=False).logits


@pytest.mark.e2e
def test_plans_from_one_scoring_equal_separate_runs(tiny_checkpoints, tmp_path):
    checkpoint = str(tiny_checkpoints("llava", 8))
    methods, budgets = ["block_influence", "angular", "random", "random[seed=3]", "spacing"], [0.25, 0.5]
    result = run_sweep(SweepSpec(model_args={"pretrained": checkpoint, "device": "cpu"}, methods=methods, budgets=budgets, calib_limits=[8], tasks=["topo_synth_count"],
                                 out=tmp_path / "sweep", rule="metric>=0", limit=2, cost_repeats=1))
    swept = {(row["variant"], row["budget"]): row["removed_layers"] for row in result["rows"] if row["method"] != "none"}
    separate, unreachable = {}, []
    for entry in methods:
        method, params = parse_variant(entry)
        for budget in budgets:
            try:
                _, report = load_pruned({"pretrained": checkpoint, "device": "cpu", **params, "method": method,
                                         "sparsity": budget, "calib_limit": 8})
            except ModelArgsError:
                unreachable.append((entry, budget))
                continue
            separate[(entry, budget)] = report.plan["removed_layers"]
    assert swept == separate
    assert swept[("random", 0.5)] != swept[("random[seed=3]", 0.5)]  # the variant's own seed
    assert [(item["variant"], item["budget"]) for item in result["skipped"]] == unreachable == [("spacing", 0.5)]
    results_md = (tmp_path / "sweep" / "results.md").read_text()
    assert "| random[seed=3] | 0.25 |" in results_md and "| random | 0.25 |" in results_md
    assert [row["method"] for row in result["rows"]].count("none") == 1


def test_virtual_and_physical_pruning_give_identical_logits(tiny_checkpoints):
    checkpoint = str(tiny_checkpoints("qwen2_vl", 6))
    prompt = Prompt.from_text("How many shapes are there?", [example_image(3)])
    loaded = load_model(LoadConfig(device="cpu"), checkpoint, load_config(checkpoint))
    dense = logits(loaded, prompt)
    config_before = loaded.model.config.to_dict()
    fresh = load_model(LoadConfig(device="cpu"), checkpoint, load_config(checkpoint))
    remove_layers(fresh.adapter, [0, 3, 5])
    with layers_removed(loaded.adapter, [0, 3, 5]) as kept:
        assert kept == [1, 2, 4]
        torch.testing.assert_close(logits(loaded, prompt), logits(fresh, prompt), rtol=0, atol=0)
        assert loaded.model.config.to_dict() == fresh.model.config.to_dict()
    torch.testing.assert_close(logits(loaded, prompt), dense, rtol=0, atol=0)
    assert loaded.model.config.to_dict() == config_before
    assert [layer.self_attn.layer_idx for layer in loaded.adapter.layers] == list(range(6))


def test_a_metric_the_tasks_do_not_produce_is_rejected_before_any_work(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(sweep_args(tiny_checkpoints("llava", 8), out, "--metric", "topo_synth_count/accuracy"))
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "topo-prune: --metric 'topo_synth_count/accuracy' is not produced by the tasks; available: "
        "topo_synth_count/exact_match")
    assert not out.exists()


@pytest.mark.e2e
def test_cli_end_to_end_writes_tables_plot_and_winner(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(sweep_args(tiny_checkpoints("llava", 8), out, "--methods", "block_influence,random",
                           "--budgets", "0.25,0.5", "--rule", "metric>=0", "--objective", "layers")) == 0
    rows = [json.loads(path.read_text()) for path in sorted((out / "configs").glob("*.json"))]
    assert sorted((row["method"], row["budget"]) for row in rows) == [
        ("block_influence", 0.25), ("block_influence", 0.5), ("none", 0.0), ("random", 0.25), ("random", 0.5)]
    winner = json.loads((out / "winner.json").read_text())
    assert (winner["schema"], winner["version"], winner["objective"]) == ("lmms_topo_plugin.sweep_winner", 1, "layers")
    best = max((row for row in rows if row["n_remove"] == 4), key=lambda row: (row["metrics"]["topo_synth_count/exact_match"], -row["cost"]["prefill_s"]))
    assert winner["winner"]["key"] == best["key"] and winner["winner"]["n_remove"] == 4
    checkpoint = str(tiny_checkpoints("llava", 8))
    assert winner["model"] == model_fingerprint(checkpoint, load_config(checkpoint))
    assert (out / "pareto.png").read_bytes().startswith(b"\x89PNG")
    assert len((out / "results.csv").read_text().splitlines()) == 1 + len(rows)
    assert "winner ★" in (out / "results.md").read_text()


def test_nothing_passing_exits_non_zero_after_writing_the_table(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(sweep_args(tiny_checkpoints("llava", 8), out, "--methods", "spacing", "--budgets", "0.25",
                           "--rule", "metric>=2"))
    assert code == 7
    assert "no configuration passes the rule" in (out / "results.md").read_text()
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"topo-prune: no configuration passes metric>=2 on topo_synth_count/exact_match; see {out / 'results.md'}")


@pytest.mark.e2e
def test_resume_after_a_kill_evaluates_only_what_is_missing(tiny_checkpoints, tmp_path):
    out = tmp_path / "sweep"
    command = argv("topo-prune", *sweep_args(tiny_checkpoints("llava", 8), out, "--methods", "block_influence,random",
                                             "--budgets", "0.125,0.25,0.375,0.5", "--limit", "6",
                                             "--cost-repeats", "3", "--rule", "metric>=0"))
    # its own Popen, to kill it mid-sweep; the runs after it go through tests/cli.py's runner
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment())
    deadline = time.monotonic() + 300
    while len(list((out / "configs").glob("*.json"))) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {path.name: path.stat().st_mtime_ns for path in (out / "configs").glob("*.json")}
    assert 2 <= len(before) < 9, "the kill must land mid-sweep"
    resumed = run(*command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{9 - len(before)} configuration(s) evaluated, {len(before)} reused" in resumed.stderr
    after = {path.name: path.stat().st_mtime_ns for path in (out / "configs").glob("*.json")}
    assert len(after) == 9 and all(after[name] == stamp for name, stamp in before.items())
    outputs = {name: (out / name).stat().st_mtime_ns for name in ("results.csv", "results.md", "pareto.png",
                                                                  "winner.json")}
    again = run(*command)
    assert again.returncode == 0 and "0 configuration(s) evaluated, 9 reused" in again.stderr
    assert "Loading weights" not in again.stderr
    assert {name: (out / name).stat().st_mtime_ns for name in outputs} == outputs
    assert not [path for path in out.rglob("*") if path.name.endswith(".tmp")]


@pytest.mark.e2e
def test_two_processes_score_once_and_split_the_evaluation(tmp_path):
    args = ["sweep", "--model_args", "device=cpu", "--methods", "block_influence", "--budgets", "0.25",
            "--calib-limits", "8", "--tasks", "topo_synth_count", "--limit", "6", "--cost-repeats", "1",
            "--rule", "metric>=0"]
    together = torchrun(2, "-m", "lmms_topo_plugin.cli.main", *args, "--out", tmp_path / "two")
    assert together.returncode == 0, together.stderr[-3000:]
    assert together.stderr.count("Calibrating:   0%") == 1  # rank 0 alone calibrates and scores
    alone = topo_prune(*args, "--out", tmp_path / "one")
    assert alone.returncode == 0, alone.stderr[-3000:]

    def outcome(out):
        rows = [json.loads(path.read_text()) for path in (out / "configs").glob("*.json")]
        return sorted((row["method"], row["removed_layers"], row["metrics"]) for row in rows)

    assert outcome(tmp_path / "two") == outcome(tmp_path / "one")


def test_method_variants_parse_and_refuse_bad_entries():
    assert split_methods("topology,topology[topo_k=5,topo_alpha=2], random") == [
        "topology", "topology[topo_k=5,topo_alpha=2]", "random"]
    assert parse_variant("topology[topo_k=5,topo_alpha=2]") == ("topology", {"topo_k": "5", "topo_alpha": "2"})
    assert parse_variant("angular") == ("angular", {})
    for text, message in [("topology[topo_k=5", "unbalanced"), ("a]b", "unbalanced"), ("t[[x=1]]", "unbalanced")]:
        with pytest.raises(SweepArgsError, match=message):
            split_methods(text)
    for entry, message in [("topology[]", "empty brackets"), ("topology[topo_k]", "'topo_k' is not key=value"),
                           ("topology[topo_k=1,topo_k=2]", "sets topo_k twice"), ("top ology!", "not a method name")]:
        with pytest.raises(SweepArgsError, match=re.escape(message)):
            parse_variant(entry)


def test_variants_are_checked_before_any_weights_load(tmp_path):
    spec = SweepSpec(model_args={}, methods=["topology[topo_k=0]"], budgets=[0.25], tasks=["topo_synth_count"],
                     out=tmp_path)
    with pytest.raises(ModelArgsError, match="topo_k='0' is out of range"):
        configurations(spec)
    for methods, message in [(["random[sparsity=0.5]"], "sparsity= cannot be set per method"),
                             (["none[topo_k=5]"], "none[...] is for token pruning alone"),
                             (["none[token_method=halfv]"], "token_method=halfv needs its stages in a sweep: token_layer= and token_ssr_mode=off"),
                             (["topology[topo_k=5,token_method=halfv,token_layer=2]"], "token_method=halfv needs its stages"),
                             (["random", "random"], "lists an entry twice"),
                             (["random[topo_k=5]"], "topo_k")]:
        with pytest.raises(ModelArgsError, match=re.escape(message)):
            configurations(SweepSpec(model_args={}, methods=methods, budgets=[0.25], tasks=["t"], out=tmp_path))


@pytest.mark.e2e
def test_token_pruning_is_a_sweep_dimension_and_the_winner_exports_it(tiny_checkpoints, tmp_path, monkeypatch):
    from lmms_topo_plugin.exporters.export import export_winner
    from lmms_topo_plugin.tokens import FastV

    attached = []
    original = FastV.attach

    def spy(self, adapter):
        attached.append((self.layer, self.keep))
        return original(self, adapter)

    monkeypatch.setattr(FastV, "attach", spy)
    checkpoint = str(tiny_checkpoints("llava", 8))
    with pytest.raises(ModelArgsError, match="would prune the dense reference too"):
        configurations(SweepSpec(model_args={"token_method": "fastv"}, methods=["random"], budgets=[0.25],
                                 tasks=["t"], out=tmp_path))
    methods = ["none[token_method=fastv,token_keep=0.25,token_layer=1]", "random",
               "random[token_method=fastv,token_keep=0.5]"]
    result = run_sweep(SweepSpec(model_args={"pretrained": checkpoint, "device": "cpu"}, methods=methods,
                                 budgets=[0.25], tasks=["topo_synth_count"], out=tmp_path / "sweep",
                                 rule="metric>=0", objective="layers", limit=2, cost_repeats=1))
    rows = {row["variant"]: row for row in result["rows"]}
    assert rows[methods[0]]["removed_layers"] == [] and rows[methods[0]]["budget"] == 0.0
    assert rows[methods[0]]["token_pruning"] == {"method": "fastv", "keep": 0.25, "layer": 1, "seed": 0}
    assert rows["random"]["token_pruning"] is None and rows["none"]["token_pruning"] is None
    assert rows["random"]["removed_layers"] == rows[methods[2]]["removed_layers"]  # same seed, same layers
    assert rows["random"]["key"] != rows[methods[2]]["key"]
    # the pruners were attached while their configurations were evaluated and measured, never otherwise
    assert set(attached) == {(1, 0.25), (2, 0.5)}
    winner = json.loads((tmp_path / "sweep" / "winner.json").read_text())["winner"]
    assert winner["variant"] in ("random", methods[2])  # most layers removed; the tie is broken by latency
    out = export_winner(tmp_path / "sweep" / "winner.json", tmp_path / "build")
    saved = json.loads((out / "config.json").read_text())["topo_pruning"]
    assert saved.get("token_pruning") == rows[winner["variant"]]["token_pruning"]
    assert saved["removed_layers"] == winner["removed_layers"]


def test_a_halfv_entry_with_its_stages_is_a_configuration_with_step_2(tmp_path):
    entry = "topology[topo_k=5,token_method=halfv,token_layer=2,token_ssr_mode=freeze,token_ssr_layer=3]"
    spec = SweepSpec(model_args={}, methods=[entry], budgets=[0.25], tasks=["topo_synth_count"], out=tmp_path)
    dense, point = configurations(spec)
    assert dense.config.token_pruning is None
    assert point.config.token_pruning == {"method": "halfv", "keep": 0.5, "layer": 2, "seed": 0, "anchor": 0.1,
                                          "ssr_mode": "freeze", "ssr_layer": 3}
    assert point.config.method_params["topo_k"] == 5
