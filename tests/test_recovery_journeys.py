"""Recovery (``recover=kd``) downstream: the sweep's rows with and without it, and ``export --winner`` of a recovered
winner, checked against a single run (``load_pruned``) with the same model_args."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.integrations.lmms_eval.tasks import bundled_tasks_dir
from lmms_topo_plugin.search import SweepSpec, run_sweep
from lmms_topo_plugin.search.outputs import render_markdown, results_table
from lmms_topo_plugin.search.rules import parse_rule
from lmms_topo_plugin.search.sweep import configurations, entry_model_args, recovery_args

# a small recovery on a tiny LLaVA (random weights) that lowers its held-out KL
RECOVER = {"recover_samples": "16", "recover_steps": "10", "recover_batch_size": "4", "recover_lr": "0.01",
           "recover_max_new_tokens": "4"}
RECOVERED = "spacing[recover=kd," + ",".join(f"{key}={value}" for key, value in RECOVER.items()) + "]"


def _spec(tmp_path, model_args, methods, out="sweep"):
    return SweepSpec(model_args=model_args, methods=methods, budgets=[0.34], tasks=["topo_synth_count"],
                     out=tmp_path / out, rule="metric>=0", calib_limits=[None], include_path=bundled_tasks_dir(),
                     limit=2, cost_repeats=1)


def test_shared_recovery_applies_to_every_pruned_entry_and_never_to_the_dense_reference(tmp_path):
    points = configurations(_spec(tmp_path, {"recover": "kd", "recover_steps": "7"},
                                  ["spacing", "random[recover=none]", "none[token_method=fastv]"]))
    by_variant = {point.variant: point.config for point in points}
    assert not by_variant["none"].recovery.enabled  # the dense reference
    assert not by_variant["none[token_method=fastv]"].recovery.enabled  # token pruning alone: method=none
    assert by_variant["spacing"].recovery.enabled and by_variant["spacing"].recovery.recover_steps == 7
    assert not by_variant["random[recover=none]"].recovery.enabled  # opted out: the shared recover_steps dropped


def test_shared_recover_keys_apply_to_the_entries_that_recover_and_are_refused_when_none_does(tmp_path):
    points = configurations(_spec(tmp_path, {"recover_steps": "7"}, ["spacing", "spacing[recover=kd]"]))
    plain, recovered = points[1].config, points[2].config
    assert not plain.recovery.enabled and recovered.recovery.recover_steps == 7
    with pytest.raises(ModelArgsError, match=r"--model-args: recover_steps= applies to the entries that recover"):
        configurations(_spec(tmp_path, {"recover_steps": "7"}, ["spacing"]))
    with pytest.raises(ModelArgsError, match="recover_steps= needs recover=kd"):  # an entry's own: refused as usual
        configurations(_spec(tmp_path, {}, ["spacing[recover_steps=7]"]))


def test_entry_model_args_and_recovery_args_are_pure():
    assert entry_model_args({"recover": "kd", "recover_steps": "5", "dtype": "float32"}, {"recover": "none"}) == {
        "recover": "none", "dtype": "float32"}
    assert entry_model_args({"recover_steps": "5"}, {"recover": "kd"}) == {"recover_steps": "5", "recover": "kd"}
    assert entry_model_args({"recover_steps": "5"}, {"topo_k": "3"}) == {"topo_k": "3"}
    from lmms_topo_plugin.config.prune import PruneConfig

    config = PruneConfig.from_model_args({"method": "spacing", "sparsity": "0.5", "recover": "kd",
                                          "recover_steps": "5", "seed": "3"})
    args = recovery_args(config)
    assert args["recover"] == "kd" and args["recover_steps"] == 5 and args["seed"] == 3
    assert args["calib_task"] is None and set(args) >= {"recover_lr", "recover_params", "recover_samples"}
    assert config.with_values(**args) == config  # what export --winner rebuilds the recovery from
    assert recovery_args(PruneConfig.from_model_args({"method": "spacing", "sparsity": "0.5"})) is None


def _row(key, variant, removed, value, recovery=None):
    row = {"key": key, "method": variant.split("[")[0], "variant": variant, "budget": 0.5 if removed else 0.0,
           "calib_limit": None, "n_remove": len(removed), "num_layers": 4, "removed_layers": removed,
           "metrics": {"t/m": value}, "stderr": {"t/m": None},
           "cost": {"prefill_s": 0.5, "decode_s_per_token": 0.25, "peak_memory_bytes": 10**6, "memory_kind": "rss",
                    "parameters": 1000, "num_layers": 4 - len(removed), "prefill_flops": 100 * (4 - len(removed))}}
    return row | ({"recovery": recovery} if recovery else {})


def test_results_show_the_recovery_of_a_recovered_row_and_none_for_the_others():
    recovery = {"method": "kd", "steps": 10, "kl_before": 0.5, "kl_after": 0.25, "train_seconds": 1.5,
                "cache": {"key": "k", "hit": True}}
    rows = [_row("d", "none", [], 0.5), _row("s", "spacing", [1, 2], 0.25),
            _row("r", "spacing[recover=kd]", [1, 2], 0.375, recovery)]
    rule = parse_rule("metric>=0")
    table = {entry["key"]: entry for entry in results_table(rows, "t/m", rule)}
    assert table["r"]["recovery"] == "kd" and table["r"]["kl_after"] == 0.25 and table["r"]["recover_cached"] is True
    assert table["s"]["recovery"] == "none" and table["s"]["kl_after"] is None
    markdown = render_markdown(list(table.values()), "t/m", rule, "layers", None)
    assert "recovery (held-out KL to dense)" in markdown
    assert "| kd 10 steps: KL 0.5 → 0.25, 1.5 s (cached) |" in markdown
    # a sweep without recovery keeps its columns
    assert "recovery" not in results_table(rows[:2], "t/m", rule)[0]


def _capture_loaded(monkeypatch):
    """The sweep's one loaded model, kept for the test."""
    import lmms_topo_plugin.search.sweep as sweep

    held = []
    original = sweep.load_model

    def load(*args, **kwargs):
        held.append(original(*args, **kwargs))
        return held[-1]

    monkeypatch.setattr(sweep, "load_model", load)
    return held


