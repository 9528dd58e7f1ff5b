#!/usr/bin/env python3
"""Our ONNX decoder against onnxruntime-genai's model-builder decoder (the anchor), same checkpoint, side by side, CPU.

    .venv/bin/python bench/bench_onnx_anchor.py     # bundled model (refused: head size 40), 16 x 512 random LLaVA
    .venv/bin/python bench/bench_onnx_anchor.py --layers 12 --hidden 768 --out /tmp/anchor_12x768.json
    .venv/bin/python bench/bench_onnx_anchor.py --no-bundled --layers 4 --hidden 256 --image-tokens 64 --repeats 2

For each model, dense and with every other decoder layer removed (``surgery.layers_removed``, the plugin's layer
surgery), two decoders of the same weights are built (and a third build, ours with the builder's decoder):

- **ours**: ``exporters.onnx.graphs.export_graphs`` (torch.onnx dynamo export: a cache grown by concatenation,
  ``logits_to_keep``), run as ``runtime.onnx_runner.OnnxVLM`` runs it;
- **builder**: the checkpoint's language model saved on its own (for LLaVA a ``LlamaForCausalLM`` with the VLM's
  text model and ``lm_head``, :func:`language_model_checkpoint`) and built by ``onnxruntime_genai.models.builder``
  (``create_model``, fp32, CPU provider, ``exclude_embeds=true``: ``GroupQueryAttention`` with the rotary inside,
  ``SkipSimplifiedLayerNormalization``), driven with plain ``onnxruntime.InferenceSession``
  (:class:`BuilderDecoder`): its inputs are ``inputs_embeds``, ``attention_mask`` (GroupQueryAttention takes the
  valid lengths and the positions from it) and ``past_key_values.{i}.key/value``. Two ways, both measured: the cache
  as numpy arrays in and out of ``run`` (grown by the op, like ours), and, as onnxruntime-genai drives it
  (``past_present_share_buffer``), one preallocated buffer per key/value bound as both past and present
  (``OrtValue``s, I/O binding), written in place.

Both get the same ``inputs_embeds`` (the prompt of ``search.measure.default_cost_prompt`` with its image, vision
and embedding graphs of our build; the builder's graph has no embedding) and every decode step embeds its token
with our embedding graph, so the decoders alone differ. Measured, interleaved (every variant once per round, one
warm-up round, medians of ``--repeats`` rounds, wall time and this thread's CPU time; ``intra_op_num_threads=1``
in every session):

- prefill: the decoder over the whole prompt from an empty cache; ours with logits for every position and for the
  last one only; the builder's graph computes every position's logits on the CPU (it prunes the LM head only with
  CUDA paged attention);
- decode: ``--decode-tokens`` greedy steps after the prefill, per token: ours with numpy caches and with the cache
  bound (``OnnxVLM.next_step``), the builder's with numpy caches and with its shared buffer;
- the integrated runner, what users run: ``OnnxVLM`` with its defaults on our build (``runner_torch``) and on the
  build whose decoder the builder made (``export_graphs(..., decoder="builder")``, ``runner_builder``: its hidden
  states, the ``lm_head`` graph, right padding and the shared buffers of ``runtime/shared_cache.py``); prefill as
  ``generate_ids`` prefills (the last position's logits) and per-token ``next_step``. The ratio
  ``runner_decode_torch_over_builder`` above 1 means the builder-decoder build decodes faster; it decides
  ``exporters.onnx.builder_decoder.DEFAULT_DECODER``.

Checked, untimed: the greedy tokens of every variant and of PyTorch (the VLM's text model on the same embeddings)
are the same, and the largest absolute logit difference (builder against ours, ours against PyTorch) over the
prefill's last position and every step; a two-prompt batch's prefill logits, left- and right-padded
(:func:`padding_check`: the builder's graph takes right padding only). Node counts of both decoder graphs. A
checkpoint the builder cannot take (``builder_decoder.builder_limits``: a head size that is not a multiple of 16, which ONNX
Runtime's CPU GroupQueryAttention refuses, e.g. the bundled model's 40; a width-pruned decoder whose layers differ
in heads or MLP width; M-RoPE families; text models it has no builder for) raises :class:`BuilderUnsupported`
saying why, and the row records it. Writes ``--out`` (default ``bench/results/onnx_anchor.json``) atomically, with
the command and the machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_onnx  # noqa: E402  (interleaved medians)
import bench_speed  # noqa: E402  (the random LLaVA-shaped model, machine and command helpers)

DEFAULT_OUT = bench_speed.ROOT / "bench" / "results" / "onnx_anchor.json"
# the bench and the export share them (exporters/onnx/builder_decoder.py)
from lmms_topo_plugin.exporters.onnx.builder_decoder import (  # noqa: E402
    BuilderUnsupported, build_with_builder, language_model_checkpoint)


def session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


class BuilderDecoder:
    """The builder's decoder (``<dir>/model.onnx`` and ``genai_config.json``) run with plain onnxruntime."""

    def __init__(self, build_dir: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        self.ort = ort
        decoder = json.loads((build_dir / "genai_config.json").read_text())["model"]["decoder"]
        self.config = decoder
        self.session = ort.InferenceSession(str(build_dir / decoder["filename"]), session_options(threads),
                                            providers=["CPUExecutionProvider"])
        names = {value.name for value in self.session.get_inputs()}
        expected = {"inputs_embeds", "attention_mask"}
        if not expected <= names or "position_ids" in names:  # GroupQueryAttention with the rotary inside
            raise BuilderUnsupported(f"the builder's decoder takes {sorted(names)}, not inputs_embeds + "
                                     "attention_mask + cache (GroupQueryAttention with its rotary)")
        inputs, outputs = decoder["inputs"], decoder["outputs"]
        layers = range(decoder["num_hidden_layers"])
        self.past = [inputs[f"past_{kind}_names"] % layer for layer in layers for kind in ("key", "value")]
        self.present = [outputs[f"present_{kind}_names"] % layer for layer in layers for kind in ("key", "value")]
        self.shape = (decoder["num_key_value_heads"], decoder["head_size"])

    def empty_past(self) -> list[np.ndarray]:
        return [np.zeros((1, *self.shape[:1], 0, self.shape[1]), dtype=np.float32) for _ in self.past]

    def run(self, embeds: np.ndarray, mask: np.ndarray, past: list[np.ndarray]) -> tuple[np.ndarray, list]:
        """The cache as numpy arrays: ``past`` ``[1, kv_heads, past_len, head]`` in, grown present out."""
        # outputs asked for by name: the graph lists every key before every value
        logits, *present = self.session.run(["logits", *self.present], {
            "inputs_embeds": embeds, "attention_mask": mask, **dict(zip(self.past, past))})
        return logits, present

    def buffers(self, max_length: int) -> list:
        """One zeroed ``[1, kv_heads, max_length, head]`` buffer per past key/value (onnxruntime-genai's
        ``past_present_share_buffer``): bound as past and present both, written in place."""
        shape = (1, self.shape[0], max_length, self.shape[1])
        return [self.ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype=np.float32)) for _ in self.past]

    def run_shared(self, embeds: np.ndarray, mask: np.ndarray, buffers: list) -> np.ndarray:
        """The positions of ``mask`` beyond those of ``embeds`` are in ``buffers``; ``embeds``' keys and values
        are written after them. The logits of ``embeds``' positions."""
        binding = self.session.io_binding()
        held = [np.ascontiguousarray(embeds), np.ascontiguousarray(mask)]
        binding.bind_cpu_input("inputs_embeds", held[0])
        binding.bind_cpu_input("attention_mask", held[1])
        binding.bind_output("logits", "cpu")  # first: get_outputs() lists the outputs in the order bound
        for past, present, buffer in zip(self.past, self.present, buffers):
            binding.bind_ortvalue_input(past, buffer)
            binding.bind_ortvalue_output(present, buffer)
        self.session.run_with_iobinding(binding)
        return binding.get_outputs()[0].numpy()


