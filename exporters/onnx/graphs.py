"""The three graphs, as small wrapper modules around the PyTorch model, and their export.

Image features are scattered into ``inputs_embeds`` at the image-token positions outside the graphs, as in the
optimum / transformers.js VLM repositories, so the decoder graph is the text model alone. What differs between
families is in :mod:`lmms_topo_plugin.families`, one module per family: the vision wrapper and its inputs, how
the runner feeds it, and which position ids the decoder takes (computed by the runner, see :mod:`.positions`).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn
from transformers import DynamicCache

from lmms_topo_plugin.records import ONNX_BUILD, pruning_record_of, token_record_of
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.models.loading import LoadedModel
from lmms_topo_plugin.families import ONNX_FAMILIES as FAMILIES, ONNX_MODEL_TYPES as SUPPORTED
from lmms_topo_plugin.families.onnx_graph import OnnxFamily
from lmms_topo_plugin.exporters.onnx.layout import EXTERNAL_DATA_BYTES, OPSET, graph_files, past_names

STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"


def weight_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers ``module`` reaches (a bound on what its graph stores)."""
    tensors = {id(t): t for t in (*module.parameters(), *module.buffers())}.values()
    return sum(t.numel() * t.element_size() for t in tensors)


def export_onnx(module: nn.Module, args: tuple, path: Path, **kwargs: Any) -> None:
    """``torch.onnx.export(dynamo=True)`` of ``module`` to ``path``; weights over :data:`EXTERNAL_DATA_BYTES`
    go to ``<path>.data`` (ONNX Runtime finds it next to the graph)."""
    torch.onnx.export(module.eval(), args, str(path), dynamo=True, opset_version=OPSET,
                      external_data=weight_bytes(module) > EXTERNAL_DATA_BYTES, **kwargs)
    drop_stack_traces(path)


def drop_stack_traces(path: Path) -> None:
    """Remove the exporter's per-node Python stack traces from the graph at ``path`` (weights left where they
    are): they name the exporting machine's source files by absolute path, which a published build must not."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for node in graph_nodes(model.graph):
        kept = [prop for prop in node.metadata_props if prop.key != STACK_TRACE_KEY]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.save(model, str(path))


def graph_nodes(graph) -> Iterator:
    """Every node of an ONNX graph, those of its subgraphs (If/Loop bodies) included."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                yield from graph_nodes(subgraph)


class EmbedTokens(nn.Module):
    """``input_ids`` → ``inputs_embeds``."""

    def __init__(self, embed: nn.Module) -> None:
        super().__init__()
        self.embed = embed

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids)


class Decoder(nn.Module):
    """``inputs_embeds, attention_mask, position_ids, past (key, value per layer), logits_to_keep`` →
    ``logits, present``; each layer's cache has that layer's key/value heads (:func:`kv_shape`). ``logits_to_keep``
    (int64 scalar, as transformers' ``logits_to_keep``): the LM head runs over the last ``logits_to_keep`` positions
    only, or over every position for 0 (its default in the graph, :data:`OPTIONAL_INPUTS`)."""

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__()
        self.text_model, self.lm_head = loaded.adapter.text_model, loaded.model.lm_head
        self.text_config = loaded.adapter.text_config
        self.num_layers = loaded.adapter.num_layers

    def forward(self, inputs_embeds, attention_mask, position_ids, past, logits_to_keep):
        cache = DynamicCache(config=self.text_config)
        for layer in range(self.num_layers):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        output = self.text_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                 position_ids=position_ids, past_key_values=cache, use_cache=True)
        present = []
        for layer in output.past_key_values.layers:
            present += [layer.keys, layer.values]
        hidden = output.last_hidden_state
        # the kept positions as an index, their count set by the input's value at run time
        position = torch.arange(hidden.shape[1], device=hidden.device)
        first = torch.where(logits_to_keep > 0, hidden.shape[1] - logits_to_keep, torch.zeros_like(logits_to_keep))
        return (self.lm_head(hidden.index_select(1, position[position >= first])), *present)


