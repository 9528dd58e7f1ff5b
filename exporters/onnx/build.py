"""Export the graphs of a loaded model into ``<build>/onnx`` and validate them against PyTorch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from loguru import logger

from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.errors import PluginError
from lmms_topo_plugin.models.loading import LoadedModel
from lmms_topo_plugin.models.prompting import Prompt, encode
from lmms_topo_plugin.exporters.onnx.builder_decoder import (DEFAULT_DECODER, BuilderUnsupported, export_builder_decoder,
                                                             resolve_decoder)
from lmms_topo_plugin.exporters.onnx.genai import MODEL_TYPES as GENAI_MODEL_TYPES, write_genai
from lmms_topo_plugin.exporters.onnx.graphs import check_supported, export_graphs, write_manifest
from lmms_topo_plugin.exporters.onnx.layout import graph_files
from lmms_topo_plugin.exporters.onnx.precision import write_variant
from lmms_topo_plugin.runtime.generation import prompt_logits
from lmms_topo_plugin.runtime.onnx_runner import OnnxVLM

MAX_FP32_LOGIT_DIFFERENCE = 1e-4
VALIDATION_TOKENS = 8


class OnnxParityError(PluginError):
    """The fp32 ONNX build does not reproduce PyTorch (logits or greedy tokens)."""


def validation_prompts() -> list[Prompt]:
    """Two fixed prompts of different lengths, each with a synthbench scene (a left-padded batch)."""
    import random

    from lmms_topo_plugin.synthbench.scene import random_scene, render_image

    images = [render_image(random_scene(random.Random(seed))) for seed in (0, 1)]
    return [Prompt.from_text("What is in the image?", [images[0]]),
            Prompt.from_text("How many shapes are in the image? Answer with one word.", [images[1]])]


def torch_reference(loaded: LoadedModel, prompts: list[Prompt]) -> tuple[np.ndarray, list[list[int]]]:
    """Prefill logits of the batch and each prompt's greedy tokens from ``model.generate``."""
    model = loaded.model
    logits = prompt_logits(loaded, prompts).cpu().numpy()
    tokens = []
    for prompt in prompts:
        single = move_inputs(encode(loaded.processor, loaded.adapter, [prompt]), model.device, model.dtype)
        with torch.inference_mode():
            out = model.generate(**single, max_new_tokens=VALIDATION_TOKENS, do_sample=False)
        tokens.append(out[0, single["input_ids"].shape[1]:].tolist())
    return logits, tokens


def decode_difference(loaded: LoadedModel, runner: OnnxVLM, prompts: list[Prompt]) -> float:
    """Max abs difference of the logits of every decoding step with the KV cache (batch, left-padded), the ONNX
    runner fed PyTorch's own greedy tokens so that both follow one path."""
    model = loaded.model
    inputs = move_inputs(encode(loaded.processor, loaded.adapter, prompts), model.device, model.dtype)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=VALIDATION_TOKENS, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    fed = out.sequences[:, inputs["input_ids"].shape[1]:].cpu().numpy()
    embeds, mask, positions = runner.prefill_inputs(prompts)
    _, past = runner.decode(embeds, mask, runner.empty_past(len(prompts)), positions)
    worst = 0.0
    for step, reference in enumerate(out.logits[1:]):
        logits, mask, past, positions = runner.next_step(fed[:, step], mask, past, positions)
        worst = max(worst, float(np.abs(logits[:, -1] - reference.float().cpu().numpy()).max()))
    return worst


def onnx_tokens(runner: OnnxVLM, prompt: Prompt, length: int) -> list[int]:
    return runner.generate_ids([prompt], VALIDATION_TOKENS)[0, :length].tolist()


def build_onnx(loaded: LoadedModel, build_dir: Path, precisions: tuple[str, ...] = ("fp32",),
               decoder: str = DEFAULT_DECODER) -> dict[str, Any]:
    """Write ``build_dir/onnx`` (graphs, manifest, ``validation.json``; for Qwen2.5-VL also onnxruntime-genai's
    files, :mod:`.genai`, unless its decoder layers have different head counts); raise :class:`OnnxParityError`
    when fp32 logits (prefill, and every decoding step with the cache) differ from PyTorch by more than 1e-4 or a
    greedy token differs. Each further precision (``fp16``, ``int4``) is written from the fp32 graphs and reported
    against fp32 (logit error, greedy-token agreement).

    ``decoder`` (:data:`.builder_decoder.DECODERS`): ``torch`` exports ours; ``builder`` builds the decoder with
    onnxruntime-genai's model builder (:mod:`.builder_decoder`), refused with the reason where it cannot;
    ``auto`` the builder's where it can (and it validates), else ours, the reason in the manifest's
    ``decoder_fallback`` and one logged line."""
    check_supported(loaded)
    kind, reason = resolve_decoder(loaded, decoder, precisions)
    if kind == "torch" and reason:
        logger.warning(f"topo-prune export --onnx: our decoder, not the model builder's: {reason}")
    try:
        return write_build(loaded, build_dir, precisions, kind, reason)
    except (OnnxParityError, BuilderUnsupported) as error:
        if decoder != "auto" or kind != "builder":
            raise
        reason = (f"the model builder's decoder did not validate: {error}" if isinstance(error, OnnxParityError)
                  else str(error))
        logger.warning(f"topo-prune export --onnx: our decoder, not the model builder's: {reason}")
        shutil.rmtree(build_dir / "onnx", ignore_errors=True)
        return write_build(loaded, build_dir, precisions, "torch", reason)