def node_count(path: Path) -> tuple[int, dict[str, int]]:
    import onnx

    from lmms_topo_plugin.exporters.onnx.graphs import graph_nodes

    nodes = list(graph_nodes(onnx.load(str(path), load_external_data=False).graph))
    return len(nodes), dict(collections.Counter(node.op_type for node in nodes).most_common(8))


class Pair:
    """Our decoder (a runner over our build) and the builder's, with one prompt's embeddings."""

    def __init__(self, runner, builder: BuilderDecoder, prompt, decode_tokens: int, integrated: dict) -> None:
        from lmms_topo_plugin.exporters.onnx.positions import text_positions

        self.runner, self.builder, self.decode_tokens = runner, builder, decode_tokens
        # the integrated runners, as a user runs them (OnnxVLM's defaults): "torch", our build; "builder", the build
        # whose decoder the model builder made (exporters/onnx/builder_decoder.py)
        self.integrated = integrated
        self.ours = runner.sessions["decoder_model_merged"]
        self.ours_past = runner.manifest["graphs"]["decoder_model_merged"]["inputs"][3:]
        self.embeds, self.mask, self.positions = runner.prefill_inputs([prompt])
        if not np.array_equal(self.positions, text_positions(self.mask)):
            raise BuilderUnsupported("the prompt's positions are not 0..n-1 (the builder's rotary takes them so)")
        self.length = self.embeds.shape[1]
        self.buffers = builder.buffers(self.length + decode_tokens)

    def embed(self, token: int) -> np.ndarray:
        return self.runner.sessions["embed_tokens"].run(None, {"input_ids": np.array([[token]], dtype=np.int64)})[0]

    # prefills: (last position's logits, cache)
    def ours_prefill(self, last_only: bool):
        logits, *past = self.ours.run(None, {
            "inputs_embeds": self.embeds, "attention_mask": self.mask, "position_ids": self.positions,
            "logits_to_keep": np.array(int(last_only), dtype=np.int64),
            **dict(zip(self.ours_past, self.runner.empty_past(1)))})
        return logits[:, -1], past

    def builder_prefill(self):
        logits, past = self.builder.run(self.embeds, self.mask, self.builder.empty_past())
        return logits[:, -1], past

    def builder_prefill_shared(self):
        return self.builder.run_shared(self.embeds, self.mask, self.buffers)[:, -1], self.buffers

    def runner_prefill(self, kind: str):
        """``OnnxVLM.decode`` as ``generate_ids`` prefills: last-position logits, a cache with room for the steps."""
        runner = self.integrated[kind]
        logits, past = runner.decode(self.embeds, self.mask, runner.empty_past(1), self.positions, last_only=True,
                                     capacity=self.length + self.decode_tokens)
        return logits[:, -1], past

    def runner_decode(self, kind: str, prefilled) -> list[np.ndarray]:
        """``OnnxVLM.next_step`` per token (the token's embedding, the decoder, for the builder's the LM head)."""
        runner = self.integrated[kind]
        logits, past = prefilled
        mask, positions, steps = self.mask, self.positions, []
        for _ in range(self.decode_tokens):
            logits, mask, past, positions = runner.next_step(logits.argmax(-1).reshape(1), mask, past, positions)
            logits = logits[:, -1]
            steps.append(logits)
        return steps

    # greedy decoding after a prefill: every step's logits
    def ours_decode(self, prefilled) -> list[np.ndarray]:
        from lmms_topo_plugin.exporters.onnx.positions import next_positions

        logits, past = prefilled
        mask, positions, steps = self.mask, self.positions, []
        for _ in range(self.decode_tokens):
            mask = np.concatenate([mask, np.ones((1, 1), dtype=np.int64)], axis=1)
            positions = next_positions(positions)
            logits, *past = self.ours.run(None, {
                "inputs_embeds": self.embed(int(logits[0].argmax())), "attention_mask": mask,
                "position_ids": positions, "logits_to_keep": np.array(1, dtype=np.int64),
                **dict(zip(self.ours_past, past))})
            logits = logits[:, -1]
            steps.append(logits)
        return steps

    def ours_decode_bound(self, prefilled) -> list[np.ndarray]:
        logits, past = prefilled
        mask, positions, steps = self.mask, self.positions, []
        for _ in range(self.decode_tokens):
            logits, mask, past, positions = self.runner.next_step(logits.argmax(-1).reshape(1), mask, past, positions)
            logits = logits[:, -1]
            steps.append(logits)
        return steps

    def builder_decode(self, prefilled) -> list[np.ndarray]:
        logits, past = prefilled
        mask, steps = self.mask, []
        for _ in range(self.decode_tokens):
            mask = np.concatenate([mask, np.ones((1, 1), dtype=np.int64)], axis=1)
            logits, past = self.builder.run(self.embed(int(logits[0].argmax())), mask, past)
            logits = logits[:, -1]
            steps.append(logits)
        return steps

    def builder_decode_shared(self, prefilled) -> list[np.ndarray]:
        logits, buffers = prefilled
        mask, steps = self.mask, []
        for _ in range(self.decode_tokens):
            mask = np.concatenate([mask, np.ones((1, 1), dtype=np.int64)], axis=1)
            logits = self.builder.run_shared(self.embed(int(logits[0].argmax())), mask, buffers)[:, -1]
            steps.append(logits)
        return steps


