"""Domain-aware layer selection (``domain_math``, ``domain_nonmath``, ``domain_mixed``) and ``topo-prune regimes``."""

import json

import pytest
import torch

from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.calibration.sources import domain_calibration_prompts
from lmms_topo_plugin.cli.main import main
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.models.prompting import encode
from lmms_topo_plugin.search.regimes import RegimeRule, budget_table

from cli import lmms_eval
from table import DOMAIN_METHODS


def per_prompt_similarity(loaded, prompts) -> torch.Tensor:
    """``[N, L]`` mean token cos(h_l, h_{l+1}), one unpadded prompt at a time, from hooks of this test's own."""
    rows = []
    for prompt in prompts:
        pairs = {}
        hooks = [layer.register_forward_hook(
            lambda module, args, kwargs, output, i=i: pairs.__setitem__(
                i, (args[0] if args else kwargs["hidden_states"], output[0] if isinstance(output, tuple) else output)),
            with_kwargs=True) for i, layer in enumerate(loaded.adapter.layers)]
        try:
            with torch.inference_mode():
                loaded.model(**encode(loaded.processor, loaded.adapter, [prompt]), use_cache=False)
        finally:
            for hook in hooks:
                hook.remove()
        rows.append([torch.nn.functional.cosine_similarity(h_in[0].double(), h_out[0].double(), dim=-1).mean().item()
                     for h_in, h_out in (pairs[i] for i in range(len(pairs)))])
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("method,weight", [(row.name, row.math_weight) for row in DOMAIN_METHODS])
def test_domain_scores_are_the_per_domain_mean_token_cosine(method, weight, tiny_checkpoints):
    args = {"pretrained": str(tiny_checkpoints("llava", 6)), "method": method, "n_remove": "2", "device": "cpu",
            "calib_limit": "3", "calib_batch_size": "4"}
    dense, _ = load_pruned({**args, "method": "none", "n_remove": "0"})
    if method == "domain_mixed":
        args["domain_weight"] = str(weight)
    prompts, domains = domain_calibration_prompts(3, 0, {})
    assert domains == ["math"] * 3 + ["nonmath"] * 3
    similarity = per_prompt_similarity(dense, prompts)
    math, nonmath = similarity[:3].mean(dim=0), similarity[3:].mean(dim=0)
    _, report = load_pruned(args)
    details = report.plan["scores"]["details"]
    torch.testing.assert_close(torch.tensor(details["math_similarity"], dtype=torch.float64), math, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(details["nonmath_similarity"], dtype=torch.float64), nonmath, atol=1e-5,
                               rtol=0)
    mixed = weight * math + (1 - weight) * nonmath
    assert report.plan["removed_layers"] == sorted(sorted(range(1, 5), key=lambda layer: -mixed[layer])[:2])
    assert report.calibration["samples"] == 6


@pytest.mark.parametrize("extra,message", [
    ({"method": "domain_math", "calib_limit": "65"},
     "model_args: calib_limit=65 but the bundled calib split's math documents has only 64 samples"),
    ({"method": "domain_math", "domain_weight": "0.2"},
     "model_args: 'domain_weight' is not a parameter of method=domain_math; its parameters: calib_task_math, "
     "calib_task_nonmath"),
    ({"method": "domain_mixed", "domain_weight": "1.5"},
     "model_args: domain_weight='1.5' is out of range; expected a float in [0.0, 1.0]"),
    ({"method": "domain_nonmath", "calib_task_nonmath": "no_such_task"},
     "model_args: calib_task='no_such_task' is not a known lmms-eval task or group (list them with `lmms-eval "
     "tasks`; add a directory with include_path=)"),
])
def test_bad_domain_arguments_are_refused_before_loading(extra, message, tiny_checkpoints):
    from lmms_topo_plugin.config.prune import PruneConfig
    from lmms_topo_plugin.pipeline import prepare

    with pytest.raises(ModelArgsError) as error:
        prepare(PruneConfig.from_model_args({"pretrained": str(tiny_checkpoints("llava", 6)), "sparsity": "0.3",
                                             **extra}))
    assert str(error.value) == message


@pytest.mark.e2e
def test_a_domain_method_runs_from_the_lmms_eval_cli(tiny_checkpoints, tmp_path):
    model_args = (f"pretrained={tiny_checkpoints('llava', 6)},method=domain_nonmath,n_remove=2,device=cpu,"
                  "calib_limit=3")
    result = lmms_eval(model_args, tmp_path / "out", limit=4)
    assert result.returncode == 0, result.stderr[-3000:]
    (report_path,) = (tmp_path / "out").rglob("*_topo_pruned_domain_nonmath.json")
    _, again = load_pruned(dict(item.split("=", 1) for item in model_args.split(",")))
    assert again.cache["scores_hit"]  # the CLI run's scores, from the cache
    assert json.loads(report_path.read_text())["plan"]["removed_layers"] == again.plan["removed_layers"]


