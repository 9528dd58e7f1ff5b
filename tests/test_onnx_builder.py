"""The ONNX build whose decoder onnxruntime-genai's model builder made (``--onnx-decoder builder``, and ``auto``
where it can): it validates against PyTorch like ours, the runner right-pads it and binds one shared KV buffer per
key/value as past and present at every step, its tokens and log-likelihoods are those of our decoder's build and of
PyTorch; what the builder cannot take falls back under ``auto`` with the reason recorded, and is refused under
``builder`` with it."""

import json

import numpy as np
import pytest
import torch

from lmms_topo_plugin.cli.main import main
from lmms_topo_plugin.exporters.onnx import build
from lmms_topo_plugin.exporters.onnx.builder_decoder import BuilderUnsupported, resolve_decoder
from lmms_topo_plugin.models.prompting import encode
from lmms_topo_plugin.runtime.onnx_runner import OnnxVLM
from onnx_helpers import MODEL_ARGS, assert_fp32_parity, assert_generates_like_pytorch, prefill_against_pytorch

NEW_TOKENS = 6


@pytest.fixture(scope="module")
def builds(onnx_builds):
    """The 6-layer tiny LLaVA (heads of 16) pruned by MODEL_ARGS: the builder's decoder (with its int4 variant) and
    ours."""
    return onnx_builds("llava", "fp32,int4", decoder="builder"), onnx_builds("llava")


@pytest.mark.e2e
def test_the_manifest_records_the_builder_s_decoder_and_how_to_drive_it(builds):
    builder, _ = builds
    assert_fp32_parity(builder.out)
    manifest = json.loads((builder.out / "onnx" / "manifest.json").read_text())
    validation = json.loads((builder.out / "onnx" / "validation.json").read_text())
    assert manifest["decoder"] == validation["decoder"] == "builder" and "decoder_fallback" not in manifest
    details = manifest["decoder_builder"]
    assert (details["padding"], details["kv_cache"], details["position_ids"]) == ("right", "shared_buffer", False)
    assert details["num_hidden_layers"] == manifest["num_layers"] == 4  # the pruned checkpoint, 2 layers fewer
    decoder = manifest["graphs"]["decoder_model_merged"]
    assert decoder["file"] == "decoder_model_merged.onnx"  # our layout: the file the manifest names
    assert decoder["inputs"][:2] == ["inputs_embeds", "attention_mask"] and "position_ids" not in decoder["inputs"]
    assert decoder["outputs"][0] == "hidden_states"
    assert manifest["graphs"]["lm_head"]["outputs"] == ["logits"]
    assert decoder["variants"] == {"fp32": "decoder_model_merged.onnx", "int4": "decoder_model_merged_q4.onnx"}
    assert details["variants"]["int4"]["precision"] == "int4"
    for graph in manifest["graphs"].values():
        for files in graph["files"].values():
            assert all((builder.out / "onnx" / file).is_file() for file in files)
    ops = {node.op_type for node in __import__("onnx").load(str(builder.out / "onnx" / decoder["file"]),
                                                                load_external_data=False).graph.node}
    assert "GroupQueryAttention" in ops