def torch_greedy(loaded, embeds: np.ndarray, decode_tokens: int) -> list[np.ndarray]:
    """PyTorch (the VLM's own text model and LM head) on the same embeddings: the prefill's last logits and every
    greedy step's (each token embedded by the model's embedding)."""
    from transformers import DynamicCache

    text_model, head = loaded.adapter.text_model, loaded.model.lm_head
    with torch.inference_mode():
        cache = DynamicCache(config=loaded.adapter.text_config)
        hidden = text_model(inputs_embeds=torch.from_numpy(embeds), past_key_values=cache, use_cache=True)
        logits = [head(hidden.last_hidden_state[:, -1]).numpy()]
        for _ in range(decode_tokens):
            token = torch.tensor([[int(logits[-1][0].argmax())]])
            hidden = text_model(inputs_embeds=loaded.adapter.embed_tokens(token), past_key_values=cache,
                                use_cache=True)
            logits.append(head(hidden.last_hidden_state[:, -1]).numpy())
    return logits


def check_tokens(pair: Pair, loaded) -> dict:
    """Greedy tokens of every variant and PyTorch; the largest logit differences (untimed)."""
    runs = {"ours_numpy": (pair.ours_prefill(True), pair.ours_decode),
            "ours_bound": (pair.ours_prefill(True), pair.ours_decode_bound),
            "builder_numpy": (pair.builder_prefill(), pair.builder_decode),
            "builder_shared": (pair.builder_prefill_shared(), pair.builder_decode_shared),
            **{f"runner_{kind}": (pair.runner_prefill(kind), lambda prefilled, kind=kind: pair.runner_decode(
                kind, prefilled)) for kind in pair.integrated}}
    logits = {name: [prefilled[0], *decode(prefilled)] for name, (prefilled, decode) in runs.items()}
    logits["pytorch"] = torch_greedy(loaded, pair.embeds, pair.decode_tokens)
    tokens = {name: [int(step[0].argmax()) for step in steps] for name, steps in logits.items()}

    def max_diff(a: str, b: str) -> float:
        return float(max(np.abs(x - y).max() for x, y in zip(logits[a], logits[b])))

    return {"tokens": tokens, "same_tokens": all(value == tokens["pytorch"] for value in tokens.values()),
            "max_abs_logit_diff": {"builder_numpy_vs_ours": max_diff("builder_numpy", "ours_numpy"),
                                   "builder_shared_vs_ours": max_diff("builder_shared", "ours_numpy"),
                                   "builder_shared_vs_pytorch": max_diff("builder_shared", "pytorch"),
                                   "ours_vs_pytorch": max_diff("ours_numpy", "pytorch"),
                                   "runner_builder_vs_runner_torch": max_diff("runner_builder", "runner_torch"),
                                   "runner_builder_vs_pytorch": max_diff("runner_builder", "pytorch")},
            "logit_scale": float(np.abs(np.concatenate(logits["pytorch"])).max())}


