#!/usr/bin/env python3
"""ONNX Runtime (CPU provider) against PyTorch eager on the same model, dense and pruned, side by side in one run.

    .venv/bin/python bench/bench_onnx.py                     # the bundled model and a random LLaVA-shaped model
    .venv/bin/python bench/bench_onnx.py --layers 4 --hidden 256 --image-tokens 64 --repeats 2   # a quick look

Each model is measured dense and with every other decoder layer removed (``surgery.layers_removed``); for each,
the three graphs are exported (``exporters.onnx.graphs.export_graphs``, fp32) and run with
``exporters.onnx.runner.OnnxVLM``. Both runtimes do the same work on the same fixed prompt with an image:
prefill = vision tower + embedding + decoder over the whole prompt with logits for every position, KV cache filled
(ONNX Runtime also with the last position's logits only, ``prefill_s_last_logits``: what generation runs); decode =
``--decode-tokens`` greedy one-token steps with the KV cache (per-token time; ONNX Runtime with the cache fed as
numpy arrays, as the runner decodes on the CPU, and bound on the session's device, ``decode_s_per_token_bound``, as
it decodes on a GPU). Medians of ``--repeats`` after one warm-up (ONNX Runtime's variants measured in turn in each round, in
wall time and, under ``thread_cpu``, in this thread's CPU time), one thread in both runtimes. The random model
(``bench_speed.build_model``: a Llama decoder of ``--layers`` x ``--hidden`` behind a small CLIP tower giving
``--image-tokens`` image tokens) is one whose decoder dominates the cost. Writes ``--out`` (default
``bench/results/onnx.json``) atomically.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_speed  # noqa: E402  (the random LLaVA-shaped model, timing and machine helpers)

DEFAULT_OUT = bench_speed.ROOT / "bench" / "results" / "onnx.json"


def torch_costs(loaded, prompt, decode_tokens: int, repeats: int) -> dict[str, float]:
    from lmms_topo_plugin.calibration.collect import move_inputs
    from lmms_topo_plugin.models.prompting import encode
    from lmms_topo_plugin.search.measure import decode

    inputs = move_inputs(encode(loaded.processor, loaded.adapter, [prompt]), "cpu", loaded.model.dtype)
    with torch.inference_mode():
        prefill_s = bench_speed.median_seconds(lambda: loaded.model(**inputs, use_cache=True), repeats)
        prefilled = loaded.model(**inputs, use_cache=True)
        decode_s = bench_speed.median_seconds(lambda: decode(loaded.model, prefilled, decode_tokens), repeats)
    return {"prefill_s": prefill_s, "decode_s_per_token": decode_s / decode_tokens}


def interleaved_medians(steps: dict, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall time and median CPU time of this thread (where ONNX Runtime computes with one thread: what a
    busy machine's other processes do not inflate) of each step, over ``repeats`` rounds after one warm-up round,
    the steps taken in turn in every round (so that a busy machine slows the variants they compare alike)."""
    wall, cpu = ({name: [] for name in steps} for _ in range(2))
    for round_ in range(repeats + 1):
        for name, step in steps.items():
            start, start_cpu = time.perf_counter(), time.thread_time()
            step()
            if round_:
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.thread_time() - start_cpu)
    return ({name: float(np.median(values)) for name, values in wall.items()},
            {name: float(np.median(values)) for name, values in cpu.items()})


