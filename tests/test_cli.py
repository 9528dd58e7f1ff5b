"""The ``topo-prune`` console command."""

import argparse
import json

import pytest
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


def test_version_names_the_plugin_and_what_it_runs_on(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"topo-prune {version('lmms-topo-plugin')} (lmms-eval {version('lmms-eval')}, "
                           f"transformers {version('transformers')}, torch {version('torch')}")


def subcommands():
    from lmms_topo_plugin.cli.main import build_parser

    parser = build_parser()
    (group,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return group.choices


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_option_of_every_command_has_help_and_states_its_default(name):
    command = subcommands()[name]
    assert command.description and command.description[0].isupper()
    for action in command._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        shown = command.formatter_class("prog")._get_help_string(action) % vars(action)
        if action.default not in (None, False, [], argparse.SUPPRESS) and not action.required:
            assert "default" in shown, f"{name} {action.option_strings} does not state its default"


def test_methods_lists_width_methods_and_token_pruners_with_their_parameters(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    from lmms_topo_plugin.tokens import TOKEN_METHODS

    assert "comp (widths): CoMP" in out and "topology (layers): TopoVLM" in out
    assert "    comp_widths (default per_layer): per_layer: each layer keeps its own widths" in out
    for name, pruner in TOKEN_METHODS.items():
        assert f"\n{name}: {pruner.summary}\n" in out
    assert "a int" not in out and "(default None)" not in out