def padding_check(pair: Pair) -> dict:
    """The prefill logits of a two-prompt batch of different lengths (the build validation's prompts), builder against
    ours on every real position of each row: left-padded as our runner pads, and with each row's positions moved to
    the front (right-padded). GroupQueryAttention takes a row's valid length from the mask and assumes it starts
    at position 0, so a left-padded shorter row comes out wrong."""
    from lmms_topo_plugin.exporters.onnx.build import validation_prompts

    runner, builder = pair.runner, pair.builder
    embeds, mask, positions = runner.prefill_inputs(validation_prompts())
    ours, _ = runner.decode(embeds, mask, runner.empty_past(len(mask)), positions)
    real = mask.astype(bool)
    empty = [np.zeros((len(mask), *past.shape[1:]), dtype=np.float32) for past in builder.empty_past()]
    left, _ = builder.run(embeds, mask, empty)
    order = np.argsort(~real, axis=1, kind="stable")  # each row's real positions first, in order
    right, _ = builder.run(np.take_along_axis(embeds, order[..., None], 1), np.take_along_axis(mask, order, 1), empty)
    lengths = real.sum(1)
    return {"row_lengths": lengths.tolist(),
            "left_padded_max_abs_diff": [float(np.abs(ours[row][real[row]] - left[row][real[row]]).max())
                                         for row in range(len(mask))],
            "right_padded_max_abs_diff": [float(np.abs(ours[row][real[row]] - right[row][:length]).max())
                                          for row, length in enumerate(lengths)]}