def _logits(loaded):
    from lmms_topo_plugin.runtime.generation import prompt_logits
    from lmms_topo_plugin.search.measure import default_cost_prompt

    return prompt_logits(loaded, [default_cost_prompt()])


@pytest.mark.e2e
def test_a_sweep_gives_rows_with_and_without_recovery_and_the_recovered_winner_exports(tiny_checkpoints, tmp_path,
                                                                                       monkeypatch):
    from lmms_topo_plugin.api import load_pruned
    from lmms_topo_plugin.exporters.export import export_winner
    from lmms_topo_plugin.models.loading import load_config, load_model
    from lmms_topo_plugin.config.prune import LoadConfig

    checkpoint = str(tiny_checkpoints("llava", 6))
    base = {"pretrained": checkpoint, "device": "cpu"}
    held = _capture_loaded(monkeypatch)
    # the recovered entry first: the plain one after it must see the weights as pruning leaves them
    result = run_sweep(_spec(tmp_path, base, [RECOVERED, "spacing"]))
    rows = {row["variant"]: row for row in result["rows"]}
    recovered, plain = rows[RECOVERED], rows["spacing"]
    assert recovered["removed_layers"] == plain["removed_layers"] and recovered["key"] != plain["key"]
    assert recovered["recovery"]["kl_after"] < recovered["recovery"]["kl_before"]
    assert recovered["recovery"]["steps"] == 10 and recovered["recovery"]["cache"]["hit"] is False
    assert recovered["recovery_args"]["recover"] == "kd" and "recovery" not in plain and "recovery" not in rows["none"]
    # the one loaded model is the dense one again after the sweep: recovery's weights were restored
    (loaded,) = held
    fresh = load_model(LoadConfig(device="cpu"), checkpoint, load_config(checkpoint))
    assert torch.equal(_logits(loaded), _logits(fresh))
    with open(tmp_path / "sweep" / "results.csv") as handle:
        table = {entry["variant"]: entry for entry in csv.DictReader(handle)}
    assert table[RECOVERED]["recovery"] == "kd" and table["spacing"]["recovery"] == "none"
    assert float(table[RECOVERED]["kl_after"]) == recovered["recovery"]["kl_after"]
    assert "KL" in (tmp_path / "sweep" / "results.md").read_text()

    # the recovered entry alone wins a second sweep, from the cache of the first, and exports
    alone = run_sweep(_spec(tmp_path, {**base, "recover": "kd", **RECOVER}, ["spacing"], out="alone"))
    winner = alone["winner"]
    assert winner["recovery"]["cache"]["hit"] is True and winner["key"] == recovered["key"]
    assert winner["recovery"]["kl_after"] == recovered["recovery"]["kl_after"]
    assert not next(row for row in alone["rows"] if row["method"] == "none").get("recovery")
    out = export_winner(tmp_path / "alone" / "winner.json", tmp_path / "build")
    saved = json.loads((out / "config.json").read_text())["topo_pruning"]
    assert saved["recovery"]["kl_after"] == recovered["recovery"]["kl_after"] and saved["recovery"]["weights_changed"]
    assert saved["removed_layers"] == winner["removed_layers"]
    # second code path: a single run with the same model_args gives the exported model's logits
    single, report = load_pruned({**base, "method": "spacing", "sparsity": "0.34", "recover": "kd", **RECOVER})
    assert report.recovery["cache"]["hit"] is True
    exported = load_model(LoadConfig(device="cpu"), str(out), load_config(str(out)))
    assert (_logits(exported) - _logits(single)).abs().max() < 1e-5
    assert (_logits(exported) - _logits(fresh)).abs().max() > 1e-4  # pruned and recovered, not the dense model


