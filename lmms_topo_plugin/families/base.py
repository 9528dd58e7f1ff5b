"""What a family module defines: its model adapter (where a VLM keeps its decoder layers, norm, vision tower and
image tokens) and its :class:`Family` entry, the line of the table in :mod:`lmms_topo_plugin.families`.

Algorithms talk to an adapter, never to ``model.model.language_model...`` directly, so a new
architecture family is one small subclass that names its attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.processing_utils import ProcessorMixin

from lmms_topo_plugin.families.layers import DecoderLayerAdapter
from lmms_topo_plugin.families.onnx_graph import OnnxFamily
from lmms_topo_plugin.families.recipe import TinyRecipe


class VLMAdapter:
    """Uniform view of a transformers vision-language model.

    Subclasses set the class attributes; the defaults fit the transformers 5 layout
    ``Model.model.<text_model_attr>.layers`` with ``norm``, ``embed_tokens`` and ``rotary_emb``.
    """

    text_model_attr: ClassVar[str] = "language_model"
    vision_tower_attr: ClassVar[str] = "vision_tower"
    # The attention module's attribute in a vision encoder layer.
    vision_attention_attr: ClassVar[str] = "self_attn"
    # Whether the processor wants one list of images per prompt (True) or one flat list (False).
    nested_images: ClassVar[bool] = False
    layer_adapter_class: ClassVar[type[DecoderLayerAdapter]] = DecoderLayerAdapter

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model

    @property
    def backbone(self) -> nn.Module:
        """The multimodal model without the LM head (runs vision + decoder, returns hidden states)."""
        return self.model.model

    @property
    def text_model(self) -> nn.Module:
        return getattr(self.backbone, self.text_model_attr)

    @property
    def layers(self) -> nn.ModuleList:
        return self.text_model.layers

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def final_norm(self) -> nn.Module:
        return self.text_model.norm

    @property
    def embed_tokens(self) -> nn.Module:
        return self.text_model.embed_tokens

    @property
    def rotary_emb(self) -> nn.Module:
        return self.text_model.rotary_emb

    @property
    def vision_tower(self) -> nn.Module:
        return getattr(self.backbone, self.vision_tower_attr)

    @property
    def vision_layers(self) -> nn.ModuleList:
        """The vision encoder's layers, input side first."""
        return self.vision_tower.encoder.layers

    @property
    def projector(self) -> tuple[nn.Module, nn.Linear, nn.Linear] | None:
        """The vision-to-text projector MLP: the module, its linear into the hidden channels and its linear out of
        them; None where the connector has no hidden layer (the default)."""
        return None

    @property
    def fixed_widths(self) -> dict[tuple[str, str], str]:
        """The ``(tower, kind)`` widths that the config cannot state, so that only a per-layer record describes
        them once pruned, each with the reason."""
        return {
            ("vision", "heads"): "the vision attention derives head_dim from the hidden size over the head count",
            ("projector", "channels"): "the projector's hidden width is the text hidden_size",
        }

    @property
    def text_configs(self) -> list[PretrainedConfig]:
        """Every config object that describes the decoder (they may be distinct copies)."""
        return _distinct([self.model.config.get_text_config(), self.text_model.config])

    @property
    def vision_configs(self) -> list[PretrainedConfig]:
        """Every config object that describes the vision tower (they may be distinct copies)."""
        return _distinct([self.model.config.vision_config, self.vision_tower.config])

    @property
    def text_config(self) -> PretrainedConfig:
        return self.model.config.get_text_config()

    @property
    def image_token_id(self) -> int:
        config = self.model.config
        token_id = getattr(config, "image_token_id", None)
        return token_id if token_id is not None else config.image_token_index

    def image_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the visual-token positions in ``input_ids``."""
        return input_ids == self.image_token_id

    def layer_adapter(self, index: int) -> DecoderLayerAdapter:
        """The per-layer adapter of decoder layer ``index``."""
        return self.layer_adapter_class(self.layers[index], self.text_config)

    def replace_layers(self, kept: list[nn.Module]) -> None:
        """Install ``kept`` as the decoder's layer list."""
        self.text_model.layers = nn.ModuleList(kept)


def _distinct(configs: list[PretrainedConfig]) -> list[PretrainedConfig]:
    """``configs`` without repeats of the same object, in order."""
    unique: list[PretrainedConfig] = []
    for config in configs:
        if all(config is not seen for seen in unique):
            unique.append(config)
    return unique


@dataclass(frozen=True)
class Family:
    """One architecture family: the ``model_type`` values it covers, the adapter that serves them all, and per
    ``model_type`` what else it has: an ONNX vision graph (:mod:`.onnx_graph`; a type without one has no ONNX
    export), a tiny random-weight test-model recipe (:mod:`.recipe`), image-only stand-ins for processor classes
    that need torchvision (real class → stand-in)."""

    model_types: tuple[str, ...]
    adapter: type[VLMAdapter]
    onnx: Mapping[str, OnnxFamily] = field(default_factory=dict)
    tiny: Mapping[str, TinyRecipe] = field(default_factory=dict)
    image_only_processors: Mapping[type[ProcessorMixin], type[ProcessorMixin]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for part in ("onnx", "tiny"):
            unknown = set(getattr(self, part)) - set(self.model_types)
            if unknown:
                raise ValueError(f"{part} entries {sorted(unknown)} are not among the family's model_types "
                                 f"{self.model_types}")
