"""The ``topo-prune`` console command."""

import json

from transformers import AutoModelForImageTextToText

from lmms_topo_plugin.integrations.lmms_eval.tasks import bundled_tasks_dir
from lmms_topo_plugin.cli.main import main


def test_tasks_dir_prints_the_bundled_tasks(capsys):
    assert main(["tasks-dir"]) == 0
    assert capsys.readouterr().out.strip() == bundled_tasks_dir()


def test_analyze_topology_writes_scores_and_plots(tiny_checkpoints, tmp_path):
    checkpoint = tiny_checkpoints("llava", 6)
    out = tmp_path / "analysis"
    assert main(["analyze", "--what", "topology", "--model-args", f"pretrained={checkpoint},calib_limit=12",
                 "--out", str(out)]) == 0
    data = json.loads((out / "topology_scores.json").read_text())
    assert data["num_layers"] == 6 and data["calibration_samples"] == 12
    assert len(data["scores"]["importance"]) == 6 and len(data["scores"]["details"]["topological_activity"]) == 7
    for name in ("barcode", "epi", "consistency"):
        assert (out / f"topology_{name}.png").read_bytes().startswith(b"\x89PNG")


def test_prune_saves_a_loadable_checkpoint_and_rejects_bad_args(tiny_checkpoints, tmp_path, capsys):
    checkpoint = tiny_checkpoints("llava", 6)
    saved = tmp_path / "pruned"
    assert main(["prune", "--model-args", f"pretrained={checkpoint},method=spacing,n_remove=2",
                 "--report-dir", str(tmp_path / "r"), "--save", str(saved)]) == 0
    model = AutoModelForImageTextToText.from_pretrained(saved)
    assert model.config.get_text_config().num_hidden_layers == 4
    assert main(["prune", "--model-args", f"pretrained={checkpoint},method=spacing,n_remove=3"]) == 2
    assert "method=spacing can remove at most 2 of 6" in capsys.readouterr().err
