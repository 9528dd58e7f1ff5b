#!/usr/bin/env python3
"""Measured prefill and decode speedup of decoder-layer removal against the ideal L/L', side by side in one run.

    .venv/bin/python bench/bench_speed.py                 # 24 layers, width 1024, 576 image tokens, float32, CPU
    .venv/bin/python bench/bench_speed.py --layers 8 --hidden 256 --image-tokens 64 --repeats 2   # a quick look

The model is a random-weight LLaVA-1.5-shaped model built from a config in code (speed needs no trained
weights): a Llama decoder of ``--layers`` layers of width ``--hidden`` (16 heads, MLP 2.75x, a 32k vocabulary)
behind a small CLIP tower (2 layers of width 32) whose 14 px patches give ``--image-tokens`` image tokens
(576 = a 336 px image), so that the decoder dominates the cost. It is measured dense, then with a quarter of
the layers removed (every fourth), then with half removed (every other), in place with
``lmms_topo_plugin.surgery.layers.remove_layers``, by ``lmms_topo_plugin.search.measure.measure_cost`` on its fixed
prompt: prefill latency (the whole prompt with its image, logits for the last position as ``generate`` does),
per-token decode latency (``--decode-tokens`` one-token steps with the KV cache), peak RSS; medians of
``--repeats`` after one warm-up.

One torch thread by default: on a machine shared with other work, a multi-threaded run waits at every
parallel region for a core another process holds, which costs small kernels milliseconds each (the 2-layer
vision tower took 280 ms with 2 threads on a loaded 2-core box and 4 ms with one) and makes the rows
incomparable. ``--threads 0`` keeps torch's default on a quiet machine.

Where the speedup falls short of L/L', the measurement says why: forward hooks on the first and last decoder
layer time the decoder layers inside every measured forward, so each row splits its latency into the layers and
the rest (vision tower + projector, embeddings, masks and rotary tables, final norm, LM head, Python dispatch),
which layer removal cannot shrink; ``bound`` is the speedup the measured rest allows (Amdahl). The vision tower +
projector and the LM head (last position, and every prompt position as a forward without ``logits_to_keep``
would pay) are also timed on their own. Writes the rows, the command line and the machine to ``--out``
(default ``bench/results/speed.json``, atomically).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import transformers

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "speed.json"
GOAL_OF_IDEAL = 0.9
PATCH = 14
VOCAB = 32000
HEADS = 16


def build_model(layers: int, hidden: int, image_tokens: int, kv_heads: int = HEADS, vocab: int = VOCAB):
    """A random-weight LLaVA-shaped ``LoadedModel`` (float32, CPU; ``kv_heads`` key/value heads for the query
    heads, a ``vocab``-token vocabulary) and its processor's image size."""
    from lmms_topo_plugin.families import adapter_class_for, image_only_processor_class
    from lmms_topo_plugin.families.tiny import tiny_config, tiny_model, tiny_tokenizer
    from lmms_topo_plugin.models.loading import LoadedModel
    from lmms_topo_plugin.synthbench import vocabulary

    side = math.isqrt(image_tokens)
    if side * side != image_tokens:
        raise SystemExit(f"--image-tokens must be a square (a square image of 14 px patches), got {image_tokens}")
    image_size = side * PATCH
    tokenizer = tiny_tokenizer("llava", vocabulary())
    config = tiny_config("llava", num_layers=layers, hidden_size=hidden, tokenizer=tokenizer, text_overrides=dict(
        vocab_size=vocab, num_attention_heads=HEADS, num_key_value_heads=kv_heads,
        intermediate_size=round(2.75 * hidden / 64) * 64, max_position_embeddings=4096,
    ))
    config.vision_config.image_size, config.vision_config.patch_size = image_size, PATCH
    config.image_seq_length = image_tokens
    model = tiny_model(config, tokenizer)
    image_processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    processor = image_only_processor_class(transformers.LlavaProcessor)(
        image_processor, tokenizer, chat_template=tokenizer.chat_template, patch_size=PATCH,
        vision_feature_select_strategy="default", num_additional_image_tokens=1)
    return LoadedModel(model, processor, adapter_class_for(config)(model), "random-weight LLaVA"), image_size