@pytest.mark.e2e
def test_tokens_and_log_likelihoods_are_our_decoder_s_and_pytorch_s(builds):
    builder, torch_build = builds
    runner, ours = OnnxVLM(builder.out, provider="cpu"), OnnxVLM(torch_build.out, provider="cpu")
    assert (runner.decoder_kind, ours.decoder_kind) == ("builder", "torch")
    prompts = build.validation_prompts()
    np.testing.assert_array_equal(runner.generate_ids(prompts, NEW_TOKENS), ours.generate_ids(prompts, NEW_TOKENS))
    # every position's logits in the left-padded layout (what log-likelihood requests read), like ours
    embeds, mask, positions = runner.prefill_inputs(prompts)
    mine, _ = runner.decode(embeds, mask, runner.empty_past(2), positions)
    theirs, _ = ours.decode(embeds, mask, ours.empty_past(2), positions)
    real = mask.astype(bool)
    assert (~real).any() and float(np.abs(mine - theirs)[real].max()) <= 1e-4
    last, _ = runner.decode(embeds, mask, runner.empty_past(2), positions, last_only=True)
    np.testing.assert_allclose(last, mine[:, -1:], rtol=0, atol=1e-5)
    pruned = builder.pruned
    for prompt in prompts:
        target = [5, 9, 11]
        nll, greedy = runner.continuation_nll(prompt, target)
        assert (nll, greedy) == pytest.approx(ours.continuation_nll(prompt, target), abs=1e-4)
        inputs = encode(pruned.processor, pruned.adapter, [prompt])
        ids = torch.cat([inputs["input_ids"], torch.tensor([target])], dim=1)
        with torch.inference_mode():
            logits = pruned.model(**{**inputs, "input_ids": ids,
                                     "attention_mask": torch.ones_like(ids)}).logits[0, -len(target) - 1:-1]
        expected = -float(torch.log_softmax(logits.double(), -1)[torch.arange(3), target].sum())
        assert nll == pytest.approx(expected, abs=1e-4)


@pytest.mark.e2e
def test_a_left_padded_batch_of_different_lengths_runs_like_pytorch(builds):
    """The validation prompts and a text-only one: three rows of different lengths, left-padded by the processor,
    right-padded by the runner for the builder's decoder."""
    from lmms_topo_plugin.models.prompting import Prompt

    builder, _ = builds
    runner = OnnxVLM(builder.out, provider="cpu")
    prompts = [*build.validation_prompts(), Prompt.from_text("Say something about nothing at all, please.", [])]
    _, mask, _, present, inputs = prefill_against_pytorch(runner, builder.pruned, prompts)
    lengths = mask.sum(axis=1)
    assert len(set(lengths.tolist())) == 3 and (mask[:, 0] == 0).any()
    assert [value.shape for value in present] == [(3, 2, mask.shape[1], 16)] * 8
    assert_generates_like_pytorch(runner, builder.pruned, prompts, inputs, NEW_TOKENS)


@pytest.mark.e2e
def test_the_int4_variant_runs(builds):
    builder, _ = builds
    validation = json.loads((builder.out / "onnx" / "validation.json").read_text())
    runner = OnnxVLM(builder.out, provider="cpu", precision="int4")
    tokens = runner.generate_ids(build.validation_prompts(), NEW_TOKENS)
    assert tokens.shape == (2, NEW_TOKENS)
    reported = validation["variants"]["int4"]["onnx_tokens"]
    assert [row[:NEW_TOKENS] for row in reported] == [
        runner.generate_ids([prompt], NEW_TOKENS)[0].tolist() for prompt in build.validation_prompts()]


class SpyBinding:
    def __init__(self, binding) -> None:
        self.binding, self.inputs, self.outputs = binding, {}, {}

    def bind_ortvalue_input(self, name, value):
        self.inputs[name] = value
        return self.binding.bind_ortvalue_input(name, value)

    def bind_ortvalue_output(self, name, value):
        self.outputs[name] = value
        return self.binding.bind_ortvalue_output(name, value)

    def bind_cpu_input(self, name, value):
        self.inputs[name] = value
        return self.binding.bind_cpu_input(name, value)

    def __getattr__(self, name):
        return getattr(self.binding, name)


class SpySession:
    """The decoder session: ``run`` calls (numpy feeds) and each step's binding."""

    def __init__(self, session) -> None:
        self.session, self.runs, self.steps = session, [], []

    def run(self, *args, **kwargs):
        self.runs.append(args)
        return self.session.run(*args, **kwargs)

    def io_binding(self):
        return SpyBinding(self.session.io_binding())

    def run_with_iobinding(self, binding, *args):
        self.steps.append(binding)
        return self.session.run_with_iobinding(binding.binding, *args)

    def __getattr__(self, name):
        return getattr(self.session, name)


