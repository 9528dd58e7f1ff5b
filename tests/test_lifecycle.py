"""HalfV's visual-token lifecycle: truncated matrix entropy, stage detection, freezing KL, ``analyze --what entropy``."""

import json
import math

import pytest
import torch

from lmms_topo_plugin.cli.main import main
from lmms_topo_plugin.tokens.lifecycle import Stages, detect_stages, freezing_kl, truncated_matrix_entropy


def test_truncated_matrix_entropy_by_hand():
    # rows centred already; Z^T Z = diag(2, 8): p = (0.8, 0.2)
    states = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    assert truncated_matrix_entropy(states, 50) == pytest.approx(-(0.8 * math.log(0.8) + 0.2 * math.log(0.2)), abs=1e-12)
    assert truncated_matrix_entropy(states, 1) == 0.0  # one eigenvalue kept: no spread
    assert truncated_matrix_entropy(states + 5.0, 50) == pytest.approx(truncated_matrix_entropy(states, 50), abs=1e-12)
    assert truncated_matrix_entropy(states[:1], 50) == 0.0


@pytest.mark.parametrize("curve,stages", [
    ([3.0, 3.01, 2.99, 3.0, 2.6, 2.1, 1.7, 1.5, 1.6, 1.8], Stages(3, 7)),  # plateau 0-3, decline from 3, min at 7
    ([2.0, 1.5, 1.2, 1.0, 1.1], Stages(1, 3)),                             # declines at once
    ([1.0, 2.0, 3.0], Stages(1, 0)),                                       # minimum first: no stage II; IVR never 0
])
def test_stages_are_detected_on_synthetic_curves(curve, stages):
    assert detect_stages(curve) == stages


def test_freezing_the_last_layer_changes_nothing_at_the_last_position(tiny_checkpoints):
    from lmms_topo_plugin.api import load_pruned
    from lmms_topo_plugin.exporters.onnx.build import validation_prompts

    loaded, _ = load_pruned({"pretrained": str(tiny_checkpoints("llava", 4)), "device": "cpu"})
    kl = freezing_kl(loaded.adapter, loaded.processor, validation_prompts())
    assert len(kl) == 4 and kl[-1] == 0.0 and kl[0] > 0.0


def test_analyze_entropy_writes_the_report_and_the_plot(tiny_checkpoints, tmp_path, capsys):
    args = f"pretrained={tiny_checkpoints('qwen2_vl', 4)},device=cpu,calib_limit=4"
    assert main(["analyze", "--what", "entropy", "--model-args", args, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "entropy.json").read_text())
    assert sorted(report["curves"]) == ["all", "text", "visual"] and len(report["curves"]["visual"]) == 4
    assert detect_stages(report["curves"]["visual"]) == Stages(report["ivr_layer"], report["ssr_layer"])
    assert report["ssr_mode"] == ("freeze" if report["freezing_kl"][report["ssr_layer"]] <= 1e-3 else "top5")
    assert (tmp_path / "entropy.png").read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.strip().startswith(f"IVR layer {report['ivr_layer']}, SSR layer ")
