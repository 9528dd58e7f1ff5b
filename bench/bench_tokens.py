#!/usr/bin/env python3
"""Visual-token pruning (FastV, HalfV, random): decoder FLOPs, measured prefill and end-to-end latency, accuracy.

    .venv/bin/python bench/bench_tokens.py                # what the results pages report
    .venv/bin/python bench/bench_tokens.py --layers 4 --hidden 256 --repeats 1 --limit 10   # a quick look

**Speed** on the random-weight LLaVA-1.5-shaped model of ``bench/bench_speed.py`` (``--layers`` x ``--hidden``
decoder, 576 image tokens from a 336 px image, float32, CPU, one torch thread): for each pruner at keep 0.5,
0.25 and 0.1 (from decoder layer 2) and dense, side by side in one run, at batch 1 and batch 8 (the cost prompt
repeated; HalfV also with its step 2 from decoder layer 6, ``halfv+freeze`` and ``halfv+top5``, since random
weights have no lifecycle to detect it from): prefill latency (one forward with the KV cache, logits for the last
position, as ``generate`` does)
and end-to-end latency (that prefill plus ``--decode-tokens`` greedy steps with the cache), medians of
``--repeats`` after one warm-up; the decoder prefill FLOPs from the tokens each layer computed (queries and keys,
``lmms_topo_plugin.tokens.flops``), and the FLOPs-predicted speedup next to the measured one.

**Accuracy** on the bundled model and benchmark (``topo_synth``, the whole test split, lmms-eval in process):
dense, each pruner at each keep ratio (FastV and random from layer 2; HalfV, anchor ratio 0.2, and FastV again
from the IVR layer that ``lmms_topo_plugin.tokens.lifecycle`` detects on 100 calibration prompts; HalfV with step 1
alone and with step 2 from the detected SSR layer in either mode), and FastV and HalfV combined with
``block_influence`` removing 2 of 12 layers (the dense model's IVR and SSR layers keep their indices there).
Speed rows prune every method from layer 2.
Writes ``--out`` (default ``bench/results/tokens.json``) atomically, with the command and the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_speed  # noqa: E402  (the LLaVA-shaped model and the machine description)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "tokens.json"
KEEPS = (0.5, 0.25, 0.1)
PRUNERS = ("fastv", "halfv", "halfv+freeze", "halfv+top5", "random")  # halfv: step 1 alone; +mode: step 2 too
TOKEN_LAYER = 2
SPEED_SSR_LAYER = 6  # the speed model's step 2 layer (half way; the bundled model's detected SSR layer)
HALFV_ANCHOR = 0.2  # docs/methods/tokens.md: R_S = 0.2 for LLaVA-1.5
BATCHES = (1, 8)


def pruner_for(name: str, keep: float, layer: int = TOKEN_LAYER, ssr_layer: int = SPEED_SSR_LAYER):
    """``fastv``, ``random``, ``halfv`` (step 1 alone) or ``halfv+freeze`` / ``halfv+top5`` (step 2 from
    ``ssr_layer`` too)."""
    from lmms_topo_plugin.tokens import token_pruner

    method, _, mode = name.partition("+")
    return token_pruner({"method": method, "keep": keep, "layer": layer, "seed": 0, "anchor": HALFV_ANCHOR,
                         "ssr_mode": mode or "off", "ssr_layer": ssr_layer if mode else None})


def speed_row(loaded, inputs, pruner, repeats: int, decode_tokens: int) -> dict:
    """Prefill and end-to-end seconds of ``inputs`` with ``pruner`` attached (dense when None), and the tokens
    every decoder layer computed in the prefill: ``[queries, tokens]`` per layer."""
    from contextlib import nullcontext

    from lmms_topo_plugin.search.measure import decode, prefill
    from lmms_topo_plugin.tokens.flops import decoder_prefill_flops

    model, layers = loaded.model, loaded.adapter.num_layers
    with (pruner.attach(loaded.adapter) if pruner else nullcontext()) as state, torch.inference_mode():
        prefill_s = bench_speed.median_seconds(lambda: prefill(model, inputs), repeats)
        end_to_end_s = bench_speed.median_seconds(lambda: decode(model, prefill(model, inputs), decode_tokens), repeats)
    length = inputs["input_ids"].shape[1]
    seen = state["prompt"].seen if pruner else {}
    tokens = [list(seen.get(layer, (length, length))) for layer in range(layers)]
    return {"prefill_s": prefill_s, "end_to_end_s": end_to_end_s, "tokens_per_layer": tokens,
            "decoder_prefill_flops": decoder_prefill_flops(loaded.adapter.text_config, [tuple(entry) for entry in tokens])
            * inputs["input_ids"].shape[0]}


def measure_speed(args) -> list[dict]:
    from lmms_topo_plugin.models.prompting import encode
    from lmms_topo_plugin.search.measure import default_cost_prompt

    loaded, _ = bench_speed.build_model(args.layers, args.hidden, 576)
    prompt = default_cost_prompt()
    rows = []
    for batch in BATCHES:
        inputs = encode(loaded.processor, loaded.adapter, [prompt] * batch)
        dense = speed_row(loaded, inputs, None, args.repeats, args.decode_tokens)
        rows.append({"batch": batch, "pruner": "dense", "keep": 1.0, **dense})
        for name in PRUNERS:
            for keep in KEEPS:
                row = speed_row(loaded, inputs, pruner_for(name, keep), args.repeats, args.decode_tokens)
                rows.append({"batch": batch, "pruner": name, "keep": keep, **row,
                             "flops_speedup": dense["decoder_prefill_flops"] / row["decoder_prefill_flops"],
                             "prefill_speedup": dense["prefill_s"] / row["prefill_s"],
                             "end_to_end_speedup": dense["end_to_end_s"] / row["end_to_end_s"]})
                print(f"batch {batch} {name} keep {keep}: prefill {row['prefill_s'] * 1e3:.0f} ms "
                      f"({rows[-1]['prefill_speedup']:.2f}x; FLOPs predict {rows[-1]['flops_speedup']:.2f}x)", flush=True)
    return rows


def measure_accuracy(args) -> tuple[list[dict], dict]:
    """topo_synth exact match of the bundled model: dense, each pruner x keep (HalfV at the IVR layer its lifecycle
    analysis detects on 100 calibration prompts), and FastV on top of layer removal; and that analysis."""
    from lmms_topo_plugin.api import load_pruned
    from lmms_topo_plugin.calibration.sources import default_calibration_prompts
    from lmms_topo_plugin.config.prune import PruneConfig
    from lmms_topo_plugin.integrations.lmms_eval.model import TopoPrunedChat
    from lmms_topo_plugin.integrations.lmms_eval.evaluate import evaluate, flatten_results
    from lmms_topo_plugin.integrations.lmms_eval.tasks import task_manager
    from lmms_topo_plugin.tokens.lifecycle import analyze_lifecycle

    manager = task_manager()
    dense_model, dense_report = load_pruned({"device": "cpu", "batch_size": "16"})
    lifecycle = analyze_lifecycle(dense_model.adapter, dense_model.processor, default_calibration_prompts(100, 0),
                                  show_progress=False)
    ivr, ssr = lifecycle["ivr_layer"], lifecycle["ssr_layer"]
    halfv = [f"halfv+{mode}" for mode in ("freeze", "top5")] if ssr > ivr else []  # step 2 needs SSR after IVR
    rows = []
    for layer_method in ("none", "block_influence"):
        model_args = {"device": "cpu", "batch_size": "16", "method": layer_method}
        if layer_method != "none":
            model_args["n_remove"] = "2"
        loaded, report = (dense_model, dense_report) if layer_method == "none" else load_pruned(model_args)
        config = PruneConfig.from_model_args(model_args)
        # (pruner, keep, layer): FastV also from the IVR layer, so HalfV's selection is compared at equal depth
        pruners = [("dense", 1.0, None)] + [(name, keep, TOKEN_LAYER) for name in ("fastv", "random") for keep in KEEPS]
        pruners += [(name, keep, ivr) for name in ("fastv", "halfv", *halfv) for keep in KEEPS]
        if layer_method != "none":  # layers 7 and 10 go: the IVR layer 4 and the SSR layer 6 keep their indices
            pruners = [("dense", 1.0, None)] + [("fastv", keep, TOKEN_LAYER) for keep in KEEPS]
            pruners += [(name, keep, ivr) for name in ("halfv", *halfv) for keep in KEEPS]
        for name, keep, layer in pruners:
            lm = TopoPrunedChat.around(loaded, config, show_progress=False)
            lm.backend.token_pruner = None if name == "dense" else pruner_for(name, keep, layer, ssr)
            metrics, _ = flatten_results(evaluate(lm, ["topo_synth"], manager, args.limit))
            rows.append({"layers": layer_method, "removed_layers": report.plan["removed_layers"], "pruner": name,
                         "keep": keep, "token_layer": layer, "ssr_layer": ssr if "+" in name else None,
                         "exact_match": metrics["topo_synth/exact_match"],
                         "math": metrics["topo_synth_mathdomain/exact_match"],
                         "non_math": metrics["topo_synth_nonmath/exact_match"]})
            print(f"{layer_method} + {name} keep {keep} from layer {layer}: {rows[-1]['exact_match']:.3f}", flush=True)
    return rows, lifecycle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12, help="decoder layers of the speed model (default: %(default)s)")
    parser.add_argument("--hidden", type=int, default=768, help="its width, a multiple of 64 (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up (default: %(default)s)")
    parser.add_argument("--decode-tokens", type=int, default=16, help="greedy steps of the end-to-end time")
    parser.add_argument("--limit", type=int, default=None, help="documents per task for the accuracy (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    from lmms_topo_plugin.cache import atomic_write_json

    torch.set_num_threads(args.threads)
    machine = bench_speed.machine_info()
    speed = measure_speed(args)
    accuracy, lifecycle = measure_accuracy(args)
    atomic_write_json(args.out, {
        "command": bench_speed.command_line(), "machine": {**machine, "loadavg_at_end": list(os.getloadavg())},
        "speed_model": {"layers": args.layers, "hidden": args.hidden, "image_tokens": 576, "dtype": "float32",
                        "token_layer": TOKEN_LAYER, "ssr_layer": SPEED_SSR_LAYER, "repeats": args.repeats, "decode_tokens": args.decode_tokens},
        "speed": speed, "accuracy": accuracy, "limit": args.limit, "halfv_anchor": HALFV_ANCHOR,
        "lifecycle": {key: lifecycle[key] for key in ("samples", "ivr_layer", "ssr_layer", "ssr_mode")},
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
