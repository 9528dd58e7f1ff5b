"""The bundled default model: shipped as the package's default `pretrained`, small, documented, and accurate."""

import json
import re

import pytest
from safetensors import safe_open

from cli import lmms_eval
from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.runtime.generation import generate
from lmms_topo_plugin.models.loading import BUNDLED_MODEL_DIR, resolve_pretrained
from lmms_topo_plugin.synthbench import KINDS, exact_match, load_split
from lmms_topo_plugin.testing.lmms_eval_output import logged_samples, response_text
from lmms_topo_plugin.tools.training.data import prompts_of
from lmms_topo_plugin.tools.training.evaluate import SETTINGS, evaluate

# Dense exact match on the first 20 test docs of each kind, measured: every answer right (the whole test split
# measured 0.992 overall: count 0.99, math 0.97, the other kinds 1.00, as in the README). Greedy decoding on the CPU
# in float32 is deterministic, so one flipped answer is a regression of the checkpoint, processor or generation path.
SLICE = 20
DENSE_SLICE_TABLE = {kind: 1.0 for kind in (*KINDS, "overall")}
# `method=topology,sparsity=0.25` on the bundled model removes layers 1, 9 and 10 (bench/results/quality_sweep/);
# on the first 10 count docs it answers 5 right (measured).
TOPOLOGY_QUARTER_REMOVED, TOPOLOGY_QUARTER_COUNT10 = [1, 6, 7], 0.7


def test_bundled_model_is_the_default_and_small():
    assert resolve_pretrained(None) == str(BUNDLED_MODEL_DIR)
    weights = list(BUNDLED_MODEL_DIR.glob("*.safetensors"))
    assert weights and sum(path.stat().st_size for path in weights) <= 25 * 2**20
    with safe_open(str(weights[0]), "pt") as handle:
        assert {str(handle.get_slice(name).get_dtype()) for name in handle.keys()} == {"F16"}
    config = json.loads((BUNDLED_MODEL_DIR / "config.json").read_text())
    assert config["model_type"] == "llava" and config["text_config"]["num_hidden_layers"] == 12
    card = (BUNDLED_MODEL_DIR / "README.md").read_text()
    assert not re.search(r"\{[a-z_]+(:[^}]*)?\}", card), "the model card template was not fully rendered"


def test_dense_accuracy_on_a_fixed_slice_is_the_measured_one():
    loaded, report = load_pruned({"method": "none", "device": "cpu"})
    assert report.pretrained == str(BUNDLED_MODEL_DIR)
    table = evaluate(loaded, "test", limit=SLICE)
    assert table == DENSE_SLICE_TABLE


@pytest.mark.e2e
def test_readme_main_command_runs_on_the_bundled_model(tmp_path):
    """`lmms-eval --model topo_pruned --model_args method=topology,sparsity=0.25` with no pretrained."""
    result = lmms_eval("method=topology,sparsity=0.25", tmp_path / "out", "--log_samples", limit=10)
    assert result.returncode == 0, result.stderr[-3000:]
    (results,) = (tmp_path / "out").rglob("*_results.json")
    metric = json.loads(results.read_text())["results"]["topo_synth_count"]["exact_match,none"]
    (report,) = results.parent.glob("*_topo_pruned_topology.json")
    plan = json.loads(report.read_text())["plan"]
    assert plan["num_layers"] == 12 and plan["removed_layers"] == TOPOLOGY_QUARTER_REMOVED
    assert json.loads(report.read_text())["calibration"]["samples"] == 256  # topology's default

    # the same pruned model in this process (its scores come from the run's cache) answers the same 10 docs alike
    docs = load_split("test", ["count"])[:10]
    samples = logged_samples(results, "topo_synth_count")
    assert [row["doc_id"] for row in samples] == list(range(10))
    assert [row["target"] for row in samples] == [doc["answer"] for doc in docs]
    loaded, again = load_pruned({"method": "topology", "sparsity": "0.25"})
    assert again.cache["scores_hit"] and again.plan["removed_layers"] == TOPOLOGY_QUARTER_REMOVED
    answers = generate(loaded, prompts_of(docs), dict(SETTINGS), until=["\n"])
    assert [response_text(row) for row in samples] == answers
    assert metric == sum(exact_match(a, doc["answer"]) for a, doc in zip(answers, docs)) / 10
    assert metric == TOPOLOGY_QUARTER_COUNT10
