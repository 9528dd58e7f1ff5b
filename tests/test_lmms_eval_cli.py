"""The real ``lmms-eval`` CLI, in a subprocess, on each architecture family's tiny model."""

import json

import pytest

from cli import lmms_eval, lmms_eval_args, torchrun
from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.runtime.generation import generate
from lmms_topo_plugin.synthbench import exact_match, load_split
from lmms_topo_plugin.testing.lmms_eval_output import logged_samples, response_text
from lmms_topo_plugin.tools.training.data import prompts_of
from table import FAMILIES, FAMILY_TABLE

pytestmark = pytest.mark.e2e  # the end-to-end tier (real CLI runs, exports): pytest -m e2e

METHOD_FOR = {family: FAMILY_TABLE[family].lmms_eval_method for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_prunes_inline_and_writes_results_and_plan(family, tiny_checkpoints, tmp_path):
    checkpoint = tiny_checkpoints(family, 8)
    model_args = (f"pretrained={checkpoint},method={METHOD_FOR[family]},sparsity=0.25,device=cpu,"
                  f"calib_limit=16,batch_size=2")
    result = lmms_eval(model_args, tmp_path / "out", "--log_samples", limit=4)
    assert result.returncode == 0, result.stderr[-3000:]
    results = list((tmp_path / "out").rglob("*_results.json"))
    assert len(results) == 1, result.stderr[-3000:]
    metrics = json.loads(results[0].read_text())["results"]["topo_synth_count"]
    # the same pruned model in this process (scores from the run's cache), one prompt at a time, answers the same
    # 4 docs alike, and lmms-eval's metric is their exact match
    docs = load_split("test", ["count"])[:4]
    samples = logged_samples(results[0], "topo_synth_count")
    assert [row["doc_id"] for row in samples] == [0, 1, 2, 3]
    assert [row["target"] for row in samples] == [doc["answer"] for doc in docs]
    loaded, again = load_pruned(dict(item.split("=", 1) for item in model_args.split(",")))
    assert again.cache["scores_hit"]
    answers = [generate(loaded, [prompt], {"max_new_tokens": 5, "do_sample": False}, ["\n"])[0]
               for prompt in prompts_of(docs)]
    assert [response_text(row) for row in samples] == answers
    assert metrics["exact_match,none"] == sum(exact_match(a, doc["answer"]) for a, doc in zip(answers, docs)) / 4
    reports = list(results[0].parent.glob("*_topo_pruned_*.json"))
    assert len(reports) == 1, "the pruning plan must be written next to the results"
    report = json.loads(reports[0].read_text())
    assert report["plan"]["num_layers"] == 8 and report["plan"]["removed_layers"] == again.plan["removed_layers"]
    assert len(again.plan["removed_layers"]) == 2
    assert report["kept_layers"] == [i for i in range(8) if i not in report["plan"]["removed_layers"]]
    assert report["parameters_after"] < report["parameters_before"]
    assert report["calibration"]["samples"] == 16
    figures = {path.name.rsplit("_", 1)[1] for path in results[0].parent.glob("*_topo_pruned_*.png")}
    expected = {"scores.png", "barcode.png", "epi.png", "consistency.png", "diagnostics.png"} if METHOD_FOR[family] == "topology" else {"scores.png"}
    assert figures == expected


def test_cli_bad_model_args_fail_fast_with_one_line(tiny_checkpoints, tmp_path):
    checkpoint = tiny_checkpoints("llava", 8)
    result = lmms_eval(f"pretrained={checkpoint},method=random,sparsity=1.5", tmp_path / "out", limit=4)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("topo_pruned:")]
    assert lines == ["topo_pruned: model_args: sparsity=1.5 is out of range; expected a float in [0.0, 1.0)"]
    assert "Loading weights" not in result.stderr


def test_two_processes_calibrate_once_and_apply_the_same_plan(tiny_checkpoints, tmp_path):
    checkpoint = tiny_checkpoints("llava", 8)
    model_args = f"pretrained={checkpoint},method=block_influence,sparsity=0.25,device=cpu,calib_limit=8"
    result = torchrun(2, "-m", "lmms_eval", *lmms_eval_args(model_args, tmp_path / "out", "--log_samples", limit=8))
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr  # lmms-eval sends its log to stdout
    plans = [line.split("topo_pruned: ", 1)[1] for line in output.splitlines() if "decoder layers:" in line]
    assert len(plans) == 2 and plans[0] == plans[1], plans
    assert output.count("Calibrating:   0%") == 1  # one progress bar: only rank 0 calibrates
    (results,) = (tmp_path / "out").rglob("*_results.json")
    assert json.loads(results.read_text())["n-samples"]["topo_synth_count"]["effective"] == 8
    assert len(list(results.parent.glob("*_topo_pruned_*.json"))) == 1
