"""The bundled default model: shipped as the package's default `pretrained`, small, documented, and accurate."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from safetensors import safe_open

from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.calib_data import bundled_tasks_dir
from lmms_topo_plugin.loading import BUNDLED_MODEL_DIR, resolve_pretrained
from lmms_topo_plugin.synthbench import KINDS
from lmms_topo_plugin.training.evaluate import evaluate

# Dense exact match on the first 20 test docs of each kind; the full split measured 0.9+ (README). A floor, not
# the measurement: it catches a broken checkpoint, processor or generation path, not a point of accuracy.
SLICE, OVERALL_FLOOR, KIND_FLOOR = 20, 0.85, 0.6


def test_bundled_model_is_the_default_and_small():
    assert resolve_pretrained(None) == str(BUNDLED_MODEL_DIR)
    weights = list(BUNDLED_MODEL_DIR.glob("*.safetensors"))
    assert weights and sum(path.stat().st_size for path in weights) <= 25 * 2**20
    with safe_open(str(weights[0]), "pt") as handle:
        assert {str(handle.get_slice(name).get_dtype()) for name in handle.keys()} == {"F16"}
    config = json.loads((BUNDLED_MODEL_DIR / "config.json").read_text())
    assert config["model_type"] == "llava" and config["text_config"]["num_hidden_layers"] >= 12
    card = (BUNDLED_MODEL_DIR / "README.md").read_text()
    assert not re.search(r"\{[a-z_]+(:[^}]*)?\}", card), "the model card template was not fully rendered"


def test_dense_accuracy_on_a_fixed_slice_stays_above_a_floor():
    loaded, report = load_pruned({"method": "none", "device": "cpu"})
    assert report.pretrained == str(BUNDLED_MODEL_DIR)
    table = evaluate(loaded, "test", limit=SLICE)
    assert table["overall"] >= OVERALL_FLOOR, table
    assert all(table[kind] >= KIND_FLOOR for kind in KINDS), table


def test_readme_main_command_runs_on_the_bundled_model(tmp_path):
    """`lmms-eval --model topo_pruned --model_args method=topology,sparsity=0.25` with no pretrained."""
    command = [str(Path(sys.executable).with_name("lmms-eval")), "--model", "topo_pruned",
               "--model_args", "method=topology,sparsity=0.25", "--tasks", "topo_synth_count",
               "--include_path", bundled_tasks_dir(), "--output_path", str(tmp_path), "--limit", "10"]
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (results,) = tmp_path.rglob("*_results.json")
    assert 0.0 <= json.loads(results.read_text())["results"]["topo_synth_count"]["exact_match,none"] <= 1.0
    (report,) = results.parent.glob("*_topo_pruned_topology.json")
    plan = json.loads(report.read_text())["plan"]
    assert plan["num_layers"] == 12 and len(plan["removed_layers"]) == 3
    assert json.loads(report.read_text())["calibration"]["samples"] == 256  # topology's default
