"""The ONNX build: three graphs that reproduce PyTorch, a runner that generates like ``model.generate``."""

import json
import re

import numpy as np
import pytest
import torch

from lmms_topo_plugin.cli.main import main
from lmms_topo_plugin.exporters.onnx import build
from lmms_topo_plugin.errors import PluginError
from lmms_topo_plugin.runtime.onnx_runner import OnnxVLM, ProviderError
from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.models.prompting import encode
from onnx_helpers import MODEL_ARGS, assert_fp32_parity, prefill_against_pytorch, pruned_model

pytestmark = pytest.mark.e2e  # the end-to-end tier (real CLI runs, exports): pytest -m e2e


@pytest.fixture(scope="module")
def onnx_build(onnx_builds):
    """``(checkpoint, build directory)``: the tiny LLaVA's export with every precision."""
    build = onnx_builds("llava", "fp32,fp16,int4")
    return str(build.checkpoint), build.out


def test_the_build_has_the_hugging_face_layout_and_its_validation(onnx_build):
    _, out = onnx_build
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    assert {name: (graph["file"], graph["inputs"][:3], graph["outputs"][:1]) for name, graph in manifest["graphs"].items()} == {
        "vision_encoder": ("vision_encoder.onnx", ["pixel_values"], ["image_features"]),
        "embed_tokens": ("embed_tokens.onnx", ["input_ids"], ["inputs_embeds"]),
        "decoder_model_merged": ("decoder_model_merged.onnx", ["inputs_embeds", "attention_mask", "position_ids"],
                                 ["logits"]),
    }
    decoder = manifest["graphs"]["decoder_model_merged"]
    assert decoder["inputs"][3:7] == ["past_key_values.0.key", "past_key_values.0.value", "past_key_values.1.key",
                                      "past_key_values.1.value"] and len(decoder["inputs"]) == 3 + 2 * 4
    assert decoder["outputs"][1:3] == ["present.0.key", "present.0.value"] and manifest["num_layers"] == 4
    assert manifest["pruning"]["removed_layers"] == json.loads((out / "config.json").read_text())["topo_pruning"][
        "removed_layers"]
    assert_fp32_parity(out)


def test_no_graph_names_the_exporting_machines_files(onnx_build):
    """The exporter's per-node stack traces (absolute paths of the checkout and site-packages) are dropped, so a
    pushed build does not reveal the publisher's directories."""
    import sys
    from pathlib import Path

    import onnx

    import lmms_topo_plugin

    _, out = onnx_build
    graphs = sorted((out / "onnx").glob("*.onnx"))
    assert len(graphs) == 9  # three graphs, each in fp32, fp16 and int4
    local = [str(Path(lmms_topo_plugin.__file__).resolve().parent.parent), sys.prefix, str(out)]
    for graph in graphs:
        data = graph.read_bytes()
        assert [path for path in local if path.encode() in data] == [], graph.name
        model = onnx.load(str(graph), load_external_data=False)
        assert not [prop.key for node in model.graph.node for prop in node.metadata_props
                    if prop.key == "pkg.torch.onnx.stack_trace"], graph.name


def test_precision_variants_are_listed_and_their_reported_agreement_is_what_they_do(onnx_build):
    _, out = onnx_build
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    assert manifest["precisions"] == ["fp32", "fp16", "int4"]
    assert manifest["graphs"]["decoder_model_merged"]["variants"] == {
        "fp32": "decoder_model_merged.onnx", "fp16": "decoder_model_merged_fp16.onnx",
        "int4": "decoder_model_merged_q4.onnx"}
    validation = json.loads((out / "onnx" / "validation.json").read_text())
    prompts = build.validation_prompts()
    fp32 = OnnxVLM(out, provider="cpu")
    embeds, mask, _ = fp32.prefill_inputs(prompts)
    reference, _ = fp32.decoder_step(embeds, mask, fp32.empty_past(2))
    for precision in ("fp16", "int4"):
        report = validation["variants"][precision]
        runner = OnnxVLM(out, provider="cpu", precision=precision)
        logits, _ = runner.decoder_step(*runner.prefill_inputs(prompts)[:2], runner.empty_past(2))
        assert report["max_abs_logit_difference_vs_fp32"] == pytest.approx(
            float(np.abs(logits - reference)[mask.astype(bool)].max()), rel=1e-6)
        tokens = [runner.generate_ids([prompt], 8)[0].tolist() for prompt in prompts]
        assert [row[:len(expected)] for row, expected in zip(tokens, report["onnx_tokens"])] == report["onnx_tokens"]
        graph_bytes = report["bytes"]["decoder_model_merged"]
        assert graph_bytes == (out / "onnx" / manifest["graphs"]["decoder_model_merged"]["variants"][precision]).stat().st_size
    fp32_bytes = (out / "onnx" / "decoder_model_merged.onnx").stat().st_size
    assert validation["variants"]["int4"]["bytes"]["decoder_model_merged"] < validation["variants"]["fp16"]["bytes"][
        "decoder_model_merged"] < fp32_bytes
    with pytest.raises(PluginError, match="--precision: .* has fp32, fp16, int4, not int8"):
        OnnxVLM(out, provider="cpu", precision="int8")


