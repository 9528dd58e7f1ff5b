"""CoMP through every journey: inline in the real lmms-eval CLI on the bundled model, in a sweep (its own rows),
exported in both layouts (checkpoint reloads; uniform loads with plain ``from_pretrained``), and on its card."""

import json
import re

import pytest
import torch
from transformers import AutoModelForImageTextToText

from cli import lmms_eval
from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.cli.main import main
from lmms_topo_plugin.config.prune import LoadConfig
from lmms_topo_plugin.models.loading import load_config, load_model
from lmms_topo_plugin.runtime.generation import generate, prompt_logits
from lmms_topo_plugin.search import SweepSpec, run_sweep
from lmms_topo_plugin.search.measure import default_cost_prompt
from lmms_topo_plugin.synthbench import load_split
from lmms_topo_plugin.testing.lmms_eval_output import logged_samples, response_text
from lmms_topo_plugin.tools.training.data import prompts_of

pytestmark = pytest.mark.e2e  # the end-to-end tier (real CLI runs, exports): pytest -m e2e

SEARCH = "device=cpu,calib_limit=12,comp_val=4,comp_step=0.1"
PER_LAYER, UNIFORM = "comp[comp_val=4,comp_step=0.1]", "comp[comp_widths=uniform,comp_val=4,comp_step=0.1]"
PROJECTOR_ONLY = "comp[comp_modes=projector_params,comp_val=4]"  # cannot remove 30% of a tiny LLaVA's FLOPs


def test_lmms_eval_prunes_the_bundled_model_with_comp_inline(tmp_path):
    model_args = f"method=comp,sparsity=0.5,{SEARCH}"
    result = lmms_eval(model_args, tmp_path / "out", "--log_samples", limit=4)
    assert result.returncode == 0, result.stderr[-3000:]
    (results,) = list((tmp_path / "out").rglob("*_results.json"))
    (report_path,) = list(results.parent.glob("*_topo_pruned_comp.json"))
    report = json.loads(report_path.read_text())
    assert report["plan"]["scores"]["rate"] >= 0.5
    assert [action["kind"] for action in report["plan"]["actions"]][0] == "slice_widths"
    assert report["parameters_after"] < report["parameters_before"] and report["kept_layers"] == list(range(12))
    figures = {path.name.rsplit("_", 1)[1] for path in results.parent.glob("*_topo_pruned_comp_*.png")}
    assert {"widths.png", "stages.png"} <= figures
    # the same pruned model in this process (its search from the run's cache) answers the 4 docs alike
    loaded, again = load_pruned(dict(item.split("=", 1) for item in model_args.split(",")))
    assert again.cache["widths_hit"] and again.plan["actions"] == report["plan"]["actions"]
    from lmms_topo_plugin.integrations.lmms_eval.model import recorded_token_pruner

    pruner = recorded_token_pruner(loaded)
    docs = load_split("test", ["count"])[:4]
    settings = {"max_new_tokens": 5, "do_sample": False}
    if pruner is not None:
        with pruner.attach(loaded.adapter):
            answers = [generate(loaded, [prompt], settings, ["\n"])[0] for prompt in prompts_of(docs)]
    else:
        answers = [generate(loaded, [prompt], settings, ["\n"])[0] for prompt in prompts_of(docs)]
    assert [response_text(row) for row in logged_samples(results, "topo_synth_count")] == answers


@pytest.fixture(scope="module")
def swept(tiny_checkpoints, tmp_path_factory):
    """A tiny LLaVA swept with comp in both layouts at 30% and a layer method, then its winner exported."""
    root = tmp_path_factory.mktemp("comp-sweep")
    base = tiny_checkpoints("llava", 6)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMMS_TOPO_CACHE", str(root / "cache"))
        result = run_sweep(SweepSpec(model_args={"pretrained": str(base), "device": "cpu"},
                                     methods=[PER_LAYER, UNIFORM, PROJECTOR_ONLY, "block_influence"], budgets=[0.3],
                                     calib_limits=[12],
                                     tasks=["topo_synth_count"], out=root / "sweep", rule="metric>=0", limit=4,
                                     cost_repeats=1, objective="flops"))
        assert main(["export", "--winner", str(root / "sweep" / "winner.json"), "--out", str(root / "build")]) == 0
    return root, result, base