@pytest.mark.e2e
def test_two_processes_recover_a_sweep_row_to_the_weights_one_process_trains(tiny_checkpoints, tmp_path):
    from cli import topo_prune, torchrun

    args = ["sweep", "--model_args", f"pretrained={tiny_checkpoints('llava', 6)},device=cpu,recompute=true",
            "--methods", f"spacing,{RECOVERED}", "--budgets", "0.34", "--tasks", "topo_synth_count",
            "--include_path", bundled_tasks_dir(), "--limit", "4", "--cost-repeats", "1", "--rule", "metric>=0"]
    together = torchrun(2, "-m", "lmms_topo_plugin.cli.main", *args, "--out", tmp_path / "two")
    assert together.returncode == 0, together.stderr[-3000:]
    alone = topo_prune(*args, "--out", tmp_path / "one")  # recompute=true: trained again, not read from the cache
    assert alone.returncode == 0, alone.stderr[-3000:]

    def rows(out):
        found = [json.loads(path.read_text()) for path in (out / "configs").glob("*.json")]
        return {row["variant"]: row for row in found}

    two, one = rows(tmp_path / "two"), rows(tmp_path / "one")
    assert two.keys() == one.keys() == {"none", "spacing", RECOVERED}
    assert two[RECOVERED]["recovery"]["world_size"] == 2 and one[RECOVERED]["recovery"]["world_size"] == 1
    assert two[RECOVERED]["recovery"]["cache"]["hit"] is False and one[RECOVERED]["recovery"]["cache"]["hit"] is False
    for name in ("kl_before", "kl_after"):  # the same update, the gradients summed in another order
        assert two[RECOVERED]["recovery"][name] == pytest.approx(one[RECOVERED]["recovery"][name], rel=1e-4)
    assert all(two[variant]["metrics"] == one[variant]["metrics"] for variant in two)


@pytest.mark.e2e
def test_a_width_pruned_qwen_recovered_with_hidden_states_in_a_sweep_exports_to_the_single_runs_logits(
        tiny_checkpoints, tmp_path, monkeypatch):
    """CoMP's width pruning on an M-RoPE family, recovered with the hidden-state term inside the sweep: the weights are
    restored after the row, and the exported winner has the logits of a single run with the same model_args."""
    from lmms_topo_plugin.api import load_pruned
    from lmms_topo_plugin.config.prune import LoadConfig
    from lmms_topo_plugin.exporters.export import export_winner
    from lmms_topo_plugin.models.loading import load_config, load_model

    checkpoint = str(tiny_checkpoints("qwen2_5_vl", 4))
    # near the dense model (a fifth of the FLOPs) the shared learning rate overshoots: the default one
    base = {"pretrained": checkpoint, "device": "cpu", "recover": "kd", **RECOVER, "recover_hidden": "5",
            "recover_lr": "0.001", "recover_steps": "20"}
    held = _capture_loaded(monkeypatch)
    spec = SweepSpec(model_args=base, methods=["comp"], budgets=[0.2], tasks=["topo_synth_count"], out=tmp_path / "sweep",
                     rule="metric>=0", calib_limits=[16], include_path=bundled_tasks_dir(), limit=2, cost_repeats=1)
    result = run_sweep(spec)
    winner = result["winner"]
    assert winner["method"] == "comp" and winner["recovery_args"]["recover_hidden"] == 5.0
    record = winner["recovery"]
    assert record["hidden_weight"] == 5.0 and record["hidden_after"] < record["hidden_before"]
    assert record["kl_after"] < record["kl_before"]
    (loaded,) = held
    fresh = load_model(LoadConfig(device="cpu"), checkpoint, load_config(checkpoint))
    assert torch.equal(_logits(loaded), _logits(fresh))  # the sweep's model is dense again
    out = export_winner(tmp_path / "sweep" / "winner.json", tmp_path / "build")
    exported = load_model(LoadConfig(device="cpu"), str(out), load_config(str(out)))
    single, report = load_pruned({**base, "method": "comp", "sparsity": "0.2", "calib_limit": "16"})
    assert report.recovery["cache"]["hit"] is True and report.recovery["hidden_after"] == record["hidden_after"]
    assert (_logits(exported) - _logits(single)).abs().max() < 1e-5