def test_the_runner_generates_what_pytorch_generates(onnx_build):
    checkpoint, out = onnx_build
    pruned = pruned_model(checkpoint)
    prompts = build.validation_prompts()[::-1]
    runner = OnnxVLM(out, provider="cpu")
    for prompt in prompts:
        inputs = move_inputs(encode(pruned.processor, pruned.adapter, [prompt]), "cpu", pruned.model.dtype)
        with torch.inference_mode():
            expected = pruned.model.generate(**inputs, max_new_tokens=6, do_sample=False)[0, inputs["input_ids"].shape[1]:]
        assert runner.generate_ids([prompt], 6)[0, :len(expected)].tolist() == expected.tolist()
    _, mask, _, present, _ = prefill_against_pytorch(runner, pruned, prompts)
    assert present[0].shape == (2, 2, mask.shape[1], 16)


def test_asking_for_cuda_without_it_fails_unless_the_fallback_is_allowed(onnx_build, capsys):
    _, out = onnx_build
    with pytest.raises(ProviderError, match="instead of CUDAExecutionProvider"):
        OnnxVLM(out, provider="cuda")
    assert OnnxVLM(out, provider="cuda", allow_cpu_fallback=True).sessions["embed_tokens"].get_providers() == [
        "CPUExecutionProvider"]
    assert main(["onnx-generate", str(out), "--prompt", "hi", "--provider", "cuda"]) == 1
    assert "instead of CUDAExecutionProvider" in capsys.readouterr().err.strip().splitlines()[-1]


