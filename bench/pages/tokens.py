"""The visual-token pruning page (``docs/results/tokens.md``): FLOPs-predicted against measured speed and the
accuracy of the token pruners (``tokens.json``, written by ``bench/bench_tokens.py``), and the visual-token
lifecycle of the bundled model that HalfV's layers come from (``lifecycle/entropy.json`` and its plot)."""

from __future__ import annotations

from pathlib import Path

from .common import display_command, image, join, load, ms, page, wrap

TITLE = "Visual-token pruning: speed and accuracy"
TOKENS_FILE = "tokens.json"  # bench/bench_tokens.py
LIFECYCLE_FILE = "lifecycle/entropy.json"  # topo-prune analyze --what entropy


FLOPS_GOAL = 0.8  # the measured prefill speedup should reach this fraction of the FLOPs-predicted one


def tokens_block(data: dict) -> str:
    """Speed (FLOPs-predicted against measured, per batch) and accuracy of the visual-token pruners."""
    model, machine = data["speed_model"], data["machine"]
    intro = wrap(
        f"Measured with `{display_command(data['command'])}` ({machine['cpus_available']} CPU cores, "
        f"{machine['torch_threads']} torch thread; medians of {model['repeats']} after a warm-up). Speed: a "
        f"random-weight LLaVA-1.5-shaped model, {model['layers']} decoder layers of width {model['hidden']}, "
        f"{model['image_tokens']} image tokens, {model['dtype']}, pruning from decoder layer {model['token_layer']}"
        + (f" (HalfV's step 2 from layer {model['ssr_layer']}: `halfv+freeze`, `halfv+top5`; `halfv` is step 1 "
           "alone)" if "ssr_layer" in model else "") +
        f"; prefill = one forward of the prompt with the KV cache, end to end = prefill + {model['decode_tokens']} "
        "greedy steps. Tokens: what the last layer computes (queries of keys where frozen visual tokens give keys "
        "and values only).")
    lines = ["| batch | pruner | keep | tokens (last layer) | decoder FLOPs | FLOPs-predicted | "
             "measured prefill | measured ÷ predicted | prefill | end to end (speedup) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    short = []
    for row in data["speed"]:
        tokens = _layer_tokens(row["tokens_per_layer"][-1])
        if row["pruner"] == "dense":
            lines.append(f"| {row['batch']} | dense | 1 | {tokens} | {row['decoder_prefill_flops'] / 1e9:.1f} G | "
                         f"– | – | – | {ms(row['prefill_s'])} | {ms(row['end_to_end_s'])} |")
            continue
        ratio = row["prefill_speedup"] / row["flops_speedup"]
        if ratio < FLOPS_GOAL:
            short.append(f"{row['pruner']} at {row['keep']:g} (batch {row['batch']}, {ratio:.2f})")
        lines.append(f"| {row['batch']} | {row['pruner']} | {row['keep']:g} | {tokens} | "
                     f"{row['decoder_prefill_flops'] / 1e9:.1f} G | {row['flops_speedup']:.2f}× | "
                     f"{row['prefill_speedup']:.2f}× | {ratio:.2f} | {ms(row['prefill_s'])} | "
                     f"{ms(row['end_to_end_s'])} ({row['end_to_end_speedup']:.2f}×) |")
    verdict = wrap("Measured prefill speedup below " f"{FLOPS_GOAL:g} of the FLOPs-predicted one: "
                    + (join(short) if short else "none") + ". The FLOPs count only the decoder layers; the vision "
                    "tower, embeddings, LM head and Python dispatch are not pruned, and a few-token decode step "
                    "gains little, so the end-to-end speedup is smaller.")
    accuracy = ["| layer removal | pruner | keep | from layer | step 2 from | topo_synth | math | non-math |",
                "|---|---|---|---|---|---|---|---|"]
    for row in data["accuracy"]:
        removal = "none" if row["layers"] == "none" else f"{row['layers']} (layers {', '.join(map(str, row['removed_layers']))})"
        layer = "–" if row["token_layer"] is None else str(row["token_layer"])
        step_2 = "–" if row.get("ssr_layer") is None else str(row["ssr_layer"])
        accuracy.append(f"| {removal} | {row['pruner']} | {row['keep']:g} | {layer} | {step_2} | {row['exact_match']:.3f} | "
                        f"{row['math']:.3f} | {row['non_math']:.3f} |")
    scope = "the whole test split" if data["limit"] is None else f"the first {data['limit']} documents of each task"
    life = data["lifecycle"]
    return "\n\n".join([intro, "\n".join(lines), verdict, wrap(
        f"Accuracy: the bundled model on `topo_synth` ({scope}), exact match. HalfV "
        f"(anchor ratio {data['halfv_anchor']:g}) prunes from the IVR layer its lifecycle analysis detected on "
        f"{life['samples']} calibration prompts, and `halfv+freeze` / `halfv+top5` also from its SSR layer: IVR "
        f"{life['ivr_layer']}, SSR {life['ssr_layer']} (detected mode {life['ssr_mode']}):"), "\n".join(accuracy)])


def _layer_tokens(entry: int | list[int]) -> str:
    """A layer's prefill tokens: ``600``, or ``[queries, tokens]`` → ``21 of 309`` when they differ."""
    queries, tokens = entry if isinstance(entry, list) else (entry, entry)
    return str(tokens) if queries == tokens else f"{queries} of {tokens}"


def lifecycle_text(life: dict) -> str:
    """What the lifecycle analysis of the bundled model found, from its ``entropy.json``."""
    return wrap(
        f"`topo-prune analyze --what entropy --model-args device=cpu --out bench/results/lifecycle` on "
        f"{life['samples']} prompts of `{life['calibration']}`: per decoder layer the truncated matrix entropy (top "
        f"{life['k']} eigenvalues) of the visual, text and all tokens. It places the IVR layer (where HalfV's step 1 "
        f"prunes) at {life['ivr_layer']} and the SSR layer (step 2) at {life['ssr_layer']}, with mode "
        f"`{life['ssr_mode']}` (the freezing KL at the SSR layer against the threshold {life['kl_threshold']:g}).")


def render(results_dir: Path) -> str:
    """The whole token-pruning page from ``results_dir``."""
    data = load(TOKENS_FILE, results_dir)
    return page(TITLE, f"{TOKENS_FILE}, {LIFECYCLE_FILE}",
                wrap("`bench/bench_tokens.py` counts the FLOPs from the tokens each decoder layer saw and sets them "
                     "against the measured prefill and end-to-end latency, then measures the accuracy of each pruner "
                     "on the bundled benchmark."),
                tokens_block(data), "## The visual-token lifecycle of the bundled model",
                lifecycle_text(load(LIFECYCLE_FILE, results_dir)),
                image("lifecycle/entropy.png", "visual-token lifecycle of the bundled model"))


def headline(results_dir: Path) -> str:
    """One line for the results index: the most accurate pruner at the smallest keep fraction, the fastest prefill."""
    data = load(TOKENS_FILE, results_dir)
    rows = [row for row in data["accuracy"]
            if row["pruner"] != "dense" and row["layers"] == "none"]
    keep = min(row["keep"] for row in rows)
    top = max((row for row in rows if row["keep"] == keep), key=lambda row: row["exact_match"])
    dense = next(row for row in data["accuracy"] if row["pruner"] == "dense")
    fastest = max((row for row in data["speed"] if row["pruner"] != "dense"), key=lambda row: row["prefill_speedup"])
    return (f"keeping {keep:g} of the visual tokens, {top['pruner']} scores {top['exact_match']:.3f} against the "
            f"dense {dense['exact_match']:.3f}; the largest measured prefill speedup is "
            f"{fastest['prefill_speedup']:.2f}× ({fastest['pruner']} at {fastest['keep']:g}, batch {fastest['batch']}; "
            f"the FLOPs predict {fastest['flops_speedup']:.2f}×).")
