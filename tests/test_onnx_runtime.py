"""How the runner drives the decoder: the KV cache bound on the session's device from step to step (I/O binding),
last-position logits for generation, builds exported before ``logits_to_keep``, and ``onnx-generate --benchmark``."""

import json
import re
import shutil

import numpy as np
import pytest

from lmms_topo_plugin.cli.main import main
from lmms_topo_plugin.exporters.onnx import build
from lmms_topo_plugin.runtime.onnx_runner import OnnxVLM
from lmms_topo_plugin.exporters.onnx.positions import next_positions
from lmms_topo_plugin.families.tiny import example_image

pytestmark = pytest.mark.e2e  # the end-to-end tier (real CLI runs, exports): pytest -m e2e

NEW_TOKENS = 6


@pytest.fixture(scope="module")
def llava_build(onnx_builds):
    """Our decoder (torch.onnx): ``logits_to_keep`` and the growing cache are its; the model builder's decoder
    is driven as tests/test_onnx_builder.py checks."""
    return onnx_builds("llava", decoder="torch").out


class SpyBinding:
    """An ``IOBinding`` that records what is bound, by which method."""

    def __init__(self, binding, spy) -> None:
        self.binding, self.spy = binding, spy
        self.inputs: dict[str, tuple[str, object]] = {}

    def bind_ortvalue_input(self, name, value):
        self.inputs[name] = ("ortvalue", value)
        return self.binding.bind_ortvalue_input(name, value)

    def bind_cpu_input(self, name, value):
        self.inputs[name] = ("cpu_input", value)
        return self.binding.bind_cpu_input(name, value)

    def bind_input(self, name, *args, **kwargs):
        self.inputs[name] = ("input", args)
        return self.binding.bind_input(name, *args, **kwargs)

    def get_outputs(self):
        outputs = self.binding.get_outputs()
        self.spy.outputs.append(outputs)
        return outputs

    def __getattr__(self, name):
        return getattr(self.binding, name)


class SpySession:
    """The decoder session, recording ``run`` calls (numpy feeds) and each ``run_with_iobinding``'s binding."""

    def __init__(self, session) -> None:
        self.session, self.runs, self.steps, self.outputs = session, [], [], []

    def run(self, *args, **kwargs):
        self.runs.append(args)
        return self.session.run(*args, **kwargs)

    def io_binding(self):
        return SpyBinding(self.session.io_binding(), self)

    def run_with_iobinding(self, binding, *args):
        self.steps.append(binding)
        return self.session.run_with_iobinding(binding.binding, *args)

    def __getattr__(self, name):
        return getattr(self.session, name)


def numpy_fed_tokens(runner, prompt, new_tokens: int):
    """The greedy tokens and each step's last logits as the runner computed them before I/O binding: every
    decoder run fed numpy arrays (the whole cache) and every output, logits of all positions, returned as numpy."""
    session = runner.sessions["decoder_model_merged"]
    past_names = runner.manifest["graphs"]["decoder_model_merged"]["inputs"][3:]
    embeds, mask, positions = runner.prefill_inputs([prompt])
    past = runner.empty_past(1)
    tokens, logits_seen = [], []
    for _ in range(new_tokens):
        logits, *past = session.run(None, {"inputs_embeds": embeds, "attention_mask": mask,
                                           "position_ids": positions, **dict(zip(past_names, past))})
        logits_seen.append(logits[:, -1])
        token = runner.greedy(logits)
        tokens.append(int(token[0]))
        mask = np.concatenate([mask, np.ones((1, 1), dtype=np.int64)], axis=1)
        embeds = runner.sessions["embed_tokens"].run(None, {"input_ids": token[:, None].astype(np.int64)})[0]
        positions = next_positions(positions)
    return tokens, logits_seen


