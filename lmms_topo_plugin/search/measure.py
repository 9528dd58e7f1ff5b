"""Measured cost of one configuration of a loaded (possibly pruned) model: latency, memory, size.

The sweep calls :func:`measure_cost` once per configuration, side by side with the dense model in the same
process, on the fixed prompt of :func:`default_cost_prompt`, and :func:`speedup_table` compares the two.

* prefill: one forward of the whole prompt with its image, ``use_cache=True`` and logits for the last position
  only (``logits_to_keep=1``, as ``generate`` does); median of ``repeats`` after ``warmup``.
* decode: ``decode_tokens`` greedy steps after the prefill, each one forward of one token with the KV cache
  (the model's forward called step by step, not ``generate``, whose per-step overhead varies); median per token.
* peak memory: one extra untimed prefill + decode pass, so that sampling never perturbs the timings. On CUDA,
  ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; on CPU the peak resident set size
  (``VmRSS``) sampled by a background thread (``ru_maxrss`` is a process-lifetime high-water mark and cannot
  separate configurations measured in one process).
"""

from __future__ import annotations

import inspect
import platform
import random
import statistics
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.models.loading import LoadedModel
from lmms_topo_plugin.scorers.comp.flops import model_prefill_flops
from lmms_topo_plugin.models.prompting import Prompt, encode
from lmms_topo_plugin.synthbench import prompt_for, random_scene, render_image

COST_KEYS = (
    "prefill_s", "decode_s_per_token", "peak_memory_bytes", "memory_kind", "parameters", "num_layers", "repeats",
    "device", "hardware", "prefill_tokens", "prefill_flops",
)
_COST_QUESTION = "How many shapes are in the image?"
_RSS_SAMPLE_INTERVAL_S = 0.002


def default_cost_prompt() -> Prompt:
    """The fixed prompt costs are measured on: one seeded synthbench scene and a counting question."""
    image = render_image(random_scene(random.Random(0)))
    return Prompt.from_text(prompt_for({"question": _COST_QUESTION}), [image])


def prefill(model: Any, inputs: dict[str, Any]) -> Any:
    """One forward of the whole prompt filling a KV cache, with logits for the last position only."""
    return model(**inputs, use_cache=True, logits_to_keep=1)


def decode(model: Any, prefilled: Any, steps: int) -> torch.Tensor:
    """``steps`` cached one-token forwards after ``prefilled``; the ``steps + 1`` greedy tokens, shape (1, n).

    The first token is the prefill's argmax; each step feeds the previous token and appends the next one. The
    prompt must be one unpadded sequence: the steps pass no attention mask, so that every family derives the
    new token's position from the cache (Qwen2-VL's M-RoPE included).
    """
    key = _cache_keyword(model)
    cache = getattr(prefilled, key)
    token = prefilled.logits[:, -1].argmax(dim=-1, keepdim=True)
    tokens = [token]
    for _ in range(steps):
        output = model(input_ids=token, use_cache=True, **{key: cache})
        cache = getattr(output, key)
        token = output.logits[:, -1].argmax(dim=-1, keepdim=True)
        tokens.append(token)
    return torch.cat(tokens, dim=1)


def greedy_tokens(model: Any, inputs: dict[str, Any], new_tokens: int) -> torch.Tensor:
    """The ``new_tokens`` greedy tokens after one prompt's ``inputs``, by the loop :func:`measure_cost` times."""
    _check_single_unpadded(inputs)
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be at least 1, got {new_tokens}")
    with torch.inference_mode():
        return decode(model, prefill(model, inputs), new_tokens - 1)