def ort_costs(runner, prompt, decode_tokens: int, repeats: int) -> dict[str, float]:
    """The runner's prefill with logits for every position (``prefill_s``) and for the last one only
    (``prefill_s_last_logits``, what generation runs); decoding with the cache fed as numpy arrays in and out of
    ``InferenceSession.run`` (``decode_s_per_token``, the CPU runner's default) and bound on the device
    (``decode_s_per_token_bound``, ``OnnxVLM.next_step`` with ``bind_cache=True``, the GPU default), the same steps
    otherwise."""
    from lmms_topo_plugin.exporters.onnx.positions import next_positions

    session = runner.sessions["decoder_model_merged"]
    past_names = runner.manifest["graphs"]["decoder_model_merged"]["inputs"][3:]

    def prefill(last_only: bool):
        embeds, mask, positions = runner.prefill_inputs([prompt])
        logits, past = runner.decode(embeds, mask, runner.empty_past(1), positions, last_only=last_only)
        return logits, past, mask, positions

    def bound_steps(prefilled):
        logits, past, mask, positions = prefilled
        for _ in range(decode_tokens):
            logits, mask, past, positions = runner.next_step(logits[:, -1].argmax(-1), mask, past, positions)

    def numpy_steps(prefilled):
        logits, past, mask, positions = prefilled
        past = [value.numpy() for value in past]
        for _ in range(decode_tokens):
            token = logits[:, -1].argmax(-1)
            mask = np.concatenate([mask, np.ones((1, 1), dtype=np.int64)], axis=1)
            embeds = runner.sessions["embed_tokens"].run(None, {"input_ids": token[:, None].astype(np.int64)})[0]
            positions = next_positions(positions)
            logits, *past = session.run(None, {"inputs_embeds": embeds, "attention_mask": mask,
                                               "position_ids": positions, **dict(zip(past_names, past))})
        return past

    prefilled = prefill(True)
    wall, cpu = interleaved_medians({"prefill_s": lambda: prefill(False),
                                     "prefill_s_last_logits": lambda: prefill(True),
                                     "decode_s_per_token": lambda: numpy_steps(prefilled),
                                     "decode_s_per_token_bound": lambda: bound_steps(prefilled)}, repeats)
    last_past = numpy_steps(prefilled)
    for costs in (wall, cpu):
        for name in ("decode_s_per_token", "decode_s_per_token_bound"):
            costs[name] /= decode_tokens
        costs.update(prefill_speedup_last_logits=costs["prefill_s"] / costs["prefill_s_last_logits"],
                     decode_speedup_iobinding=costs["decode_s_per_token"] / costs["decode_s_per_token_bound"])
    # what the numpy path hands ONNX Runtime at the last step and gets back (host <-> device on a GPU)
    return {**wall, "thread_cpu": cpu, "cache_bytes_per_step_numpy": 2 * sum(value.nbytes for value in last_past)}


def measure_model(name: str, loaded, prompt, args) -> list[dict]:
    """Dense and half-removed rows of one model: PyTorch and ONNX Runtime costs, graph sizes."""
    from lmms_topo_plugin.exporters.onnx.graphs import export_graphs
    from lmms_topo_plugin.runtime.onnx_runner import OnnxVLM
    from lmms_topo_plugin.models.prompting import encode
    from lmms_topo_plugin.surgery.layers import layers_removed

    rows = []
    layers = loaded.adapter.num_layers
    vision_inputs = encode(loaded.processor, loaded.adapter, [prompt, prompt])
    for config, removed in (("dense", []), ("half removed", list(range(1, layers, 2)))):
        with layers_removed(loaded.adapter, removed), tempfile.TemporaryDirectory() as build:
            start = time.perf_counter()
            export_graphs(loaded, vision_inputs, Path(build) / "onnx")
            export_s = time.perf_counter() - start
            loaded.processor.save_pretrained(build)
            loaded.model.config.save_pretrained(build)
            runner = OnnxVLM(build, provider="cpu", threads=1, bind_cache=True)  # bound vs numpy, side by side
            rows.append({
                "model": name, "config": config, "layers": loaded.adapter.num_layers, "removed": removed,
                "pytorch": torch_costs(loaded, prompt, args.decode_tokens, args.repeats),
                "onnxruntime": ort_costs(runner, prompt, args.decode_tokens, args.repeats),
                "export_s": export_s,
                "bytes": {path.stem: path.stat().st_size for path in sorted((Path(build) / "onnx").glob("*.onnx"))},
            })
        print(f"{name} {config}: {rows[-1]}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--image-tokens", type=int, default=576)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decode-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from lmms_topo_plugin.cache import atomic_write_json
    from lmms_topo_plugin.config.prune import LoadConfig
    from lmms_topo_plugin.models.loading import load_config, load_model, resolve_pretrained
    from lmms_topo_plugin.search.measure import default_cost_prompt

    prompt = default_cost_prompt()
    started = time.perf_counter()
    bundled = resolve_pretrained(None)
    rows = measure_model("bundled", load_model(LoadConfig(device="cpu"), bundled, load_config(bundled)), prompt, args)
    random_model, _ = bench_speed.build_model(args.layers, args.hidden, args.image_tokens)
    rows += measure_model(f"random LLaVA-shaped ({args.layers} x {args.hidden}, {args.image_tokens} image tokens)",
                          random_model, prompt, args)
    atomic_write_json(args.out, {"command": bench_speed.command_line(), "args": vars(args) | {"out": str(args.out)},
                                 "machine": bench_speed.machine_info(), "rows": rows,
                                 "wall_s": time.perf_counter() - started})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