def timings(pair: Pair, repeats: int) -> dict:
    """Interleaved medians (wall and thread CPU) of every prefill and decode variant; decode per token."""
    prefilled = {"ours_numpy": pair.ours_prefill(True), "builder_numpy": pair.builder_prefill(),
                 "builder_shared": pair.builder_prefill_shared(),
                 **{f"runner_{kind}": pair.runner_prefill(kind) for kind in pair.integrated}}
    steps = {
        "prefill_ours_all_logits": lambda: pair.ours_prefill(False),
        "prefill_ours_last_logits": lambda: pair.ours_prefill(True),
        "prefill_builder_numpy": pair.builder_prefill,
        "prefill_builder_shared": pair.builder_prefill_shared,
        "decode_ours_numpy": lambda: pair.ours_decode(prefilled["ours_numpy"]),
        "decode_ours_bound": lambda: pair.ours_decode_bound(prefilled["ours_numpy"]),
        "decode_builder_numpy": lambda: pair.builder_decode(prefilled["builder_numpy"]),
        "decode_builder_shared": lambda: pair.builder_decode_shared(prefilled["builder_shared"]),
        # the integrated runner (OnnxVLM, its defaults) on our build and on the build with the builder's decoder
        **{f"prefill_runner_{kind}": lambda kind=kind: pair.runner_prefill(kind) for kind in pair.integrated},
        **{f"decode_runner_{kind}": lambda kind=kind: pair.runner_decode(kind, prefilled[f"runner_{kind}"])
           for kind in pair.integrated},
    }
    wall, cpu = bench_onnx.interleaved_medians(steps, repeats)
    for costs in (wall, cpu):
        for name in steps:
            if name.startswith("decode_"):
                costs[name] /= pair.decode_tokens
        costs["ratio"] = {  # ours / builder: above 1, the builder's is faster
            "prefill_all_logits": costs["prefill_ours_all_logits"] / costs["prefill_builder_numpy"],
            "prefill_last_logits_vs_builder": costs["prefill_ours_last_logits"] / costs["prefill_builder_numpy"],
            "decode_numpy": costs["decode_ours_numpy"] / costs["decode_builder_numpy"],
            "decode_best_vs_best": (min(costs["decode_ours_numpy"], costs["decode_ours_bound"])
                                    / min(costs["decode_builder_numpy"], costs["decode_builder_shared"])),
            # the integrated runner: our build's over the builder-decoder build's (above 1: the builder's faster)
            "runner_prefill_torch_over_builder": costs["prefill_runner_torch"] / costs["prefill_runner_builder"],
            "runner_decode_torch_over_builder": costs["decode_runner_torch"] / costs["decode_runner_builder"],
            # the integrated builder-decoder runner against the builder's decoder driven bare (goal: within 5%)
            "runner_builder_decode_over_bare_builder_shared": (costs["decode_runner_builder"]
                                                               / costs["decode_builder_shared"]),
        }
    return {"wall_s": wall, "thread_cpu_s": cpu}


def build_pair(loaded, prompt, work: Path, decode_tokens: int, threads: int = 1) -> tuple[Pair, dict]:
    """Both decoders of ``loaded`` as it is now (pruned or not) built under ``work`` and paired on ``prompt``, and
    what the builds were: layers, build times, node counts. :class:`BuilderUnsupported` where the builder cannot
    take the checkpoint (before anything is built)."""
    from lmms_topo_plugin.exporters.onnx.graphs import export_graphs
    from lmms_topo_plugin.models.prompting import encode
    from lmms_topo_plugin.runtime.onnx_runner import OnnxVLM

    vision_inputs = encode(loaded.processor, loaded.adapter, [prompt, prompt])
    checkpoint = language_model_checkpoint(loaded, work / "language_model")
    start = time.perf_counter()
    builder_dir = build_with_builder(checkpoint, work / "builder")
    info = {"builder_build_s": time.perf_counter() - start}
    start = time.perf_counter()
    export_graphs(loaded, vision_inputs, work / "ours" / "onnx")
    info["ours_export_s"] = time.perf_counter() - start
    start = time.perf_counter()
    export_graphs(loaded, vision_inputs, work / "integrated" / "onnx", decoder="builder")
    info["integrated_builder_export_s"] = time.perf_counter() - start
    for build in ("ours", "integrated"):
        loaded.processor.save_pretrained(work / build)
        loaded.model.config.save_pretrained(work / build)
    runner = OnnxVLM(work / "ours", provider="cpu", threads=threads, bind_cache=True)
    integrated = {kind: OnnxVLM(work / build, provider="cpu", threads=threads)
                  for kind, build in (("torch", "ours"), ("builder", "integrated"))}
    pair = Pair(runner, BuilderDecoder(builder_dir, threads=threads), prompt, decode_tokens, integrated)
    genai = json.loads((builder_dir / "genai_config.json").read_text())
    ours_nodes, ours_ops = node_count(work / "ours" / "onnx" / "decoder_model_merged.onnx")
    builder_nodes, builder_ops = node_count(builder_dir / "model.onnx")
    integrated_nodes = sum(node_count(work / "integrated" / "onnx" / file)[0]
                           for file in ("decoder_model_merged.onnx", "lm_head.onnx"))
    info.update(prompt_tokens=pair.length, decode_tokens=decode_tokens,
                builder_genai_layers=genai["model"]["decoder"]["num_hidden_layers"],
                builder_past_present_share_buffer=genai["search"]["past_present_share_buffer"],
                nodes={"ours": ours_nodes, "builder": builder_nodes, "integrated_builder": integrated_nodes},
                top_ops={"ours": ours_ops, "builder": builder_ops})
    return pair, info