@pytest.mark.e2e
def test_the_three_domain_methods_share_one_calibration_in_a_sweep(tiny_checkpoints, tmp_path, isolated_cache):
    from lmms_topo_plugin.search import SweepSpec, run_sweep

    result = run_sweep(SweepSpec(model_args={"pretrained": str(tiny_checkpoints("llava", 6)), "device": "cpu"},
                                 methods=["domain_math", "domain_nonmath", "domain_mixed"], budgets=[0.34],
                                 calib_limits=[2], tasks=["topo_synth_count"], out=tmp_path / "sweep",
                                 rule="metric>=0", limit=2, cost_repeats=1))
    assert sorted(row["method"] for row in result["rows"]) == ["domain_math", "domain_mixed", "domain_nonmath", "none"]
    assert len(list((isolated_cache / "stats").glob("*.safetensors"))) == 1  # one calibration pass for the three
    assert len(list((isolated_cache / "scores").glob("*.json"))) == 3
    for row in result["rows"][1:]:
        _, single = load_pruned({"pretrained": str(tiny_checkpoints("llava", 6)), "device": "cpu",
                                 "method": row["method"], "sparsity": "0.34", "calib_limit": "2"})
        assert single.cache["scores_hit"] and single.plan["removed_layers"] == row["removed_layers"]


def sweep_row(method: str, budget: float, value: float, removed: list[int]) -> dict:
    return {"method": method, "budget": budget, "calib_limit": None, "n_remove": len(removed),
            "removed_layers": removed, "metrics": {"t/m": value}}


def test_regimes_follow_the_stated_rule():
    rows = [sweep_row("none", 0.0, 0.9, [])]
    rows += [sweep_row("topology", 0.25, 0.80, [1, 2]), sweep_row("random", 0.25, 0.60, [3, 4]),
             sweep_row("spacing", 0.25, 0.70, [1, 3])]
    rows += [sweep_row("topology", 0.5, 0.50, [1, 2, 3]), sweep_row("random", 0.5, 0.45, [1, 2, 4]),
             sweep_row("spacing", 0.5, 0.48, [1, 3, 5])]
    rows += [sweep_row("topology", 0.75, 0.30, [1, 2, 3, 4]), sweep_row("random", 0.75, 0.25, [1, 2, 3, 5]),
             sweep_row("spacing", 0.75, 0.40, [1, 3, 5, 7])]
    table = budget_table(rows, "t/m", RegimeRule(sensitive_spread=0.1, spacing_margin=0.01))
    assert [(entry["budget"], entry["regime"], entry["best"]) for entry in table] == [
        (0.25, "ranking-sensitive", ["topology"]), (0.5, "converging", ["topology"]),
        (0.75, "continuity-dominated", ["spacing"])]
    assert table[0]["spread"] == pytest.approx(0.2, abs=1e-12)
    # removed sets at 0.25: {1,2} {3,4} {1,3}: Jaccard 0, 1/3, 1/3
    assert table[0]["layer_overlap"] == pytest.approx((0 + 1 / 3 + 1 / 3) / 3, abs=1e-12)
    assert budget_table(rows, "t/m", RegimeRule(sensitive_spread=0.25, spacing_margin=0.2))[0]["regime"] == "converging"


@pytest.mark.e2e
def test_regimes_cli_writes_its_table_and_plot(tmp_path, capsys):
    from lmms_topo_plugin.search import SweepSpec, run_sweep
    from lmms_topo_plugin.families.tiny import build_tiny_vlm

    checkpoint = build_tiny_vlm("llava", tmp_path / "tiny", num_layers=6)
    run_sweep(SweepSpec(model_args={"pretrained": str(checkpoint), "device": "cpu"}, methods=["random", "spacing"],
                        budgets=[0.2, 0.34], calib_limits=[None], tasks=["topo_synth_count"], out=tmp_path / "sweep",
                        rule="metric>=0", limit=2, cost_repeats=1))
    assert main(["regimes", str(tmp_path / "sweep"), "--sensitive-spread", "0.2"]) == 0
    report = json.loads((tmp_path / "sweep" / "regimes.json").read_text())
    assert report["rule"] == {"sensitive_spread": 0.2, "spacing_margin": 0.01}
    assert [entry["budget"] for entry in report["budgets"]] == [0.2, 0.34]
    assert (tmp_path / "sweep" / "regimes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"regimes: {tmp_path / 'sweep' / 'regimes.md'} (and regimes.json, regimes.png)"
    assert main(["regimes", str(tmp_path / "sweep"), "--metric", "nope/x"]) == 2
