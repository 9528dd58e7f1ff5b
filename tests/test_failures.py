"""Every failure the plugin owns exits non-zero with one line on stderr, through the real ``lmms-eval`` CLI.

lmms-eval catches ``Exception``, logs it and exits 0; these tests run the command in a subprocess and assert
the exit code (lmms_topo_plugin.errors), the exact line, and that no results were written.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmms_topo_plugin.calibration.sources import bundled_tasks_dir
from lmms_topo_plugin.errors import NonFiniteError
from lmms_topo_plugin.scorers import LayerScores
from lmms_topo_plugin.topology.zigzag import INSTALL_HINT

LMMS_EVAL = Path(sys.executable).with_name("lmms-eval")
FIXTURES = Path(__file__).parent / "fixtures"


def lmms_eval(model_args: str, out: Path, *, tasks: str = "topo_synth_count", include: str | None = None,
              pythonpath: Path | None = None, fault: str | None = None, extra: tuple[str, ...] = ()
              ) -> subprocess.CompletedProcess:
    env = os.environ.copy()
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    if fault:
        env["TOPO_TEST_FAULT"] = fault
    command = [str(LMMS_EVAL), "--model", "topo_pruned", "--model_args", model_args, "--tasks", tasks,
               "--include_path", include or bundled_tasks_dir(), "--output_path", str(out), "--limit", "2", *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def assert_failed(result: subprocess.CompletedProcess, code: int, line: str, out: Path) -> None:
    """Exit ``code``, exactly one ``topo_pruned:`` line on stderr equal to ``line``, no results file."""
    ours = [text for text in result.stderr.splitlines() if text.startswith("topo_pruned:")]
    assert (result.returncode, ours) == (code, [line]), result.stderr[-3000:]
    assert not list(out.rglob("*_results.json"))


@pytest.mark.e2e
def test_missing_dionysus_says_how_to_install_before_loading(tiny_checkpoints, tmp_path):
    args = f"pretrained={tiny_checkpoints('llava', 8)},method=topology,sparsity=0.25,device=cpu,topo_engine=fast"
    result = lmms_eval(args, tmp_path / "out", pythonpath=FIXTURES / "no_dionysus")
    assert_failed(result, 3, f"topo_pruned: {INSTALL_HINT}", tmp_path / "out")
    assert "Loading weights" not in result.stderr


@pytest.mark.e2e
def test_topology_runs_without_dionysus_with_the_default_engine(tiny_checkpoints, tmp_path):
    args = f"pretrained={tiny_checkpoints('llava', 8)},method=topology,sparsity=0.25,device=cpu,calib_limit=16"
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
    result = lmms_eval(args, tmp_path / "out", pythonpath=FIXTURES / "faults", fault="oom")
    assert_failed(result, 6, "topo_pruned: out of memory during the calibration pass (calib_batch_size=8) "
                  "(CUDA out of memory. Tried to allocate 20.00 GiB); lower calib_batch_size=", tmp_path / "out")


@pytest.mark.e2e
def test_exception_in_generate_until(tiny_checkpoints, tmp_path):
    result = lmms_eval(f"pretrained={tiny_checkpoints('llava', 8)},method=none,device=cpu", tmp_path / "out",
                       pythonpath=FIXTURES / "faults", fault="runtime")
    assert_failed(result, 1, "topo_pruned: generate_until failed: RuntimeError: injected failure in a decoder layer",
                  tmp_path / "out")


@pytest.mark.e2e
def test_exception_in_loglikelihood(tiny_checkpoints, tmp_path):
    result = lmms_eval(f"pretrained={tiny_checkpoints('llava', 8)},method=none,device=cpu", tmp_path / "out",
                       tasks="topo_fixture_presence_mc", include=str(FIXTURES / "topo_mc"),
                       pythonpath=FIXTURES / "faults", fault="runtime", extra=("--force_simple",))
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