# decoder inputs after the cache that a build may have, with the value the graph uses when they are not fed (an
# initializer of the same name): runners and onnxruntime-genai that do not know them get the old behaviour
OPTIONAL_INPUTS = {"logits_to_keep": 0}


def add_input_defaults(path: Path, defaults: dict[str, int]) -> None:
    """Give the int64 scalar graph inputs ``defaults`` of the graph at ``path`` a default value (an initializer
    of the same name, which ONNX Runtime lets a feed override), so that they become optional."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    if not defaults:
        return
    model = onnx.load(str(path), load_external_data=False)
    missing = set(defaults) - {value.name for value in model.graph.input}
    if missing:
        raise ValueError(f"{path.name} has no input {sorted(missing)}")
    model.graph.initializer.extend(numpy_helper.from_array(np.array(value, dtype=np.int64), name)
                                   for name, value in defaults.items())
    onnx.save(model, str(path))


def kv_shape(loaded: LoadedModel) -> tuple[list[int], int]:
    """``(key/value heads of each decoder layer, head_dim)``: the heads counted from each layer's projections
    (width pruning may leave fewer than the config states, and not as many in every layer); one head size."""
    adapter, config = loaded.adapter, loaded.adapter.text_config
    heads = [adapter.layer_adapter(index).num_kv_heads for index in range(adapter.num_layers)]
    return heads, getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def kv_manifest(heads: list[int]) -> dict[str, Any]:
    """The manifest's cache shape: ``kv_heads_per_layer`` always, and the one ``kv_heads`` that builds before it
    stated (and runners before it read) only when every layer has as many."""
    return {**({"kv_heads": heads[0]} if len(set(heads)) == 1 else {}), "kv_heads_per_layer": list(heads)}


def check_supported(loaded: LoadedModel) -> OnnxFamily:
    model_type = loaded.model.config.model_type
    if model_type not in SUPPORTED:
        raise ModelArgsError(f"--onnx: {model_type} has no ONNX export yet (supported: {', '.join(SUPPORTED)})")
    tokens = token_record_of(loaded.model.config)
    if tokens:
        raise ModelArgsError(f"--onnx: the ONNX graphs do not include visual-token pruning (token_method="
                             f"{tokens['method']}); export without --onnx, or without token_method")
    return FAMILIES[model_type]


def export_graphs(loaded: LoadedModel, vision_inputs: Mapping[str, torch.Tensor], onnx_dir: Path,
                  decoder: str = "torch", fallback: str | None = None) -> dict[str, Any]:
    """Export the three graphs (fp32, dynamic batch / sequence / past length) into ``onnx_dir``; the manifest.

    ``vision_inputs``: a processor batch with at least two images (for LLaVA, so that the image count stays
    dynamic; Qwen's vision graph is exported with the first image). ``decoder``: ``torch`` (ours, :class:`Decoder`)
    or ``builder`` (onnxruntime-genai's model builder, :mod:`.builder_decoder`, with an ``lm_head`` graph);
    ``fallback``: why not the builder's, recorded in the manifest (``decoder_fallback``)."""
    family = check_supported(loaded)
    onnx_dir.mkdir(parents=True, exist_ok=True)
    model = loaded.model.float().eval()
    num_layers = loaded.adapter.num_layers
    heads, head_dim = kv_shape(loaded)
    hidden = loaded.adapter.text_config.hidden_size
    batch, seq, total = 2, 5, 8
    ids = torch.ones(batch, seq, dtype=torch.int64)
    past = tuple(torch.zeros(batch, layer_heads, total - seq, head_dim) for layer_heads in heads for _ in range(2))
    cache_axes = {0: "batch", 2: "past_sequence_length"}
    positions, position_axes = torch.arange(total - seq, total).expand(batch, seq), {0: "batch", 1: "sequence_length"}
    if family.positions == "mrope":
        positions, position_axes = positions.expand(3, batch, seq), {1: "batch", 2: "sequence_length"}
    graphs = {
        "vision_encoder": (family.vision(model), family.example(vision_inputs), list(family.vision_inputs),
                           ["image_features"], family.vision_axes),
        "embed_tokens": (EmbedTokens(loaded.adapter.embed_tokens), (ids,), ["input_ids"], ["inputs_embeds"],
                         ({0: "batch", 1: "sequence_length"},)),
        "decoder_model_merged": (
            Decoder(loaded), (torch.zeros(batch, seq, hidden), torch.ones(batch, total, dtype=torch.int64), positions,
                              past, torch.tensor(1, dtype=torch.int64)),
            ["inputs_embeds", "attention_mask", "position_ids", *past_names(num_layers, "past_key_values")],
            ["logits", *past_names(num_layers, "present")],
            ({0: "batch", 1: "sequence_length"}, {0: "batch", 1: "total_sequence_length"},
             position_axes, tuple(cache_axes for _ in past), None)),
    }
    if decoder == "builder":  # not exported by torch.onnx: built below
        del graphs["decoder_model_merged"]
    elif decoder != "torch":
        raise ValueError(f"decoder {decoder!r}: expected torch or builder")
    files = {}
    with torch.no_grad():
        for name, (module, args, inputs, outputs, axes) in graphs.items():
            path = onnx_dir / f"{name}.onnx"
            optional = OPTIONAL_INPUTS if isinstance(module, Decoder) else {}
            with getattr(module, "exporting", contextlib.nullcontext)():
                export_onnx(module, args, path, input_names=[*inputs, *optional], output_names=outputs,
                            dynamic_shapes=axes)
            add_input_defaults(path, optional)
            files[name] = {"file": path.name, "inputs": inputs, "outputs": outputs, "variants": {"fp32": path.name},
                           "files": {"fp32": graph_files(onnx_dir, path.name)}}
            if optional:  # not in "inputs", which lists what every run must feed (the cache from inputs[3:] on)
                files[name]["optional_inputs"] = dict(optional)
    details = {}
    if decoder == "builder":
        from lmms_topo_plugin.exporters.onnx.builder_decoder import (LM_HEAD, decoder_record, export_builder_decoder,
                                                                     export_lm_head)

        from lmms_topo_plugin.exporters.onnx.builder_decoder import BuilderUnsupported

        try:
            entry = export_builder_decoder(loaded, onnx_dir)
        except BuilderUnsupported:
            raise
        except Exception as error:  # the builder's own failure on this checkpoint: auto falls back on it
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise BuilderUnsupported(f"the model builder failed on this checkpoint: {type(error).__name__}: "
                                     f"{first}") from error
        details["decoder_builder"] = decoder_record(entry)
        files["decoder_model_merged"] = {"file": entry["file"], "inputs": entry["inputs"], "outputs": entry["outputs"],
                                         "variants": {"fp32": entry["file"]}, "files": {"fp32": entry["files"]}}
        files[LM_HEAD] = export_lm_head(loaded, onnx_dir)
    elif fallback:
        details["decoder_fallback"] = fallback
    manifest = ONNX_BUILD.stamp({
        "model_type": model.config.model_type, "graphs": files, "decoder": decoder, **details,
        "precisions": ["fp32"],
        "image_token_id": loaded.adapter.image_token_id, "num_layers": num_layers, **kv_manifest(heads),
        "head_dim": head_dim, "hidden_size": hidden, "opset": OPSET,
        "vision_per_image": family.per_image, "position_ids": family.positions,
        "vision_constants": family.constants(model),
        "spatial_merge_size": getattr(model.config.vision_config, "spatial_merge_size", None),
        "pruning": pruning_record_of(model.config),
    })
    write_manifest(onnx_dir, manifest)
    return manifest


def write_manifest(onnx_dir: Path, manifest: dict[str, Any]) -> None:
    (onnx_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