def test_decoding_binds_the_cache_and_passes_each_present_on_as_the_next_past(llava_build):
    """What a CUDA session does (binding is the default off the host; on the CPU it is forced here, since numpy
    feeding measured faster there and is the CPU default)."""
    import onnxruntime as ort

    assert OnnxVLM(llava_build, provider="cpu").bind_cache is False
    runner = OnnxVLM(llava_build, provider="cpu", bind_cache=True)
    prompt = build.validation_prompts()[0]
    expected, _ = numpy_fed_tokens(runner, prompt, NEW_TOKENS)
    spy = runner.sessions["decoder_model_merged"] = SpySession(runner.sessions["decoder_model_merged"])
    tokens = runner.generate_ids([prompt], NEW_TOKENS)[0].tolist()
    assert tokens == expected[:len(tokens)] and len(tokens) == NEW_TOKENS
    assert spy.runs == []  # never fed numpy through InferenceSession.run
    assert len(spy.steps) == len(spy.outputs) == NEW_TOKENS  # the prefill, then one run per further token
    past_names = runner.manifest["graphs"]["decoder_model_merged"]["inputs"][3:]
    assert runner.device_type == "cpu" and len(past_names) == 2 * 4
    for step, binding in enumerate(spy.steps):
        kinds = {name: binding.inputs[name][0] for name in past_names}
        assert set(kinds.values()) == {"ortvalue"}, (step, kinds)
        past = [binding.inputs[name][1] for name in past_names]
        assert all(isinstance(value, ort.OrtValue) for value in past)
        assert binding.inputs["logits_to_keep"][1].numpy() == 1  # generation: the last position's logits only
        logits, *present = spy.outputs[step]
        assert logits.shape()[:2] == [1, 1]
        if step:  # the previous run's present, the very OrtValues, not copies
            previous = spy.outputs[step - 1][1:]
            assert all(mine is theirs for mine, theirs in zip(past, previous))
            assert [value.data_ptr() for value in past] == [value.data_ptr() for value in previous]
            assert past[0].shape()[2] + 1 == present[0].shape()[2]


def test_last_position_logits_are_the_last_row_of_the_full_logits(llava_build):
    manifest = json.loads((llava_build / "onnx" / "manifest.json").read_text())
    decoder = manifest["graphs"]["decoder_model_merged"]
    assert decoder["optional_inputs"] == {"logits_to_keep": 0}
    assert "logits_to_keep" not in decoder["inputs"] and len(decoder["inputs"]) == 3 + 2 * 4
    runner = OnnxVLM(llava_build, provider="cpu")
    session = runner.sessions["decoder_model_merged"]
    assert [value.name for value in session.get_overridable_initializers()] == ["logits_to_keep"]
    prompts = build.validation_prompts()
    embeds, mask, positions = runner.prefill_inputs(prompts)
    full, present = runner.decode(embeds, mask, runner.empty_past(2), positions)
    last, last_present = runner.decode(embeds, mask, runner.empty_past(2), positions, last_only=True)
    assert full.shape[:2] == mask.shape and last.shape == (2, 1, full.shape[2])
    np.testing.assert_allclose(last, full[:, -1:], rtol=0, atol=1e-5)
    for mine, theirs in zip(last_present, present):
        np.testing.assert_array_equal(mine, theirs)  # numpy: the CPU runner's default feeding
    # the graph's default (what onnxruntime-genai and older runners get, not feeding it): every position
    feed = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions,
            **dict(zip(decoder["inputs"][3:], runner.empty_past(2)))}
    np.testing.assert_array_equal(session.run(["logits"], feed)[0], full)
    assert session.run(["logits"], {**feed, "logits_to_keep": np.array(3, dtype=np.int64)})[0].shape == (
        2, 3, full.shape[2])
    # decoder_step keeps its numpy contract: all positions' logits and the cache on the host
    logits, past = runner.decoder_step(embeds, mask, runner.empty_past(2), positions)
    np.testing.assert_array_equal(logits, full)
    assert all(isinstance(value, np.ndarray) for value in past) and past[0].shape == (2, 2, mask.shape[1], 16)