@pytest.mark.e2e
def test_every_step_binds_the_one_shared_buffer_as_past_and_present(builds):
    """The cache is never fed as numpy: each key/value is one OrtValue, allocated once for the prompt and the new
    tokens, bound as past and as present at every step; the mask grows by a column per step; no position ids."""
    import onnxruntime as ort

    builder, _ = builds
    runner = OnnxVLM(builder.out, provider="cpu")
    spy = runner.sessions["decoder_model_merged"] = SpySession(runner.sessions["decoder_model_merged"])
    prompts = build.validation_prompts()
    expected = OnnxVLM(builder.out, provider="cpu").generate_ids(prompts, NEW_TOKENS)
    np.testing.assert_array_equal(runner.generate_ids(prompts, NEW_TOKENS), expected)
    assert spy.runs == [] and len(spy.steps) == NEW_TOKENS
    past_names = [name for name in runner.manifest["graphs"]["decoder_model_merged"]["inputs"]
                  if name.startswith("past_key_values.")]
    first = spy.steps[0]
    prompt_length = first.inputs["attention_mask"].shape[1]
    buffers = [first.inputs[name] for name in past_names]
    assert len(buffers) == 2 * 4 and all(isinstance(value, ort.OrtValue) for value in buffers)
    assert all(value.shape() == [2, 2, prompt_length + NEW_TOKENS, 16] for value in buffers)
    for step, binding in enumerate(spy.steps):
        assert "position_ids" not in binding.inputs
        assert binding.inputs["attention_mask"].shape == (2, prompt_length + step)
        past = [binding.inputs[name] for name in past_names]
        present = [binding.outputs[name.replace("past_key_values", "present")] for name in past_names]
        assert all(mine is theirs for mine, theirs in zip(past, buffers))  # the very OrtValues, every step
        assert all(mine is theirs for mine, theirs in zip(present, buffers))
        assert [value.data_ptr() for value in past] == [value.data_ptr() for value in buffers]
    # right-padded: each row's real tokens first in the graph's mask
    mask = spy.steps[0].inputs["attention_mask"]
    assert (np.diff(mask, axis=1) <= 0).all() and (mask[:, 0] == 1).all() and not mask.all()


@pytest.mark.e2e
def test_a_dense_checkpoint_builds_with_the_builder_and_generates_like_pytorch(tiny_checkpoints, tmp_path):
    checkpoint = tiny_checkpoints("llava", 6)
    out = tmp_path / "dense"
    assert main(["export", "--model-args", f"pretrained={checkpoint},method=none,device=cpu", "--out", str(out),
                 "--onnx", "--onnx-decoder", "builder"]) == 0
    assert_fp32_parity(out)
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    assert manifest["decoder"] == "builder" and manifest["decoder_builder"]["num_hidden_layers"] == 6


@pytest.mark.e2e
def test_auto_falls_back_for_fp16_with_the_reason(onnx_builds):
    """fp16: the builder's CPU fp16 decoder is another graph; the whole build takes ours, and says why."""
    out = onnx_builds("llava", "fp32,fp16,int4", decoder="auto").out
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    assert manifest["decoder"] == "torch" and manifest["decoder_fallback"].startswith("precision fp16: ")
    assert json.loads((out / "onnx" / "validation.json").read_text())["decoder_fallback"] == manifest[
        "decoder_fallback"]


@pytest.mark.e2e
def test_auto_falls_back_for_qwen_with_the_reason(onnx_builds):
    out = onnx_builds("qwen2_vl", "fp32,fp16,int4", decoder="auto").out
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    assert manifest["decoder"] == "torch"
    assert manifest["decoder_fallback"].startswith("qwen2_vl: the decoder takes mrope position ids")


