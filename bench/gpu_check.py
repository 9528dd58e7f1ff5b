#!/usr/bin/env python3
"""One prepared GPU check of the plugin, in one command, a few minutes on one H100: everything to one JSON.

    python3 bench/gpu_check.py                      # on a CUDA machine: every section, bench/results/gpu_check.json
    .venv/bin/python bench/gpu_check.py --device cpu --families llava --methods spacing --token-methods fastv \\
        --sections plugin_eval,torch_speed          # plumbing smoke test on a CPU machine (not a GPU result)

Sections, in the order they run, each isolated (one failing does not stop the others; the exit status is 1 when
any failed):

- ``torch_speed``: PyTorch prefill and per-token decode (``search.measure.measure_cost``, medians after a warm-up),
  dense and with every other decoder layer removed, with the speedup against the ideal L/L', on a random
  LLaVA-shaped model (``bench_speed.build_model``, 16 x 1024, 576 image tokens) and on the bundled model.
- ``plugin_eval``: every layer method (``topo-prune methods``) and every token pruner (fastv, halfv, random) through
  ``lmms_topo_plugin.api.load_pruned`` (``device=cuda,dtype=bfloat16,attn_implementation=sdpa``) on a tiny model of
  each family (``families.tiny.build_tiny_vlm``, 6 layers) and on the bundled model; each pruned model
  answers a fixed slice of the bundled benchmark (synthbench test split, ``--items-per-kind`` of each kind, greedy,
  5 new tokens, the plugin's own generation path as ``training/evaluate.py``), next to the same configuration
  pruned and run on CPU in float32: answer agreement, same removed layers, exact-match accuracy of both.
- ``recovery``: ``recover=kd`` (LoRA, with the hidden-state term ``recover_hidden=0.1``) on the device after
  ``block_influence`` removes a quarter of the decoder, on a tiny Qwen2.5-VL and the bundled model
  (``--recovery-families``; ``RECOVERY_SIZES`` prompts and steps): the held-out KL and hidden-state term must fall
  (else the item fails), training time and steps per second, and exact match on the benchmark slice pruned alone
  and recovered.
- ``onnx_export``: tiny LLaVA, tiny Qwen2.5-VL and the bundled model (``--onnx-families``) pruned on the device
  (spacing, 2 layers), then exported from a CPU float32 copy (the export traces on CPU) with
  ``exporters.export.export_checkpoint``: fp32 parity with PyTorch, fp16 and int4 variants against fp32.
- ``ort_cuda``: ONNX Runtime's CUDA provider (fp16 build) against PyTorch CUDA (fp16), prefill and per-token decode,
  dense and pruned, on an exported random LLaVA-shaped model; ``blocked`` with the reason when this onnxruntime has
  no CUDAExecutionProvider (onnxruntime-gpu is a 256 MB wheel: it cannot be carried to the lent machine).
- ``genai_cuda``: onnxruntime-genai on the pruned tiny Qwen2.5-VL build with the CUDA provider, greedy tokens
  against the exported checkpoint in PyTorch; ``blocked`` with the reason when it cannot be imported or has no CUDA.

Each section's entry has ``status`` (ok / failed / blocked / skipped), ``error`` (one line) or ``reason``,
``seconds`` and ``result``. The JSON (default ``bench/results/gpu_check.json``) is written atomically after every
section, ``complete: false`` until the end; nothing new starts after ``--deadline-s`` (what is left is failed, "not
run"), so a 10-minute command always leaves it. Without CUDA, ``--device cuda`` (the default) exits 2 with one line.
``--device cpu`` runs the same code on CPU (float32 unless ``--dtype``, the CPU providers) as a plumbing smoke test:
the JSON says ``gpu_result: false``. Outside an install (the lent machine runs a bare copy of the tree, with loguru
carried as a wheel: ``scripts/gpu_wheels.sh``) the plugin is imported from the source tree.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_OUT = ROOT / "bench" / "results" / "gpu_check.json"


def plugin_import() -> str:
    """Make ``lmms_topo_plugin`` importable where it is not installed (the lent machine runs a bare copy of the
    tree): pyproject's package-dir puts ``exporters``, ``tasks`` and ``model_cards`` of the root under the
    package, so the root joins the package's search path. Says which way it was imported."""
    import importlib

    import lmms_topo_plugin

    try:
        importlib.import_module("lmms_topo_plugin.exporters")
        return "installed"
    except ModuleNotFoundError:
        lmms_topo_plugin.__path__.append(str(ROOT))
        importlib.import_module("lmms_topo_plugin.exporters")
        return "source tree (its root on the package's path, as pyproject's package-dir maps it)"


