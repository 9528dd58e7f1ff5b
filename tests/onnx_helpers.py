"""Shared by the ONNX tests: a tiny checkpoint exported pruned (once per session and settings: conftest's
``onnx_builds``), the same pruned model in PyTorch, each family's left-padded batch of mixed prompts, and the checks
every family's build passes against it."""

import functools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.cli.main import main
from lmms_topo_plugin.families.tiny import example_image
from lmms_topo_plugin.models.prompting import Prompt, encode
from lmms_topo_plugin.runtime.onnx_runner import OnnxVLM

MODEL_ARGS = "method=block_influence,n_remove=2,device=cpu,calib_limit=4"


def export_build(checkpoint, out: Path, *options: str) -> Path:
    """``topo-prune export --onnx`` of ``checkpoint`` pruned by :data:`MODEL_ARGS` into ``out`` (exit 0)."""
    assert main(["export", "--model-args", f"pretrained={checkpoint},{MODEL_ARGS}", "--out", str(out), "--onnx",
                 *options]) == 0
    return out


def pruned_model(checkpoint):
    """``checkpoint`` pruned by :data:`MODEL_ARGS`, in PyTorch."""
    return load_pruned({**dict(item.split("=") for item in MODEL_ARGS.split(",")), "pretrained": str(checkpoint)})[0]


@dataclass
class OnnxBuild:
    """A tiny checkpoint of ``family`` exported with ``topo-prune export --onnx`` (pruned by :data:`MODEL_ARGS`)
    into ``out``; ``pruned`` is the same pruned model in PyTorch (loaded on first use, from the export's cache)."""

    family: str
    checkpoint: Path
    out: Path
    cache: Path

    @functools.cached_property
    def pruned(self):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("LMMS_TOPO_CACHE", str(self.cache))
            return pruned_model(self.checkpoint)


def onnx_build_factory(tiny_checkpoints, tmp_path_factory):
    """``get(family, precision=None, image_processor=None, decoder=None)``: the :class:`OnnxBuild` of the 6-layer
    tiny ``family`` exported with ``--precision precision`` and ``--onnx-decoder decoder`` (the exporter's defaults
    if None), its processor's ``image_processor`` settings updated by ``image_processor`` first (on a copy of the
    checkpoint); each is built once, with a cache of its own, and the same build is returned for the same
    arguments."""
    built: dict[tuple, OnnxBuild] = {}

    def get(family: str, precision: str | None = None, image_processor: dict | None = None,
            decoder: str | None = None) -> OnnxBuild:
        key = (family, precision, json.dumps(image_processor, sort_keys=True), decoder)
        if key not in built:
            root = tmp_path_factory.mktemp(f"onnx-{family}")
            checkpoint = Path(tiny_checkpoints(family, 6))
            if image_processor:
                checkpoint = Path(shutil.copytree(checkpoint, root / "checkpoint"))
                path = checkpoint / "processor_config.json"
                config = json.loads(path.read_text())
                config["image_processor"].update(image_processor)
                path.write_text(json.dumps(config))
            options = (["--precision", precision] if precision else []) + (
                ["--onnx-decoder", decoder] if decoder else [])
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("LMMS_TOPO_CACHE", str(root / "cache"))
                out = export_build(checkpoint, root / "build", *options)
            built[key] = OnnxBuild(family, checkpoint, out, root / "cache")
        return built[key]

    return get


COMPARE, COUNT = "Compare them.", "How many shapes are in this picture? Answer with one word."
DESCRIBE, TEXT_ONLY = "Describe it.", "Say something about nothing at all, please."
QWEN_BATCH = [(COMPARE, [(48, 32), (32, 64)]), (COUNT, [(64, 48)]), (TEXT_ONLY, [])]
# per family: the rows of its left-padded batch, (text, sizes (width, height) of its images); the images are
# example_image(1), example_image(2), ... in the order they appear
MIXED_BATCHES = {
    # two images of different sizes in one row, one image in another, a text-only row
    "qwen2_vl": QWEN_BATCH,
    "qwen2_5_vl": QWEN_BATCH,
    # sizes the tiny pinpoints (32x32, 32x64, 64x32 px; 32 px tiles) treat differently: 40x32 and 32x40 resized into
    # a 1x2 / 2x1 tile grid and un-padded to the middle half of its columns / rows, 64x64 into one tile, 48x32 into a
    # 1x2 grid without un-padding; and a text-only row
    "llava_next": [(COMPARE, [(40, 32), (32, 40)]), (COUNT, [(64, 64)]), (DESCRIBE, [(48, 32)]), (TEXT_ONLY, [])],
    # two images in one row (2 + 4 tiles, each with its global image, when the processor splits images), one image
    # in another (4 tiles + global), a text-only row; the shorter rows are padded with all-zero images
    "idefics3": [(COMPARE, [(64, 32), (40, 40)]), (COUNT, [(48, 32)]), (TEXT_ONLY, [])],
}


def mixed_prompts(family: str) -> list[Prompt]:
    """``family``'s left-padded batch of :data:`MIXED_BATCHES`: rows with several images, one, and none."""
    prompts, seed = [], 0
    for text, sizes in MIXED_BATCHES[family]:
        images = [example_image(seed + index, size) for index, size in enumerate(sizes, start=1)]
        seed += len(sizes)
        prompts.append(Prompt.from_text(text, images))
    return prompts


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


def assert_batch_runs_like_pytorch(pruned, out: Path, family: str) -> None:
    """The build's runner prefills ``family``'s left-padded :func:`mixed_prompts` like PyTorch and generates 6
    tokens like ``model.generate``."""
    runner = OnnxVLM(out, provider="cpu")
    prompts = mixed_prompts(family)
    _, mask, _, _, inputs = prefill_against_pytorch(runner, pruned, prompts)
    assert (mask[:, 0] == 0).any()
    assert_generates_like_pytorch(runner, pruned, prompts, inputs, 6)