def test_an_unsupported_family_is_refused_before_export(tiny_checkpoints, tmp_path, capsys, monkeypatch):
    from lmms_topo_plugin.exporters.onnx import graphs

    monkeypatch.setattr(graphs, "SUPPORTED", ("llava", "qwen2_vl"))  # every tiny family has an export today
    args = f"pretrained={tiny_checkpoints('idefics3', 6)},{MODEL_ARGS}"
    assert main(["export", "--model-args", args, "--out", str(tmp_path / "build"), "--onnx"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "topo-prune: --onnx: idefics3 has no ONNX export yet (supported: llava, qwen2_vl)")
    assert not (tmp_path / "build").exists()


def test_a_build_without_parity_is_not_left_behind(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(build, "MAX_FP32_LOGIT_DIFFERENCE", -1.0)
    args = f"pretrained={tiny_checkpoints('llava', 6)},method=spacing,n_remove=1,device=cpu"
    assert main(["export", "--model-args", args, "--out", str(tmp_path / "build"), "--onnx"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "topo-prune: the fp32 ONNX build does not match PyTorch (max logit difference ")
    assert [path.name for path in tmp_path.iterdir() if path.name != "topo-cache"] == []


def test_wrong_decoding_positions_fail_the_build(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    """Positions one off in every decoding step: the prefill still matches, the decoding-step check does not (our
    decoder's: the model builder's takes no position ids)."""
    from lmms_topo_plugin.runtime import onnx_runner as runner

    right = runner.next_positions
    monkeypatch.setattr(runner, "next_positions", lambda positions, count=1: right(positions, count) + 1)
    args = f"pretrained={tiny_checkpoints('llava', 6)},method=spacing,n_remove=1,device=cpu"
    assert main(["export", "--model-args", args, "--out", str(tmp_path / "build"), "--onnx",
                 "--onnx-decoder", "torch"]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    found = re.search(r"max logit difference (\S+) in prefill, (\S+) in decoding", line)
    assert found, line
    assert float(found[1]) <= build.MAX_FP32_LOGIT_DIFFERENCE < float(found[2])


def lmms_eval_run(model_args: str, out, tasks: str, include: str, *extra: str):
    from cli import lmms_eval

    result = lmms_eval(model_args, out, "--log_samples", *extra, tasks=tasks, include=include, limit=6)
    assert result.returncode == 0, result.stderr[-3000:]
    (results,) = out.rglob("*_results.json")
    return results


@pytest.mark.parametrize("task, extra", [("topo_synth_count", ()), ("topo_fixture_presence_mc", ("--force_simple",))])
def test_backend_onnxruntime_answers_like_pytorch_through_lmms_eval(onnx_build, tmp_path, task, extra):
    from pathlib import Path

    from lmms_topo_plugin.integrations.lmms_eval.tasks import bundled_tasks_dir
    from lmms_topo_plugin.testing.lmms_eval_output import logged_samples

    _, out = onnx_build
    include = bundled_tasks_dir() if task.startswith("topo_synth") else str(Path(__file__).parent / "fixtures" / "topo_mc")
    answers = {}
    for backend in ("pytorch", "onnxruntime"):
        results = lmms_eval_run(f"pretrained={out},backend={backend},device=cpu", tmp_path / backend, task, include,
                                *extra)
        answers[backend] = [row["filtered_resps"] for row in logged_samples(results, task)]
    assert len(answers["pytorch"]) == len(answers["onnxruntime"]) == 6
    if extra:  # multiple choice: [(negative log-likelihood, is_greedy) per choice] per document
        for torch_row, onnx_row in zip(answers["pytorch"], answers["onnxruntime"]):
            assert [greedy for _, greedy in torch_row] == [greedy for _, greedy in onnx_row]
            assert [float(nll) for nll, _ in onnx_row] == pytest.approx([float(nll) for nll, _ in torch_row], abs=1e-4)
    else:
        assert answers["pytorch"] == answers["onnxruntime"]


def test_backend_onnxruntime_refuses_a_method_or_a_directory_without_a_build(onnx_build, tiny_checkpoints):
    from lmms_topo_plugin.config.prune import PruneConfig
    from lmms_topo_plugin.errors import ModelArgsError
    from lmms_topo_plugin.runtime.backends import OnnxBackend

    _, out = onnx_build
    with pytest.raises(ModelArgsError, match="backend=onnxruntime evaluates an exported build as it is"):
        PruneConfig.from_model_args({"pretrained": str(out), "backend": "onnxruntime", "method": "random",
                                     "sparsity": "0.25"})
    with pytest.raises(ModelArgsError, match="has no onnx/manifest.json"):
        OnnxBackend(str(tiny_checkpoints("llava", 6)))


def test_large_graphs_keep_their_weights_in_a_data_file_next_to_them(onnx_build, tmp_path, monkeypatch):
    """Over protobuf's 2 GB a graph cannot hold its weights: past the threshold (0 here, for a tiny model) every
    graph and precision variant writes ``<file>.data``, the manifest lists it, and the build still validates and
    generates like the build with weights inside (the module's build)."""
    import onnx

    from lmms_topo_plugin.exporters.onnx import graphs

    checkpoint, inside = onnx_build
    args = ["export", "--model-args", f"pretrained={checkpoint},{MODEL_ARGS}", "--onnx", "--precision", "fp32,fp16"]
    monkeypatch.setattr(graphs, "EXTERNAL_DATA_BYTES", 0)
    outside = tmp_path / "outside"
    assert main([*args, "--out", str(outside)]) == 0
    manifest = json.loads((outside / "onnx" / "manifest.json").read_text())
    for graph in manifest["graphs"].values():
        for precision, file in graph["variants"].items():
            assert graph["files"][precision] == [file, f"{file}.data"]
            proto = onnx.load(str(outside / "onnx" / file), load_external_data=False)
            assert any(tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in proto.graph.initializer)
    assert json.loads((inside / "onnx" / "manifest.json").read_text())["graphs"]["embed_tokens"]["files"] == {
        "fp32": ["embed_tokens.onnx"], "fp16": ["embed_tokens_fp16.onnx"], "int4": ["embed_tokens_q4.onnx"]}
    prompts = build.validation_prompts()
    for precision in ("fp32", "fp16"):
        expected = OnnxVLM(inside, provider="cpu", precision=precision).generate_ids(prompts, 6)
        np.testing.assert_array_equal(OnnxVLM(outside, provider="cpu", precision=precision).generate_ids(prompts, 6),
                                      expected)