def test_the_sweep_rows_count_flops_for_widths_and_layers_alike(swept):
    _, result, _ = swept
    rows = {row["variant"]: row for row in result["rows"]}
    assert set(rows) == {"none", PER_LAYER, UNIFORM, "block_influence"}
    dense_flops = rows["none"]["cost"]["prefill_flops"]
    for name, layout in ((PER_LAYER, "per_layer"), (UNIFORM, "uniform")):
        assert rows[name]["widths"]["layout"] == layout
        assert rows[name]["removed_layers"] == [] and rows[name]["cost"]["prefill_flops"] < dense_flops
    assert rows["block_influence"]["cost"]["prefill_flops"] < dense_flops
    [skipped] = result["skipped"]  # counted before the model loaded, like a spacing budget past its limit
    assert (skipped["variant"], skipped["budget"]) == (PROJECTOR_ONLY, 0.3)
    assert re.fullmatch(r"sparsity=0\.3 is not reachable by method=comp on this model with "
                        r"comp_modes=projector_params and comp_widths=per_layer: at most 0\.\d+ of the prefill FLOPs "
                        r"can go", skipped["reason"])


def test_the_exported_winner_reloads_to_the_model_the_sweep_evaluated(swept):
    root, result, base = swept
    winner = json.loads((root / "sweep" / "winner.json").read_text())["winner"]
    build = root / "build"
    config = json.loads((build / "config.json").read_text())
    assert config["topo_pruning"]["method"] == winner["method"]
    if winner.get("widths"):
        assert config["topo_pruning"]["widths"]["kept"] == winner["widths"]["kept"]
    assert json.loads((build / "export_report.json").read_text())["max_abs_logit_difference"] == 0


@pytest.mark.parametrize("layout", ["per_layer", "uniform"])
def test_both_layouts_export_reload_and_say_how_on_their_card(layout, tiny_checkpoints, tmp_path):
    base = tiny_checkpoints("llava", 6)
    args = f"pretrained={base},method=comp,sparsity=0.3,comp_widths={layout},{SEARCH}"
    out = tmp_path / layout
    assert main(["export", "--model-args", args, "--out", str(out)]) == 0
    pruned, _ = load_pruned(dict(item.split("=", 1) for item in args.split(",")))
    expected = prompt_logits(pruned, [default_cost_prompt()])
    reloaded = load_model(LoadConfig(device="cpu"), str(out), load_config(str(out)))
    torch.testing.assert_close(prompt_logits(reloaded, [default_cost_prompt()]), expected, rtol=0, atol=1e-5)
    if layout == "uniform":  # the config states the widths: transformers alone loads the same model
        plain = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32)
        assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in reloaded.model.parameters())
    else:
        with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):  # loudly, never re-initialised
            AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32)
    assert main(["push", str(out), "--repo-id", "alice/comp", "--license", "mit", "--base-model", "none",
                 "--dry-run"]) == 0
    card = (out / "README.md").read_text()
    assert "of its prefill FLOPs removed** by `comp`" in card and "Training-free" in card
    assert f"`comp_widths={layout}`" in card and "width-pruning" in card
    assert ("rebuilds the shapes before loading" in card) == (layout == "per_layer")


def test_a_comp_onnx_export_takes_the_parameter_modes_and_refuses_the_token_mode_first(tiny_checkpoints, tmp_path,
                                                                                        capsys):
    base = tiny_checkpoints("llava", 6)
    args = f"pretrained={base},method=comp,sparsity=0.3,{SEARCH}"
    assert main(["export", "--model-args", args, "--out", str(tmp_path / "refused"), "--onnx"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "--onnx: method=comp with comp_modes including vision_tokens may prune visual tokens, which the ONNX graphs "
        "do not include; export with comp_modes=vision_params:language_params:projector_params")
    assert not (tmp_path / "refused").exists()
    out = tmp_path / "onnx"
    modes = "comp_modes=vision_params:language_params:projector_params"
    assert main(["export", "--model-args", f"{args},{modes}", "--out", str(out), "--onnx"]) == 0
    report = json.loads((out / "export_report.json").read_text())
    assert report["onnx"]["greedy_tokens_identical"]
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    kept = json.loads((out / "config.json").read_text())["topo_pruning"]["widths"]["kept"]
    assert manifest["kv_heads_per_layer"] == [len(kept[f"text.{layer}.attn"]) for layer in range(6)]