@pytest.mark.e2e
def test_builder_on_qwen_is_refused_before_any_loading(tiny_checkpoints, tmp_path, capsys, monkeypatch):
    from lmms_topo_plugin import api

    monkeypatch.setattr(api, "load_pruned", lambda *args, **kwargs: pytest.fail("loaded before the refusal"))
    args = f"pretrained={tiny_checkpoints('qwen2_vl', 6)},{MODEL_ARGS}"
    assert main(["export", "--model-args", args, "--out", str(tmp_path / "build"), "--onnx",
                 "--onnx-decoder", "builder"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("topo-prune: --onnx-decoder builder: qwen2_vl: the decoder takes mrope position ids")
    assert not (tmp_path / "build").exists()


def test_builder_with_fp16_is_refused_before_any_loading(tiny_checkpoints, tmp_path, capsys, monkeypatch):
    from lmms_topo_plugin import api

    monkeypatch.setattr(api, "load_pruned", lambda *args, **kwargs: pytest.fail("loaded before the refusal"))
    args = f"pretrained={tiny_checkpoints('llava', 2)},{MODEL_ARGS}"
    assert main(["export", "--model-args", args, "--out", str(tmp_path / "build"), "--onnx", "--precision",
                 "fp32,fp16", "--onnx-decoder", "builder"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "topo-prune: --onnx-decoder builder: precision fp16: the builder's fp16 decoder")


def test_the_bundled_model_s_head_size_falls_back_or_is_refused():
    """Heads of 40: ONNX Runtime's CPU GroupQueryAttention runs multiples of 16 only."""
    from lmms_topo_plugin.config.prune import LoadConfig
    from lmms_topo_plugin.models.loading import load_config, load_model, resolve_pretrained

    bundled = resolve_pretrained(None)
    loaded = load_model(LoadConfig(device="cpu"), bundled, load_config(bundled))
    kind, reason = resolve_decoder(loaded, "auto")
    assert kind == "torch" and reason.startswith("head size 40: ONNX Runtime's GroupQueryAttention")
    assert resolve_decoder(loaded, "torch") == ("torch", None)
    with pytest.raises(BuilderUnsupported, match=r"^--onnx-decoder builder: head size 40"):
        resolve_decoder(loaded, "builder")


def test_per_layer_widths_fall_back_or_are_refused(tiny_checkpoints):
    from lmms_topo_plugin.config.prune import LoadConfig
    from lmms_topo_plugin.models.loading import load_config, load_model
    from lmms_topo_plugin.surgery.widths import widths_sliced

    checkpoint = str(tiny_checkpoints("llava", 2))
    loaded = load_model(LoadConfig(device="cpu"), checkpoint, load_config(checkpoint))
    assert resolve_decoder(loaded, "auto") == ("builder", None)
    with widths_sliced(loaded.adapter, {"text.0.attn": [0]}, "per_layer"):
        kind, reason = resolve_decoder(loaded, "auto")
        assert kind == "torch" and reason.startswith("width-pruned per layer (key/value heads [1, 2]")
        with pytest.raises(BuilderUnsupported, match=r"^--onnx-decoder builder: width-pruned per layer"):
            resolve_decoder(loaded, "builder")


@pytest.mark.e2e
def test_a_build_from_before_the_decoder_choice_still_runs(builds, tmp_path):
    """Builds made before this change have no ``decoder`` in their manifest: ours."""
    import shutil

    _, torch_build = builds
    old = shutil.copytree(torch_build.out, tmp_path / "old")
    manifest = json.loads((old / "onnx" / "manifest.json").read_text())
    del manifest["decoder"]
    (old / "onnx" / "manifest.json").write_text(json.dumps(manifest))
    prompts = build.validation_prompts()
    runner = OnnxVLM(old, provider="cpu")
    assert runner.decoder_kind == "torch"
    np.testing.assert_array_equal(runner.generate_ids(prompts, NEW_TOKENS),
                                  OnnxVLM(torch_build.out, provider="cpu").generate_ids(prompts, NEW_TOKENS))