@contextmanager
def layer_timer(loaded) -> Iterator[dict[str, list[tuple[float, float]]]]:
    """(whole forward, decoder layers) seconds of every model forward, split into prefill and decode (one token).

    Both spans come from the same forward, so their difference is the non-layer rest of that forward.
    """
    spans: dict[str, list[tuple[float, float]]] = {"prefill": [], "decode": []}
    marks: dict[str, float | str] = {}

    def stamp(name):
        def hook(*_):
            marks[name] = time.perf_counter()
        return hook

    def enter_layers(_module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        marks["kind"] = "prefill" if hidden.shape[1] > 1 else "decode"
        marks["layers_start"] = time.perf_counter()

    def leave_model(*_):
        now = time.perf_counter()
        spans[marks["kind"]].append((now - marks["model_start"], marks["layers_end"] - marks["layers_start"]))

    layers = loaded.adapter.layers
    handles = [
        loaded.model.register_forward_pre_hook(stamp("model_start")),
        layers[0].register_forward_pre_hook(enter_layers, with_kwargs=True),
        layers[-1].register_forward_hook(stamp("layers_end")),
        loaded.model.register_forward_hook(leave_model),
    ]
    try:
        yield spans
    finally:
        for handle in handles:
            handle.remove()


def median_seconds(step, repeats: int) -> float:
    """Median wall time of ``step()`` over ``repeats`` runs after one warm-up."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fixed_parts(loaded, prompt, repeats: int) -> dict[str, float]:
    """The vision tower + projector and the LM head timed on their own, on the cost prompt's inputs."""
    from lmms_topo_plugin.calibration.collect import move_inputs
    from lmms_topo_plugin.models.prompting import encode

    model = loaded.model
    inputs = move_inputs(encode(loaded.processor, loaded.adapter, [prompt]), model.device, model.dtype)
    hidden = torch.randn(1, inputs["input_ids"].shape[1], model.config.text_config.hidden_size)
    with torch.inference_mode():
        return {
            "vision_tower_and_projector_s": median_seconds(
                lambda: model.model.get_image_features(pixel_values=inputs["pixel_values"]), repeats),
            "lm_head_last_position_s": median_seconds(lambda: model.lm_head(hidden[:, -1:]), repeats),
            "lm_head_all_positions_s": median_seconds(lambda: model.lm_head(hidden), repeats),
        }


def measure_row(loaded, prompt, name: str, args) -> dict:
    """``measure_cost`` of the model as it is now, with its decoder-layer time split out."""
    from lmms_topo_plugin.search.measure import measure_cost

    with layer_timer(loaded) as spans:
        cost = measure_cost(loaded, prompt, repeats=args.repeats, warmup=1, decode_tokens=args.decode_tokens)
    row = {"config": name, **cost}
    for phase, suffix in (("prefill", "_s"), ("decode", "_s_per_token")):
        row[f"{phase}_layers{suffix}"] = statistics.median(layers for _, layers in spans[phase])
        row[f"{phase}_other{suffix}"] = statistics.median(total - layers for total, layers in spans[phase])
        row[f"{phase}_layers{suffix}_per_layer"] = row[f"{phase}_layers{suffix}"] / cost["num_layers"]
    print(f"measured {name}: {cost['num_layers']} layers, prefill {cost['prefill_s']:.3f} s, "
          f"decode {cost['decode_s_per_token'] * 1e3:.1f} ms/token", flush=True)
    return row


def compare(dense: dict, row: dict) -> dict:
    """``speedup_table`` against dense plus the layer-only speedups and the Amdahl bound of the measured rest."""
    from lmms_topo_plugin.search.measure import speedup_table

    table = speedup_table(dense, row)
    kept = row["num_layers"] / dense["num_layers"]
    for phase, suffix in (("prefill", "_s"), ("decode", "_s_per_token")):
        layers, other = dense[f"{phase}_layers{suffix}"], dense[f"{phase}_other{suffix}"]
        table[f"{phase}_layers_speedup"] = layers / row[f"{phase}_layers{suffix}"]
        table[f"{phase}_bound"] = (layers + other) / (layers * kept + other)
        table[f"{phase}_other_share_dense"] = other / (layers + other)
    return table


def render_table(rows: list[dict]) -> str:
    """The printed table: latency, speedup, ideal, fraction of ideal, the bound of the measured rest, memory."""
    header = (f"{'config':<14}{'layers':>6}{'prefill s':>10}{'speedup':>8}{'ideal':>6}{'of ideal':>9}{'bound':>7}"
              f"{'decode ms':>10}{'speedup':>8}{'of ideal':>9}{'bound':>7}{'peak RSS MB':>12}{'ratio':>6}")
    lines = [header, "-" * len(header)]
    for row in rows:
        s = row["vs_dense"]
        lines.append(
            f"{row['config']:<14}{row['num_layers']:>6}{row['prefill_s']:>10.3f}{s['prefill_speedup']:>8.2f}"
            f"{s['ideal_speedup']:>6.2f}{s['prefill_of_ideal']:>9.2f}{s['prefill_bound']:>7.2f}"
            f"{row['decode_s_per_token'] * 1e3:>10.1f}{s['decode_speedup']:>8.2f}{s['decode_of_ideal']:>9.2f}"
            f"{s['decode_bound']:>7.2f}{row['peak_memory_bytes'] / 2**20:>12.0f}{s['memory_ratio']:>6.2f}")
    return "\n".join(lines)


def render_split(rows: list[dict], fixed: dict) -> str:
    """Where the time goes, per row: decoder layers (total and per layer) against the rest of each forward."""
    lines = ["", f"{'config':<14}{'prefill layers s':>17}{'per layer':>10}{'rest s':>8}{'rest %':>7}"
                 f"{'decode layers ms':>17}{'per layer':>10}{'rest ms':>8}{'rest %':>7}"]
    for row in rows:
        prefill_layers, prefill_rest = row["prefill_layers_s"], row["prefill_other_s"]
        decode_layers, decode_rest = row["decode_layers_s_per_token"], row["decode_other_s_per_token"]
        lines.append(
            f"{row['config']:<14}{prefill_layers:>17.3f}{row['prefill_layers_s_per_layer']:>10.3f}"
            f"{prefill_rest:>8.3f}{100 * prefill_rest / (prefill_layers + prefill_rest):>7.1f}"
            f"{decode_layers * 1e3:>17.1f}{row['decode_layers_s_per_token_per_layer'] * 1e3:>10.2f}"
            f"{decode_rest * 1e3:>8.1f}{100 * decode_rest / (decode_layers + decode_rest):>7.1f}")
    lines.append("timed alone: " + ", ".join(f"{key} {value * 1e3:.1f} ms" for key, value in fixed.items()))
    return "\n".join(lines)


def removal_steps(layers: int) -> list[tuple[str, list[int]]]:
    """(name, original indices removed so far): dense, every fourth layer, every other layer."""
    return [("dense", []), ("quarter", list(range(1, layers, 4))), ("half", list(range(1, layers, 2)))]


def machine_info() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "loadavg_at_start": list(os.getloadavg()),
    }


