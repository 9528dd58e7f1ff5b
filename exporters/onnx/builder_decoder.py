"""The decoder of an ONNX build made by onnxruntime-genai's model builder (``onnxruntime_genai.models.builder``).

The builder emits a decoder of fused ops (``GroupQueryAttention`` with the rotary inside,
``SkipSimplifiedLayerNormalization``): a few hundred nodes where our torch.onnx export has a thousand and more, and
a KV cache that one preallocated buffer per key/value can hold, bound as past and present both and written in place
(onnxruntime-genai's ``past_present_share_buffer``). ``bench/bench_onnx_anchor.py`` measures it against ours.

What the builder reads is a causal-LM checkpoint of the VLM's language model (:func:`language_model_checkpoint`),
built with ``exclude_embeds`` (our embedding graph feeds ``inputs_embeds``) and ``exclude_lm_head`` (the graph ends
at the final norm's ``hidden_states``). The LM head is a graph of its own, ``lm_head.onnx``, that the runner feeds
the hidden states it needs: the last real position of each row for generation, every position for
log-likelihoods. The decoder graph takes no position ids: GroupQueryAttention counts each row's tokens from its
attention mask and puts them at positions 0, 1, ..., so a batch is right-padded (the runner does it).

Where the builder cannot take a checkpoint (:func:`builder_limits`), :func:`resolve_decoder` says why:
``decoder="auto"`` falls back to our decoder with the reason recorded in the manifest, ``decoder="builder"`` is
refused with it (:class:`BuilderUnsupported`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from lmms_topo_plugin.errors import ModelArgsError, PluginError

DECODERS = ("auto", "torch", "builder")
# what topo-prune export --onnx builds unless told: ours, which every family and provider runs. The builder's fp32
# decoder is faster on the CPU (bench/bench_onnx_anchor.py) but made for the CPU provider: ONNX Runtime's CUDA
# GroupQueryAttention has no fp32 kernel, and a build is usually deployed where it was not made
DEFAULT_DECODER = "torch"
DECODER_FILE = "decoder_model_merged.onnx"
LM_HEAD = "lm_head"
# the text models whose causal-LM class the builder builds from a checkpoint of their own (create_model dispatches on
# config.architectures[0]); its rotary is computed from the attention mask, right for 1-D text positions only
CAUSAL_LM = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
# onnxruntime 1.32's CPU GroupQueryAttention refuses other head sizes at run time ("head_size shall be a multiple
# of 16")
GQA_HEAD_MULTIPLE = 16
# our precision -> the builder's; fp16 is not here: for the CPU provider the builder's fp16 decoder is another graph
BUILDER_PRECISIONS = {"fp32": "fp32", "int4": "int4"}
BUILD_OPTIONS = ("exclude_embeds=true", "exclude_lm_head=true")
# int4: the builder's own MatMulNBits quantization, with the block size of our variants (its accuracy level is
# its default for the CPU provider)
PRECISION_OPTIONS = {"fp32": (), "int4": ("block_size=32",)}
EXECUTION_PROVIDER = "cpu"


class BuilderUnsupported(ModelArgsError):
    """onnxruntime-genai's model builder cannot build this checkpoint's decoder (the message says why); asked for
    with ``--onnx-decoder builder``, a usage error (exit code 2)."""


def config_limits(model_type: str, text_config: Any, precisions: tuple[str, ...] = ("fp32",)) -> None:
    """What the checkpoint's config alone rules out (before any weights load): raise :class:`BuilderUnsupported`."""
    from lmms_topo_plugin.families import ONNX_FAMILIES

    family = ONNX_FAMILIES.get(model_type)
    if family is not None and family.positions != "text":
        raise BuilderUnsupported(
            f"{model_type}: the decoder takes {family.positions} position ids; the builder's GroupQueryAttention "
            "computes 1-D positions from the attention mask (onnxruntime-genai builds M-RoPE only from a whole "
            "Qwen2.5-VL checkpoint, not from a language model saved on its own)")
    if text_config.model_type not in CAUSAL_LM:
        raise BuilderUnsupported(f"text model {text_config.model_type}: no causal-LM class the builder builds "
                                 f"(it takes {', '.join(CAUSAL_LM)} here)")
    head_size = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    if head_size % GQA_HEAD_MULTIPLE:
        raise BuilderUnsupported(
            f"head size {head_size}: ONNX Runtime's GroupQueryAttention (what the builder emits, its rotary fused "
            f"in) runs head sizes that are multiples of {GQA_HEAD_MULTIPLE} only on the CPU, and the builder has no "
            "other attention for it")
    other = [precision for precision in precisions if precision not in BUILDER_PRECISIONS]
    if other:
        raise BuilderUnsupported(
            f"precision {other[0]}: the builder's {other[0]} decoder for the CPU provider is another graph (position "
            f"ids, {other[0]} inputs and outputs, attention not fused), not the one the runner drives; it builds "
            f"{', '.join(BUILDER_PRECISIONS)}")


