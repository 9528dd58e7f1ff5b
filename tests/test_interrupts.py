"""Ctrl-C in a long step: one line saying what re-running does, exit 130, no traceback (``topo-prune`` and lmms-eval).

Each test starts the real command in a subprocess with the ``hang`` fault (tests/fixtures/faults): the first
decoder layer run creates a file and blocks, so SIGINT arrives in the middle of calibration or evaluation.
"""

import signal
import subprocess
import time
from pathlib import Path

import pytest

from cli import FAULTS, argv, environment, lmms_eval_args

pytestmark = pytest.mark.e2e  # the end-to-end tier (real CLI runs, exports): pytest -m e2e

TOPO_PRUNE = argv("topo-prune-module")
RESTARTS = "re-running starts over, reusing the calibration and layer scores already cached"


def interrupted(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``command`` until its first decoder layer runs, send it SIGINT, and return how it ended (its own
    ``subprocess.Popen``: tests/cli.py's runner waits for the end)."""
    ready = tmp_path / "ready"
    env = environment({"TOPO_TEST_FAULT": "hang", "TOPO_TEST_READY": str(ready)}, pythonpath=FAULTS)
    # a shell that started pytest in the background ignores SIGINT, and so would the command: restore the default
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the command never reached a decoder layer"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def assert_interrupted(result: subprocess.CompletedProcess, line: str) -> None:
    """Exit 130, ``line`` as the last line of stderr (on a line of its own, after any progress bar), no traceback."""
    assert (result.returncode, result.stderr.split("\n")[-2:]) == (130, [line, ""]), repr(result.stderr[-3000:])
    assert result.stderr.endswith(f"\n{line}\n") or result.stderr == f"{line}\n", repr(result.stderr[-3000:])
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr, result.stderr[-3000:]


def test_ctrl_c_during_an_exports_calibration(tiny_checkpoints, tmp_path):
    args = f"pretrained={tiny_checkpoints('llava', 6)},method=block_influence,n_remove=2,device=cpu,calib_limit=4"
    result = interrupted([*TOPO_PRUNE, "export", "--model-args", args, "--out", str(tmp_path / "build")], tmp_path)
    assert_interrupted(result, f"topo-prune: export interrupted; no half-written checkpoint was left in --out; "
                               f"{RESTARTS}")
    assert sorted(path.name for path in tmp_path.iterdir() if path.name != "topo-cache") == ["ready"]


def test_ctrl_c_during_a_sweeps_evaluation_says_re_running_resumes(tiny_checkpoints, tmp_path):
    command = [*TOPO_PRUNE, "sweep", "--model-args", f"pretrained={tiny_checkpoints('llava', 6)},device=cpu",
               "--methods", "spacing", "--budgets", "0.25", "--tasks", "topo_synth_count", "--limit", "2",
               "--cost-repeats", "1", "--out", str(tmp_path / "sweep")]
    assert_interrupted(interrupted(command, tmp_path),
                       "topo-prune: sweep interrupted; re-run the same command to resume (finished configurations "
                       "are kept)")


def test_ctrl_c_during_calibration_inside_lmms_eval(tiny_checkpoints, tmp_path):
    """The plugin's model construction under ``lmms-eval --model topo_pruned``: its line, not lmms-eval's traceback."""
    args = f"pretrained={tiny_checkpoints('llava', 6)},method=block_influence,n_remove=2,device=cpu,calib_limit=4"
    result = interrupted(argv("lmms-eval", *lmms_eval_args(args, tmp_path / "out")), tmp_path)
    assert_interrupted(result, f"topo_pruned: interrupted (preparing the model); {RESTARTS}")
    assert not list((tmp_path / "out").rglob("*_results.json"))


@pytest.mark.parametrize("command", ["prune", "analyze"])
def test_ctrl_c_in_the_other_calibrating_commands(command, tiny_checkpoints, tmp_path):
    args = f"pretrained={tiny_checkpoints('llava', 6)},method=block_influence,n_remove=2,device=cpu,calib_limit=4"
    flags = ["--what", "block_influence", "--out", str(tmp_path / "a")] if command == "analyze" else [
        "--report-dir", str(tmp_path / "r")]
    result = interrupted([*TOPO_PRUNE, command, "--model-args", args, *flags], tmp_path)
    assert_interrupted(result, f"topo-prune: {command} interrupted; {RESTARTS}")