def old_build(build_dir, out):
    """A copy of ``build_dir`` as builds were before ``logits_to_keep``: no such decoder input (the graph keeps
    the value 0 as a constant: all positions' logits) and no ``optional_inputs`` in the manifest."""
    import onnx

    shutil.copytree(build_dir, out)
    path = out / "onnx" / "decoder_model_merged.onnx"
    model = onnx.load(str(path))
    kept = [value for value in model.graph.input if value.name != "logits_to_keep"]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    onnx.save(model, str(path))
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    del manifest["graphs"]["decoder_model_merged"]["optional_inputs"]
    (out / "onnx" / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_a_build_from_before_logits_to_keep_generates_and_scores_the_same(llava_build, tmp_path):
    old = old_build(llava_build, tmp_path / "old")
    runner, current = OnnxVLM(old, provider="cpu"), OnnxVLM(llava_build, provider="cpu")
    session = runner.sessions["decoder_model_merged"]
    assert "logits_to_keep" not in [value.name for value in (*session.get_inputs(),
                                                             *session.get_overridable_initializers())]
    prompts = build.validation_prompts()
    np.testing.assert_array_equal(runner.generate_ids(prompts, NEW_TOKENS), current.generate_ids(prompts, NEW_TOKENS))
    embeds, mask, positions = runner.prefill_inputs(prompts)
    last, _ = runner.decode(embeds, mask, runner.empty_past(2), positions, last_only=True)
    full, _ = current.decode(embeds, mask, current.empty_past(2), positions)
    assert last.shape == (2, 1, full.shape[2])
    np.testing.assert_allclose(last, full[:, -1:], rtol=0, atol=1e-5)
    target = [5, 9, 11]
    assert runner.continuation_nll(prompts[0], target) == pytest.approx(current.continuation_nll(prompts[0], target),
                                                                        abs=1e-5)


BENCHMARK_LINES = [
    r"benchmark: provider cpu, precision fp32, (\d+) prompt tokens, 3 new tokens, medians of 2 runs after a warm-up",
    r"prefill: (\d+\.\d{3}) ms", r"decode: (\d+\.\d{3}) ms/token", r"throughput: (\d+\.\d) tokens/s"]


def test_onnx_generate_benchmark_prints_latencies_with_the_provider_and_precision(llava_build, tmp_path, capsys):
    image = tmp_path / "image.png"
    example_image(3).save(image)
    args = ["onnx-generate", str(llava_build), "--prompt", "What is in the image?", "--image", str(image),
            "--max-new-tokens", "3", "--provider", "cpu"]
    assert main(args) == 0
    (answer,) = capsys.readouterr().out.splitlines()
    assert main([*args, "--benchmark", "--repeats", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == answer and len(lines) == 1 + len(BENCHMARK_LINES)
    found = [re.fullmatch(pattern, line) for pattern, line in zip(BENCHMARK_LINES, lines[1:])]
    assert all(found), lines
    from lmms_topo_plugin.models.prompting import Prompt
    from PIL import Image

    runner = OnnxVLM(llava_build, provider="cpu")
    prompt = Prompt.from_text("What is in the image?", [Image.open(image).convert("RGB")])
    assert int(found[0][1]) == runner.prefill_inputs([prompt])[0].shape[1]
    prefill_ms, decode_ms, throughput = (float(match[1]) for match in found[1:])
    assert prefill_ms > 0 and decode_ms > 0 and throughput > 0
    # each printed value rounded: throughput to 0.05, decode_ms to 0.0005
    assert abs(throughput - 1e3 / decode_ms) <= 0.05 + 1e3 / decode_ms * 5e-4 / decode_ms + 1e-9
    assert main([*args, "--benchmark", "--repeats", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "topo-prune: --benchmark needs --repeats and --max-new-tokens of at least 1")


def test_the_benchmark_reports_medians_of_the_timed_runs_after_a_warm_up(llava_build, monkeypatch):
    """With a clock that gives known times, the medians are exactly those of the timed runs' intervals."""
    runner = OnnxVLM(llava_build, provider="cpu")
    ticks = iter([0, 100, 101,  # the warm-up: not counted
                  200, 202, 208, 300, 301, 305, 400, 403, 418])  # prefill 2, 1, 3 s; decode 6/2, 4/2, 15/2 s
    costs = runner.benchmark(build.validation_prompts()[0], new_tokens=2, repeats=3, clock=lambda: float(next(ticks)))
    assert next(ticks, None) is None
    assert costs["prefill_s"] == 2.0 and costs["decode_s_per_token"] == 3.0
    assert costs["tokens_per_s"] == pytest.approx(1 / 3) and (costs["new_tokens"], costs["repeats"]) == (2, 3)