# in the order they run: the GPU timings first (quick), genai_cuda after onnx_export (it runs its Qwen2.5-VL build)
SECTIONS = ("torch_speed", "plugin_eval", "recovery", "onnx_export", "ort_cuda", "genai_cuda")
TINY_LAYERS = 6
GENERATION = {"max_new_tokens": 5, "do_sample": False}
ORT_GPU_WHEEL = "onnxruntime-gpu 1.31.1 (cp312, manylinux_2_28, CUDA 13) is a 255.6 MB wheel"
# (layers, hidden, image tokens, decode tokens, repeats) of the random LLaVA-shaped models
SPEED_SIZES = {"cuda": (16, 1024, 576, 32, 5), "cpu": (4, 64, 16, 4, 1)}
ORT_SIZES = {"cuda": (8, 512, 144, 16, 3), "cpu": (4, 64, 16, 4, 1)}
# recover_samples, recover_steps, recover_batch_size of the recovery section
RECOVERY_SIZES = {"cuda": (64, 40, 16), "cpu": (16, 8, 4)}


class Blocked(Exception):
    """A section that cannot run here, for a stated reason (not a failure of the plugin)."""


class PartlyFailed(Exception):
    """Some isolated items of a section failed: the one line, and the section's result (every item) kept."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {text}"[:500]


DEADLINE = [float("inf")]  # perf_counter() after which nothing more starts (--deadline-s)


def run_isolated(step: Callable[[], Any]) -> dict[str, Any]:
    """``{"status": "ok", "result": ...}``, or failed (one line and the traceback's tail), or blocked (reason)."""
    start = time.perf_counter()
    if start > DEADLINE[0]:
        return {"status": "failed", "error": "not run: the --deadline-s time was spent before it started",
                "seconds": 0.0}
    try:
        entry: dict[str, Any] = {"status": "ok", "result": step()}
    except Blocked as reason:
        entry = {"status": "blocked", "reason": str(reason)}
    except PartlyFailed as error:
        entry = {"status": "failed", "error": str(error), "result": error.result}
    except (Exception, SystemExit) as error:  # noqa: BLE001 - each step is isolated and reported (a helper's exit too)
        entry = {"status": "failed", "error": one_line(error),
                 "traceback": traceback.format_exc().strip().splitlines()[-12:]}
    entry["seconds"] = round(time.perf_counter() - start, 3)
    return entry


def roll_up(items: dict[str, dict[str, Any]], **summary: Any) -> dict[str, Any]:
    """A section made of isolated items: ``{"items": ..., **summary}``; :class:`PartlyFailed` (every item kept)
    when any failed."""
    result = {"items": items, **summary}
    failed = {name: item["error"] for name, item in items.items() if item["status"] == "failed"}
    if failed:
        first = next(iter(failed))
        raise PartlyFailed(f"{len(failed)} of {len(items)} failed; first: {first}: {failed[first]}", result)
    return result


# -- machine ------------------------------------------------------------------------------------------------------


def machine(device: str) -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "device": device, "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__,
    }
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        info |= {"gpu": torch.cuda.get_device_name(0), "gpu_memory_bytes": properties.total_memory,
                 "multiprocessors": properties.multi_processor_count,
                 "capability": f"{properties.major}.{properties.minor}",
                 "cudnn": torch.backends.cudnn.version(), "bf16": torch.cuda.is_bf16_supported()}
    for name in ("onnx", "onnxscript", "onnxruntime", "onnxruntime_genai", "accelerate", "lmms_eval", "loguru"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except Exception as error:  # noqa: BLE001
            info[name] = f"missing ({one_line(error)})"
    try:
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except Exception:  # noqa: BLE001
        pass
    return info


# -- models -------------------------------------------------------------------------------------------------------


class Models:
    """Tiny checkpoints built once into a temporary directory, and the bundled model's path."""

    def __init__(self, workdir: Path) -> None:
        self.workdir, self.built = workdir, {}

    def path(self, name: str) -> str:
        if name == "bundled":
            from lmms_topo_plugin.models.loading import resolve_pretrained

            return resolve_pretrained(None)
        if name not in self.built:
            from lmms_topo_plugin.synthbench import vocabulary
            from lmms_topo_plugin.families.tiny import build_tiny_vlm

            self.built[name] = str(build_tiny_vlm(name, self.workdir / "models" / name, num_layers=TINY_LAYERS,
                                                  vocab_words=vocabulary()))
        return self.built[name]


def model_args(args, pretrained: str, device: str, extra: dict[str, Any], dtype: str | None = None) -> dict[str, Any]:
    """``model_args`` on ``device`` in ``dtype`` (default ``--dtype``), SDPA, a small calibration set."""
    dtype = dtype or args.dtype
    return {"pretrained": pretrained, "device": device, "dtype": dtype,
            "attn_implementation": "sdpa", "calib_limit": args.calib_limit, "seed": 0,
            "cache_dir": str(args.workdir / f"cache-{device}-{dtype}"), **extra}


def benchmark_docs(per_kind: int) -> list[dict]:
    from lmms_topo_plugin.synthbench import KINDS, load_split

    return [doc for kind in KINDS for doc in load_split("test", [kind])[:per_kind]]


def answer(loaded, docs: list[dict]) -> list[str]:
    """Greedy answers through the plugin's generation path, the recorded token pruner attached (as lmms-eval's)."""
    from contextlib import nullcontext

    from lmms_topo_plugin.runtime.generation import generate
    from lmms_topo_plugin.tokens import token_pruner
    from lmms_topo_plugin.tools.training.data import prompts_of

    # as lmms_model.recorded_token_pruner, which needs lmms_eval (not installed on the lent machine)
    pruner = token_pruner((getattr(loaded.model.config, "topo_pruning", None) or {}).get("token_pruning"))
    with pruner.attach(loaded.adapter) if pruner is not None else nullcontext():
        return generate(loaded, prompts_of(docs), dict(GENERATION), until=[])


def pruned_run(args, pretrained: str, device: str, extra: dict[str, Any], docs: list[dict],
               dtype: str | None = None) -> dict[str, Any]:
    import torch
    from lmms_topo_plugin.api import load_pruned
    from lmms_topo_plugin.synthbench import exact_match

    start = time.perf_counter()
    loaded, report = load_pruned(model_args(args, pretrained, device, extra, dtype))
    prune_s = time.perf_counter() - start
    start = time.perf_counter()
    answers = answer(loaded, docs)
    if device == "cuda":
        torch.cuda.synchronize()
    record = getattr(loaded.model.config, "topo_pruning", None) or {}
    result = {"removed_layers": list(record.get("removed_layers", [])), "num_layers": loaded.adapter.num_layers,
              "dtype": str(loaded.model.dtype).removeprefix("torch."), "device": str(loaded.model.device),
              "attn_implementation": getattr(loaded.model.config, "_attn_implementation", None),
              "answers": answers, "accuracy": sum(exact_match(a, d["answer"]) for a, d in zip(answers, docs)) / len(docs),
              "prune_s": round(prune_s, 3), "generate_s": round(time.perf_counter() - start, 3)}
    if record.get("token_pruning"):
        result["token_pruning"] = record["token_pruning"]
    if report.recovery:
        result["recovery"] = report.recovery
    del loaded
    return result


def configurations(args) -> dict[str, dict[str, Any]]:
    configs = {f"layer:{method}": {"method": method, "n_remove": 2} for method in args.methods}
    configs |= {f"token:{method}": {"token_method": method, "token_keep": 0.5} for method in args.token_methods}
    return configs


def plugin_eval(args, models: Models) -> dict[str, Any]:
    docs = benchmark_docs(args.items_per_kind)
    items: dict[str, dict[str, Any]] = {}
    for family in args.families:
        for name, extra in configurations(args).items():
            def step(family=family, extra=extra):
                pretrained = models.path(family)
                run = pruned_run(args, pretrained, args.device, extra, docs)
                reference = pruned_run(args, pretrained, "cpu", extra, docs, "float32")
                agree = sum(a == b for a, b in zip(run["answers"], reference["answers"])) / len(docs)
                return {**run, "reference_cpu_fp32": {key: reference[key] for key in (
                            "removed_layers", "answers", "accuracy", "prune_s", "generate_s")},
                        "answer_agreement_vs_cpu_fp32": agree,
                        "same_removed_layers": run["removed_layers"] == reference["removed_layers"]}
            items[f"{family}/{name}"] = run_isolated(step)
            item = items[f"{family}/{name}"]
            print(f"  plugin_eval {family}/{name}: {item['status']} ({item['seconds']:.1f} s)"
                  + (f" {item.get('error', '')}" if item["status"] != "ok" else
                     f" agreement {item['result']['answer_agreement_vs_cpu_fp32']:.2f}"), flush=True)
    oks = [item["result"] for item in items.values() if item["status"] == "ok"]
    return roll_up(items, items_per_kind=args.items_per_kind, docs=len(docs),
                   min_answer_agreement=min((r["answer_agreement_vs_cpu_fp32"] for r in oks), default=None),
                   same_removed_layers_everywhere=all(r["same_removed_layers"] for r in oks))


# -- recovery -----------------------------------------------------------------------------------------------------


def recovery(args, models: Models) -> dict[str, Any]:
    samples, steps, batch = RECOVERY_SIZES[args.device]
    docs = benchmark_docs(args.items_per_kind)
    pruning = {"method": "block_influence", "sparsity": 0.25}
    items = {}
    for family in args.recovery_families:
        def step(family=family):
            pretrained = models.path(family)
            plain = pruned_run(args, pretrained, args.device, pruning, docs)
            recovered = pruned_run(args, pretrained, args.device, pruning | {
                "recover": "kd", "recover_samples": samples, "recover_steps": steps, "recover_batch_size": batch,
                "recover_hidden": 0.1}, docs)
            record = recovered["recovery"]
            if not (record["kl_after"] < record["kl_before"] and record["hidden_after"] < record["hidden_before"]):
                raise AssertionError(f"recovery did not lower the held-out KL ({record['kl_before']:.4g} → "
                                     f"{record['kl_after']:.4g}) and hidden-state term ({record['hidden_before']:.4g}"
                                     f" → {record['hidden_after']:.4g})")
            return {key: record[key] for key in ("kl_before", "kl_after", "hidden_before", "hidden_after", "steps",
                                                 "train_seconds", "trained_parameters")} | {
                "steps_per_s": round(steps / record["train_seconds"], 3), "removed_layers": plain["removed_layers"],
                "same_removed_layers": recovered["removed_layers"] == plain["removed_layers"],
                "accuracy_pruned": plain["accuracy"], "accuracy_recovered": recovered["accuracy"]}
        items[family] = run_isolated(step)
        print(f"  recovery {family}: {items[family]['status']} ({items[family]['seconds']:.1f} s)"
              f" {items[family].get('error', '')}", flush=True)
    return roll_up(items, samples=samples, batch_size=batch)


# -- ONNX export --------------------------------------------------------------------------------------------------


def cpu_copy(loaded):
    """The loaded model moved to CPU float32 (the ONNX export traces on CPU), the device copy left as it was."""
    from lmms_topo_plugin.families import get_adapter
    from lmms_topo_plugin.models.loading import LoadedModel

    import torch

    model = copy.deepcopy(loaded.model).to("cpu", dtype=torch.float32).eval()
    return LoadedModel(model, loaded.processor, get_adapter(model), loaded.source)


def onnx_export(args, models: Models, builds: dict[str, Path]) -> dict[str, Any]:
    from lmms_topo_plugin.api import load_pruned
    from lmms_topo_plugin.exporters.export import export_checkpoint

    items = {}
    for family in args.onnx_families:
        def step(family=family):
            loaded, _ = load_pruned(model_args(args, models.path(family), args.device,
                                               {"method": "spacing", "n_remove": 2}))
            start = time.perf_counter()
            out = args.workdir / "onnx" / family
            export_checkpoint(cpu_copy(loaded), out, ("fp32", "fp16", "int4"))
            del loaded
            validation = json.loads((out / "onnx" / "validation.json").read_text())
            manifest = json.loads((out / "onnx" / "manifest.json").read_text())
            builds[family] = out
            return {"export_s": round(time.perf_counter() - start, 3), "num_layers": manifest.get("num_layers"),
                    "fp32": {key: validation[key] for key in ("max_abs_logit_difference",
                             "max_abs_decode_logit_difference", "greedy_tokens_identical")},
                    "variants": {name: {key: value for key, value in variant.items() if key != "onnx_tokens"}
                                 for name, variant in validation.get("variants", {}).items()},
                    "genai_files": "genai_config.json" in os.listdir(out / "onnx")}
        items[family] = run_isolated(step)
        print(f"  onnx_export {family}: {items[family]['status']} ({items[family]['seconds']:.1f} s)"
              f" {items[family].get('error', '')}", flush=True)
    return roll_up(items)


# -- PyTorch speed ------------------------------------------------------------------------------------------------


def to_device(loaded, device: str, dtype):
    loaded.model.to(device, dtype=dtype)
    return loaded


def dense_and_half(loaded, prompt, decode_tokens: int, repeats: int) -> dict[str, Any]:
    from lmms_topo_plugin.search.measure import measure_cost, speedup_table
    from lmms_topo_plugin.surgery.layers import layers_removed

    dense = measure_cost(loaded, prompt, repeats=repeats, decode_tokens=decode_tokens)
    with layers_removed(loaded.adapter, list(range(1, loaded.adapter.num_layers, 2))):
        pruned = measure_cost(loaded, prompt, repeats=repeats, decode_tokens=decode_tokens)
    return {"dense": dense, "half_removed": pruned, "speedup": speedup_table(dense, pruned)}


def torch_speed(args, models: Models) -> dict[str, Any]:
    import torch
    import bench_speed
    from lmms_topo_plugin.config.prune import LoadConfig
    from lmms_topo_plugin.models.loading import load_config, load_model
    from lmms_topo_plugin.search.measure import default_cost_prompt

    dtype = getattr(torch, args.dtype)
    layers, hidden, image_tokens, decode_tokens, repeats = args.speed_size
    prompt = default_cost_prompt()

    def random_model():
        loaded, _ = bench_speed.build_model(layers, hidden, image_tokens)  # transformers' default attention: sdpa
        return {"model": f"random LLaVA-shaped {layers} x {hidden}, {image_tokens} image tokens", "dtype": str(dtype),
                "attn_implementation": getattr(loaded.model.config, "_attn_implementation", None), **dense_and_half(to_device(loaded, args.device, dtype), prompt, decode_tokens,
                                                      repeats)}

    def bundled():
        path = models.path("bundled")
        config = LoadConfig(device=args.device, dtype=args.dtype, attn_implementation="sdpa")
        loaded = load_model(config, path, load_config(path))
        return {"model": "bundled", "dtype": str(loaded.model.dtype),
                **dense_and_half(loaded, prompt, decode_tokens, repeats)}

    return roll_up({"random_llava": run_isolated(random_model), "bundled": run_isolated(bundled)})


# -- ONNX Runtime against PyTorch -------------------------------------------------------------------------------


def ort_provider_or_block(device: str) -> str:
    try:
        import onnxruntime
    except ImportError as error:
        raise Blocked(f"onnxruntime cannot be imported ({one_line(error)})") from error
    if device == "cpu":
        return "cpu"
    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise Blocked(f"onnxruntime {onnxruntime.__version__} here offers {available}, no CUDAExecutionProvider: "
                      f"the onnx-gpu extra (onnxruntime-gpu) is not installed; {ORT_GPU_WHEEL}, over the lent "
                      f"machine's 64 MiB carry limit")
    return "cuda"


def generate_timing(generate_n: Callable[[int], int], decode_tokens: int, repeats: int) -> dict[str, Any]:
    """Prefill = generating 1 token; per-token decode = (time of ``decode_tokens + 1`` tokens - prefill) /
    ``decode_tokens``; medians of ``repeats`` after a warm-up. ``generate_n(n)`` returns the tokens made."""
    generate_n(decode_tokens + 1)
    prefill, full, made = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        generate_n(1)
        prefill.append(time.perf_counter() - start)
        start = time.perf_counter()
        made.append(generate_n(decode_tokens + 1))
        full.append(time.perf_counter() - start)
    prefill_s = statistics.median(prefill)
    return {"prefill_s": prefill_s, "decode_s_per_token": max(statistics.median(full) - prefill_s, 0.0) / decode_tokens,
            "tokens_made": min(made), "tokens_asked": decode_tokens + 1, "repeats": repeats}


def torch_generate_timing(loaded, prompt, decode_tokens: int, repeats: int) -> dict[str, Any]:
    import torch
    from lmms_topo_plugin.calibration.collect import move_inputs
    from lmms_topo_plugin.models.prompting import encode

    model = loaded.model
    inputs = move_inputs(encode(loaded.processor, loaded.adapter, [prompt]), model.device, model.dtype)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    def generate_n(n: int) -> int:
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        sync()
        return int(out.shape[1] - inputs["input_ids"].shape[1])

    return generate_timing(generate_n, decode_tokens, repeats)


def ort_cuda(args) -> dict[str, Any]:
    provider = ort_provider_or_block(args.device)
    import torch
    import bench_speed
    from lmms_topo_plugin.exporters.onnx.build import build_onnx
    from lmms_topo_plugin.runtime.onnx_runner import OnnxVLM
    from lmms_topo_plugin.search.measure import default_cost_prompt
    from lmms_topo_plugin.surgery.layers import layers_removed

    layers, hidden, image_tokens, decode_tokens, repeats = args.ort_size
    prompt = default_cost_prompt()
    precision = "fp16" if args.device == "cuda" else "fp32"
    torch_dtype = torch.float16 if args.device == "cuda" else torch.float32
    loaded, _ = bench_speed.build_model(layers, hidden, image_tokens)
    items = {}
    for config, removed in (("dense", []), ("half_removed", list(range(1, layers, 2)))):
        def step(removed=removed, config=config):
            build = args.workdir / "ort" / config
            with layers_removed(loaded.adapter, removed):
                loaded.model.to("cpu", dtype=torch.float32)
                start = time.perf_counter()
                loaded.processor.save_pretrained(build)  # the runner reads the processor and config from the build
                loaded.model.config.save_pretrained(build)
                loaded.model.generation_config.save_pretrained(build)
                build_onnx(loaded, build, ("fp32", precision) if precision != "fp32" else ("fp32",))
                export_s = time.perf_counter() - start
                runner = OnnxVLM(build, provider=provider, precision=precision)

                def ort_n(n: int) -> int:
                    return int(runner.generate_ids([prompt], n).shape[1])

                onnxruntime = generate_timing(ort_n, decode_tokens, repeats)
                loaded.model.to(args.device, dtype=torch_dtype)
                pytorch = torch_generate_timing(loaded, prompt, decode_tokens, repeats)
                loaded.model.to("cpu", dtype=torch.float32)
                return {"layers": loaded.adapter.num_layers, "export_s": round(export_s, 3),
                        "onnxruntime": {"provider": runner.provider, "precision": precision, **onnxruntime},
                        "pytorch": {"device": args.device, "dtype": str(torch_dtype), **pytorch}}
        items[config] = run_isolated(step)
        print(f"  ort_cuda {config}: {items[config]['status']} ({items[config]['seconds']:.1f} s)"
              f" {items[config].get('error', '')}", flush=True)
    model = f"random LLaVA-shaped {layers} x {hidden}, {image_tokens} image tokens"
    result = roll_up(items, model=model)
    dense, half = items["dense"]["result"], items["half_removed"]["result"]
    ideal = dense["layers"] / half["layers"]
    result["speedup"] = {runtime: {phase: dense[runtime][phase] / half[runtime][phase] for phase in
                                   ("prefill_s", "decode_s_per_token") if half[runtime][phase] > 0}
                         for runtime in ("onnxruntime", "pytorch")} | {"ideal": ideal}
    result["onnxruntime_over_pytorch"] = {
        config: {phase: items[config]["result"]["pytorch"][phase] / items[config]["result"]["onnxruntime"][phase]
                 for phase in ("prefill_s", "decode_s_per_token") if items[config]["result"]["onnxruntime"][phase] > 0}
        for config in items}
    return result


# -- onnxruntime-genai --------------------------------------------------------------------------------------------


def genai_cuda(args, builds: dict[str, Path]) -> dict[str, Any]:
    try:
        import onnxruntime_genai as og
    except Exception as error:  # noqa: BLE001 - ImportError, or a missing shared library
        raise Blocked(f"onnxruntime_genai cannot be imported ({one_line(error)}); onnxruntime-genai-cuda 0.18.0 "
                      f"(16.7 MB) requires onnxruntime-gpu>=1.31, and {ORT_GPU_WHEEL}, over the lent machine's "
                      f"64 MiB carry limit") from error
    provider = "cuda" if args.device == "cuda" else "cpu"
    if provider == "cuda" and hasattr(og, "is_cuda_available") and not og.is_cuda_available():
        raise Blocked(f"onnxruntime_genai {getattr(og, '__version__', '?')} has no CUDA (the CPU package, or "
                      "onnxruntime-gpu missing)")
    import torch
    from lmms_topo_plugin.calibration.collect import move_inputs
    from lmms_topo_plugin.config.prune import LoadConfig
    from lmms_topo_plugin.exporters.onnx.genai import og_greedy_tokens
    from lmms_topo_plugin.models.loading import load_config, load_model
    from lmms_topo_plugin.models.prompting import Prompt, encode
    from lmms_topo_plugin.families.tiny import example_image

    if "qwen2_5_vl" not in builds:
        raise Blocked("no Qwen2.5-VL build: onnx_export did not build qwen2_5_vl (not asked for, or it failed)")
    onnx_dir = builds["qwen2_5_vl"] / "onnx"
    config = og.Config(str(onnx_dir))
    config.clear_providers()
    if provider == "cuda":
        config.append_provider("cuda")
    model = og.Model(config)
    build = str(builds["qwen2_5_vl"])  # the exported pruned checkpoint itself: the PyTorch reference
    loaded = load_model(LoadConfig(device="cpu", dtype="float32"), build, load_config(build))
    prompt = Prompt.from_text("What is in the image?", [example_image(1, (48, 32))])
    inputs = encode(loaded.processor, loaded.adapter, [prompt])
    new_tokens = 8
    with torch.inference_mode():
        # og applies no suppress_tokens (the tiny models' generation config suppresses their special tokens)
        expected = loaded.model.generate(**move_inputs(inputs, "cpu", loaded.model.dtype), max_new_tokens=new_tokens,
                                         do_sample=False, suppress_tokens=None,
                                         )[0, inputs["input_ids"].shape[1]:].tolist()
    def run(n: int) -> list[int]:
        return og_greedy_tokens(og, model, inputs, loaded.adapter.image_token_id, n)

    tokens = run(new_tokens)
    timing = generate_timing(lambda n: len(run(n)), new_tokens - 1, 3)
    return {"provider": provider, "og_version": getattr(og, "__version__", "?"), "tokens": tokens,
            "pytorch_cpu_fp32_tokens": expected, "tokens_identical": tokens == expected, "timing": timing,
            "note": "tiny model: latency is overhead, not a speed result"}


# -- driver -------------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    from lmms_topo_plugin.families import TINY_MODEL_TYPES
    from lmms_topo_plugin.scorers.registry import DENSE_METHOD, available_methods
    from lmms_topo_plugin.tokens import TOKEN_METHODS

    methods = [name for name in available_methods() if name != DENSE_METHOD]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda (the check); cpu only as a plumbing smoke test, not a GPU result")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None,
                        help="plugin_eval/onnx_export/torch_speed weights (default: bfloat16 on cuda, float32 on cpu)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--families", default=",".join((*TINY_MODEL_TYPES, "bundled")),
                        help="plugin_eval models: tiny families and/or bundled")
    parser.add_argument("--onnx-families", default="llava,qwen2_5_vl,bundled",
                        help="models exported (fp32, fp16, int4); qwen2_5_vl's build feeds genai_cuda")
    parser.add_argument("--recovery-families", default="qwen2_5_vl,bundled",
                        help="models the recovery section prunes and recovers")
    parser.add_argument("--methods", default=",".join(methods), help="layer methods (topo-prune methods)")
    parser.add_argument("--token-methods", default=",".join(TOKEN_METHODS))
    parser.add_argument("--items-per-kind", type=int, default=2, help="benchmark docs per synthbench kind")
    parser.add_argument("--calib-limit", type=int, default=16)
    parser.add_argument("--speed-size", default=None, help="layers,hidden,image_tokens,decode_tokens,repeats")
    parser.add_argument("--ort-size", default=None, help="layers,hidden,image_tokens,decode_tokens,repeats")
    parser.add_argument("--deadline-s", type=float, default=480.0,
                        help="start nothing after this many seconds (each item left is failed: not run), so that the "
                             "JSON is written inside a 10-minute command")
    args = parser.parse_args(argv)
    for name in ("sections", "families", "onnx_families", "recovery_families", "methods", "token_methods"):
        setattr(args, name, [item for item in getattr(args, name).split(",") if item])
    unknown = sorted(set(args.sections) - set(SECTIONS)) + sorted(set(args.methods) - set(methods)) + sorted(
        set(args.token_methods) - set(TOKEN_METHODS))
    if unknown:
        parser.error(f"unknown section or method {unknown[0]!r}")
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    for name, table in (("speed_size", SPEED_SIZES), ("ort_size", ORT_SIZES)):
        value = getattr(args, name)
        setattr(args, name, tuple(int(v) for v in value.split(",")) if value else table[args.device])
    return args