def measure_cost(loaded: LoadedModel, prompt: Prompt, *, repeats: int = 5, warmup: int = 1,
                 decode_tokens: int = 16, token_pruner: Any = None) -> dict[str, Any]:
    """Prefill and per-token decode latency (medians), peak memory, size and prefill FLOPs (counted, as it runs:
    :func:`~lmms_topo_plugin.scorers.comp.flops.model_prefill_flops`) of ``loaded`` on ``prompt``; with
    ``token_pruner`` (a :class:`~lmms_topo_plugin.tokens.TokenPruner`) attached, as generation attaches it.

    Returns a JSON-ready dict with the keys of :data:`COST_KEYS`.
    """
    if repeats < 1 or warmup < 0 or decode_tokens < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, decode_tokens >= 1; got {repeats}, {warmup}, "
                         f"{decode_tokens}")
    model = loaded.model
    device = model.device
    inputs = move_inputs(encode(loaded.processor, loaded.adapter, [prompt]), device, model.dtype)
    _check_single_unpadded(inputs)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    prefill_times, decode_times = [], []
    attached = token_pruner.attach(loaded.adapter) if token_pruner is not None else nullcontext()
    with torch.inference_mode(), attached:
        for index in range(warmup + repeats):
            prefill_s, prefilled = _timed(lambda: prefill(model, inputs), sync)
            decode_s, _ = _timed(lambda: decode(model, prefilled, decode_tokens), sync)
            del prefilled
            if index >= warmup:
                prefill_times.append(prefill_s)
                decode_times.append(decode_s / decode_tokens)
        with _peak_memory(device) as peak:
            decode(model, prefill(model, inputs), decode_tokens)
            sync()
        flops = model_prefill_flops(loaded.adapter, inputs)
    return {
        "prefill_s": statistics.median(prefill_times),
        "decode_s_per_token": statistics.median(decode_times),
        "peak_memory_bytes": peak["bytes"],
        "memory_kind": peak["kind"],
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "num_layers": loaded.adapter.num_layers,
        "repeats": repeats,
        "device": str(device),
        "hardware": hardware_description(device),
        "prefill_tokens": int(inputs["input_ids"].shape[1]),
        "prefill_flops": flops,
    }


def hardware_description(device: torch.device) -> str:
    """What the timings ran on, for reports and model cards: the GPU's name, or the CPU model and thread count."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    model = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {model}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def speedup_table(dense: dict[str, Any], pruned: dict[str, Any]) -> dict[str, float]:
    """Measured speedups of ``pruned`` over ``dense`` (two :func:`measure_cost` dicts) next to the ideal ``L/L'``."""
    prefill_speedup = dense["prefill_s"] / pruned["prefill_s"]
    decode_speedup = dense["decode_s_per_token"] / pruned["decode_s_per_token"]
    ideal = dense["num_layers"] / pruned["num_layers"]
    return {
        "prefill_speedup": prefill_speedup,
        "decode_speedup": decode_speedup,
        "ideal_speedup": ideal,
        "prefill_of_ideal": prefill_speedup / ideal,
        "decode_of_ideal": decode_speedup / ideal,
        "memory_ratio": pruned["peak_memory_bytes"] / dense["peak_memory_bytes"],
    }


def _cache_keyword(model: Any) -> str:
    """The forward's KV-cache argument and output field: ``cache`` in recent transformers, else ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _check_single_unpadded(inputs: dict[str, Any]) -> None:
    """Reject a batch or a padded prompt: :func:`decode` relies on neither."""
    if inputs["input_ids"].shape[0] != 1 or not bool(inputs["attention_mask"].all()):
        raise ValueError("cost is measured on one unpadded prompt")


def _timed(step: Callable[[], Any], sync: Callable[[], None]) -> tuple[float, Any]:
    """Seconds ``step`` takes (device work included) and its result."""
    sync()
    start = time.perf_counter()
    result = step()
    sync()
    return time.perf_counter() - start, result


@contextmanager
def _peak_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    """Peak memory of the enclosed block, in the yielded dict's ``bytes`` (with its ``kind``) on exit."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        result: dict[str, Any] = {"kind": "cuda_max_allocated"}
        yield result
        result["bytes"] = int(torch.cuda.max_memory_allocated(device))
        return
    result = {"kind": "cpu_rss_peak"}
    samples = [_rss_bytes()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(_RSS_SAMPLE_INTERVAL_S):
            samples.append(_rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        stop.set()
        sampler.join()
    samples.append(_rss_bytes())
    result["bytes"] = max(samples)


def _rss_bytes() -> int:
    """This process's resident set size now, from ``/proc/self/status``."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmRSS line")
