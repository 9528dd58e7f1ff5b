"""bench/gpu_check.py: one line and a non-zero exit without CUDA; its --device cpu plumbing smoke writes one JSON
with every section's status; sections are isolated (one failing leaves the others, and the exit is 1)."""

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import torch

from cli import OFFLINE_ENV, python
from script_modules import load_script

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.py"
SECTIONS = ("plugin_eval", "recovery", "onnx_export", "torch_speed", "ort_cuda", "genai_cuda")
SMALL = ["--families", "llava", "--methods", "spacing", "--token-methods", "fastv", "--items-per-kind", "1",
         "--calib-limit", "8", "--recovery-families", "llava"]


def run_check(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return python(SCRIPT, *args, env=OFFLINE_ENV, cwd=ROOT, timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_check_fails_loudly_with_one_line(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = run_check("--device", "cuda", "--out", str(out))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: CUDA is not available")
    assert "--device cpu" in lines[0] and not out.exists()


def test_cpu_smoke_writes_every_section_with_its_status(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = run_check("--device", "cpu", "--out", str(out), "--sections", "plugin_eval,torch_speed", *SMALL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["gpu_result"] is False and "NOT a GPU result" in report["note"]
    assert report["complete"] is True and report["failed_sections"] == []
    assert report["machine"]["device"] == "cpu" and report["machine"]["torch"] == torch.__version__
    statuses = {name: entry["status"] for name, entry in report["sections"].items()}
    assert statuses == {"plugin_eval": "ok", "torch_speed": "ok", "recovery": "skipped", "onnx_export": "skipped",
                        "ort_cuda": "skipped", "genai_cuda": "skipped"}
    evaluation = report["sections"]["plugin_eval"]["result"]
    assert set(evaluation["items"]) == {"llava/layer:spacing", "llava/token:fastv"}
    layer = evaluation["items"]["llava/layer:spacing"]["result"]
    assert layer["num_layers"] == 4 and len(layer["removed_layers"]) == 2 and layer["attn_implementation"] == "sdpa"
    assert layer["answer_agreement_vs_cpu_fp32"] == 1.0 and layer["same_removed_layers"] is True
    assert len(layer["answers"]) == evaluation["docs"] == 5  # one doc of each synthbench kind
    assert evaluation["items"]["llava/token:fastv"]["result"]["token_pruning"]["method"] == "fastv"
    speed = report["sections"]["torch_speed"]["result"]["items"]
    for row in speed.values():
        assert row["status"] == "ok"
        assert row["result"]["half_removed"]["num_layers"] * 2 == row["result"]["dense"]["num_layers"]
        assert row["result"]["speedup"]["ideal_speedup"] == 2.0


def test_the_recovery_section_lowers_the_kl_and_the_hidden_term_of_the_pruned_model(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = run_check("--device", "cpu", "--out", str(out), "--sections", "recovery", *SMALL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    section = json.loads(out.read_text())["sections"]["recovery"]
    item = section["result"]["items"]["llava"]["result"]
    assert section["status"] == "ok" and section["result"]["samples"] == 16 and item["steps"] == 8
    assert item["kl_after"] < item["kl_before"] and item["hidden_after"] < item["hidden_before"]
    assert item["same_removed_layers"] is True and len(item["removed_layers"]) == 2  # a quarter of 6, rounded


def test_a_failing_section_leaves_the_others_and_exits_1(tmp_path):
    out = tmp_path / "gpu_check.json"
    # 15 image tokens is not a square: the random model cannot be built, the bundled model's rows still are
    done = run_check("--device", "cpu", "--out", str(out), "--sections", "torch_speed", "--speed-size",
                     "4,64,15,2,1")
    assert done.returncode == 1
    report = json.loads(out.read_text())
    entry = report["sections"]["torch_speed"]
    assert report["failed_sections"] == ["torch_speed"] and entry["status"] == "failed"
    assert entry["error"].startswith("1 of 2 failed; first: random_llava:") and "square" in entry["error"]
    assert entry["result"]["items"]["bundled"]["status"] == "ok"


def test_isolation_helpers_record_ok_failed_and_blocked():
    check = load_script(SCRIPT)

    def broken():
        raise ValueError("first line\nsecond line")

    def blocked():
        raise check.Blocked("no provider")

    assert check.run_isolated(lambda: 3)["result"] == 3
    failed = check.run_isolated(broken)
    assert failed["status"] == "failed" and failed["error"] == "ValueError: first line second line"
    assert check.run_isolated(blocked) | {"seconds": 0} == {"status": "blocked", "reason": "no provider", "seconds": 0}
    items = {"a": check.run_isolated(lambda: 1), "b": failed}
    with pytest.raises(check.PartlyFailed) as raised:
        check.roll_up(items, extra=1)
    assert raised.value.result == {"items": items, "extra": 1}
    assert str(raised.value) == "1 of 2 failed; first: b: ValueError: first line second line"


def test_ort_cuda_is_blocked_with_the_reason_where_onnxruntime_has_no_cuda_provider():
    onnxruntime = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    check = load_script(SCRIPT)
    with pytest.raises(check.Blocked, match="no CUDAExecutionProvider.*onnxruntime-gpu.*64 MiB"):
        check.ort_provider_or_block("cuda")
    assert check.ort_provider_or_block("cpu") == "cpu"


@pytest.mark.e2e
def test_cpu_smoke_of_every_section(tmp_path):
    """Every section on CPU: the tiny Qwen2.5-VL exported (fp32, fp16, int4), ONNX Runtime against PyTorch,
    onnxruntime-genai on the build (blocked, with the reason, where it is not installed)."""
    out = tmp_path / "gpu_check.json"
    done = run_check("--device", "cpu", "--out", str(out), "--onnx-families", "qwen2_5_vl", *SMALL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    statuses = {name: entry["status"] for name, entry in report["sections"].items()}
    genai = "ok" if importlib.util.find_spec("onnxruntime_genai") else "blocked"
    assert statuses == {**dict.fromkeys(SECTIONS[:5], "ok"), "genai_cuda": genai}
    export = report["sections"]["onnx_export"]["result"]["items"]["qwen2_5_vl"]["result"]
    assert export["fp32"]["greedy_tokens_identical"] is True and set(export["variants"]) == {"fp16", "int4"}
    assert export["num_layers"] == 4 and export["genai_files"] is True
    ort = report["sections"]["ort_cuda"]["result"]
    assert ort["speedup"]["ideal"] == 2.0 and set(ort["items"]) == {"dense", "half_removed"}
    assert ort["items"]["dense"]["result"]["onnxruntime"]["provider"] == "cpu"
    if genai == "ok":
        assert report["sections"]["genai_cuda"]["result"]["tokens_identical"] is True
