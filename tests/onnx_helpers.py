"""Shared by the ONNX tests: a tiny checkpoint exported pruned, the same pruned model in PyTorch, and the checks
every family's build passes against it."""

import json
from pathlib import Path

import numpy as np
import torch

from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.cli.main import main
from lmms_topo_plugin.models.prompting import encode

MODEL_ARGS = "method=block_influence,n_remove=2,device=cpu,calib_limit=4"


def export_build(checkpoint, out: Path, *options: str) -> Path:
    """``topo-prune export --onnx`` of ``checkpoint`` pruned by :data:`MODEL_ARGS` into ``out`` (exit 0)."""
    assert main(["export", "--model-args", f"pretrained={checkpoint},{MODEL_ARGS}", "--out", str(out), "--onnx",
                 *options]) == 0
    return out


def pruned_model(checkpoint):
    """``checkpoint`` pruned by :data:`MODEL_ARGS`, in PyTorch."""
    return load_pruned({**dict(item.split("=") for item in MODEL_ARGS.split(",")), "pretrained": str(checkpoint)})[0]


def assert_fp32_parity(out: Path) -> dict:
    """The build's ``validation.json`` states identical greedy tokens and logits within 1e-4 (prefill and
    decoding); returns it."""
    validation = json.loads((out / "onnx" / "validation.json").read_text())
    assert validation["greedy_tokens_identical"] is True and validation["onnx_tokens"] == validation["pytorch_tokens"]
    assert max(validation["max_abs_logit_difference"], validation["max_abs_decode_logit_difference"]) <= 1e-4
    return validation


def prefill_against_pytorch(runner, pruned, prompts):
    """The runner's prefill of ``prompts`` (a left-padded batch), checked within 1e-4 of PyTorch's logits at every
    real position; returns ``(logits, mask, positions, past, inputs)`` (``inputs``: PyTorch's processor batch)."""
    embeds, mask, positions = runner.prefill_inputs(prompts)
    logits, past = runner.decoder_step(embeds, mask, runner.empty_past(len(prompts)), positions)
    inputs = move_inputs(encode(pruned.processor, pruned.adapter, prompts), "cpu", pruned.model.dtype)
    with torch.inference_mode():
        reference = pruned.model(**inputs, use_cache=False).logits.numpy()
    assert float(np.abs(logits - reference)[mask.astype(bool)].max()) <= 1e-4
    return logits, mask, positions, past, inputs


def assert_generates_like_pytorch(runner, pruned, prompts, inputs, new_tokens: int) -> None:
    """The runner's greedy batch equals ``model.generate``'s, row by row up to its first eos (after it,
    ``generate`` pads the rows that ended)."""
    with torch.inference_mode():
        generated = pruned.model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
    eos = runner.processor.tokenizer.eos_token_id
    for mine, theirs in zip(runner.generate_ids(prompts, new_tokens).tolist(),
                            generated[:, inputs["input_ids"].shape[1]:].tolist()):
        ended = theirs.index(eos) + 1 if eos in theirs else len(theirs)
        assert mine[:ended] == theirs[:ended]