def main(argv=None) -> int:
    imported = plugin_import()
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: CUDA is not available (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
              "this check needs a GPU (--device cpu runs it as a plumbing smoke test only)", file=sys.stderr)
        return 2
    if args.device == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    from lmms_topo_plugin.cache import atomic_write_json

    started = time.perf_counter()
    DEADLINE[0] = started + args.deadline_s
    report: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]), "gpu_result": args.device == "cuda",
        "complete": False, "machine": machine(args.device) | {"plugin_import": imported},
        "args": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "sections": {},
    }
    if args.device == "cpu":
        report["note"] = "--device cpu: a plumbing smoke test of the script, NOT a GPU result"
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as workdir:
        args.workdir = Path(workdir)
        models, builds = Models(args.workdir), {}
        steps = {
            "plugin_eval": lambda: plugin_eval(args, models),
            "onnx_export": lambda: onnx_export(args, models, builds),
            "torch_speed": lambda: torch_speed(args, models),
            "recovery": lambda: recovery(args, models),
            "ort_cuda": lambda: ort_cuda(args),
            "genai_cuda": lambda: genai_cuda(args, builds),
        }
        for name in SECTIONS:
            if name not in args.sections:
                report["sections"][name] = {"status": "skipped", "reason": "not in --sections"}
                continue
            print(f"gpu_check: {name} ...", flush=True)
            entry = run_isolated(steps[name])
            report["sections"][name] = entry
            print(f"gpu_check: {name}: {entry['status']} ({entry['seconds']:.1f} s) "
                  f"{entry.get('error') or entry.get('reason') or ''}".rstrip(), flush=True)
            atomic_write_json(args.out, report)
    report["complete"] = True
    report["wall_s"] = round(time.perf_counter() - started, 3)
    failed = [name for name, entry in report["sections"].items() if entry["status"] == "failed"]
    report["failed_sections"] = failed
    atomic_write_json(args.out, report)
    statuses = ", ".join(f"{name} {entry['status']}" for name, entry in report["sections"].items())
    print(f"gpu_check: {statuses}; wrote {args.out} in {report['wall_s']:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
