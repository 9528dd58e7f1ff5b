"""A width method's budget checked before the weights load: the FLOPs model of :mod:`.flops`, built without them.

What a prompt passes through each site (rows, query-key pairs) depends on the prompt, the processor and the
model's depths, never on its widths. So a narrow copy of the architecture (every attention one head of the same
head dimension, MLPs 8 channels wide, the same layers, patches and merges), built with random weights on the CPU,
counts them; the sites' weights and the fixed linears are priced at the real shapes of the model built on the meta
device (no memory). The result equals the FLOPs model the search measures on the loaded model (a test compares
them), so an unreachable ``sparsity`` is refused in seconds instead of after loading billions of weights.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from transformers import PretrainedConfig

from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.families import adapter_class_for
from lmms_topo_plugin.models.loading import model_class_at_widths
from lmms_topo_plugin.models.processors import load_processor
from lmms_topo_plugin.models.prompting import Prompt, encode
from lmms_topo_plugin.scorers.comp.config import CompConfig
from lmms_topo_plugin.scorers.comp.flops import FlopsModel, measure_load
from lmms_topo_plugin.scorers.comp.search import check_reachable, present_modes, search_sites

NARROW_CHANNELS = 8  # MLP width of the narrow copy


def _narrow(config: PretrainedConfig, output_width: int | None = None) -> None:
    """One head of the same head dimension, narrow MLPs; ``output_width``: the text width a tower projects into
    (Qwen's vision towers end in their own merger)."""
    width_key = "embed_dim" if hasattr(config, "embed_dim") else "hidden_size"
    heads_key = "num_attention_heads" if hasattr(config, "num_attention_heads") else "num_heads"
    head_dim = getattr(config, "head_dim", None) or getattr(config, width_key) // getattr(config, heads_key)
    if width_key == "embed_dim":  # Qwen2-VL's vision config: hidden_size is the merger's output width
        config.hidden_size = output_width
    if hasattr(config, "out_hidden_size"):  # Qwen2.5-VL's
        config.out_hidden_size = output_width
    setattr(config, width_key, head_dim)
    setattr(config, heads_key, 1)
    if hasattr(config, "num_key_value_heads"):
        config.num_key_value_heads = 1
    if hasattr(config, "intermediate_size"):
        config.intermediate_size = NARROW_CHANNELS


def narrow_config(hf_config: PretrainedConfig) -> PretrainedConfig:
    """A copy of ``hf_config`` with the same depths and token counts and the narrowest widths (see module doc)."""
    narrow = copy.deepcopy(hf_config)
    text = narrow.get_text_config()
    _narrow(text)
    _narrow(narrow.vision_config, text.hidden_size)
    record = getattr(narrow, "topo_pruning", None)
    if isinstance(record, dict) and record.get("widths"):  # per-layer widths belong to the full-width model
        narrow.topo_pruning = {key: value for key, value in record.items() if key != "widths"}
    return narrow


def estimated_flops(pretrained: str, hf_config: PretrainedConfig, prompts: Sequence[Prompt], params: CompConfig,
                    revision: str | None = None) -> tuple[FlopsModel, list, list[torch.Tensor]]:
    """The search's FLOPs model of ``hf_config`` over ``prompts`` (its held-out ones), its sites and the visual-token
    masks, without the checkpoint's weights: ``(flops, sites, visual)``."""
    with torch.device("meta"):
        shaped = model_class_at_widths(hf_config)(hf_config)
    sites = search_sites(adapter_class_for(hf_config)(shaped), params.comp_widths)
    narrow_hf = narrow_config(hf_config)
    torch.manual_seed(0)  # the values do not matter, only where they go
    narrow = model_class_at_widths(narrow_hf)(narrow_hf).eval()
    adapter = adapter_class_for(narrow_hf)(narrow)
    narrow_sites = search_sites(adapter, params.comp_widths)
    processor = load_processor(pretrained, revision=revision)
    loads, visual = [], []
    for prompt in prompts:
        batch = move_inputs(encode(processor, adapter, [prompt]), "cpu", torch.float32)
        visual.append(adapter.image_token_mask(batch["input_ids"]))
        loads.append(measure_load(narrow, narrow_sites, batch, visual[-1], priced_by=shaped))
    return FlopsModel(sites, loads, params.comp_token_layer), sites, visual


def check_reachable_before_loading(pretrained: str, hf_config: PretrainedConfig, prompts: Sequence[Prompt],
                                   params: CompConfig, sparsity: float, method: str, revision: str | None = None) -> None:
    """Refuse a ``sparsity`` the search could not reach on this model, as the search itself would (one line)."""
    flops, sites, visual = estimated_flops(pretrained, hf_config, prompts, params, revision)
    check_reachable(sparsity, flops, sites, present_modes(params.modes, sites, visual), method, params.comp_widths)