def write_build(loaded: LoadedModel, build_dir: Path, precisions: tuple[str, ...], decoder: str,
                fallback: str | None) -> dict[str, Any]:
    """:func:`build_onnx` with the decoder kind decided (``fallback``: why not the builder's)."""
    loaded.model.float()
    prompts = validation_prompts()
    vision_inputs = encode(loaded.processor, loaded.adapter, prompts)  # 2 images: no size-1 specialisation
    manifest = export_graphs(loaded, vision_inputs, build_dir / "onnx", decoder, fallback)
    expected_logits, expected_tokens = torch_reference(loaded, prompts)
    runner = OnnxVLM(build_dir, provider="cpu")
    embeds, mask, positions = runner.prefill_inputs(prompts)
    logits, _ = runner.decode(embeds, mask, runner.empty_past(len(prompts)), positions)
    real = mask.astype(bool)
    difference = float(np.abs(logits - expected_logits)[real].max())
    tokens = [onnx_tokens(runner, prompt, len(expected)) for prompt, expected in zip(prompts, expected_tokens)]
    decoding = decode_difference(loaded, runner, prompts)
    report = {"precision": "fp32", "provider": runner.provider, "decoder": decoder, "prompts": len(prompts),
              "max_abs_logit_difference": difference, "max_abs_decode_logit_difference": decoding,
              "max_allowed": MAX_FP32_LOGIT_DIFFERENCE, "greedy_tokens_identical": tokens == expected_tokens,
              "onnx_tokens": tokens, "pytorch_tokens": expected_tokens}
    if fallback:
        report["decoder_fallback"] = fallback
    if max(difference, decoding) > MAX_FP32_LOGIT_DIFFERENCE or tokens != expected_tokens:
        raise OnnxParityError(f"the fp32 ONNX build does not match PyTorch (max logit difference {difference:.3g} "
                              f"in prefill, {decoding:.3g} in decoding; greedy tokens identical: "
                              f"{tokens == expected_tokens}; {decoder} decoder); nothing was written")
    if manifest["model_type"] in GENAI_MODEL_TYPES:  # onnxruntime-genai's og.Model runs the fp32 graphs too
        manifest["genai"] = write_genai(loaded, manifest, build_dir / "onnx")
        write_manifest(build_dir / "onnx", manifest)
    report["variants"] = {precision: add_variant(build_dir, precision, prompts, logits, tokens, loaded)
                          for precision in precisions if precision != "fp32"}
    (build_dir / "onnx" / "validation.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def add_variant(build_dir: Path, precision: str, prompts: list[Prompt], fp32_logits: np.ndarray,
                fp32_tokens: list[list[int]], loaded: LoadedModel | None = None) -> dict[str, Any]:
    """Write every graph's ``precision`` variant, list it in the manifest, and compare it with fp32. The model
    builder's decoder (``decoder: builder``) is built again by the builder at ``precision`` (from ``loaded``)."""
    onnx_dir = build_dir / "onnx"
    manifest = json.loads((onnx_dir / "manifest.json").read_text())
    for name, graph in manifest["graphs"].items():
        if name == "decoder_model_merged" and manifest.get("decoder") == "builder":
            entry = export_builder_decoder(loaded, onnx_dir, precision)
            graph["variants"][precision], graph["files"][precision] = entry["file"], entry["files"]
            manifest["decoder_builder"].setdefault("variants", {})[precision] = entry["builder"]
            continue
        graph["variants"][precision] = write_variant(onnx_dir / graph["file"], precision).name
        graph["files"][precision] = graph_files(onnx_dir, graph["variants"][precision])
    manifest["precisions"].append(precision)
    write_manifest(onnx_dir, manifest)
    runner = OnnxVLM(build_dir, provider="cpu", precision=precision)
    embeds, mask, positions = runner.prefill_inputs(prompts)
    logits, _ = runner.decode(embeds, mask, runner.empty_past(len(prompts)), positions)
    tokens = [onnx_tokens(runner, prompt, len(reference)) for prompt, reference in zip(prompts, fp32_tokens)]
    pairs = [(mine, theirs) for row, reference in zip(tokens, fp32_tokens) for mine, theirs in zip(row, reference)]
    return {"max_abs_logit_difference_vs_fp32": float(np.abs(logits - fp32_logits)[mask.astype(bool)].max()),
            "greedy_token_agreement_vs_fp32": sum(mine == theirs for mine, theirs in pairs) / len(pairs),
            "onnx_tokens": tokens,
            "bytes": {name: sum((onnx_dir / file).stat().st_size for file in graph["files"][precision])
                      for name, graph in manifest["graphs"].items()}}
