"""The ONNX page (``docs/results/onnx.md``): ONNX Runtime against PyTorch eager on the CPU, dense and pruned
(``onnx.json``, written by ``bench/bench_onnx.py``), and the GPU check (``gpu_check.json``, written by
``bench/gpu_check.py`` on a CUDA machine; the section says so plainly while that file does not exist)."""

from __future__ import annotations

from pathlib import Path

from .common import display_command, load, ms, page, wrap

TITLE = "ONNX Runtime against PyTorch"
ONNX_FILE = "onnx.json"  # bench/bench_onnx.py
GPU_FILE = "gpu_check.json"  # bench/gpu_check.py
ANCHOR_FILE = "onnx_anchor.json"  # bench/bench_onnx_anchor.py
ANCHOR_ROWS = (("prefill, last logits", "prefill_runner_torch", "prefill_runner_builder", "prefill_builder_shared", 1),
               ("decode per token", "decode_runner_torch", "decode_runner_builder", "decode_builder_shared", "tokens"))
NOT_RUN = "Not run yet: no GPU has been available."


def mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def onnx_speed_block(data: dict) -> str:
    """``bench/bench_onnx.py``: ONNX Runtime (CPU) against PyTorch eager, dense and half removed, per model."""
    machine, args = data["machine"], data["args"]
    intro = wrap(
        f"Measured with `{display_command(data['command'])}` ({machine['cpus_available']} CPU cores, one thread in both "
        f"runtimes, medians of {args['repeats']} after a warm-up; prefill = vision tower + embedding + decoder over "
        f"the fixed prompt with an image, logits for every position; decode = one greedy token with the KV cache, "
        f"over {args['decode_tokens']} steps; ORT's cache fed as numpy arrays, the CPU runner's default). Graphs are "
        f"fp32; sizes are the decoder graph's. The last two columns are ONNX Runtime's own variants, measured in turn "
        f"in the same rounds: prefill with the last position's logits only (what generation runs), and decode with "
        f"the cache bound as OrtValues (I/O binding, the runner's default on a GPU):")
    lines = ["| model | layers | PyTorch prefill | ORT prefill | ORT / PyTorch | PyTorch decode | ORT decode | "
             "ORT / PyTorch | pruned vs dense (PyTorch / ORT / ideal) | decoder graph | ORT prefill, last logits | "
             "ORT decode, cache bound |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    dense_of = {}
    for row in data["rows"]:
        torch_costs, ort_costs = row["pytorch"], row["onnxruntime"]
        dense = dense_of.setdefault(row["model"], row)
        if row is dense:
            versus = "–"
        else:
            ideal = dense["layers"] / row["layers"]
            versus = " / ".join(
                f"{dense[runtime]['prefill_s'] / row[runtime]['prefill_s']:.2f}× prefill, "
                f"{dense[runtime]['decode_s_per_token'] / row[runtime]['decode_s_per_token']:.2f}× decode"
                for runtime in ("pytorch", "onnxruntime")) + f" / {ideal:.2f}×"
        lines.append(
            f"| {row['model']} | {row['layers']} | {ms(torch_costs['prefill_s'])} | {ms(ort_costs['prefill_s'])} | "
            f"{torch_costs['prefill_s'] / ort_costs['prefill_s']:.2f}× faster | "
            f"{ms(torch_costs['decode_s_per_token'])} | {ms(ort_costs['decode_s_per_token'])} | "
            f"{torch_costs['decode_s_per_token'] / ort_costs['decode_s_per_token']:.2f}× faster | {versus} | "
            f"{mb(row['bytes']['decoder_model_merged'])} | {variant(ort_costs, 'prefill_s_last_logits', 'prefill_s')} "
            f"| {variant(ort_costs, 'decode_s_per_token_bound', 'decode_s_per_token')} |")
    return intro + "\n\n" + "\n".join(lines)


def variant(costs: dict, name: str, base: str) -> str:
    """``7.8 ms (1.03× faster)``: a variant's time and its speed against ``base``; – where a run predates it."""
    if name not in costs:
        return "–"
    ratio = costs[base] / costs[name]
    return f"{ms(costs[name])} ({ratio:.2f}× {'faster' if ratio >= 1 else 'as fast'})"


def gpu_section(results_dir: Path) -> str:
    """What ``bench/gpu_check.py`` found, per section; :data:`NOT_RUN` and what the check does while it has not run."""
    what = (
        "`bench/gpu_check.py` is one prepared command for a CUDA machine: it prunes through the plugin's API "
        "(`device=cuda,dtype=bfloat16,attn_implementation=sdpa`) with every layer method and token pruner and compares "
        "the greedy answers with the same configuration on CPU in float32, recovers pruned models (`recover=kd`) on "
        "the GPU, exports fp16 and int4 ONNX builds, times "
        "PyTorch CUDA prefill and decode against L/L', and runs ONNX Runtime's CUDA provider and onnxruntime-genai "
        f"where they are installed. It writes `bench/results/{GPU_FILE}`, which this section is generated from.")
    if not (results_dir / GPU_FILE).is_file():
        return wrap(NOT_RUN + " " + what)
    data = load(GPU_FILE, results_dir)
    machine = data.get("machine", {})
    where = machine.get("gpu") or machine.get("device", "?")
    intro = f"Measured with `{display_command(data['command'])}` on {where} (torch {machine.get('torch', '?')}"
    intro += f", CUDA {machine['torch_cuda']})." if machine.get("torch_cuda") else ")."
    if not data.get("gpu_result", False):
        intro += " **This run is a plumbing smoke test on the CPU, not a GPU result.**"
    if not data.get("complete", False):
        intro += " The run did not finish: the sections below are what it wrote before it stopped."
    lines = ["| section | status | seconds | note |", "|---|---|---:|---|"]
    for name, entry in data.get("sections", {}).items():
        note = entry.get("error") or entry.get("reason") or "–"
        seconds = f"{entry['seconds']:.1f}" if "seconds" in entry else "–"
        lines.append(f"| {name} | {entry['status']} | {seconds} | {note.replace('|', '/')} |")
    return "\n\n".join([wrap(intro), "\n".join(lines), wrap(what)])


def anchor_block(data: dict) -> str:
    """``bench/bench_onnx_anchor.py``: our decoder against onnxruntime-genai's model builder's, through our runner
    and the builder's graph driven bare, dense and pruned; the models the builder cannot take, with the reason."""
    machine, args = data["machine"], data["args"]
    intro = wrap(
        f"Measured with `{display_command(data['command'])}` ({machine['cpus_available']} CPU cores, load "
        f"{machine['loadavg_at_start'][0]:.1f} at the start and {machine['loadavg_at_end'][0]:.1f} at the end; one "
        f"thread per session; this thread's CPU time, medians of {args['repeats']} interleaved rounds after a "
        f"warm-up; decode over {args['decode_tokens']} greedy steps). Ours: the `torch.onnx` decoder "
        "(`--onnx-decoder torch`); the builder's: `--onnx-decoder builder`, both through `OnnxVLM` as users run "
        "them; bare: the builder's own graph (LM head inside, shared KV buffers) driven without our runner, the "
        "anchor the issue set (the builder's through our runner against it: the goal is within 5%). Same prompt "
        "embeddings for all.")
    lines = ["| model | layers | | ours | the builder's | bare builder | ours / the builder's | the builder's / bare | "
             "nodes (ours / builder) |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    refused = []
    for row in data["rows"]:
        if "builder_error" in row:
            refused.append(f"{row['model']} ({row['config']}): {row['builder_error']}")
            continue
        costs = row["thread_cpu_s"]
        for label, ours, builder, bare, per in ANCHOR_ROWS:
            lines.append(f"| {row['model']} | {row['layers']} | {label} | {ms(costs[ours])} | {ms(costs[builder])} | "
                         f"{ms(costs[bare])} | {costs[ours] / costs[builder]:.2f}× | {costs[builder] / costs[bare]:.2f}× | "
                         f"{row['nodes']['ours']} / {row['nodes']['builder']} |")
        check = row["check"]
        refused.append(f"{row['model']} ({row['config']}): greedy tokens identical in every variant and PyTorch: "
                       f"{check['same_tokens']}; largest logit difference, the builder's through our runner against "
                       f"PyTorch: {check['max_abs_logit_diff']['runner_builder_vs_pytorch']:.1g}")
    return "\n\n".join([intro, "\n".join(lines), "\n".join(f"- {line}" for line in refused)])


def render(results_dir: Path) -> str:
    """The whole ONNX page from ``results_dir``."""
    return page(TITLE, f"{ONNX_FILE}, {ANCHOR_FILE}, {GPU_FILE}", "## On the CPU",
                onnx_speed_block(load(ONNX_FILE, results_dir)),
                "## Our decoder against the model builder's (CPU)", anchor_block(load(ANCHOR_FILE, results_dir)),
                "## On a GPU", gpu_section(results_dir))


def headline(results_dir: Path) -> str:
    """One line for the results index: ONNX Runtime's speed against PyTorch's over every row, and the GPU check."""
    rows = load(ONNX_FILE, results_dir)["rows"]
    prefill = [row["pytorch"]["prefill_s"] / row["onnxruntime"]["prefill_s"] for row in rows]
    decode = [row["pytorch"]["decode_s_per_token"] / row["onnxruntime"]["decode_s_per_token"] for row in rows]
    gpu = "not run yet" if not (results_dir / GPU_FILE).is_file() else "see the page"
    return (f"on the CPU, ONNX Runtime runs prefill {min(prefill):.2f}–{max(prefill):.2f}× and decode "
            f"{min(decode):.2f}–{max(decode):.2f}× as fast as PyTorch eager; on a GPU: {gpu}.")
