"""Every failure the plugin owns exits non-zero with one line on stderr, through the real ``lmms-eval`` CLI.

lmms-eval catches ``Exception``, logs it and exits 0; these tests run the command in a subprocess and assert
the exit code (lmms_topo_plugin.errors), the exact line, and that no results were written.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cli import FAULTS, FIXTURES, assert_failed, lmms_eval
from lmms_topo_plugin.errors import NonFiniteError
from lmms_topo_plugin.scorers import LayerScores
from lmms_topo_plugin.topology.engines import INSTALL_HINT
from table import DIONYSUS_METHODS, ids


@pytest.mark.e2e
@pytest.mark.parametrize("row", DIONYSUS_METHODS, ids=ids(DIONYSUS_METHODS))
def test_missing_dionysus_says_how_to_install_before_loading(row, tiny_checkpoints, tmp_path):
    args = f"pretrained={tiny_checkpoints('llava', 8)},method={row.name},sparsity=0.25,device=cpu,{row.dionysus_args}"
    result = lmms_eval(args, tmp_path / "out", pythonpath=FIXTURES / "no_dionysus")
    assert_failed(result, 3, f"topo_pruned: {INSTALL_HINT}", tmp_path / "out")
    assert "Loading weights" not in result.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("row", DIONYSUS_METHODS, ids=ids(DIONYSUS_METHODS))
def test_topology_runs_without_dionysus_with_the_default_engine(row, tiny_checkpoints, tmp_path):
    args = f"pretrained={tiny_checkpoints('llava', 8)},method={row.name},sparsity=0.25,device=cpu,calib_limit=16"
    result = lmms_eval(args, tmp_path / "out", pythonpath=FIXTURES / "no_dionysus")
    assert result.returncode == 0, result.stderr[-3000:]
    (results,) = (tmp_path / "out").rglob("*_results.json")
    assert "topo_synth_count" in json.loads(results.read_text())["results"]


@pytest.mark.e2e
def test_nan_weights_in_one_layer_name_that_layer(tiny_checkpoints, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    source = Path(tiny_checkpoints("llava", 8))
    for item in source.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    weights = load_file(broken / "model.safetensors")
    (name,) = [key for key in weights if "layers.5.mlp.down_proj.weight" in key]
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    result = lmms_eval(f"pretrained={broken},method=block_influence,sparsity=0.25,device=cpu,calib_limit=8",
                       tmp_path / "out")
    assert_failed(result, 5, "topo_pruned: non-finite hidden states (NaN or inf) in the output of decoder layer 5 "
                  "(h_6) during calibration; check the checkpoint's weights of that layer, or use dtype=float32 if a "
                  "half-precision dtype overflows", tmp_path / "out")


@pytest.mark.e2e
@pytest.mark.parametrize("args, line", [
    ("method=block_influence,sparsity=0.25,calib_limit=1000",
     "model_args: calib_limit=1000 but the bundled calib split has only 320 samples"),
    ("method=topology,sparsity=0.25,calib_limit=2",
     "model_args: method=topology needs at least 3 calibration samples, calib_limit=2"),
])
def test_too_few_calibration_samples(args, line, tmp_path):
    result = lmms_eval(f"{args},device=cpu", tmp_path / "out")
    assert_failed(result, 2, f"topo_pruned: {line}", tmp_path / "out")


@pytest.mark.e2e
def test_a_model_that_fails_to_load(tiny_checkpoints, tmp_path):
    broken = tmp_path / "truncated"
    broken.mkdir()
    for item in Path(tiny_checkpoints("llava", 8)).iterdir():
        data = item.read_bytes()
        (broken / item.name).write_bytes(data[: len(data) // 2] if item.suffix == ".safetensors" else data)
    result = lmms_eval(f"pretrained={broken},method=none,device=cpu", tmp_path / "out")
    ours = [text for text in result.stderr.splitlines() if text.startswith("topo_pruned:")]
    assert result.returncode == 4 and len(ours) == 1, result.stderr[-3000:]
    assert ours[0].startswith(f"topo_pruned: pretrained='{broken}' failed to load: "), ours


@pytest.mark.e2e
def test_out_of_memory_in_calibration_names_the_step(tiny_checkpoints, tmp_path):
    args = f"pretrained={tiny_checkpoints('llava', 8)},method=block_influence,sparsity=0.25,device=cpu,calib_limit=8"
    result = lmms_eval(args, tmp_path / "out", pythonpath=FAULTS, env={"TOPO_TEST_FAULT": "oom"})
    assert_failed(result, 6, "topo_pruned: out of memory during the calibration pass (calib_batch_size=8) "
                  "(CUDA out of memory. Tried to allocate 20.00 GiB); lower calib_batch_size=", tmp_path / "out")


@pytest.mark.e2e
def test_exception_in_generate_until(tiny_checkpoints, tmp_path):
    result = lmms_eval(f"pretrained={tiny_checkpoints('llava', 8)},method=none,device=cpu", tmp_path / "out",
                       pythonpath=FAULTS, env={"TOPO_TEST_FAULT": "runtime"})
    assert_failed(result, 1, "topo_pruned: generate_until failed: RuntimeError: injected failure in a decoder layer",
                  tmp_path / "out")


@pytest.mark.e2e
def test_exception_in_loglikelihood(tiny_checkpoints, tmp_path):
    result = lmms_eval(f"pretrained={tiny_checkpoints('llava', 8)},method=none,device=cpu", tmp_path / "out",
                       "--force_simple", tasks="topo_fixture_presence_mc", include=FIXTURES / "topo_mc",
                       pythonpath=FAULTS, env={"TOPO_TEST_FAULT": "runtime"})
    assert_failed(result, 1, "topo_pruned: loglikelihood failed: RuntimeError: injected failure in a decoder layer",
                  tmp_path / "out")


def test_non_finite_scores_are_never_selected_from():
    scores = LayerScores([0.3, float("nan"), 0.1, float("inf")])
    with pytest.raises(NonFiniteError) as raised:
        scores.check_finite("angular")
    assert str(raised.value) == ("method=angular produced non-finite scores (NaN or inf) for decoder layers [1, 3]; "
                                 "nothing was removed")
    assert LayerScores([0.3, 0.2]).check_finite("angular").importance == [0.3, 0.2]


def test_nan_scores_stop_the_pipeline(tiny_checkpoints, monkeypatch):
    from lmms_topo_plugin.api import load_pruned
    from lmms_topo_plugin.scorers.similarity import BlockInfluence

    monkeypatch.setattr(BlockInfluence, "score", lambda self, stats, num_layers: LayerScores([float("nan")] * num_layers))
    with pytest.raises(NonFiniteError, match=r"method=block_influence .* decoder layers \[0, 1, 2, 3, 4, 5, 6, 7\]"):
        load_pruned({"pretrained": str(tiny_checkpoints("llava", 8)), "method": "block_influence", "n_remove": 2,
                     "device": "cpu", "calib_limit": 4})
