"""``topo-prune export``: a validated, atomic from_pretrained checkpoint of a sweep winner or a model_args run."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText

from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.cli.main import main
from lmms_topo_plugin.exporters import export
from lmms_topo_plugin.runtime.generation import prompt_logits
from lmms_topo_plugin.models.loading import LoadedModel, load_config
from lmms_topo_plugin.pipeline import model_fingerprint
from lmms_topo_plugin.models.processors import load_processor
from lmms_topo_plugin.search.measure import default_cost_prompt
from table import REPRESENTATIVE_FAMILIES

pytestmark = pytest.mark.e2e  # the end-to-end tier (real CLI runs, exports): pytest -m e2e


@pytest.mark.parametrize("family", REPRESENTATIVE_FAMILIES)
def test_exported_checkpoint_reloads_to_the_pruned_model(family, tiny_checkpoints, tmp_path, capsys):
    checkpoint = str(tiny_checkpoints(family, 6))
    args = f"pretrained={checkpoint},method=block_influence,n_remove=2,device=cpu,calib_limit=4"
    assert main(["export", "--model-args", args, "--out", str(tmp_path / "build")]) == 0
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "build")
    pruned, _ = load_pruned({**dict(item.split("=") for item in args.split(",")), "dtype": "float32"})
    again = LoadedModel(reloaded.eval(), load_processor(tmp_path / "build"), pruned.adapter.__class__(reloaded), "")
    prompt = default_cost_prompt()
    torch.testing.assert_close(prompt_logits(again, [prompt]), prompt_logits(pruned, [prompt]), rtol=0,
                               atol=0)
    config = json.loads((tmp_path / "build" / "config.json").read_text())
    assert export.decoder_layer_counts(config) == {"config.text_config": 4}
    record = config["topo_pruning"]
    assert (record["schema"], record["version"], record["method"], record["original_num_hidden_layers"]) == (
        "lmms_topo_plugin.pruning", 1, "block_influence", 6)
    assert record["removed_layers"] == pruned.model.config.topo_pruning["removed_layers"]
    assert record["base_model_fingerprint"] == model_fingerprint(checkpoint, load_config(checkpoint))
    report = json.loads((tmp_path / "build" / "export_report.json").read_text())
    assert (report["max_abs_logit_difference"], report["num_layers"]) == (0.0, 4)


def winner_for(checkpoint: str, removed: list[int], model: str) -> dict:
    return {"schema": "lmms_topo_plugin.sweep_winner", "version": 1, "model": model,
            "model_args": {"pretrained": checkpoint, "device": "cpu"}, "rule": "keep>=0.95", "objective": "layers",
            "metric": "t/m", "winner": {"method": "angular", "budget": 0.25, "removed_layers": removed,
                                        "method_params": {}, "calibration": {"samples": 4, "fingerprint": "x"}}}


def test_export_from_a_winner_reapplies_its_exact_layers(tiny_checkpoints, tmp_path):
    checkpoint = str(Path(tiny_checkpoints("llava", 6)).resolve())
    winner = tmp_path / "winner.json"
    winner.write_text(json.dumps(winner_for(checkpoint, [2, 3], model_fingerprint(checkpoint, load_config(checkpoint)))))
    assert main(["export", "--winner", str(winner), "--out", str(tmp_path / "build")]) == 0
    record = json.loads((tmp_path / "build" / "config.json").read_text())["topo_pruning"]
    assert (record["removed_layers"], record["method"], record["budget"]) == ([2, 3], "angular", 0.25)
    assert record["selected_by"] == {"rule": "keep>=0.95", "objective": "layers", "metric": "t/m"}


def test_a_winner_whose_base_model_changed_is_refused(tiny_checkpoints, tmp_path, capsys):
    checkpoint = str(Path(tiny_checkpoints("llava", 6)).resolve())
    winner = tmp_path / "winner.json"
    winner.write_text(json.dumps(winner_for(checkpoint, [2], "elsewhere#0000")))
    assert main(["export", "--winner", str(winner), "--out", str(tmp_path / "build")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "topo-prune: --winner: the base model changed since the sweep (it measured elsewhere#0000, now ")
    assert not (tmp_path / "build").exists()


def test_a_checkpoint_that_fails_validation_is_not_left_behind(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(export, "MAX_LOGIT_DIFFERENCE", -1.0)
    args = f"pretrained={tiny_checkpoints('llava', 6)},method=spacing,n_remove=1,device=cpu"
    assert main(["export", "--model-args", args, "--out", str(tmp_path / "build")]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "topo-prune: the saved checkpoint does not reload to the pruned model (max logit difference 0")
    assert [path.name for path in tmp_path.iterdir() if path.name != "topo-cache"] == []


def test_re_exporting_into_an_export_needs_overwrite(tiny_checkpoints, tmp_path, capsys):
    checkpoint = tiny_checkpoints("llava", 6)
    build = tmp_path / "build"
    assert main(["export", "--model-args", f"pretrained={checkpoint},method=spacing,n_remove=1,device=cpu", "--out",
                 str(build)]) == 0
    (build / "README.md").write_text("the card a push wrote")
    before = {path.name: path.stat().st_mtime_ns for path in build.iterdir()}
    capsys.readouterr()
    # refused before loading anything: a model that does not exist is not even looked at
    assert main(["export", "--model-args", "pretrained=/nonexistent,method=spacing,n_remove=2,device=cpu", "--out",
                 str(build)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"topo-prune: --out {build} already holds an export; pass --overwrite to replace it, or choose another --out"]
    assert {path.name: path.stat().st_mtime_ns for path in build.iterdir()} == before
    assert main(["export", "--model-args", f"pretrained={checkpoint},method=spacing,n_remove=2,device=cpu", "--out",
                 str(build), "--overwrite"]) == 0
    assert json.loads((build / "export_report.json").read_text())["num_layers"] == 4
    assert not (build / "README.md").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["build", "topo-cache"]


@pytest.mark.parametrize("flags", [[], ["--winner", "w.json", "--model-args", "method=none"]])
def test_export_needs_exactly_one_source(flags, tmp_path, capsys):
    assert main(["export", *flags, "--out", str(tmp_path / "build")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "topo-prune: export: give exactly one of --winner (a sweep's winner.json), --pareto (a sweep directory) or "
        "--model-args")


def test_export_pareto_writes_every_configuration_on_the_front(tiny_checkpoints, tmp_path, capsys):
    from lmms_topo_plugin.search import SweepSpec, run_sweep

    checkpoint = str(tiny_checkpoints("llava", 6))
    result = run_sweep(SweepSpec(model_args={"pretrained": checkpoint, "device": "cpu"}, methods=["random", "spacing"],
                                 budgets=[0.2, 0.4], calib_limits=[4], tasks=["topo_synth_count"],
                                 out=tmp_path / "sweep", rule="metric>=0", limit=4, cost_repeats=1))
    metric = result["metric"]
    pruned = [row for row in result["rows"] if row["method"] != "none"]

    def removed(row):
        return row["n_remove"] / row["num_layers"]

    front = [row for row in pruned if not any(
        other["metrics"][metric] >= row["metrics"][metric] and removed(other) >= removed(row)
        and (other["metrics"][metric], removed(other)) != (row["metrics"][metric], removed(row))
        for other in result["rows"])]
    assert main(["export", "--pareto", str(tmp_path / "sweep"), "--out", str(tmp_path / "front")]) == 0
    index = json.loads((tmp_path / "front" / "index.json").read_text())["configurations"]
    assert sorted((entry["method"], entry["budget"]) for entry in index) == sorted(
        (row["method"], row["budget"]) for row in front)
    for entry in index:
        record = json.loads((tmp_path / "front" / entry["dir"] / "config.json").read_text())["topo_pruning"]
        assert (record["method"], record["removed_layers"]) == (entry["method"], entry["removed_layers"])