def builder_limits(loaded, precisions: tuple[str, ...] = ("fp32",)) -> None:
    """Raise :class:`BuilderUnsupported` where the builder cannot build ``loaded``'s text decoder as it is (pruned):
    :func:`config_limits`, and decoder layers that differ in width (the builder reads one width from the config)."""
    config, adapter = loaded.adapter.text_config, loaded.adapter
    config_limits(loaded.model.config.model_type, config, precisions)
    layers = [adapter.layer_adapter(index) for index in range(adapter.num_layers)]
    kv_heads = sorted({layer.num_kv_heads for layer in layers})
    mlp = sorted({layer.layer.mlp.down_proj.in_features for layer in layers})
    query = sorted({layer.layer.self_attn.q_proj.out_features for layer in layers})
    stated_query = config.num_attention_heads * (getattr(config, "head_dim", None)
                                                 or config.hidden_size // config.num_attention_heads)
    if kv_heads != [config.num_key_value_heads] or mlp != [config.intermediate_size] or query != [stated_query]:
        raise BuilderUnsupported(
            f"width-pruned per layer (key/value heads {kv_heads}, MLP widths {mlp}, query widths {query}; the "
            f"config states {config.num_key_value_heads}, {config.intermediate_size}, {stated_query}): the builder "
            "reads one num_key_value_heads, num_attention_heads and intermediate_size for every layer from the "
            "config; only the uniform width layout (stated in the config) builds")


def resolve_decoder(loaded, requested: str, precisions: tuple[str, ...] = ("fp32",)) -> tuple[str, str | None]:
    """``(decoder kind, why not the builder's)`` for ``requested`` (:data:`DECODERS`): ``torch`` as asked;
    ``builder`` where eligible, else :class:`BuilderUnsupported`; ``auto`` the builder's where eligible, else ours
    with the reason."""
    if requested not in DECODERS:
        raise PluginError(f"--onnx-decoder: {requested!r} is not one of {', '.join(DECODERS)}")
    if requested == "torch":
        return "torch", None
    try:
        builder_limits(loaded, precisions)
    except BuilderUnsupported as error:
        if requested == "builder":
            raise BuilderUnsupported(f"--onnx-decoder builder: {error}") from None
        return "torch", str(error)
    return "builder", None


def language_model_checkpoint(loaded, out_dir: Path) -> Path:
    """``loaded``'s language model saved on its own as a causal LM (the text config, the text model's weights under
    ``model.``, ``lm_head``; the tokenizer), in ``out_dir``: what the builder reads."""
    from safetensors.torch import save_file

    builder_limits(loaded)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(loaded.adapter.text_config)
    config.architectures = [CAUSAL_LM[config.model_type]]
    config.tie_word_embeddings = False
    config.save_pretrained(out_dir)
    weights = {f"model.{name}": tensor for name, tensor in loaded.adapter.text_model.state_dict().items()}
    weights["lm_head.weight"] = loaded.model.lm_head.weight
    save_file({name: tensor.detach().float().contiguous().clone() for name, tensor in weights.items()},
              str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    loaded.processor.tokenizer.save_pretrained(out_dir)
    return out_dir


def build_with_builder(checkpoint: Path, out_dir: Path, precision: str = "fp32", extra: tuple[str, ...] = ()) -> Path:
    """The builder's decoder of ``checkpoint`` for the CPU provider (``exclude_embeds=true`` and ``extra``) in
    ``out_dir``: ``model.onnx`` and ``genai_config.json``; its chatter (prints, progress bars, logs) swallowed."""
    from onnxruntime_genai.models.builder import create_model, parse_extra_options
    from transformers.utils import logging as transformers_logging

    cache = out_dir.parent / f"{out_dir.name}_cache"
    chatter = io.StringIO()
    quiet = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # logs every node at INFO
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # the builder loads and saves with transformers
    options_text = ["exclude_embeds=true", *extra, *PRECISION_OPTIONS.get(precision, ())]
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            args = (None, str(checkpoint), str(out_dir), BUILDER_PRECISIONS.get(precision, precision),
                    EXECUTION_PROVIDER, str(cache))
            options = parse_extra_options(*args, list(dict.fromkeys(options_text)))
            create_model(*args, **options)
    finally:
        quiet.setLevel(level)
        if bars:
            transformers_logging.enable_progress_bar()
    return out_dir


def save_graph(model, target: Path) -> list[str]:
    """Save the ONNX ``model`` (weights loaded) as ``target``, its weights in ``<target>.data`` when they pass
    :data:`.layout.EXTERNAL_DATA_BYTES`; the graph written under a temporary name first and moved into place."""
    import onnx

    from lmms_topo_plugin.exporters.onnx.layout import EXTERNAL_DATA_BYTES, graph_files

    external = sum(tensor.ByteSize() for tensor in model.graph.initializer) > EXTERNAL_DATA_BYTES
    data = target.with_name(f"{target.name}.data")
    if data.exists():
        data.unlink()
    partial = target.with_name(f".{target.name}.partial")
    if external:
        onnx.save(model, str(partial), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=data.name)
    else:
        onnx.save(model, str(partial))
    os.replace(partial, target)
    return graph_files(target.parent, target.name)


def lm_head_model(loaded):
    """``hidden_states [batch, sequence_length, hidden]`` → ``logits [batch, sequence_length, vocab]``: the VLM's LM
    head (fp32) as an ONNX model."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from lmms_topo_plugin.exporters.onnx.layout import OPSET

    head = loaded.model.lm_head
    weight = head.weight.detach().float().cpu().numpy()
    vocab, hidden = weight.shape
    initializers = [numpy_helper.from_array(np.ascontiguousarray(weight.T), "lm_head.weight.T")]
    nodes = [helper.make_node("MatMul", ["hidden_states", "lm_head.weight.T"],
                              ["logits" if head.bias is None else "unbiased"], name="/lm_head/MatMul")]
    if head.bias is not None:
        initializers.append(numpy_helper.from_array(head.bias.detach().float().cpu().numpy(), "lm_head.bias"))
        nodes.append(helper.make_node("Add", ["unbiased", "lm_head.bias"], ["logits"], name="/lm_head/Add"))
    graph = helper.make_graph(
        nodes, "lm_head",
        [helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, ["batch", "sequence_length", hidden])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence_length", vocab])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9  # what onnxruntime reads with opset 18
    onnx.checker.check_model(model)
    return model


def export_builder_decoder(loaded, onnx_dir: Path, precision: str = "fp32") -> dict[str, Any]:
    """Write the builder's ``precision`` decoder of ``loaded`` as the build's decoder file
    (``decoder_model_merged.onnx``, or its precision variant's name) into ``onnx_dir``; returns its manifest entry
    (``file``, ``files``, ``inputs``, ``outputs``) and ``builder`` (what it was built with). For fp32 also the LM
    head graph (:func:`lm_head_model`). :class:`BuilderUnsupported` where the builder cannot take ``loaded``."""
    import json

    import onnx
    import onnxruntime_genai

    from lmms_topo_plugin.exporters.onnx.layout import past_names
    from lmms_topo_plugin.exporters.onnx.precision import variant_name

    builder_limits(loaded, (precision,))
    num_layers = loaded.adapter.num_layers
    inputs = ["inputs_embeds", "attention_mask", *past_names(num_layers, "past_key_values")]
    outputs = ["hidden_states", *past_names(num_layers, "present")]
    with tempfile.TemporaryDirectory(dir=onnx_dir, prefix=".builder-") as work:
        checkpoint = language_model_checkpoint(loaded, Path(work) / "language_model")
        built = build_with_builder(checkpoint, Path(work) / "decoder", precision, BUILD_OPTIONS)
        genai = json.loads((built / "genai_config.json").read_text())["model"]["decoder"]
        model = onnx.load(str(built / genai["filename"]))
        names = {value.name for value in model.graph.input}, {value.name for value in model.graph.output}
        if names != (set(inputs), set(outputs)):
            raise BuilderUnsupported(f"the builder's decoder takes {sorted(names[0])} and gives {sorted(names[1])}, "
                                     "not inputs_embeds + attention_mask + cache -> hidden_states + cache")
        target = onnx_dir / variant_name(DECODER_FILE, precision)
        files = save_graph(model, target)
    entry = {"file": target.name, "files": files, "inputs": inputs, "outputs": outputs,
             "builder": {"onnxruntime_genai": onnxruntime_genai.__version__, "precision": precision,
                         "execution_provider": EXECUTION_PROVIDER,
                         "options": [*BUILD_OPTIONS, *PRECISION_OPTIONS[precision]],
                         "num_hidden_layers": genai["num_hidden_layers"]}}
    return entry


def export_lm_head(loaded, onnx_dir: Path) -> dict[str, Any]:
    """``lm_head.onnx`` (fp32) in ``onnx_dir``; its manifest entry."""
    file = f"{LM_HEAD}.onnx"
    files = save_graph(lm_head_model(loaded), onnx_dir / file)
    return {"file": file, "inputs": ["hidden_states"], "outputs": ["logits"], "variants": {"fp32": file},
            "files": {"fp32": files}}


def decoder_record(entry: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``decoder_builder``: how the runner drives the builder's decoder."""
    return {"padding": "right", "kv_cache": "shared_buffer", "position_ids": False,
            "logits": f"the {LM_HEAD} graph over the decoder's hidden_states (the last real position of each row "
                      "when generating, every position for log-likelihoods)",
            **entry["builder"]}
