"""bench/bench_comp_speed.py on a tiny model: the three width plans (equal FLOPs, on or off the 8-channel grid),
the FLOPs prediction against what the sliced model counts, and a whole run (ONNX export blocked) writing its JSON."""

import json
from pathlib import Path

import pytest
import torch

from script_modules import load_script

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--layers", "2", "--hidden", "128", "--image-tokens", "16", "--repeats", "1", "--decode-tokens", "2"]


@pytest.fixture(autouse=True)
def torch_threads():
    """The script sets torch's thread count; the rest of the session keeps its own."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bench():
    return load_script(Path("bench/bench_comp_speed.py"))


@pytest.fixture(scope="module")
def tiny(bench):
    from lmms_topo_plugin.search.measure import default_cost_prompt

    loaded, _ = bench.bench_speed.build_model(2, 128, 16, kv_heads=4)
    prompt = default_cost_prompt()
    return loaded, prompt, bench.flops_models(loaded, prompt, decode_tokens=2)


def test_plans_keep_equal_flops_on_and_off_the_grid(bench, tiny):
    _, _, models = tiny
    flops = models["prefill"]
    plans = bench.plans(flops, 0.5, seed=0)
    described = {name: bench.describe_widths(counts, flops) for name, counts in plans.items()}
    assert len(set(described["uniform"]["mlp_channels"])) == 1 and described["uniform"]["channels_off_grid"] == 0
    assert described["per_layer"]["channels_off_grid"] == 2
    assert described["per_layer_rounded"]["channels_off_grid"] == 0
    assert described["per_layer_rounded"]["head_groups"] == described["per_layer"]["head_groups"]
    heads = described["per_layer"]["head_groups"]
    assert len(set(heads)) > 1 and sum(heads) == sum(described["uniform"]["head_groups"])  # irregular, same mix
    uniform = bench.predictions(plans["uniform"], models)
    assert uniform["decoder_flops_removed"] == pytest.approx(0.5, abs=0.02)
    for name in ("per_layer", "per_layer_rounded"):
        assert bench.predictions(plans[name], models)["prefill_flops"] == pytest.approx(uniform["prefill_flops"],
                                                                                        rel=0.01)
    assert uniform["predicted_prefill_speedup"] > 1


def test_prediction_matches_the_flops_the_sliced_model_counts(bench, tiny):
    from lmms_topo_plugin.models.prompting import encode
    from lmms_topo_plugin.scorers.comp.flops import FlopsModel, measure_load
    from lmms_topo_plugin.surgery.widths import width_sites

    dense, prompt, models = tiny
    counts = bench.plans(models["prefill"], 0.5, seed=0)["per_layer"]
    pruned = bench.pruned_copy(dense, "per_layer", bench.kept_units(counts, models["prefill"].dense_units, 0),
                               "per_layer")
    inputs = dict(encode(pruned.processor, pruned.adapter, [prompt]))
    sites = width_sites(pruned.adapter)
    load = measure_load(pruned.model, sites, inputs, pruned.adapter.image_token_mask(inputs["input_ids"]))
    counted = FlopsModel(sites, [load], 0).flops()
    assert counted == pytest.approx(models["prefill"].flops(counts), rel=1e-9)
    assert sum(p.numel() for p in pruned.model.parameters()) < sum(p.numel() for p in dense.model.parameters())


def test_a_run_writes_rows_and_records_a_blocked_export(bench, tmp_path, monkeypatch, capsys):
    import lmms_topo_plugin.exporters.export as export

    def refuse(*_args, **_kwargs):
        raise ValueError("per-layer widths are not exported yet\nsecond line")

    monkeypatch.setattr(export, "export_checkpoint", refuse)
    out = tmp_path / "comp_speed.json"
    bench.main([*TINY, "--batches", "1,2", "--onnx-batches", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert [row["config"] for row in result["rows"]] == ["dense", "uniform", "per_layer", "per_layer_rounded"]
    for row in result["rows"]:
        assert set(row["pytorch"]) == {"1", "2"}
        assert row["pytorch"]["2"]["prefill_s"] > 0 and row["pytorch"]["1"]["decode_s_per_token"] > 0
        assert row["onnxruntime"] == {"1": {"blocked": "ValueError: per-layer widths are not exported yet"}}
    assert result["rows"][0]["pytorch"]["1"]["prefill_speedup"] == 1.0
    assert {(item["runtime"], item["batch"], item["config"]) for item in result["comparisons"]} == {
        ("pytorch", batch, config) for batch in ("1", "2") for config in ("per_layer", "per_layer_rounded")}
    assert result["command"] and result["machine"]["torch_threads"] == 1
    printed = capsys.readouterr().out
    assert "blocked: ValueError" in printed and "per_layer_rounded" in printed