def measure_config(loaded, prompt, removed: list[int], work: Path, args) -> dict:
    """One row: both decoders of ``loaded`` with ``removed`` layers taken out, built, checked and timed."""
    from lmms_topo_plugin.surgery.layers import layers_removed

    with layers_removed(loaded.adapter, removed):
        row = {"layers": loaded.adapter.num_layers, "removed": list(removed)}
        try:
            pair, info = build_pair(loaded, prompt, work, args.decode_tokens, args.threads)
        except BuilderUnsupported as error:
            return row | {"builder_error": str(error)}
        checks = {"check": check_tokens(pair, loaded), "padding": padding_check(pair)}
        return row | info | checks | timings(pair, args.repeats)


def measure_model(name: str, loaded, prompt, args) -> list[dict]:
    rows = []
    layers = loaded.adapter.num_layers
    for config, removed in (("dense", []), ("half removed", list(range(1, layers, 2)))):
        with tempfile.TemporaryDirectory() as work:
            row = {"model": name, "config": config} | measure_config(loaded, prompt, removed, Path(work), args)
        rows.append(row)
        print(summary(row), flush=True)
    return rows


def summary(row: dict) -> str:
    if "builder_error" in row:
        return f"{row['model']} {row['config']}: builder cannot build it: {row['builder_error']}"
    wall = row["wall_s"]
    ms = {name: f"{value * 1e3:.2f}" for name, value in wall.items() if name != "ratio"}
    return (f"{row['model']} {row['config']} ({row['layers']} layers, {row['prompt_tokens']} prompt tokens): "
            f"same tokens {row['check']['same_tokens']}, max |dlogit| {row['check']['max_abs_logit_diff']}, "
            f"nodes {row['nodes']}; ms {ms}; ours/builder {wall['ratio']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=16, help="random model's decoder layers (default: %(default)s)")
    parser.add_argument("--hidden", type=int, default=512, help="random model's width (default: %(default)s)")
    parser.add_argument("--image-tokens", type=int, default=576)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of every session")
    parser.add_argument("--no-bundled", action="store_true", help="only the random model")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from lmms_topo_plugin.cache import atomic_write_json
    from lmms_topo_plugin.config.prune import LoadConfig
    from lmms_topo_plugin.models.loading import load_config, load_model, resolve_pretrained
    from lmms_topo_plugin.search.measure import default_cost_prompt
    import onnxruntime
    import onnxruntime_genai

    machine = bench_speed.machine_info() | {"onnxruntime": onnxruntime.__version__,
                                            "onnxruntime_genai": onnxruntime_genai.__version__}
    prompt = default_cost_prompt()
    started = time.perf_counter()
    rows = []
    if not args.no_bundled:
        bundled = resolve_pretrained(None)
        rows += measure_model("bundled", load_model(LoadConfig(device="cpu"), bundled, load_config(bundled)),
                              prompt, args)
    random_model, _ = bench_speed.build_model(args.layers, args.hidden, args.image_tokens)
    rows += measure_model(f"random LLaVA-shaped ({args.layers} x {args.hidden}, {args.image_tokens} image tokens)",
                          random_model, prompt, args)
    atomic_write_json(args.out, {"command": bench_speed.command_line(), "args": vars(args) | {"out": str(args.out)},
                                 "machine": machine | {"loadavg_at_end": list(os.getloadavg())}, "rows": rows,
                                 "wall_s": time.perf_counter() - started})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