def command_line() -> str:
    return shlex.join([sys.executable, sys.argv[0], *sys.argv[1:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24, help="decoder layers (default: %(default)s)")
    parser.add_argument("--hidden", type=int, default=1024, help="decoder width, a multiple of 64")
    parser.add_argument("--image-tokens", type=int, default=576, help="image tokens, a square (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="measured repeats after one warm-up")
    parser.add_argument("--decode-tokens", type=int, default=16, help="decode steps per repeat")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default: %(default)s; 0 keeps torch's default, one per core)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON (default: %(default)s)")
    args = parser.parse_args()
    if args.hidden % 64 or args.layers < 4:
        raise SystemExit("--hidden must be a multiple of 64 (16 heads) and --layers at least 4")

    from lmms_topo_plugin.cache import atomic_write_json
    from lmms_topo_plugin.search.measure import default_cost_prompt
    from lmms_topo_plugin.surgery.layers import remove_layers

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    machine = machine_info()
    started = time.perf_counter()
    loaded, image_size = build_model(args.layers, args.hidden, args.image_tokens)
    print(f"built {args.layers} layers x {args.hidden}, {args.image_tokens} image tokens ({image_size} px) "
          f"in {time.perf_counter() - started:.0f} s", flush=True)
    prompt = default_cost_prompt()
    fixed = fixed_parts(loaded, prompt, args.repeats)
    rows, removed = [], []
    for name, target in removal_steps(args.layers):
        kept = [i for i in range(args.layers) if i not in removed]
        remove_layers(loaded.adapter, [kept.index(i) for i in target if i not in removed])
        removed = target
        rows.append({**measure_row(loaded, prompt, name, args), "removed": removed})
    for row in rows:
        row["vs_dense"] = compare(rows[0], row)
    print(render_table(rows))
    print(render_split(rows, fixed))
    half = rows[-1]["vs_dense"]
    for phase in ("prefill", "decode"):
        verdict = "meets" if half[f"{phase}_of_ideal"] >= GOAL_OF_IDEAL else "MISSES"
        print(f"half removed, {phase}: {half[f'{phase}_of_ideal']:.2f} of ideal {verdict} the {GOAL_OF_IDEAL} goal; "
              f"the measured non-layer rest ({100 * half[f'{phase}_other_share_dense']:.0f}% of dense) "
              f"bounds it at {half[f'{phase}_bound'] / half['ideal_speedup']:.2f} of ideal")
    machine["loadavg_at_end"] = list(os.getloadavg())
    atomic_write_json(args.out, {
        "command": command_line(),
        "args": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "model": {"family": "llava", "layers": args.layers, "hidden": args.hidden, "heads": HEADS,
                  "vocab": VOCAB, "image_tokens": args.image_tokens, "image_size": image_size,
                  "dtype": "float32", "weights": "random"},
        "machine": machine,
        "goal_of_ideal": GOAL_OF_IDEAL,
        "fixed_parts_timed_alone": fixed,
        "rows": rows,
        "wall_s": time.perf_counter() - started,
    })
    print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
